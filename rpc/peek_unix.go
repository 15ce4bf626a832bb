//go:build unix

package rpc

import (
	"errors"
	"net"
	"syscall"
)

// peek reports, without waiting or consuming anything, what an idle
// connection holds: connEmpty (open, nothing to read), connData (bytes
// waiting), connClosed (the peer closed or reset it) or connUnknown (it
// could not be looked at: closed on this side, or its read deadline has
// passed). A connection that is not a socket is taken to be open. It must
// not be called while a Read on c is in progress: it would wait for that
// Read.
func peek(c net.Conn) connState {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return connEmpty
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return connUnknown
	}
	st := connClosed // EOF, or the peer reset it
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EINTR):
			st = connEmpty
		case err == nil && n > 0:
			st = connData
		}
		return true // never wait for readability
	})
	if err != nil {
		return connUnknown
	}
	return st
}
