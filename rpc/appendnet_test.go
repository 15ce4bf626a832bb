package rpc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
)

// fill sets every field of the struct v points to, recursively, to a value
// other than its zero, so that a round trip that drops a field (one
// hashicorp/raft added, say) shows up as a difference.
func fill(t *testing.T, rng *rand.Rand, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(0, rng.Int63())))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if !v.Type().Field(i).IsExported() {
				t.Fatalf("%s.%s is unexported: the codec cannot carry it", v.Type(), v.Type().Field(i).Name)
			}
			fill(t, rng, v.Field(i))
		}
	case reflect.Uint64, reflect.Uint32, reflect.Uint16, reflect.Uint8, reflect.Uint:
		v.SetUint(1 + rng.Uint64()%min(1<<62, uint64(1)<<(v.Type().Bits()-1)))
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(1 + rng.Int63n(1<<(v.Type().Bits()-2)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.String:
		v.SetString(fmt.Sprint(rng.Int()))
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, 1+rng.Intn(40))
			rng.Read(b)
			v.SetBytes(b)
			return
		}
		n := 1 + rng.Intn(5)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			fill(t, rng, s.Index(i))
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(t, rng, p.Elem())
		v.Set(p)
	default:
		t.Fatalf("a field of kind %s (%s): teach fill and the codec about it", v.Kind(), v.Type())
	}
}

func decodeFrame(t *testing.T, b []byte) []byte {
	t.Helper()
	frame, err := readFrame(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf("readFrame: %v", err)
	}
	return frame
}

// TestAppendCodecCoversEveryField: every field of AppendEntriesRequest (its
// header and entries included) and AppendEntriesResponse survives the
// binary encoding, whatever fields this version of hashicorp/raft has.
func TestAppendCodecCoversEveryField(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 50; i++ {
		var req raft.AppendEntriesRequest
		fill(t, rng, reflect.ValueOf(&req).Elem())
		if i%5 == 0 {
			// Empty and missing values come back as they went.
			req.Entries[0].Data, req.Entries[0].Extensions, req.Entries[0].AppendedAt = nil, nil, time.Time{}
			req.Leader = nil
		}
		var got raft.AppendEntriesRequest
		if err := decodeAppendRequest(decodeFrame(t, encodeAppendRequest(nil, &req)), &got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, req) {
			t.Fatalf("request changed in transit:\n sent %+v\n got  %+v", req, got)
		}
		for j := range req.Entries {
			if !reflect.DeepEqual(*got.Entries[j], *req.Entries[j]) {
				t.Fatalf("entry %d changed in transit:\n sent %+v\n got  %+v", j, *req.Entries[j], *got.Entries[j])
			}
		}

		var resp raft.AppendEntriesResponse
		fill(t, rng, reflect.ValueOf(&resp).Elem())
		var gotResp raft.AppendEntriesResponse
		errText, err := decodeAppendResponse(decodeFrame(t, encodeAppendResponse(nil, "no: "+fmt.Sprint(i), &resp)), &gotResp)
		if err != nil || errText != "no: "+fmt.Sprint(i) {
			t.Fatalf("decode response: %q %v", errText, err)
		}
		if !reflect.DeepEqual(gotResp, resp) {
			t.Fatalf("response changed in transit:\n sent %+v\n got  %+v", resp, gotResp)
		}
	}
}

