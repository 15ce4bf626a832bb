package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/cmd/durod/builtin"
	"github.com/duro-io/duro/config"
	"github.com/duro-io/duro/rpc"
	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startNode(t *testing.T) *Node {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen, cfg.HTTP = freeAddr(t), freeAddr(t)
	cfg.Peers = []config.Peer{{ID: cfg.NodeID, Addr: cfg.Listen}}
	cfg.Shards = 4
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := Start(context.Background(), cfg, duro.NewRegistry(builtin.Classes()...), log, rpc.Failpoints{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func TestGateway(t *testing.T) {
	n := startNode(t)
	base := "http://" + n.cfg.HTTP
	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	tests := []struct {
		name, path, body string
		status           int
		want             string // substring of the body
	}{
		{"increment", "/v1/ns/counter/objects/a/Increment", "2", 200, "2"},
		{"increment again", "/v1/ns/counter/objects/a/Increment", "3", 200, "5"},
		{"kv put", "/v1/ns/kv/objects/x/Put", `{"key":"k","value":"v"}`, 200, "{}"},
		{"kv get", "/v1/ns/kv/objects/x/Get", `{"key":"k"}`, 200, `"value":"v"`},
		{"malformed json", "/v1/ns/kv/objects/x/Put", `{bad`, 400, "not valid JSON"},
		{"bad argument type", "/v1/ns/counter/objects/a/Increment", `"x"`, 400, "invalid argument"},
		{"unknown namespace", "/v1/ns/nope/objects/a/Get", ``, 404, "unknown namespace"},
		{"unknown method", "/v1/ns/counter/objects/a/Nope", ``, 404, "no method"},
		{"malformed id", "/v1/ns/counter/objects/id:zz/Get", ``, 400, "hex characters"},
		{"bad route", "/v1/ns/counter/a/Get", ``, 404, "no such route"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(tc.path, tc.body)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("POST %s %s = %d %s, want %d containing %q", tc.path, tc.body, status, body, tc.status, tc.want)
			}
		})
	}
	// The counter moved only by the successful calls.
	if status, body := post("/v1/ns/counter/objects/a/Get", ""); status != 200 || body != "5" {
		t.Fatalf("counter = %d %s, want 5", status, body)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		// readyz turns 200 once every shard has elected a leader.
		var status int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			resp, err := http.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if status = resp.StatusCode; status == 200 {
				break
			}
		}
		if status != 200 {
			t.Errorf("GET %s = %d", p, status)
		}
	}
}

func TestShardCountFixedAtCreation(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Shards = 16
	if n, err := checkClusterFile(cfg); err != nil || n != 16 {
		t.Fatalf("first start with 16 shards: %d, %v", n, err)
	}
	cfg.Shards = 8
	_, err := checkClusterFile(cfg)
	if err == nil || !strings.Contains(err.Error(), "shards") {
		t.Fatalf("reopening with another shard count: err = %v, want an error naming shards", err)
	}
	// Started again without --shards, a node keeps the recorded count.
	cfg.Shards = 0
	if n, err := checkClusterFile(cfg); err != nil || n != 16 {
		t.Fatalf("restart without a shard count: %d, %v; want the recorded 16", n, err)
	}
}

func TestShardCountDefaultsToOnePerNode(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Peers = []config.Peer{{ID: "n1", Addr: "127.0.0.1:1"}, {ID: "n2", Addr: "127.0.0.1:2"}, {ID: "n3", Addr: "127.0.0.1:3"}}
	if n, err := checkClusterFile(cfg); err != nil || n != 3 {
		t.Fatalf("new 3-node cluster: %d shards, %v; want 3", n, err)
	}
	cfg.Peers = cfg.Peers[:1]
	if n, err := checkClusterFile(cfg); err != nil || n != 3 {
		t.Fatalf("restart: %d shards, %v; want the recorded 3", n, err)
	}
}

// TestCloseWithOpenClientStreams: other nodes' SDKs keep call streams open
// for as long as they live; closing a node must not wait on them (it waited
// for the caller's whole shutdown deadline, forever without one).
func TestCloseWithOpenClientStreams(t *testing.T) {
	n := startNode(t)
	c, err := client.Dial(context.Background(), []string{n.cfg.Listen})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := c.Namespace("counter")
	var v int64
	if err := ns.Get(ns.IDFromName("x")).Call(context.Background(), "Increment", 1, &v); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- n.Close(context.Background()) }()
	select {
	case <-closed:
	case <-time.After(time.Minute): // a hang, not a speed limit
		t.Fatal("Close waited on a client's open call stream")
	}
}

