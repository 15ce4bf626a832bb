package duro

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
)

// IDLen is the length of an object ID in bytes.
const IDLen = 32

// ID identifies one object. It is printed as 64 lowercase hex characters.
//
// The first 24 bytes are the object's identity (a keyed hash of the name, or
// random); the last 8 are a tag binding it to its namespace, so an ID minted
// for one namespace is rejected by ParseID for another.
type ID [IDLen]byte

const bodyLen = 24

var idKey = []byte("duro object id v1")

// IDFromName returns the ID that name always maps to in namespace ns.
func IDFromName(ns, name string) ID {
	var id ID
	copy(id[:bodyLen], idMAC("name", ns, []byte(name)))
	id.seal(ns)
	return id
}

// NewUniqueID returns a random ID in namespace ns.
func NewUniqueID(ns string) ID {
	var id ID
	if _, err := rand.Read(id[:bodyLen]); err != nil {
		panic("duro: crypto/rand failed: " + err.Error())
	}
	id.seal(ns)
	return id
}

func (id *ID) seal(ns string) { copy(id[bodyLen:], tag(ns, id[:bodyLen])) }

// tagMACs keeps keyed HMACs for idMAC: Reset restores the keyed state,
// where New hashes the key again (every call checks an ID).
var tagMACs = sync.Pool{New: func() any { return hmac.New(sha256.New, idKey) }}

func tag(ns string, body []byte) []byte { return idMAC("tag", ns, body)[:IDLen-bodyLen] }

// idMAC is the HMAC of label, ns and body under idKey.
func idMAC(label, ns string, body []byte) []byte {
	m := tagMACs.Get().(hash.Hash)
	defer tagMACs.Put(m)
	m.Reset()
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(ns))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)
}

// ParseID parses the 64-character hex form of an ID of namespace ns. A
// malformed string, or an ID minted for another namespace, is an
// ErrInvalidArgument error.
func ParseID(ns, s string) (ID, error) {
	var id ID
	if len(s) != 2*IDLen {
		return ID{}, fmt.Errorf("%w: object id must be %d hex characters, got %d", ErrInvalidArgument, 2*IDLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ID{}, fmt.Errorf("%w: object id must be lowercase hex, got %q at offset %d", ErrInvalidArgument, c, i)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("%w: object id: %v", ErrInvalidArgument, err)
	}
	if !id.Valid(ns) {
		return ID{}, fmt.Errorf("%w: object id %s does not belong to namespace %q", ErrInvalidArgument, s, ns)
	}
	return id, nil
}

// Valid reports whether id was minted for namespace ns.
func (id ID) Valid(ns string) bool {
	return hmac.Equal(id[bodyLen:], tag(ns, id[:bodyLen]))
}

// String returns the 64-character lowercase hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }
