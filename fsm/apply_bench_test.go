package fsm

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/duro-io/duro"
	"github.com/hashicorp/raft"
)

// BenchmarkApplyPut applies what duroctl bench's put workload makes: one
// client's calls with sessions, each putting a 64-byte value into one of
// 1,000 objects, in batches of 8 held the way replicas hold them. It reports
// the cost per entry.
func BenchmarkApplyPut(b *testing.B) {
	m := newMachine(b)
	apply(b, m, activateLog(1, t0))
	const objects, batch = 1000, 8
	versions := make([]uint64, objects)
	value := make([]byte, 64)
	logs := make([]*raft.Log, b.N)
	for i := range logs {
		o := (i * 7919) % objects
		var id duro.ID = testID(9)
		binary.BigEndian.PutUint16(id[:], uint16(o))
		seq := uint64(i + 1)
		logs[i] = callLog(uint64(i+2), &Call{Epoch: 1, Time: t0 + int64(i), Object: id,
			BaseVersion: versions[o], Client: ClientID{1}, Seq: seq, AckedBelow: seq - min(seq, 64),
			Reply: []byte("{}"), Ops: []Op{{Kind: OpPut, Key: []byte(fmt.Sprint("k", o)), Value: value}}})
		versions[o]++
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < len(logs); i += batch {
		for _, r := range m.ApplyBatchDeferred(logs[i:min(i+batch, len(logs))]) {
			if r.(*Result).Status != Applied {
				b.Fatalf("entry %d: %+v", r.(*Result).Index, r)
			}
		}
	}
}
