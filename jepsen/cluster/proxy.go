package cluster

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Delay on Raft links comes from a user-space proxy: tc netem is not
// available on this kernel. With Config.Proxy, every node's connections to a
// peer's port are DNATed (nft, inside the node's namespace) to a listener of
// the harness on the bridge, which forwards them to the peer after the
// current delay. The peer then sees connections from the host address, so
// proxied runs must not be combined with partitions by peer address.

// proxyPort is where the proxy for node i listens on HostIP.
func proxyPort(i int) int { return 17000 + i }

// Proxy forwards to every node with an adjustable delay and jitter.
type Proxy struct {
	delay, jitter atomic.Int64 // nanoseconds
	mu            sync.Mutex   // guards lns, conns
	lns           []net.Listener
	conns         map[net.Conn]bool
	wg            sync.WaitGroup
}

// SetDelay sets the one-way delay of every proxied byte: d plus a uniform
// random jitter in [0, j), order preserved.
func (p *Proxy) SetDelay(d, j time.Duration) {
	p.delay.Store(int64(d))
	p.jitter.Store(int64(j))
}

func startProxy(nodes []*Node) (*Proxy, error) {
	p := &Proxy{conns: map[net.Conn]bool{}}
	for _, n := range nodes {
		ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", HostIP, proxyPort(n.Index)))
		if err != nil {
			p.Close()
			return nil, err
		}
		p.lns = append(p.lns, ln)
		p.wg.Add(1)
		go p.accept(ln, n.Addr)
	}
	return p, nil
}

func (p *Proxy) accept(ln net.Listener, target string) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			return
		}
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, each chunk delivered at its arrival time plus the
// delay, never before the previous chunk.
func (p *Proxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last time.Time
		for ch := range q {
			at := ch.at
			if at.Before(last) {
				at = last
			}
			last = at
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(ch.b); err != nil {
				break
			}
		}
		for range q { // drain after a write error
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			d := time.Duration(p.delay.Load())
			if j := p.jitter.Load(); j > 0 {
				d += time.Duration(rand.Int64N(j))
			}
			q <- chunk{b: append([]byte(nil), buf[:n]...), at: time.Now().Add(d)}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
	src.Close()
}

// Close stops the listeners and every proxied connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	for _, ln := range p.lns {
		ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

var _ = io.EOF

// natRules sends node i's connections to every peer's port through the
// proxy.
func natRules(i int, nodes []*Node) string {
	s := "table ip duro_nat {\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n"
	for _, n := range nodes {
		if n.Index == i {
			continue
		}
		s += fmt.Sprintf("\t\tip daddr %s tcp dport %d dnat to %s:%d\n", n.IP, Port, HostIP, proxyPort(n.Index))
	}
	return s + "\t}\n}\n"
}
