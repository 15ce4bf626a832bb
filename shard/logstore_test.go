package shard

import (
	"testing"

	"github.com/hashicorp/raft"
)

// TestLogSuffixTruncationSurvivesRestart: a node that led with uncommitted
// entries and then follows a new leader truncates its log's tail ("clearing
// log suffix"); it must start again afterwards with its log intact.
// hashicorp/raft-wal v0.4.0 failed exactly this (hashicorp/raft-wal#31:
// "sealed segment has no index block" at the next start), found by
// `duroctl bench failover` killing and restarting leaders.
func TestLogSuffixTruncationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := openRaftStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 200; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("x")})
	}
	if err := st.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteRange(190, 200); err != nil {
		t.Fatal(err)
	}
	if err := st.StoreLogs([]*raft.Log{{Index: 190, Term: 2, Type: raft.LogCommand, Data: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = openRaftStore(dir); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := uint64(1); i <= 190; i++ {
		var l raft.Log
		if err := st.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d after restart: %v", i, err)
		}
		if want := uint64(1 + i/190); l.Term != want {
			t.Fatalf("entry %d has term %d, want %d", i, l.Term, want)
		}
	}
	if li, _ := st.LastIndex(); li != 190 {
		t.Fatalf("LastIndex %d, want 190", li)
	}
}
