package rpc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// appendTransport is a shard's Raft transport: AppendEntries (replication
// and heartbeats, nearly all of Raft's traffic) on connections of its own
// with a binary encoding written for them, and every other RPC (votes,
// snapshots, TimeoutNow) through the NetworkTransport it wraps.
//
// Under duroctl bench put, NetworkTransport's msgpack encoding, done by
// reflection for every entry, took about 8% of a node's CPU; this encoding
// takes a fraction of that. A pipeline here also hands Raft its answers
// without the extra goroutine raftTransport puts behind NetworkTransport's
// to keep it from wedging (see pipeline.go).
//
// A peer that does not speak it (an older node: its mux hands the
// connection to gRPC, which answers with HTTP/2, not the greeting) gets
// AppendEntries through NetworkTransport instead, retried here after
// appendFallbackFor.
type appendTransport struct {
	raftTransport // votes, snapshots, TimeoutNow; AppendEntries to a peer without this
	layer         *streamLayer
	timeout       time.Duration

	consumer chan raft.RPC
	shutdown chan struct{}
	once     sync.Once

	hbMu sync.Mutex
	hb   func(raft.RPC)

	mu       sync.Mutex // guards pool, fallback, conns, closed
	pool     map[raft.ServerAddress][]*appendConn
	fallback map[raft.ServerAddress]time.Time // peers without it, until
	conns    map[net.Conn]struct{}            // every open connection
	closed   bool
	wg       sync.WaitGroup
}

const (
	// A node greets an append connection with appendMagic and
	// appendGreeting, or with appendMagic and appendUnknownShard (then
	// closes it) when it has no such shard open. An older node hands the
	// connection to gRPC, which sends an HTTP/2 SETTINGS frame first.
	appendGreeting     = 0x01
	appendUnknownShard = 0x00
	// appendFrameChunk is the buffer a frame starts with; it doubles as
	// the frame's bytes arrive.
	appendFrameChunk = 64 << 10
	// appendMaxEntries bounds the entries of one request (Raft sends at
	// most MaxAppendEntries, which duro's config caps at 1,024).
	appendMaxEntries = 1 << 16
	// appendMaxPool is how many idle connections per peer are kept for
	// AppendEntries outside a pipeline (heartbeats, catching up).
	appendMaxPool = 4
	// appendInFlight bounds a pipeline's requests sent and not yet
	// answered (NetworkTransport's bound is 128), and is the room for
	// answers Raft has not taken yet before they go to a backlog.
	appendInFlight = 256
	// appendFallbackFor is how long a peer that did not greet is sent
	// AppendEntries through NetworkTransport before it is tried again.
	appendFallbackFor = 30 * time.Second
)

// appendMaxFrame bounds a frame. A request that would be larger (many
// large entries, when a follower catches up) goes through NetworkTransport
// instead. A variable for tests.
var appendMaxFrame = 1 << 30

var errAppendNotSpoken = errors.New("rpc: peer does not speak the append transport")

func greeting(status byte) []byte { return append(append([]byte{}, appendMagic...), status) }

func newAppendTransport(inner raftTransport, layer *streamLayer, timeout time.Duration) *appendTransport {
	t := &appendTransport{
		raftTransport: inner,
		layer:         layer,
		timeout:       timeout,
		consumer:      make(chan raft.RPC),
		shutdown:      make(chan struct{}),
		pool:          map[raft.ServerAddress][]*appendConn{},
		fallback:      map[raft.ServerAddress]time.Time{},
		conns:         map[net.Conn]struct{}{},
	}
	t.wg.Add(2)
	go t.forward()
	go t.accept()
	return t
}

// forward hands Raft the RPCs NetworkTransport received.
func (t *appendTransport) forward() {
	defer t.wg.Done()
	in := t.raftTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			select {
			case t.consumer <- rpc:
			case <-t.shutdown:
				return
			}
		case <-t.shutdown:
			return
		}
	}
}

func (t *appendTransport) accept() {
	defer t.wg.Done()
	for {
		select {
		case c := <-t.layer.appendCh:
			if !t.track(c) {
				c.Close()
				continue
			}
			t.wg.Add(1)
			go t.serve(c)
		case <-t.shutdown:
			return
		}
	}
}

