package rpc

import (
	"net"
	"sync"
	"time"
)

// Stale pooled connections.
//
// Both transports keep idle connections to each peer for the next request.
// When the peer's process dies, its kernel closes them, but nothing reads
// an idle connection, so the pool keeps them, and the next request on one
// fails (EOF, reset or broken pipe). Raft counts that failure: its
// replication to the peer backs off, doubling up to about 10 s, and a
// failed InstallSnapshot waits that long before the next attempt. Since
// AppendEntries moved to appendTransport, NetworkTransport's pool serves
// only votes, snapshots and TimeoutNow, so its connections sit idle for
// long and were stale exactly when a restarted follower needed a snapshot:
// in a 5-node chaos run, the leader's two InstallSnapshot attempts to a
// restarted node each took a connection pooled before the kill, and the
// node stayed 835 entries behind for the 20 s the run allowed.
//
// So a pooled connection is looked at (peek, which neither waits nor
// consumes) before it carries a request: appendTransport drops the ones
// the peer closed, and NetworkTransport's (redialConn) replace themselves
// with a fresh connection to the same peer.

type connState int

const (
	connEmpty   connState = iota // open, nothing to read
	connData                     // open, bytes waiting
	connClosed                   // closed or reset by the peer
	connUnknown                  // could not be looked at
)

// redialIdle is how long a NetworkTransport connection must have been
// between requests before a write looks at it first. NetworkTransport
// writes a request as one or more writes in quick succession and then
// reads the answer; a write that comes after a read and after this long
// since the last write starts a new request, so nothing of an earlier one
// is lost by moving to a new connection.
const redialIdle = 100 * time.Millisecond

// redialConn is a connection NetworkTransport dialed. When a request is
// about to start on it and the peer has closed it, it dials the peer again
// and carries on over the new connection, with the deadlines the old one
// had.
//
// It never does so on a connection that was closed on this side, nor on
// one where a write ever overlapped a read: that is a pipeline (its
// decoder reads while requests go out), whose unanswered requests would
// otherwise be answered on a connection they were not sent on, and whose
// reader a look at the connection would wait behind.
type redialConn struct {
	dial func() (net.Conn, error)

	mu        sync.Mutex
	c         net.Conn
	reading   int       // Reads in progress
	pipelined bool      // a write overlapped a read
	closed    bool      // Close was called
	readSince bool      // a read ended after the last write
	lastWrite time.Time // when the last write ended
	readDL    time.Time
	writeDL   time.Time
}

func newRedialConn(c net.Conn, dial func() (net.Conn, error)) *redialConn {
	return &redialConn{c: c, dial: dial, lastWrite: time.Now()}
}

func (r *redialConn) conn() net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

func (r *redialConn) Read(p []byte) (int, error) {
	r.mu.Lock()
	r.reading++
	c := r.c
	r.mu.Unlock()
	n, err := c.Read(p)
	r.mu.Lock()
	r.reading--
	r.readSince = true
	r.mu.Unlock()
	return n, err
}

func (r *redialConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	if r.reading > 0 {
		r.pipelined = true
	}
	// With no Read in progress (and none can start while r.mu is held),
	// peek does not wait.
	if !r.pipelined && !r.closed && r.readSince && time.Since(r.lastWrite) >= redialIdle && peek(r.c) == connClosed {
		if nc, err := r.dial(); err == nil {
			r.c.Close()
			r.c = nc
			if !r.readDL.IsZero() {
				nc.SetReadDeadline(r.readDL)
			}
			if !r.writeDL.IsZero() {
				nc.SetWriteDeadline(r.writeDL)
			}
		}
		// Should the dial fail, the write below fails on the old
		// connection, as it would have anyway.
	}
	c := r.c
	r.mu.Unlock()
	n, err := c.Write(p)
	r.mu.Lock()
	r.readSince, r.lastWrite = false, time.Now()
	r.mu.Unlock()
	return n, err
}

func (r *redialConn) Close() error {
	r.mu.Lock()
	r.closed = true
	c := r.c
	r.mu.Unlock()
	return c.Close()
}

func (r *redialConn) LocalAddr() net.Addr  { return r.conn().LocalAddr() }
func (r *redialConn) RemoteAddr() net.Addr { return r.conn().RemoteAddr() }

func (r *redialConn) SetDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readDL, r.writeDL = t, t
	return r.c.SetDeadline(t)
}

func (r *redialConn) SetReadDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readDL = t
	return r.c.SetReadDeadline(t)
}

func (r *redialConn) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeDL = t
	return r.c.SetWriteDeadline(t)
}
