package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A Raft connection starts with a magic and the shard's ID: raftMagic for
// NetworkTransport's, appendMagic for appendTransport's.
var (
	raftMagic   = []byte("DRFT")
	appendMagic = []byte("DRFA")
)

const headerLen = 8

// Dialer opens connections to peers; tests substitute one that injects faults.
type Dialer func(addr string, timeout time.Duration) (net.Conn, error)

// Mux splits one listener into the gRPC listener and per-shard Raft streams.
type Mux struct {
	ln   net.Listener
	log  *slog.Logger
	dial Dialer
	grpc *chanListener

	mu     sync.Mutex // guards layers, closed
	layers map[uint32]*streamLayer
	closed bool
	wg     sync.WaitGroup
}

// NewMux wraps ln. Serve must be called to start accepting.
func NewMux(ln net.Listener, log *slog.Logger, dial Dialer) *Mux {
	if dial == nil {
		dial = func(addr string, timeout time.Duration) (net.Conn, error) {
			return net.DialTimeout("tcp", addr, timeout)
		}
	}
	return &Mux{ln: ln, log: log, dial: dial, grpc: newChanListener(ln.Addr()), layers: map[uint32]*streamLayer{}}
}

// GRPC returns the listener the gRPC server should serve.
func (m *Mux) GRPC() net.Listener { return m.grpc }

// Addr returns the node's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Serve accepts connections until the listener is closed.
func (m *Mux) Serve() error {
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.route(conn)
		}()
	}
}

func (m *Mux) route(conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, headerLen)
	n, err := io.ReadFull(conn, hdr)
	conn.SetReadDeadline(time.Time{})
	if err != nil && n == 0 {
		conn.Close()
		return
	}
	isAppend := bytes.Equal(hdr[:4], appendMagic)
	if n == headerLen && (isAppend || bytes.Equal(hdr[:4], raftMagic)) {
		id := binary.BigEndian.Uint32(hdr[4:])
		m.mu.Lock()
		l := m.layers[id]
		m.mu.Unlock()
		delivered := false
		if l != nil {
			ch := l.ch
			if isAppend {
				ch = l.appendCh
			}
			delivered = l.deliver(ch, conn)
		}
		if !delivered {
			m.log.Debug("raft connection for a shard not open", "shard", id, "remote", conn.RemoteAddr())
			if isAppend {
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				conn.Write(greeting(appendUnknownShard))
			}
			conn.Close()
		}
		return
	}
	if !m.grpc.deliver(&prefixConn{Conn: conn, prefix: hdr[:n]}) {
		conn.Close()
	}
}

// Close stops accepting and closes every layer.
func (m *Mux) Close() error {
	m.mu.Lock()
	m.closed = true
	layers := m.layers
	m.mu.Unlock()
	err := m.ln.Close()
	m.grpc.Close()
	for _, l := range layers {
		l.Close()
	}
	return err
}

// RaftTransport returns the Raft transport of one shard on this node.
// advertise is the address peers reach this node at.
func (m *Mux) RaftTransport(shard uint32, advertise string, log hclog.Logger) (raft.Transport, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("rpc: advertise address %q: %w", advertise, err)
	}
	l := &streamLayer{mux: m, shard: shard, addr: adv, ch: make(chan net.Conn, 16), appendCh: make(chan net.Conn, 16), done: make(chan struct{})}
	m.mu.Lock()
	if _, dup := m.layers[shard]; dup {
		m.mu.Unlock()
		return nil, fmt.Errorf("rpc: shard %d already has a transport", shard)
	}
	m.layers[shard] = l
	m.mu.Unlock()
	const timeout = 10 * time.Second
	nt := raftTransport{raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  l,
		MaxPool: 4,
		Timeout: timeout,
		Logger:  log,
	})}
	return newAppendTransport(nt, l, timeout), nil
}

// streamLayer is a raft.StreamLayer over the mux for one shard; appendCh
// takes the shard's appendTransport connections.
type streamLayer struct {
	mux      *Mux
	shard    uint32
	addr     net.Addr
	ch       chan net.Conn
	appendCh chan net.Conn
	once     sync.Once
	done     chan struct{}
}

func (l *streamLayer) deliver(ch chan net.Conn, c net.Conn) bool {
	select {
	case <-l.done: // closed: no Accept will take it (the select below picks at random)
		return false
	default:
	}
	select {
	case ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamLayer) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamLayer) Addr() net.Addr { return l.addr }

// Dial opens a NetworkTransport connection, which dials again by itself
// should the peer close it while NetworkTransport keeps it idle (see
// redialConn).
func (l *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.dial(addr, timeout, raftMagic)
	if err != nil {
		return nil, err
	}
	return newRedialConn(c, func() (net.Conn, error) { return l.dial(addr, timeout, raftMagic) }), nil
}

// dial connects to the node at addr and names the shard, after magic.
func (l *streamLayer) dial(addr raft.ServerAddress, timeout time.Duration, magic []byte) (net.Conn, error) {
	c, err := l.mux.dial(string(addr), timeout)
	if err != nil {
		return nil, err
	}
	hdr := append(append([]byte{}, magic...), binary.BigEndian.AppendUint32(nil, l.shard)...)
	c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(hdr); err != nil {
		c.Close()
		return nil, err
	}
	c.SetWriteDeadline(time.Time{})
	return c, nil
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// prefixConn replays bytes already read from a connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// SyscallConn exposes the descriptor of the connection underneath.
func (c *prefixConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