// track registers an open connection so Close can close it; false once
// the transport is closed.
func (t *appendTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *appendTransport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

// serve answers the AppendEntries requests of one connection, in order.
func (t *appendTransport) serve(c net.Conn) {
	defer t.wg.Done()
	defer t.untrack(c)
	c.SetWriteDeadline(time.Now().Add(t.timeout))
	if _, err := c.Write(greeting(appendGreeting)); err != nil {
		return
	}
	r := bufio.NewReaderSize(c, 64<<10)
	w := newConnWriter(c)
	var out []byte
	respCh := make(chan raft.RPCResponse, 1)
	bodyDeadline := func() { c.SetReadDeadline(time.Now().Add(t.timeout)) }
	for {
		c.SetReadDeadline(time.Time{}) // a connection may idle between requests
		frame, err := readFrame(r, bodyDeadline)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.layer.mux.log.Debug("raft append connection ended", "shard", t.layer.shard, "remote", c.RemoteAddr(), "err", err)
			}
			return
		}
		req := new(raft.AppendEntriesRequest)
		if err := decodeAppendRequest(frame, req); err != nil {
			t.layer.mux.log.Warn("bad raft append request", "shard", t.layer.shard, "remote", c.RemoteAddr(), "err", err)
			return
		}
		rpc := raft.RPC{Command: req, RespChan: respCh}
		var hb func(raft.RPC)
		if isHeartbeat(req) {
			hb = t.heartbeatHandler()
		}
		if hb != nil {
			hb(rpc)
		} else {
			select {
			case t.consumer <- rpc:
			case <-t.shutdown:
				return
			}
		}
		var resp raft.RPCResponse
		select {
		case resp = <-respCh:
		case <-t.shutdown:
			return
		}
		ar, _ := resp.Response.(*raft.AppendEntriesResponse)
		if ar == nil {
			ar = new(raft.AppendEntriesResponse)
		}
		errText := ""
		if resp.Error != nil {
			errText = resp.Error.Error()
		}
		out = encodeAppendResponse(out[:0], errText, ar)
		c.SetWriteDeadline(time.Now().Add(t.timeout))
		if _, err := w.Write(out); err != nil {
			return
		}
	}
}

func (t *appendTransport) heartbeatHandler() func(raft.RPC) {
	t.hbMu.Lock()
	defer t.hbMu.Unlock()
	return t.hb
}

// isHeartbeat is NetworkTransport's test: Raft's heartbeats carry only the
// term and the leader, and are answered without waiting for its main loop.
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leader := req.RPCHeader.Addr
	if len(leader) == 0 {
		leader = req.Leader
	}
	return req.Term != 0 && leader != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// appendConn is a connection to a peer for AppendEntries requests.
type appendConn struct {
	c      net.Conn
	w      *connWriter // writes to c
	r      *bufio.Reader
	buf    []byte
	target raft.ServerAddress
}

// dial opens a connection to target. When the peer answers without the
// greeting it notes the peer for NetworkTransport and returns
// errAppendNotSpoken.
func (t *appendTransport) dial(target raft.ServerAddress) (*appendConn, error) {
	c, err := t.layer.dial(target, t.timeout, appendMagic)
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(t.timeout))
	var g [5]byte
	n, err := io.ReadFull(c, g[:])
	if err != nil || !bytes.Equal(g[:4], appendMagic) || g[4] != appendGreeting {
		c.Close()
		switch {
		case n >= 4 && !bytes.Equal(g[:4], appendMagic),
			errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			// Something else answered (an older node's gRPC: HTTP/2
			// starts with a SETTINGS frame), or the connection closed
			// without a greeting.
			t.noteFallback(target)
			return nil, errAppendNotSpoken
		case err == nil && g[4] == appendUnknownShard:
			return nil, fmt.Errorf("rpc: %s has no shard %d open", target, t.layer.shard)
		case err == nil:
			return nil, fmt.Errorf("rpc: %s greeted with status %d", target, g[4])
		}
		return nil, err
	}
	c.SetReadDeadline(time.Time{})
	if !t.track(c) {
		c.Close()
		return nil, raft.ErrTransportShutdown
	}
	return &appendConn{c: c, w: newConnWriter(c), r: bufio.NewReaderSize(c, 16<<10), target: target}, nil
}

// useFallback reports whether target is sent AppendEntries through
// NetworkTransport for now.
func (t *appendTransport) useFallback(target raft.ServerAddress) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	until, ok := t.fallback[target]
	if ok && time.Now().After(until) {
		delete(t.fallback, target)
		return false
	}
	return ok
}

func (t *appendTransport) noteFallback(target raft.ServerAddress) {
	t.mu.Lock()
	t.fallback[target] = time.Now().Add(appendFallbackFor)
	t.mu.Unlock()
	t.layer.mux.log.Warn("raft peer does not speak the append transport; using NetworkTransport for it", "shard", t.layer.shard, "peer", target)
}

