package client

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestSendEndsAtDeadlineOnSilentNode: a node that accepts connections but
// never answers (blackholed, paused) must not hold calls past their
// deadlines, the first one nor those queued behind it on the same
// connection. The chaos suite's client-cut runs saw 5 s calls take 6-15 s.
func TestSendEndsAtDeadlineOnSilentNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never read, never answered
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	nc := &nodeConn{addr: ln.Addr().String(), cc: cc, sending: make(chan struct{}, 1), pending: map[uint64]chan *pb.CallResponse{}}
	defer nc.close()

	const calls = 4
	ended := make(chan error, calls)
	for i := 0; i < calls; i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			ch, err := nc.send(ctx, &pb.CallRequest{Namespace: "kv", Method: "Get"})
			if err == nil {
				select {
				case resp := <-ch:
					if resp != nil {
						err = context.Canceled // an answer from a node that never answers
					}
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
			ended <- err
		}()
	}
	for i := 0; i < calls; i++ {
		select {
		case err := <-ended:
			if err == nil {
				t.Fatal("a call to a silent node succeeded")
			}
		case <-time.After(10 * time.Second): // a hang, not a speed limit: the deadline is 300 ms
			t.Fatalf("%d of %d calls to a silent node outlived their deadline", calls-i, calls)
		}
	}
}
