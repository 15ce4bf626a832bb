//go:build !linux

package rpc

import "net"

func writeConn(c net.Conn, b []byte) (int, error) { return c.Write(b) }