func (t *appendTransport) getConn(target raft.ServerAddress) (*appendConn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, raft.ErrTransportShutdown
	}
	for conns := t.pool[target]; len(conns) > 0; conns = t.pool[target] {
		ac := conns[len(conns)-1]
		t.pool[target] = conns[:len(conns)-1]
		if ac.r.Buffered() == 0 && peek(ac.c) == connEmpty {
			t.mu.Unlock()
			return ac, nil
		}
		// The peer closed it while it sat here (see stale.go), or it
		// holds bytes no request asked for.
		delete(t.conns, ac.c)
		ac.c.Close()
	}
	t.mu.Unlock()
	return t.dial(target)
}

func (t *appendTransport) putConn(ac *appendConn) {
	t.mu.Lock()
	if !t.closed && len(t.pool[ac.target]) < appendMaxPool {
		t.pool[ac.target] = append(t.pool[ac.target], ac)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.untrack(ac.c)
}

// AppendEntries sends one request and waits for its answer.
func (t *appendTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if t.useFallback(target) || tooLarge(args) {
		return t.raftTransport.AppendEntries(id, target, args, resp)
	}
	ac, err := t.getConn(target)
	if errors.Is(err, errAppendNotSpoken) {
		return t.raftTransport.AppendEntries(id, target, args, resp)
	}
	if err != nil {
		return err
	}
	ac.c.SetDeadline(time.Now().Add(t.timeout))
	ac.buf = encodeAppendRequest(ac.buf[:0], args)
	if _, err := ac.w.Write(ac.buf); err != nil {
		t.untrack(ac.c)
		return err
	}
	frame, err := readFrame(ac.r, nil)
	if err != nil {
		t.untrack(ac.c)
		return err
	}
	errText, err := decodeAppendResponse(frame, resp)
	if err != nil {
		t.untrack(ac.c)
		return err
	}
	ac.c.SetDeadline(time.Time{})
	t.putConn(ac)
	if errText != "" {
		return errors.New(errText)
	}
	return nil
}

// AppendEntriesPipeline opens a connection on which requests are sent
// without waiting for the answers to earlier ones.
func (t *appendTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if t.useFallback(target) {
		return t.raftTransport.AppendEntriesPipeline(id, target)
	}
	ac, err := t.dial(target)
	if errors.Is(err, errAppendNotSpoken) {
		return t.raftTransport.AppendEntriesPipeline(id, target)
	}
	if err != nil {
		return nil, err
	}
	p := &appendPipeline{t: t, ac: ac, out: make(chan raft.AppendFuture, appendInFlight), done: make(chan struct{}), sent: make(chan *appendFuture, appendInFlight)}
	go p.decode()
	return p, nil
}

func (t *appendTransport) Consumer() <-chan raft.RPC { return t.consumer }

func (t *appendTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.hbMu.Lock()
	t.hb = cb
	t.hbMu.Unlock()
	t.raftTransport.SetHeartbeatHandler(cb)
}

// Close stops the transport, its connections and NetworkTransport.
func (t *appendTransport) Close() error {
	t.once.Do(func() {
		close(t.shutdown)
		t.mu.Lock()
		t.closed = true
		conns := t.conns
		t.conns = map[net.Conn]struct{}{}
		t.pool = map[raft.ServerAddress][]*appendConn{}
		t.mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	err := t.raftTransport.Close()
	t.wg.Wait()
	// Connections the mux handed over that accept never took.
	for {
		select {
		case c := <-t.layer.appendCh:
			c.Close()
		default:
			return err
		}
	}
}

// appendPipeline sends requests on one connection and reads the answers, in
// order, on its own goroutine, which hands each to Raft on out.
//
// That goroutine never blocks on out. Raft stops taking answers as soon as
// one fails (a follower that rejects, restarts or shuts down) or its
// leadership ends, while its sender may still be sending; an answer that
// finds out full goes to a backlog, which a goroutine started for the
// purpose moves to out in order. Without that, the sends would block for
// good once the answers filled every buffer (see pipeline.go).
type appendPipeline struct {
	t    *appendTransport
	ac   *appendConn
	out  chan raft.AppendFuture
	sent chan *appendFuture // written, not yet being answered, in order
	done chan struct{}
	once sync.Once

	mu         sync.Mutex // guards err, backlog, forwarding
	err        error      // the first failure: every later request fails
	backlog    []*appendFuture
	forwarding bool
}

type appendFuture struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
}

func (f *appendFuture) Error() error                          { return f.err }
func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

// AppendEntries writes a request and returns at once; it blocks only while
// appendInFlight requests wait for their answers (the follower is behind).
func (p *appendPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if tooLarge(args) {
		// Raft ends the pipeline and sends it with AppendEntries, which
		// takes NetworkTransport.
		return nil, errTooLarge
	}
	p.mu.Lock()
	err := p.err
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	f := &appendFuture{start: time.Now(), req: args, resp: resp}
	p.ac.buf = encodeAppendRequest(p.ac.buf[:0], args)
	p.ac.c.SetWriteDeadline(time.Now().Add(p.t.timeout))
	if _, err := p.ac.w.Write(p.ac.buf); err != nil {
		p.fail(err)
		return nil, err
	}
	select {
	case p.sent <- f:
		return f, nil
	case <-p.done:
		return nil, raft.ErrPipelineShutdown
	}
}

// fail records the pipeline's first failure and closes its connection, so
// the decoder stops waiting for answers.
func (p *appendPipeline) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.ac.c.Close()
}

func (p *appendPipeline) decode() {
	defer p.t.untrack(p.ac.c)
	for {
		var f *appendFuture
		select {
		case f = <-p.sent:
		case <-p.done:
			return
		}
		p.ac.c.SetReadDeadline(time.Now().Add(p.t.timeout))
		frame, err := readFrame(p.ac.r, nil)
		var errText string
		if err == nil {
			errText, err = decodeAppendResponse(frame, f.resp)
		}
		if err == nil && errText != "" {
			err = errors.New(errText)
		}
		if err != nil {
			p.fail(err)
			f.err = err
		}
		p.deliver(f)
		if err != nil {
			// What was sent after it was cut off with the connection.
			for {
				select {
				case f := <-p.sent:
					f.err = err
					p.deliver(f)
					continue
				default:
				}
				return
			}
		}
	}
}

// deliver hands f to out, or to the backlog if out is full or the backlog
// is not empty (answers reach Raft in order).
func (p *appendPipeline) deliver(f *appendFuture) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.backlog) == 0 {
		select {
		case p.out <- f:
			return
		default:
		}
	}
	p.backlog = append(p.backlog, f)
	if !p.forwarding {
		p.forwarding = true
		go p.forward()
	}
}

