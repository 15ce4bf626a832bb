package builtin

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/duro-io/duro"
)

// room is an ordered message log: the chat/collaboration case. Messages are
// numbered from 0 in the order they were posted; Read pages through them from
// any index (a cursor). The server's Follow stream (gRPC) and the gateway's
// .../follow (server-sent events) deliver new messages as they commit, and
// the class serves a chat page on the pass-through route
// /v1/ns/room/objects/{name}/http/.
type room struct{}

// Limits of room messages.
const (
	maxAuthorBytes = 200
	maxTextBytes   = 16 << 10
	defaultRead    = 100
	maxRead        = 1000
)

var roomCountKey = []byte("n")

func roomMsgKey(i uint64) []byte { return fmt.Appendf(nil, "m/%020d", i) }

// PostArg is the argument of Post.
type PostArg struct {
	Author string `json:"author"`
	Text   string `json:"text"`
}

// PostResult is the result of Post: the message's index.
type PostResult struct {
	Index uint64 `json:"index"`
}

// ReadArg is the argument of Read: messages from index From on, at most
// Limit (0 means 100; at most 1000).
type ReadArg struct {
	From  uint64 `json:"from"`
	Limit int    `json:"limit"`
}

// Message is one posted message; At is the post's time in unix milliseconds.
type Message struct {
	Index  uint64 `json:"index"`
	Author string `json:"author"`
	Text   string `json:"text"`
	At     int64  `json:"at"`
}

// ReadResult is the result of Read; Messages is never null.
type ReadResult struct {
	Messages []Message `json:"messages"`
}

//go:embed chat.html
var chatPage []byte

func newRoomClass() *duro.Class {
	c := duro.NewClass(RoomNamespace, func() *room { return &room{} })
	duro.Method(c, "Post", (*room).Post)
	duro.Method(c, "Read", (*room).Read)
	duro.HandleHTTP(c, (*room).ServeHTTP)
	return c
}

func roomCount(st duro.Storage) (uint64, error) {
	v, ok, err := st.Get(roomCountKey)
	if err != nil || !ok {
		return 0, err
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("room: corrupt message count %q", v)
	}
	return n, nil
}

// Post appends a message.
func (*room) Post(ctx duro.Context, a PostArg) (PostResult, error) {
	switch {
	case a.Text == "":
		return PostResult{}, invalid("room: text must not be empty")
	case len(a.Text) > maxTextBytes:
		return PostResult{}, invalid("room: text is %d bytes, the limit is %d", len(a.Text), maxTextBytes)
	case len(a.Author) > maxAuthorBytes:
		return PostResult{}, invalid("room: author is %d bytes, the limit is %d", len(a.Author), maxAuthorBytes)
	case !utf8.ValidString(a.Text) || !utf8.ValidString(a.Author):
		return PostResult{}, invalid("room: author and text must be UTF-8")
	}
	st := ctx.Storage()
	n, err := roomCount(st)
	if err != nil {
		return PostResult{}, err
	}
	b, _ := json.Marshal(Message{Index: n, Author: a.Author, Text: a.Text, At: ctx.Now().UnixMilli()})
	if err := st.Put(roomMsgKey(n), b); err != nil {
		return PostResult{}, err
	}
	return PostResult{Index: n}, st.Put(roomCountKey, strconv.AppendUint(nil, n+1, 10))
}

// Read returns messages from a.From on, in order.
func (*room) Read(ctx duro.Context, a ReadArg) (ReadResult, error) {
	if a.Limit < 0 || a.Limit > maxRead {
		return ReadResult{}, invalid("room: limit must be between 0 and %d, got %d", maxRead, a.Limit)
	}
	if a.Limit == 0 {
		a.Limit = defaultRead
	}
	kvs, err := ctx.Storage().List(duro.ListOptions{Prefix: []byte("m/"), Start: roomMsgKey(a.From), Limit: a.Limit})
	if err != nil {
		return ReadResult{}, err
	}
	out := ReadResult{Messages: make([]Message, 0, len(kvs))}
	for _, kv := range kvs {
		var m Message
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return ReadResult{}, fmt.Errorf("room: corrupt message %q: %v", kv.Key, err)
		}
		out.Messages = append(out.Messages, m)
	}
	return out, nil
}

// ServeHTTP serves the chat page.
func (*room) ServeHTTP(ctx duro.Context, w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" && r.URL.Path != "" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(chatPage)
}