// TestCloseWithOpenFollower: a browser following a room over SSE keeps its
// request open; closing the node must end it rather than wait for it (the
// HTTP server's graceful shutdown waited the whole deadline, and without
// one, forever).
func TestCloseWithOpenFollower(t *testing.T) {
	n := startNode(t)
	if st := postJSON(t, n, "/v1/ns/room/objects/r/Post", map[string]string{"author": "a", "text": "hi"}, nil); st != 200 {
		t.Fatalf("Post: status %d", st)
	}
	resp, err := http.Get("http://" + n.cfg.HTTP + "/v1/ns/room/objects/r/follow?from=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "data: ") {
	}
	closed := make(chan error, 1)
	go func() { closed <- n.Close(context.Background()) }()
	select {
	case <-closed:
	case <-time.After(time.Minute): // a hang, not a speed limit
		t.Fatal("Close waited on an open follow request")
	}
	for sc.Scan() { // the stream ends, so an EventSource reconnects elsewhere
	}
}

// TestStalledStreamClientDoesNotStallObject: a client that sends calls on a
// CallStream and never reads the replies must not hold up the object. A
// retried call already applied is answered from the session table on the
// object's turn goroutine, which blocked on the stream's flow control.
func TestStalledStreamClientDoesNotStallObject(t *testing.T) {
	n := startNode(t)
	// Small fixed flow-control windows (no BDP growth): the stream stalls
	// after about 64 KiB of unread replies.
	cc, err := grpc.NewClient(n.cfg.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	objs := pb.NewObjectsClient(cc)
	id := duro.IDFromName("kv", "stalled")
	session := make([]byte, 16)
	session[0] = 0x5e
	put := &pb.CallRequest{Namespace: "kv", ObjectId: id[:], Method: "Put",
		Arg: []byte(`{"key":"k","value":"v"}`), ClientId: session, Seq: 1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a speed limit
	defer cancel()
	for { // until the shard has a leader
		r, err := objs.Call(ctx, put)
		if err != nil {
			t.Fatal(err)
		}
		if r.Error == nil {
			break
		}
		if !r.Error.Retryable {
			t.Fatalf("Put: %v", r.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stream, err := objs.CallStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Retries of the applied Put, far more replies than the window holds,
	// never read.
	for i := range 20000 {
		put.Tag = uint64(i)
		if err := stream.Send(put); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.Dial(ctx, []string{n.cfg.Listen})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var v struct {
		Value string `json:"value"`
	}
	ns := c.Namespace("kv")
	if err := ns.Get(id).Call(ctx, "Get", map[string]string{"key": "k"}, &v); err != nil || v.Value != "v" {
		t.Fatalf("Get from another client while one stalls its stream: %v (%q)", err, v.Value)
	}
}

func TestClockControlOnlyInTestMode(t *testing.T) {
	get := func(t *testing.T, n *Node, method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+n.cfg.HTTP+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	t.Run("default", func(t *testing.T) {
		n := startNode(t)
		if code, _ := get(t, n, "POST", "/debug/clock?offset=5s"); code != http.StatusNotFound {
			t.Fatalf("clock endpoint served without clock-control: %d", code)
		}
	})
	t.Run("clock-control", func(t *testing.T) {
		fp := failpointsFromEnv(func(k string) (string, bool) {
			return "drop-reply-after-commit=0,clock-control=1", k == "DURO_FAILPOINTS"
		})
		if !fp.ClockControl {
			t.Fatal("clock-control=1 not parsed")
		}
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.Listen, cfg.HTTP = freeAddr(t), freeAddr(t)
		cfg.Peers = []config.Peer{{ID: cfg.NodeID, Addr: cfg.Listen}}
		cfg.Shards = 1
		n, err := Start(context.Background(), cfg, duro.NewRegistry(builtin.Classes()...), slog.New(slog.NewTextHandler(io.Discard, nil)), fp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close(context.Background()) })
		if code, body := get(t, n, "POST", "/debug/clock?offset=-90s"); code != 200 || body != "-1m30s" {
			t.Fatalf("set offset: %d %q", code, body)
		}
		if d := time.Until(n.clock.Now()); d > -80*time.Second || d < -100*time.Second {
			t.Fatalf("clock offset by %v, want about -90s", d)
		}
		if code, _ := get(t, n, "POST", "/debug/clock?offset=soon"); code != http.StatusBadRequest {
			t.Fatalf("bad offset accepted: %d", code)
		}
	})
}
