package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type roomMsg struct {
	Index  uint64 `json:"index"`
	Author string `json:"author"`
	Text   string `json:"text"`
	At     int64  `json:"at"`
}

func post(t *testing.T, n *Node, room, author, text string) uint64 {
	t.Helper()
	var r map[string]uint64
	if st := postJSON(t, n, "/v1/ns/room/objects/"+room+"/Post", map[string]string{"author": author, "text": text}, &r); st != 200 {
		t.Fatalf("Post: status %d", st)
	}
	return r["index"]
}

func TestRoomPostReadFollow(t *testing.T) {
	n := startNode(t)
	for i, text := range []string{"one", "two", "three"} {
		if idx := post(t, n, "r1", "ann", text); idx != uint64(i) {
			t.Fatalf("Post %q: index %d, want %d", text, idx, i)
		}
	}
	var rd struct {
		Messages []roomMsg `json:"messages"`
	}
	postJSON(t, n, "/v1/ns/room/objects/r1/Read", map[string]int{"from": 1, "limit": 5}, &rd)
	if len(rd.Messages) != 2 || rd.Messages[0].Text != "two" || rd.Messages[1].Index != 2 || rd.Messages[0].Author != "ann" || rd.Messages[0].At == 0 {
		t.Fatalf("Read from 1: %+v", rd.Messages)
	}
	var raw map[string]any
	postJSON(t, n, "/v1/ns/room/objects/empty/Read", nil, &raw)
	if m, ok := raw["messages"].([]any); !ok || len(m) != 0 {
		t.Fatalf("Read of an empty room: %v, want an empty list", raw)
	}
	if st := postJSON(t, n, "/v1/ns/room/objects/r1/Post", map[string]string{"author": "x", "text": ""}, nil); st != 400 {
		t.Fatalf("empty Post: status %d, want 400", st)
	}

	// SSE: the committed messages from 1 on, then a new one as it commits.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.cfg.HTTP+"/v1/ns/room/objects/r1/follow?from=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan roomMsg, 10)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var m roomMsg
				json.Unmarshal([]byte(d), &m)
				events <- m
			}
		}
		close(events)
	}()
	next := func() roomMsg {
		t.Helper()
		select {
		case m := <-events:
			return m
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return roomMsg{}
	}
	if a, b := next(), next(); a.Text != "two" || b.Text != "three" {
		t.Fatalf("follow replayed %+v %+v", a, b)
	}
	post(t, n, "r1", "bob", "four")
	if m := next(); m.Text != "four" || m.Index != 3 || m.Author != "bob" {
		t.Fatalf("follow: new message %+v", m)
	}

	// gRPC Follow: the same stream.
	cc, err := grpc.NewClient(n.cfg.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	id := duro.IDFromName("room", "r1")
	st, err := pb.NewObjectsClient(cc).Follow(ctx, &pb.FollowRequest{Namespace: "room", ObjectId: id[:], From: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"three", "four", "five"} {
		if want == "five" {
			post(t, n, "r1", "cy", "five")
		}
		ev, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var m roomMsg
		json.Unmarshal(ev.Message, &m)
		if m.Text != want || ev.Index != m.Index {
			t.Fatalf("gRPC follow: %d %+v, want %q", ev.Index, m, want)
		}
	}
	bad, _ := pb.NewObjectsClient(cc).Follow(ctx, &pb.FollowRequest{Namespace: "room", ObjectId: []byte{1}})
	if _, err := bad.Recv(); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("follow with a malformed id: %v", err)
	}
}

func TestPassThroughAndChatPage(t *testing.T) {
	n := startNode(t)
	get := func(path string) (int, http.Header, string) {
		t.Helper()
		resp, err := http.Get("http://" + n.cfg.HTTP + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	st, h, body := get("/v1/ns/room/objects/lobby/http/")
	if st != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "EventSource") {
		t.Fatalf("chat page: %d %s %.80q", st, h.Get("Content-Type"), body)
	}
	if st, _, body := get("/chat/lobby"); st != 200 || !strings.Contains(body, "duro chat") {
		t.Fatalf("/chat/lobby: %d", st)
	}
	if st, _, _ := get("/v1/ns/room/objects/lobby/http/nope"); st != 404 {
		t.Fatalf("unknown pass-through path: %d, want the class's 404", st)
	}
	if st, _, body := get("/v1/ns/counter/objects/c/http/"); st != 404 || !strings.Contains(body, "does not serve HTTP") {
		t.Fatalf("pass-through to a class without HTTP: %d %s", st, body)
	}
	if st, _, _ := get("/v1/ns/nope/objects/c/http/"); st != 404 {
		t.Fatalf("pass-through to an unknown namespace: %d", st)
	}
}

// The gateway's status-code rules, for every error class a call can end in.
func TestGatewayStatusRules(t *testing.T) {
	for _, tc := range []struct {
		err        *duro.Error
		status     int
		retryAfter bool
	}{
		{&duro.Error{Code: duro.CodeInvalidArgument, Message: "bad"}, 400, false},
		{&duro.Error{Code: duro.CodeNotFound, Message: "unknown namespace"}, 404, false},
		{&duro.Error{Code: duro.CodeUnavailable, Retryable: true, Message: "not leader"}, 503, true},
		{&duro.Error{Code: duro.CodeDeadlineExceeded, Retryable: true, Message: "call not applied"}, 503, true},
		{&duro.Error{Code: duro.CodeResourceExhausted, Retryable: true, Overloaded: true, Message: "overloaded"}, 503, true},
		{&duro.Error{Code: duro.CodeUnavailable, Indeterminate: true, Message: "outcome unknown"}, 504, false},
		{&duro.Error{Code: duro.CodeFailedPrecondition, Message: "seq acked"}, 412, false},
		{&duro.Error{Code: duro.CodeAborted, Message: "call cycle"}, 409, false},
		{&duro.Error{Code: duro.CodeUnknown, Message: "method failed"}, 422, false},
	} {
		w := httptest.NewRecorder()
		writeErr(w, statusOf(tc.err), tc.err)
		var body gatewayError
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != tc.status || (w.Header().Get("Retry-After") != "") != tc.retryAfter ||
			body.Error != tc.err.Message || body.Retryable != tc.err.Retryable || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%+v: %d Retry-After=%q %s; want %d, Retry-After %v", tc.err, w.Code, w.Header().Get("Retry-After"), w.Body, tc.status, tc.retryAfter)
		}
	}
}

// With its peers gone, a node cannot serve a call. A gateway whose client
// does not retry gets the node's definite "not leader" and answers 503 with
// Retry-After. (The node's own gateway retries until its timeout; the
// attempt in flight then may have been applied, so it answers 504.)
func TestGatewayUnavailableWithoutQuorum(t *testing.T) {
	nodes := startNodes(t, 3)
	n := nodes[0]
	var wg sync.WaitGroup
	for _, other := range nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			other.Close(ctx)
		}()
	}
	wg.Wait()
	// Wait until the node knows it leads nothing.
	deadline := time.Now().Add(20 * time.Second)
	for n.host.Shards()[duro.ShardOf(duro.IDFromName("counter", "q"), 4)].IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("node still leads with its peers gone")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, []string{n.cfg.Listen}, client.WithoutRetries())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := httptest.NewServer(&gateway{c: c, timeout: 5 * time.Second, follow: n.follow})
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/ns/counter/objects/q/Get", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body gatewayError
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !body.Retryable {
		t.Fatalf("read without quorum: %d Retry-After=%q %+v; want 503 with Retry-After, retryable", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}
