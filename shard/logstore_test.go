package shard

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/duro-io/duro/shard/wal"
)

// TestLogSuffixTruncationSurvivesRestart: a node that led with uncommitted
// entries and then follows a new leader truncates its log's tail ("clearing
// log suffix"); it must start again afterwards with its log intact.
// hashicorp/raft-wal v0.4.0 failed exactly this (hashicorp/raft-wal#31:
// "sealed segment has no index block" at the next start), found by
// `duroctl bench failover` killing and restarting leaders.
func TestLogSuffixTruncationSurvivesRestart(t *testing.T) {
	for _, kind := range []string{"boltdb", "wal"} {
		t.Run(kind, func(t *testing.T) { testLogSuffixTruncation(t, kind) })
	}
}

func testLogSuffixTruncation(t *testing.T, kind string) {
	dir := t.TempDir()
	stores, err := openRaftStores(dir, kind)
	if err != nil {
		t.Fatal(err)
	}
	st := stores.log
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
	if err := stores.Close(); err != nil {
		t.Fatal(err)
	}
	if stores, err = openRaftStores(dir, kind); err != nil {
		t.Fatal(err)
	}
	defer stores.Close()
	st = stores.log
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

// A data directory keeps the log store it was created with: opening it with
// the other one is refused instead of starting with an empty log.
func TestLogStoreSwitchRefused(t *testing.T) {
	for _, c := range []struct{ created, reopened string }{{"boltdb", "wal"}, {"wal", "boltdb"}} {
		dir := t.TempDir()
		st, err := openRaftStores(dir, c.created)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.log.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand}}); err != nil {
			t.Fatal(err)
		}
		st.Close()
		if st, err := openRaftStores(dir, c.reopened); err == nil {
			st.Close()
			t.Fatalf("a log written with %s was opened with %s", c.created, c.reopened)
		}
	}
}

// "auto" (the default) keeps an existing shard on the store its log is in,
// so an upgrade does not strand a raft-boltdb log, and starts a new shard on
// shard/wal.
func TestLogStoreAuto(t *testing.T) {
	for _, created := range []string{"boltdb", "wal", ""} {
		dir := t.TempDir()
		st, err := openRaftStores(dir, created)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(1); i <= 3; i++ {
			if err := st.log.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}}}); err != nil {
				t.Fatal(err)
			}
		}
		_, isWAL := st.log.(*wal.Store)
		if want := created != "boltdb"; isWAL != want {
			t.Fatalf("created with %q: wal %v, want %v", created, isWAL, want)
		}
		st.Close()
		for _, kind := range []string{"", "auto"} {
			st, err := openRaftStores(dir, kind)
			if err != nil {
				t.Fatalf("created with %q, reopened with %q: %v", created, kind, err)
			}
			if _, w := st.log.(*wal.Store); w != isWAL {
				t.Fatalf("created with %q, reopened with %q: wal %v, want %v", created, kind, w, isWAL)
			}
			var l raft.Log
			if err := st.log.GetLog(3, &l); err != nil || l.Data[0] != 3 {
				t.Fatalf("created with %q, reopened with %q: entry 3: %v %v", created, kind, err, l.Data)
			}
			st.Close()
		}
	}
}

// The log is on disk before a term or vote is stored: a deposed leader
// answers a newer term only after storing it, so it never acknowledges
// entries it has only written.
func TestStableStoreWaitsForTheLog(t *testing.T) {
	stores, err := openRaftStores(t.TempDir(), "wal")
	if err != nil {
		t.Fatal(err)
	}
	defer stores.Close()
	release := make(chan struct{})
	wal.SetSyncHook(func(string) error { <-release; return nil })
	defer wal.SetSyncHook(nil)
	if err := stores.wal.StoreLogsAsync([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand}}); err != nil {
		t.Fatal(err)
	}
	stable := durableStable{StableStore: stores.stable, log: stores.wal}
	done := make(chan error, 1)
	go func() { done <- stable.SetUint64([]byte("CurrentTerm"), 2) }()
	select {
	case err := <-done:
		t.Fatalf("the term was stored (%v) before the log was synced", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := stores.wal.Durable(); d != 1 {
		t.Fatalf("Durable %d after storing the term, want 1", d)
	}
}

// The durability wrapper keeps the transport's pre-vote support as it was.
func TestDurableTransportKeepsPreVote(t *testing.T) {
	_, inmem := raft.NewInmemTransport("a")
	if _, ok := durableTransports(inmem, nil, &followerAcks{}, nil).(raft.WithPreVote); !ok {
		t.Fatal("pre-vote support lost")
	}
	if _, ok := durableTransports(noPreVote{inmem}, nil, &followerAcks{}, nil).(raft.WithPreVote); ok {
		t.Fatal("pre-vote support claimed for a transport without it")
	}
}

type noPreVote struct{ raft.Transport }

// A leader writes commands without waiting for the disk, and everything
// else (its first entry, the no-op that commits earlier terms; configuration
// changes) synchronously; a follower writes everything synchronously.
func TestOnlyALeadersCommandsAreAsync(t *testing.T) {
	stores, err := openRaftStores(t.TempDir(), "wal")
	if err != nil {
		t.Fatal(err)
	}
	defer stores.Close()
	defer wal.SetSyncHook(nil)
	index := uint64(0)
	for _, c := range []struct {
		leader bool
		typ    raft.LogType
		async  bool
	}{
		{true, raft.LogCommand, true},
		{true, raft.LogNoop, false},
		{true, raft.LogConfiguration, false},
		{true, raft.LogBarrier, false},
		{false, raft.LogCommand, false},
	} {
		release := make(chan struct{})
		wal.SetSyncHook(func(string) error { <-release; return nil })
		leader := c.leader
		log := durableLog{Store: stores.wal, leader: func() bool { return leader }}
		index++
		done := make(chan error, 1)
		go func(l *raft.Log) { done <- log.StoreLogs([]*raft.Log{l}) }(&raft.Log{Index: index, Term: 1, Type: c.typ})
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if !c.async {
				t.Fatalf("leader %v, %v: returned before its fdatasync", c.leader, c.typ)
			}
		case <-time.After(50 * time.Millisecond):
			if c.async {
				t.Fatalf("leader %v, %v: waited for its fdatasync", c.leader, c.typ)
			}
		}
		close(release)
		if !c.async {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		if err := stores.wal.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}
