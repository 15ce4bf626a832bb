package rpc

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A write larger than the socket buffers arrives whole and in order, over a
// plain connection and over the mux's prefixConn: the writer waits on the
// poller when the buffer fills and goes on where it stopped.
func TestWriteConnLargeWriteArrivesWhole(t *testing.T) {
	for _, wrap := range []struct {
		name string
		fn   func(net.Conn) net.Conn
	}{{"tcp", func(c net.Conn) net.Conn { return c }}, {"prefixConn", func(c net.Conn) net.Conn { return &prefixConn{Conn: c} }}} {
		t.Run(wrap.name, func(t *testing.T) {
			a, b := tcpPair(t)
			msg := make([]byte, 16<<20)
			rand.Read(msg)
			got := make(chan []byte, 1)
			go func() {
				buf, _ := io.ReadAll(io.LimitReader(b, int64(len(msg))))
				got <- buf
			}()
			a.SetWriteDeadline(time.Now().Add(time.Minute))
			n, err := newConnWriter(wrap.fn(a)).Write(msg)
			if err != nil || n != len(msg) {
				t.Fatalf("Write: %d, %v; want %d, nil", n, err, len(msg))
			}
			if buf := <-got; !bytes.Equal(buf, msg) {
				t.Fatalf("peer read %d bytes, not the %d written", len(buf), len(msg))
			}
		})
	}
}

// A peer that stops reading makes the write end at its deadline, with an
// error that says it timed out, as c.Write's would.
func TestWriteConnHonoursTheDeadline(t *testing.T) {
	a, _ := tcpPair(t)
	a.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	msg := make([]byte, 64<<20)
	n, err := newConnWriter(a).Write(msg)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Write to a peer that does not read: %d, %v; want a timeout", n, err)
	}
	if n >= len(msg) {
		t.Fatalf("wrote all %d bytes to a peer that does not read", n)
	}
}

// Writing to a peer that closed fails, without a SIGPIPE taking the process
// down.
func TestWriteConnToAClosedPeerFails(t *testing.T) {
	a, b := tcpPair(t)
	b.Close()
	a.SetWriteDeadline(time.Now().Add(10 * time.Second))
	w := newConnWriter(a)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = w.Write(make([]byte, 64<<10))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("write to a closed peer timed out instead of failing: %v", err)
	}
}

// The mux hands Raft's connections over wrapped in a prefixConn; it must
// still expose the descriptor, or connWriter falls back to c.Write.
func TestPrefixConnExposesItsDescriptor(t *testing.T) {
	a, _ := tcpPair(t)
	var c net.Conn = &prefixConn{Conn: a}
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatal("prefixConn is not a syscall.Conn")
	}
	if rc, err := sc.SyscallConn(); err != nil || rc == nil {
		t.Fatalf("SyscallConn: %v, %v", rc, err)
	}
}
