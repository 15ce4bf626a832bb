//go:build !linux

package rpc

import "net"

// connWriter is c.Write where raw calls are not used.
type connWriter struct{ c net.Conn }

func newConnWriter(c net.Conn) *connWriter { return &connWriter{c: c} }

func (w *connWriter) Write(b []byte) (int, error) { return w.c.Write(b) }
