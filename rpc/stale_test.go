package rpc

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// killableListener records the connections it accepts, so that kill can
// close all of them at once, as the kernel does when a process dies.
type killableListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *killableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *killableListener) kill() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// startPeer runs shard 5 of a node on addr ("127.0.0.1:0" for any port),
// answering every request; snapshots is where InstallSnapshot data goes.
func startPeer(t *testing.T, addr string, snapshots chan<- []byte) (kill func(), at string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	kl := &killableListener{Listener: ln}
	m := NewMux(kl, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	go m.Serve()
	tr := shardTransport(t, m)
	go func() {
		for rpc := range tr.Consumer() {
			switch req := rpc.Command.(type) {
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
			case *raft.AppendEntriesRequest:
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil)
			case *raft.InstallSnapshotRequest:
				b, err := io.ReadAll(io.LimitReader(rpc.Reader, req.Size))
				snapshots <- b
				rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: true}, err)
			}
		}
	}()
	var once sync.Once
	kill = func() {
		once.Do(func() {
			kl.kill()
			m.Close()
			tr.(raft.WithClose).Close()
		})
	}
	t.Cleanup(kill)
	return kill, ln.Addr().String()
}

// TestTransportsSurvivePeerRestart: after a peer's process dies and comes
// back on the same address, the first vote, AppendEntries and
// InstallSnapshot sent to it succeed, although the connections pooled
// before it died were closed under the pools.
func TestTransportsSurvivePeerRestart(t *testing.T) {
	src := shardTransport(t, newTestMux(t))
	snapshots := make(chan []byte, 1)
	kill, addr := startPeer(t, "127.0.0.1:0", snapshots)
	target := raft.ServerAddress(addr)

	vote := func(when string) {
		t.Helper()
		var vr raft.RequestVoteResponse
		if err := src.RequestVote("b", target, &raft.RequestVoteRequest{Term: 3}, &vr); err != nil || !vr.Granted {
			t.Errorf("%s: RequestVote: %+v, %v", when, vr, err)
		}
	}
	appendEntries := func(when string) {
		t.Helper()
		var ar raft.AppendEntriesResponse
		req := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 10, Entries: []*raft.Log{{Index: 11, Term: 3, Data: []byte("x")}}}
		if err := src.AppendEntries("b", target, req, &ar); err != nil || ar.LastLog != 11 {
			t.Errorf("%s: AppendEntries: %+v, %v", when, ar, err)
		}
	}
	installSnapshot := func(when string) {
		t.Helper()
		data := bytes.Repeat([]byte("snapshot"), 1000)
		var sr raft.InstallSnapshotResponse
		err := src.InstallSnapshot("b", target, &raft.InstallSnapshotRequest{SnapshotVersion: 1, Term: 3, Size: int64(len(data))}, &sr, bytes.NewReader(data))
		if err != nil || !sr.Success {
			t.Fatalf("%s: InstallSnapshot: %+v, %v", when, sr, err)
		}
		if got := <-snapshots; !bytes.Equal(got, data) {
			t.Fatalf("%s: the peer got %d bytes of snapshot, want %d", when, len(got), len(data))
		}
	}
	// Concurrent requests leave several connections in each pool, as an
	// election's votes and a leader's heartbeats do.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(2)
		go func() { defer wg.Done(); vote("before the restart") }()
		go func() { defer wg.Done(); appendEntries("before the restart") }()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	kill()
	startPeer(t, addr, snapshots)
	// The pooled connections sit idle for a while, as they do between
	// elections or snapshots.
	time.Sleep(2 * redialIdle)
	installSnapshot("after the restart")
	vote("after the restart")
	appendEntries("after the restart")
}

// redialRig is a redialConn to a loopback listener whose accepted ends
// the test holds, with the redials counted.
type redialRig struct {
	rc     *redialConn
	peers  chan net.Conn // the accepted end of every connection, in order
	dials  int
	dialMu sync.Mutex
}

