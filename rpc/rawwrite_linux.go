package rpc

import (
	"net"
	"syscall"
	"unsafe"
)

// connWriter writes to one connection with raw send(2) calls when the
// connection exposes its descriptor, and with c.Write otherwise. One
// goroutine writes at a time, as with the connection's own buffers.
//
// A write on loopback TCP runs the receiver's side of the stack too, and
// here often outlasts the runtime's 20 µs patience: sysmon then hands the
// writer's P to another thread and the writer, once back, waits for a P
// behind other goroutines. Raft's messages are written on the path of every
// round. A raw call keeps the P; the socket is non-blocking, so the call
// never waits in the kernel, and a full socket buffer (EAGAIN) parks the
// goroutine on the poller as c.Write would, deadline included. MSG_NOSIGNAL
// keeps a closed peer from raising SIGPIPE.
type connWriter struct {
	c  net.Conn
	rc syscall.RawConn    // nil: c.Write
	fn func(uintptr) bool // w.send, made once so a write allocates nothing

	// The write in progress, for send.
	b    []byte
	done int
	err  error
}

func newConnWriter(c net.Conn) *connWriter {
	w := &connWriter{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc, w.fn = rc, w.send
		}
	}
	return w
}

func (w *connWriter) Write(b []byte) (int, error) {
	if w.rc == nil || len(b) == 0 {
		return w.c.Write(b)
	}
	w.b, w.done, w.err = b, 0, nil
	err := w.rc.Write(w.fn)
	n := w.done
	if err == nil {
		err = w.err
	}
	w.b, w.err = nil, nil
	if err != nil {
		return n, &net.OpError{Op: "write", Net: w.c.LocalAddr().Network(), Source: w.c.LocalAddr(), Addr: w.c.RemoteAddr(), Err: err}
	}
	return n, nil
}

// send writes what is left of w.b; false asks the poller to wait until the
// socket takes more.
func (w *connWriter) send(fd uintptr) bool {
	for w.done < len(w.b) {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&w.b[w.done])),
			uintptr(len(w.b)-w.done), syscall.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case 0:
			w.done += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.err = errno
			return true
		}
	}
	return true
}
