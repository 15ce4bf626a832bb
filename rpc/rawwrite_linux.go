package rpc

import (
	"net"
	"syscall"
	"unsafe"
)

// writeConn is c.Write, made with raw send(2) calls when c exposes its
// descriptor.
//
// A write on loopback TCP runs the receiver's side of the stack too, and
// here often outlasts the runtime's 20 µs patience: sysmon then hands the
// writer's P to another thread and the writer, once back, waits for a P
// behind other goroutines. Raft's messages are written on the path of every
// round. A raw call keeps the P; the socket is non-blocking, so the call
// never waits in the kernel, and a full socket buffer (EAGAIN) parks the
// goroutine on the poller as c.Write would, deadline included.
func writeConn(c net.Conn, b []byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok || len(b) == 0 {
		return c.Write(b)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c.Write(b)
	}
	done := 0
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for done < len(b) {
			n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[done])),
				uintptr(len(b)-done), syscall.MSG_NOSIGNAL, 0, 0)
			switch errno {
			case 0:
				done += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				werr = errno
				return true
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return done, &net.OpError{Op: "write", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return done, nil
}