// TestAppendDecodeRejectsMalformed: a cut, padded or lying frame is an
// error, never a panic, a huge allocation or a request with made-up fields.
func TestAppendDecodeRejectsMalformed(t *testing.T) {
	var req raft.AppendEntriesRequest
	fill(t, rand.New(rand.NewSource(2)), reflect.ValueOf(&req).Elem())
	frame := decodeFrame(t, encodeAppendRequest(nil, &req))
	for n := 0; n < len(frame); n++ {
		if err := decodeAppendRequest(frame[:n], new(raft.AppendEntriesRequest)); err == nil {
			t.Fatalf("a frame cut to %d of %d bytes decoded", n, len(frame))
		}
	}
	if err := decodeAppendRequest(append(frame[:len(frame):len(frame)], 0), new(raft.AppendEntriesRequest)); err == nil {
		t.Fatal("a frame with a byte after its last field decoded")
	}
	// A count of entries far past what the frame holds.
	var lie []byte
	lie = binary.AppendUvarint(lie, 1)
	for range 3 {
		lie = binary.AppendUvarint(lie, 0) // ID, Addr, Term
	}
	for range 4 {
		lie = binary.AppendUvarint(lie, 0) // Leader, PrevLogEntry, PrevLogTerm, LeaderCommitIndex
	}
	lie = binary.AppendUvarint(lie, 1<<40)
	if err := decodeAppendRequest(lie, new(raft.AppendEntriesRequest)); err == nil {
		t.Fatal("a frame claiming 2^40 entries decoded")
	}
	resp := decodeFrame(t, encodeAppendResponse(nil, "x", &raft.AppendEntriesResponse{Term: 3, Success: true}))
	for n := 0; n < len(resp); n++ {
		if _, err := decodeAppendResponse(resp[:n], new(raft.AppendEntriesResponse)); err == nil {
			t.Fatalf("a response cut to %d of %d bytes decoded", n, len(resp))
		}
	}
	var big [4]byte
	binary.BigEndian.PutUint32(big[:], uint32(appendMaxFrame+1))
	if _, err := readFrame(bufio.NewReader(bytes.NewReader(big[:])), nil); err == nil {
		t.Fatal("a frame length past the limit was accepted")
	}
}

func FuzzAppendDecode(f *testing.F) {
	var req raft.AppendEntriesRequest
	fill(&testing.T{}, rand.New(rand.NewSource(3)), reflect.ValueOf(&req).Elem())
	f.Add(encodeAppendRequest(nil, &req)[4:])
	f.Add(encodeAppendResponse(nil, "e", &raft.AppendEntriesResponse{Success: true})[4:])
	f.Fuzz(func(t *testing.T, b []byte) {
		var got raft.AppendEntriesRequest
		if decodeAppendRequest(b, &got) == nil {
			// What decodes encodes back to the same bytes: one spelling
			// per request.
			if again := encodeAppendRequest(nil, &got)[4:]; !bytes.Equal(again, b) {
				t.Fatalf("decoded %x, encoded back %x", b, again)
			}
		}
		decodeAppendResponse(b, new(raft.AppendEntriesResponse))
	})
}

func transportPair(t *testing.T) (src, dst raft.Transport, dstAddr raft.ServerAddress) {
	t.Helper()
	b := newTestMux(t)
	return shardTransport(t, newTestMux(t)), shardTransport(t, b), raft.ServerAddress(b.Addr().String())
}

// TestAppendTransportCarriesRequests: a request with entries reaches the
// follower's Raft whole, its answer (or error) comes back, heartbeats go
// to the heartbeat handler, and a pipeline's answers come back in order.
func TestAppendTransportCarriesRequests(t *testing.T) {
	src, dst, addr := transportPair(t)
	var req raft.AppendEntriesRequest
	fill(t, rand.New(rand.NewSource(4)), reflect.ValueOf(&req).Elem())
	heartbeats := make(chan *raft.AppendEntriesRequest, 1)
	dst.SetHeartbeatHandler(func(rpc raft.RPC) {
		heartbeats <- rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 77, Success: true}, nil)
	})
	serve := func(n int, answer func(*raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error)) {
		go func() {
			for range n {
				rpc := <-dst.Consumer()
				resp, err := answer(rpc.Command.(*raft.AppendEntriesRequest))
				rpc.Respond(resp, err)
			}
		}()
	}

	got := make(chan *raft.AppendEntriesRequest, 1)
	serve(1, func(r *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
		got <- r
		return &raft.AppendEntriesResponse{Term: r.Term, LastLog: 42, Success: true, NoRetryBackoff: true}, nil
	})
	var resp raft.AppendEntriesResponse
	if err := src.AppendEntries("b", addr, &req, &resp); err != nil {
		t.Fatalf("AppendEntries: %v", err)
	}
	if r := <-got; !reflect.DeepEqual(*r, req) {
		t.Fatalf("follower got %+v, leader sent %+v", *r, req)
	}
	if !resp.Success || !resp.NoRetryBackoff || resp.LastLog != 42 || resp.Term != req.Term {
		t.Fatalf("answer: %+v", resp)
	}

	serve(1, func(*raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
		return &raft.AppendEntriesResponse{}, errors.New("follower says no")
	})
	if err := src.AppendEntries("b", addr, &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1}, &resp); err == nil || !strings.Contains(err.Error(), "follower says no") {
		t.Fatalf("the follower's error came back as %v", err)
	}

	hb := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("a"), Addr: []byte("a:1")}, Term: 9}
	if err := src.AppendEntries("b", addr, hb, &resp); err != nil || resp.Term != 77 {
		t.Fatalf("heartbeat: %+v %v", resp, err)
	}
	if r := <-heartbeats; r.Term != 9 {
		t.Fatalf("heartbeat handler got %+v", r)
	}

	const n = 500
	serve(n, func(r *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
		return &raft.AppendEntriesResponse{Term: r.Term, LastLog: r.PrevLogEntry, Success: true}, nil
	})
	p, err := src.AppendEntriesPipeline("b", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 2, PrevLogEntry: uint64(i), PrevLogTerm: 2}, new(raft.AppendEntriesResponse)); err != nil {
				t.Errorf("pipeline send %d: %v", i, err)
				return
			}
		}
	}()
	for i := 1; i <= n; i++ {
		f := <-p.Consumer()
		if f.Error() != nil || f.Response().LastLog != uint64(i) || f.Request().PrevLogEntry != uint64(i) {
			t.Fatalf("answer %d: %v %+v for %+v", i, f.Error(), f.Response(), f.Request())
		}
	}
}

