package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/duro-io/duro"
)

// Entry types.
const (
	TypeCall     byte = 1
	TypeActivate byte = 2
)

const entryVersion = 1

// ErrCorrupt is returned for an entry that cannot be decoded.
var ErrCorrupt = errors.New("fsm: corrupt entry")

// ClientID identifies an SDK session. The zero ClientID means "no session".
type ClientID [16]byte

// Op kinds of a write set.
const (
	OpPut    byte = 1
	OpDelete byte = 2
)

// Op is one write of a call.
type Op struct {
	Kind  byte
	Key   []byte
	Value []byte // OpPut only
}

// Call is the log entry of one object call.
type Call struct {
	Epoch       uint64
	Time        int64 // unix nanoseconds, the call's start on the leader
	Namespace   string
	Object      duro.ID
	BaseVersion uint64
	Client      ClientID
	Seq         uint64
	AckedBelow  uint64 // every seq of Client below this is acknowledged
	Reply       []byte
	ClearAll    bool // DeleteAll before Ops
	Ops         []Op
	Alarm       AlarmChange // optional trailing field (alarm.go)
}

// Activate is the first entry a new shard leader commits.
type Activate struct {
	Node string
	Term uint64
	Time int64
}

// EncodeCall encodes c.
func EncodeCall(c *Call) []byte {
	n := 64 + len(c.Namespace) + len(c.Reply)
	for _, op := range c.Ops {
		n += 12 + len(op.Key) + len(op.Value)
	}
	b := make([]byte, 0, n)
	b = append(b, entryVersion, TypeCall)
	b = binary.AppendUvarint(b, c.Epoch)
	b = binary.AppendVarint(b, c.Time)
	b = appendBytes(b, []byte(c.Namespace))
	b = append(b, c.Object[:]...)
	b = binary.AppendUvarint(b, c.BaseVersion)
	b = append(b, c.Client[:]...)
	b = binary.AppendUvarint(b, c.Seq)
	b = binary.AppendUvarint(b, c.AckedBelow)
	b = appendBytes(b, c.Reply)
	if c.ClearAll {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Ops)))
	for _, op := range c.Ops {
		b = append(b, op.Kind)
		b = appendBytes(b, op.Key)
		if op.Kind == OpPut {
			b = appendBytes(b, op.Value)
		}
	}
	return appendCallFields(b, c)
}

// EncodeActivate encodes a.
func EncodeActivate(a *Activate) []byte {
	b := []byte{entryVersion, TypeActivate}
	b = appendBytes(b, []byte(a.Node))
	b = binary.AppendUvarint(b, a.Term)
	b = binary.AppendVarint(b, a.Time)
	return b
}

// Decode decodes an entry, returning a *Call or an *Activate.
func Decode(data []byte) (any, error) {
	d := decoder{b: data}
	if v := d.byte(); v != entryVersion {
		return nil, fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	switch t := d.byte(); t {
	case TypeCall:
		c := &Call{}
		c.Epoch = d.uvarint()
		c.Time = d.varint()
		c.Namespace = string(d.bytes())
		copy(c.Object[:], d.fixed(duro.IDLen))
		c.BaseVersion = d.uvarint()
		copy(c.Client[:], d.fixed(len(c.Client)))
		c.Seq = d.uvarint()
		c.AckedBelow = d.uvarint()
		c.Reply = d.bytes()
		switch d.byte() {
		case 0:
		case 1:
			c.ClearAll = true
		default:
			d.fail("clear flag")
		}
		n := d.uvarint()
		if n > uint64(len(data)) {
			d.fail("op count")
		}
		if d.err == nil && n > 0 {
			c.Ops = make([]Op, 0, n)
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			op := Op{Kind: d.byte(), Key: d.bytes()}
			switch op.Kind {
			case OpPut:
				op.Value = d.bytes()
				if op.Value == nil {
					op.Value = []byte{}
				}
			case OpDelete:
			default:
				d.fail("op kind")
			}
			c.Ops = append(c.Ops, op)
		}
		decodeCallFields(&d, c)
		return c, d.end()
	case TypeActivate:
		a := &Activate{Node: string(d.bytes()), Term: d.uvarint(), Time: d.varint()}
		return a, d.end()
	default:
		return nil, fmt.Errorf("%w: type %d", ErrCorrupt, t)
	}
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("length")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) fixed(n int) []byte {
	if len(d.b) < n {
		d.fail("length")
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("length")
		return nil
	}
	if n == 0 {
		return nil
	}
	v := make([]byte, n)
	copy(v, d.b[:n])
	d.b = d.b[n:]
	return v
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}