// forward moves the backlog to out, each answer staying in the backlog
// until it is on out, so that deliver queues behind it.
func (p *appendPipeline) forward() {
	for {
		p.mu.Lock()
		if len(p.backlog) == 0 {
			p.backlog = nil
			p.forwarding = false
			p.mu.Unlock()
			return
		}
		f := p.backlog[0]
		p.mu.Unlock()
		select {
		case p.out <- f:
		case <-p.done:
			return
		}
		p.mu.Lock()
		p.backlog[0] = nil
		p.backlog = p.backlog[1:]
		p.mu.Unlock()
	}
}

func (p *appendPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

func (p *appendPipeline) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.fail(raft.ErrPipelineShutdown)
	})
	return nil
}

var errTooLarge = errors.New("rpc: AppendEntries request too large for a frame")

// tooLarge reports whether req might not fit in a frame, or has more
// entries than a frame may carry.
func tooLarge(req *raft.AppendEntriesRequest) bool {
	if len(req.Entries) > appendMaxEntries {
		return true
	}
	size := 64 + len(req.ID) + len(req.Addr) + len(req.Leader)
	for _, e := range req.Entries {
		size += 48 + len(e.Data) + len(e.Extensions)
	}
	return size > appendMaxFrame
}

// Frames: a 4-byte big-endian length, then that many bytes.

// readFrame reads one frame. A fresh buffer per frame: the entries decoded
// from it keep slices of it, and Raft keeps the entries. The buffer grows
// with what arrives rather than with what the header claims, so a header
// alone (this port takes connections from anyone who can reach it) costs
// nothing. body, if not nil, runs between the header and the body (to set
// a deadline for the body).
func readFrame(r *bufio.Reader, body func()) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n > appendMaxFrame {
		return nil, fmt.Errorf("rpc: frame of %d bytes", n)
	}
	if body != nil {
		body()
	}
	b := make([]byte, 0, min(n, appendFrameChunk))
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(n-len(b), len(b)))
		}
		m, err := io.ReadFull(r, b[len(b):min(n, cap(b))])
		b = b[:len(b)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}

func beginFrame(b []byte) ([]byte, int) {
	return append(b, 0, 0, 0, 0), len(b)
}