// TestAppendPipelineFailsWhenFollowerGoes: when the follower's end goes
// away, the answers still owed come back as errors (Raft then ends the
// pipeline) and later sends fail instead of hanging.
func TestAppendPipelineFailsWhenFollowerGoes(t *testing.T) {
	src, dst, addr := transportPair(t)
	p, err := src.AppendEntriesPipeline("b", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Nobody answers; the follower then closes.
	for i := 0; i < 3; i++ {
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1}, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
	}
	dst.(raft.WithClose).Close()
	for i := 0; i < 3; i++ {
		if f := <-p.Consumer(); f.Error() == nil {
			t.Fatalf("answer %d of a closed follower: no error", i)
		}
	}
	var sendErr error
	for i := 0; i < 100 && sendErr == nil; i++ {
		_, sendErr = p.AppendEntries(&raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1}, new(raft.AppendEntriesResponse))
	}
	if sendErr == nil {
		t.Fatal("sends to a closed follower kept succeeding")
	}
}

// oldNode is a node from before appendTransport: its mux serves
// NetworkTransport connections (from this listener, as its StreamLayer)
// and hands anything else (an append connection included) to gRPC.
type oldNode struct{ *chanListener }

func (oldNode) Dial(raft.ServerAddress, time.Duration) (net.Conn, error) {
	return nil, errors.New("not used")
}

func startOldNode(t *testing.T) (*raft.NetworkTransport, raft.ServerAddress) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := oldNode{newChanListener(ln.Addr())}
	gl := newChanListener(ln.Addr())
	gs := grpc.NewServer()
	go gs.Serve(gl)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hdr := make([]byte, headerLen)
			n, _ := io.ReadFull(c, hdr)
			if n == headerLen && bytes.Equal(hdr[:4], raftMagic) {
				if !o.deliver(c) {
					c.Close()
				}
				continue
			}
			if !gl.deliver(&prefixConn{Conn: c, prefix: hdr[:n]}) {
				c.Close()
			}
		}
	}()
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: o, MaxPool: 2, Timeout: 10 * time.Second, Logger: hclog.NewNullLogger()})
	t.Cleanup(func() { nt.Close(); ln.Close(); gs.Stop() })
	go func() {
		for rpc := range nt.Consumer() {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry, Success: true}, nil)
		}
	}()
	return nt, raft.ServerAddress(ln.Addr().String())
}