func newRedialRig(t *testing.T) (*redialRig, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &redialRig{peers: make(chan net.Conn, 4)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.peers <- c
		}
	}()
	dial := func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	g.rc = newRedialConn(c, func() (net.Conn, error) {
		g.dialMu.Lock()
		g.dials++
		g.dialMu.Unlock()
		return dial()
	})
	t.Cleanup(func() { ln.Close(); g.rc.Close() })
	return g, <-g.peers
}

func (g *redialRig) redials() int {
	g.dialMu.Lock()
	defer g.dialMu.Unlock()
	return g.dials
}

// exchange writes a request and reads its answer, leaving rc idle between
// requests as NetworkTransport's pool does.
func (g *redialRig) exchange(t *testing.T, peer net.Conn) {
	t.Helper()
	if _, err := g.rc.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(peer, b); err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte("a"))
	if _, err := io.ReadFull(g.rc, b); err != nil {
		t.Fatal(err)
	}
}

// TestRedialConnRedialsOnlyBetweenRequests: a connection the peer closed
// while it sat idle is replaced on the next request, and the request
// arrives whole on the new one; one closed on this side, or one whose read
// deadline has passed, is not; nor is a pipeline's (a write while a read
// waits), whose writes never wait for that read.
func TestRedialConnRedialsOnlyBetweenRequests(t *testing.T) {
	t.Run("peer closed", func(t *testing.T) {
		g, peer := newRedialRig(t)
		g.exchange(t, peer)
		peer.Close()
		time.Sleep(2 * redialIdle)
		if _, err := g.rc.Write([]byte("next")); err != nil {
			t.Fatalf("write after the peer closed: %v", err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(<-g.peers, b); err != nil || string(b) != "next" || g.redials() != 1 {
			t.Fatalf("new connection got %q (%v) after %d redials", b, err, g.redials())
		}
	})
	t.Run("closed here", func(t *testing.T) {
		g, peer := newRedialRig(t)
		g.exchange(t, peer)
		peer.Close()
		time.Sleep(2 * redialIdle)
		g.rc.Close()
		if _, err := g.rc.Write([]byte("x")); err == nil || g.redials() != 0 {
			t.Fatalf("write after Close: %v, %d redials", err, g.redials())
		}
	})
	t.Run("deadline passed", func(t *testing.T) {
		g, peer := newRedialRig(t)
		g.exchange(t, peer)
		g.rc.SetReadDeadline(time.Now().Add(-time.Second))
		time.Sleep(2 * redialIdle)
		if _, err := g.rc.Write([]byte("x")); err != nil || g.redials() != 0 {
			t.Fatalf("write on a live connection past its read deadline: %v, %d redials", err, g.redials())
		}
	})
	t.Run("pipeline", func(t *testing.T) {
		g, peer := newRedialRig(t)
		g.exchange(t, peer)
		time.Sleep(2 * redialIdle)
		read := make(chan error, 1)
		go func() {
			_, err := io.ReadFull(g.rc, make([]byte, 1))
			read <- err
		}()
		// The write must not wait for the read, which nothing answers yet.
		b := make([]byte, 1)
		for {
			if _, err := g.rc.Write([]byte("p")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(peer, b); err != nil {
				t.Fatal(err)
			}
			g.rc.mu.Lock()
			pipelined := g.rc.pipelined
			g.rc.mu.Unlock()
			if pipelined {
				break
			}
			// The reader had not started yet: the write was not a
			// pipeline's. Try again once it has.
			time.Sleep(time.Millisecond)
		}
		select {
		case err := <-read:
			t.Fatalf("the read ended (%v) before anything answered it", err)
		default:
		}
		peer.Write([]byte("a"))
		if err := <-read; err != nil {
			t.Fatal(err)
		}
		peer.Close()
		time.Sleep(2 * redialIdle)
		g.rc.Write([]byte("x"))
		if g.redials() != 0 {
			t.Fatalf("a pipeline's connection was redialed %d times", g.redials())
		}
	})
}
