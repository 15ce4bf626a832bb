package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

type hasher struct{ h hash.Hash }

func newHasher() *hasher { return &hasher{h: sha256.New()} }

func (h *hasher) add(p []byte) {
	h.h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(p))))
	h.h.Write(p)
}

func (h *hasher) sum() (s [32]byte) {
	copy(s[:], h.h.Sum(nil))
	return s
}
