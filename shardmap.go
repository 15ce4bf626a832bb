package duro

import "encoding/binary"

// SlotCount is the number of hash slots object IDs map to. Shards own
// contiguous slot ranges, so a shard can later be split by halving its range
// without moving objects of other shards.
const SlotCount = 4096

// SlotOf returns the slot of id.
func SlotOf(id ID) int { return int(binary.BigEndian.Uint16(id[:2]) >> 4) }

// ShardOf returns the shard (0..shards-1) that owns id in a cluster of shards
// shards.
func ShardOf(id ID, shards int) int { return SlotOf(id) * shards / SlotCount }
