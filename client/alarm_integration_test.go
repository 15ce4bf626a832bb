package client_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/client/clienttest"
)

// kv's alarm record (see cmd/durod/builtin/kv.go).
type alarmRecord struct {
	Fires       int   `json:"fires"`
	ScheduledNs int64 `json:"scheduled_ns"`
	FiredNs     int64 `json:"fired_ns"`
}

// TestAlarmFailover sets alarms on objects of every shard, then SIGKILLs the
// node leading the most shards before the alarms are due: every alarm must
// still fire (on the new leaders), at or after its time, and be cleared.
func TestAlarmFailover(t *testing.T) {
	skipShort(t)
	c := clienttest.StartCluster(t, 3, clienttest.Options{Shards: 4})
	cl := dial(t, c, client.WithCallTimeout(20*time.Second))
	ctx := c.Context(t.Context())
	ns := cl.Namespace("kv")

	leads := c.Leaders(ctx)
	var victim *clienttest.Node
	for _, nd := range c.Nodes {
		if victim == nil || leads[nd.Addr] > leads[victim.Addr] {
			victim = nd
		}
	}
	st, err := victim.Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	victimShards := map[int]bool{}
	for _, s := range st.Shard {
		if s.State == "Leader" {
			victimShards[int(s.Id)] = true
		}
	}
	const n = 24
	due := time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	onVictim := 0
	stubs := make([]*client.Stub, n)
	for i := range stubs {
		id := ns.IDFromName(fmt.Sprintf("alarm-%d", i))
		stubs[i] = ns.Get(id)
		if victimShards[duro.ShardOf(id, c.Shards)] {
			onVictim++
		}
		if err := stubs[i].Call(ctx, "SetAlarm", map[string]int64{"at_ms": due.UnixMilli()}, nil); err != nil {
			t.Fatalf("SetAlarm: %v", err)
		}
	}
	if onVictim == 0 {
		t.Fatalf("no object on the %d shards led by %s", len(victimShards), victim.ID)
	}
	if time.Now().After(due) {
		t.Fatal("setting the alarms took longer than their delay; the kill would come too late")
	}
	victim.Kill()
	t.Logf("killed %s (leader of %d shards, %d of %d alarms) %v before the alarms were due", victim.ID, len(victimShards), onVictim, n, time.Until(due).Round(time.Millisecond))

	for i, s := range stubs {
		var rec alarmRecord
		deadline := time.Now().Add(30 * time.Second)
		for {
			var g struct {
				Value *string `json:"value"`
			}
			if err := s.Call(ctx, "Get", keyArg{Key: "_alarm"}, &g); err == nil && g.Value != nil {
				if err := json.Unmarshal([]byte(*g.Value), &rec); err != nil {
					t.Fatal(err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alarm %d never fired", i)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if rec.Fires < 1 || rec.ScheduledNs != due.UnixNano() || rec.FiredNs < rec.ScheduledNs {
			t.Fatalf("alarm %d: record %+v, scheduled for %d: want a fire at or after its time", i, rec, due.UnixNano())
		}
		var a struct {
			Set bool `json:"set"`
		}
		if err := s.Call(ctx, "GetAlarm", nil, &a); err != nil || a.Set {
			t.Fatalf("alarm %d still set after firing (%v)", i, err)
		}
	}
	// The killed node comes back and agrees with the others, alarms included.
	victim.Start()
	c.WaitConverged(ctx)
}