func endFrame(b []byte, at int) []byte {
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// encodeAppendRequest appends req as a frame to b. Every field of
// AppendEntriesRequest, its RPCHeader and each Log is written
// (TestAppendCodecCoversEveryField fails when hashicorp/raft adds one).
func encodeAppendRequest(b []byte, req *raft.AppendEntriesRequest) []byte {
	b, at := beginFrame(b)
	b = binary.AppendUvarint(b, uint64(req.ProtocolVersion))
	b = appendBytes(b, req.ID)
	b = appendBytes(b, req.Addr)
	b = binary.AppendUvarint(b, req.Term)
	b = appendBytes(b, req.Leader)
	b = binary.AppendUvarint(b, req.PrevLogEntry)
	b = binary.AppendUvarint(b, req.PrevLogTerm)
	b = binary.AppendUvarint(b, req.LeaderCommitIndex)
	b = binary.AppendUvarint(b, uint64(len(req.Entries)))
	for _, e := range req.Entries {
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = appendBytes(b, e.Data)
		b = appendBytes(b, e.Extensions)
		if e.AppendedAt.IsZero() {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = binary.AppendVarint(b, e.AppendedAt.UnixNano())
		}
	}
	return endFrame(b, at)
}

func encodeAppendResponse(b []byte, errText string, resp *raft.AppendEntriesResponse) []byte {
	b, at := beginFrame(b)
	b = appendBytes(b, []byte(errText))
	b = binary.AppendUvarint(b, uint64(resp.ProtocolVersion))
	b = appendBytes(b, resp.ID)
	b = appendBytes(b, resp.Addr)
	b = binary.AppendUvarint(b, resp.Term)
	b = binary.AppendUvarint(b, resp.LastLog)
	var flags byte
	if resp.Success {
		flags |= 1
	}
	if resp.NoRetryBackoff {
		flags |= 2
	}
	b = append(b, flags)
	return endFrame(b, at)
}

var errShortFrame = errors.New("rpc: malformed append frame")

// frameReader reads the fields of one frame; the first error sticks.
type frameReader struct {
	b   []byte
	err error
}

func (r *frameReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n > 1 && r.b[n-1] == 0 { // short, or longer than needed
		r.err = errShortFrame
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *frameReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 || n > 1 && r.b[n-1] == 0 {
		r.err = errShortFrame
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *frameReader) byte1() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShortFrame
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// bytes returns a slice of the frame (nil when empty), not a copy.
func (r *frameReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShortFrame
		return nil
	}
	if n == 0 {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *frameReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("rpc: %d bytes after the last field of a frame", len(r.b))
	}
	return r.err
}

func decodeAppendRequest(frame []byte, req *raft.AppendEntriesRequest) error {
	r := frameReader{b: frame}
	req.ProtocolVersion = raft.ProtocolVersion(r.uvarint())
	req.ID = r.bytes()
	req.Addr = r.bytes()
	req.Term = r.uvarint()
	req.Leader = r.bytes()
	req.PrevLogEntry = r.uvarint()
	req.PrevLogTerm = r.uvarint()
	req.LeaderCommitIndex = r.uvarint()
	n := r.uvarint()
	// Each entry takes at least 6 bytes: no count past what the frame holds.
	if r.err == nil && (n > uint64(len(r.b))/6 || n > appendMaxEntries) {
		return errShortFrame
	}
	if n > 0 {
		logs := make([]raft.Log, n)
		req.Entries = make([]*raft.Log, n)
		for i := range logs {
			e := &logs[i]
			e.Index = r.uvarint()
			e.Term = r.uvarint()
			e.Type = raft.LogType(r.byte1())
			e.Data = r.bytes()
			e.Extensions = r.bytes()
			switch r.byte1() {
			case 0:
			case 1:
				e.AppendedAt = time.Unix(0, r.varint())
			default:
				r.err = errShortFrame
			}
			req.Entries[i] = e
		}
	}
	return r.end()
}

func decodeAppendResponse(frame []byte, resp *raft.AppendEntriesResponse) (string, error) {
	r := frameReader{b: frame}
	errText := string(r.bytes())
	resp.ProtocolVersion = raft.ProtocolVersion(r.uvarint())
	resp.ID = r.bytes()
	resp.Addr = r.bytes()
	resp.Term = r.uvarint()
	resp.LastLog = r.uvarint()
	flags := r.byte1()
	if flags&^3 != 0 {
		r.err = errShortFrame
	}
	resp.Success = flags&1 != 0
	resp.NoRetryBackoff = flags&2 != 0
	return errText, r.end()
}