// TestAppendTransportFallsBackForOldPeers: a peer that does not speak the
// append transport still gets AppendEntries, through NetworkTransport, so
// a cluster can be upgraded one node at a time.
func TestAppendTransportFallsBackForOldPeers(t *testing.T) {
	src := shardTransport(t, newTestMux(t))
	_, addr := startOldNode(t)
	var resp raft.AppendEntriesResponse
	if err := src.AppendEntries("old", addr, &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 8}, &resp); err != nil {
		t.Fatalf("AppendEntries to an old peer: %v", err)
	}
	if !resp.Success || resp.LastLog != 8 {
		t.Fatalf("answer: %+v", resp)
	}
	p, err := src.AppendEntriesPipeline("old", addr)
	if err != nil {
		t.Fatalf("pipeline to an old peer: %v", err)
	}
	defer p.Close()
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 9}, new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	if f := <-p.Consumer(); f.Error() != nil || f.Response().LastLog != 9 {
		t.Fatalf("pipelined answer from an old peer: %v %+v", f.Error(), f.Response())
	}
}

// chunkReader hands out at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// TestReadFrameGrowsWithWhatArrives: a frame's buffer grows with the bytes
// that arrive, not with the length its header claims (anyone who reaches
// the port can send a header), and a frame that arrives in pieces is read
// whole.
func TestReadFrameGrowsWithWhatArrives(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1<<30)
	in := append(hdr[:], make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := readFrame(bufio.NewReader(bytes.NewReader(in)), nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame cut short: %v", err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("a 1 GiB header followed by 100 bytes allocated %d bytes", d)
	}

	body := make([]byte, 300_000)
	rand.New(rand.NewSource(5)).Read(body)
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)))
	got, err := readFrame(bufio.NewReader(chunkReader{bytes.NewReader(append(hdr[:], body...)), 1000}), nil)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("a frame in 1,000-byte pieces: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, body))
	}
}

// TestAppendTransportSendsLargeRequestsAround: a request too large for a
// frame goes through NetworkTransport, whole, and a pipeline refuses it
// (Raft then sends it with AppendEntries).
func TestAppendTransportSendsLargeRequestsAround(t *testing.T) {
	defer func(n int) { appendMaxFrame = n }(appendMaxFrame)
	appendMaxFrame = 1 << 20
	src, dst, addr := transportPair(t)
	big := &raft.AppendEntriesRequest{Term: 4, PrevLogEntry: 1, Entries: []*raft.Log{
		{Index: 2, Term: 4, Type: raft.LogCommand, Data: bytes.Repeat([]byte("x"), 700<<10)},
		{Index: 3, Term: 4, Type: raft.LogCommand, Data: bytes.Repeat([]byte("y"), 700<<10)},
	}}
	got := make(chan *raft.AppendEntriesRequest, 1)
	go func() {
		rpc := <-dst.Consumer()
		req := rpc.Command.(*raft.AppendEntriesRequest)
		got <- req
		rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: 3, Success: true}, nil)
	}()
	var resp raft.AppendEntriesResponse
	if err := src.AppendEntries("b", addr, big, &resp); err != nil || !resp.Success || resp.LastLog != 3 {
		t.Fatalf("a large AppendEntries: %+v %v", resp, err)
	}
	r := <-got
	if len(r.Entries) != 2 || !bytes.Equal(r.Entries[0].Data, big.Entries[0].Data) || !bytes.Equal(r.Entries[1].Data, big.Entries[1].Data) {
		t.Fatalf("the follower got %d entries, not the ones sent", len(r.Entries))
	}
	p, err := src.AppendEntriesPipeline("b", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.AppendEntries(big, new(raft.AppendEntriesResponse)); err == nil {
		t.Fatal("a pipeline took a request too large for a frame")
	}
}

// TestAppendTransportClosedShardSaysSo: once a shard's transport is closed,
// a connection to it is told the shard is not open, every time, rather than
// left in a queue nobody reads until the dialer times out.
func TestAppendTransportClosedShardSaysSo(t *testing.T) {
	src, dst, addr := transportPair(t)
	dst.(raft.WithClose).Close()
	for i := range 20 {
		var resp raft.AppendEntriesResponse
		err := src.AppendEntries("b", addr, &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1}, &resp)
		if err == nil || !strings.Contains(err.Error(), "no shard 5 open") {
			t.Fatalf("attempt %d on a closed shard: %v", i, err)
		}
	}
}
