package shard

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// TestLogMovesFromBoltIntoWAL: a shard written before the WAL keeps every
// entry of its log, term and vote when it starts with the WAL, even if an
// earlier move was interrupted.
func TestLogMovesFromBoltIntoWAL(t *testing.T) {
	dir := t.TempDir()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	const first, last = 7, 1300 // compacted below 7; more than one batch
	var logs []*raft.Log
	for i := uint64(first); i <= last; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: i / 100, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry-%d", i))})
	}
	if err := bolt.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := bolt.SetUint64([]byte("CurrentTerm"), 13); err != nil {
		t.Fatal(err)
	}
	// Debris of a move cut short must not be taken for the log.
	if err := os.MkdirAll(filepath.Join(dir, "wal.moving"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wal.moving", "junk"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	w, err := openLog(filepath.Join(dir, "wal"), bolt, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		if fi, _ := w.FirstIndex(); fi != first {
			t.Fatalf("FirstIndex %d, want %d", fi, first)
		}
		if li, _ := w.LastIndex(); li != last {
			t.Fatalf("LastIndex %d, want %d", li, last)
		}
		for _, want := range logs {
			var got raft.Log
			if err := w.GetLog(want.Index, &got); err != nil {
				t.Fatalf("entry %d: %v", want.Index, err)
			}
			if got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) {
				t.Fatalf("entry %d: %+v, want %+v", want.Index, got, want)
			}
		}
	}
	check()
	if li, _ := bolt.LastIndex(); li != 0 {
		t.Fatalf("raft-boltdb still holds the log up to %d", li)
	}
	if term, _ := bolt.GetUint64([]byte("CurrentTerm")); term != 13 {
		t.Fatalf("term %d after the move", term)
	}
	if _, err := os.Stat(filepath.Join(dir, "wal.moving")); !os.IsNotExist(err) {
		t.Fatalf("scratch directory left behind: %v", err)
	}
	// Reopened, the WAL is used as it is.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w, err = openLog(filepath.Join(dir, "wal"), bolt, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	check()
}
