package fsm

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/duro-io/duro"
)

// normCall returns a copy of c in the canonical form Decode produces: empty
// byte slices are nil except Put values, which are non-nil; an empty op list
// is nil; Delete ops carry no value.
func normCall(c *Call) *Call {
	n := *c
	if len(n.Reply) == 0 {
		n.Reply = nil
	}
	n.Ops = nil
	for _, op := range c.Ops {
		o := Op{Kind: op.Kind}
		if len(op.Key) > 0 {
			o.Key = append([]byte(nil), op.Key...)
		}
		if op.Kind == OpPut {
			o.Value = append([]byte{}, op.Value...)
		}
		n.Ops = append(n.Ops, o)
	}
	return &n
}

func callsEqual(a, b *Call) bool { return reflect.DeepEqual(normCall(a), normCall(b)) }

func testID(b byte) duro.ID {
	var id duro.ID
	for i := range id {
		id[i] = b ^ byte(i*7)
	}
	return id
}

func sampleCalls() map[string]*Call {
	return map[string]*Call{
		"zero": {},
		"no ops": {
			Epoch: 7, Time: 1_700_000_000_000_000_000, Namespace: "ns", Object: testID(1),
			BaseVersion: 3, Client: ClientID{1, 2, 3}, Seq: 9, AckedBelow: 8, Reply: []byte("ok"),
		},
		"ops": {
			Epoch: 1, Time: 42, Namespace: "shop/orders", Object: testID(2), BaseVersion: 0,
			Client: ClientID{0xff}, Seq: 1, Reply: []byte{0, 1, 2},
			Ops: []Op{
				{Kind: OpPut, Key: []byte("a"), Value: []byte("1")},
				{Kind: OpDelete, Key: []byte("b")},
				{Kind: OpPut, Key: []byte("c"), Value: bytes.Repeat([]byte{0xab}, 300)},
			},
		},
		"clear all": {Epoch: 2, Object: testID(3), ClearAll: true},
		"clear all and ops": {
			Epoch: 2, Object: testID(3), ClearAll: true, Client: ClientID{9}, Seq: 2,
			Ops: []Op{{Kind: OpPut, Key: []byte("x"), Value: []byte("y")}},
		},
		"empty values and keys": {
			Object: testID(4),
			Ops: []Op{
				{Kind: OpPut, Key: []byte("k"), Value: []byte{}},
				{Kind: OpPut, Key: []byte("n"), Value: nil},
				{Kind: OpPut, Key: nil, Value: []byte("empty key")},
				{Kind: OpDelete, Key: []byte{}},
			},
			Reply: []byte{},
		},
		"zero client": {Epoch: 5, Object: testID(5), Seq: 0, Ops: []Op{{Kind: OpDelete, Key: []byte("gone")}}},
		"extremes": {
			Epoch: math.MaxUint64, Time: math.MinInt64, Namespace: "ünïcødé\x00ns", Object: testID(0xff),
			BaseVersion: math.MaxUint64, Client: ClientID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			Seq: math.MaxUint64, AckedBelow: math.MaxUint64, Reply: bytes.Repeat([]byte("r"), 1000),
		},
		"negative time": {Time: -1, Object: testID(6)},
	}
}

func sampleActivates() map[string]*Activate {
	return map[string]*Activate{
		"zero":     {},
		"typical":  {Node: "node-1", Term: 3, Time: 1_700_000_000_000_000_000},
		"extremes": {Node: string(bytes.Repeat([]byte("n"), 500)), Term: math.MaxUint64, Time: math.MinInt64},
	}
}

func TestCallRoundTrip(t *testing.T) {
	for name, c := range sampleCalls() {
		t.Run(name, func(t *testing.T) {
			b := EncodeCall(c)
			if b[0] != entryVersion || b[1] != TypeCall {
				t.Fatalf("header %x", b[:2])
			}
			e, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got, ok := e.(*Call)
			if !ok {
				t.Fatalf("Decode returned %T", e)
			}
			if !callsEqual(got, c) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
			}
			for _, op := range got.Ops {
				if op.Kind == OpPut && op.Value == nil {
					t.Fatalf("decoded Put %q has nil value", op.Key)
				}
			}
			if again := EncodeCall(got); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
			}
		})
	}
}

func TestActivateRoundTrip(t *testing.T) {
	for name, a := range sampleActivates() {
		t.Run(name, func(t *testing.T) {
			b := EncodeActivate(a)
			e, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got, ok := e.(*Activate)
			if !ok {
				t.Fatalf("Decode returned %T", e)
			}
			if *got != *a {
				t.Fatalf("round trip: got %+v want %+v", got, a)
			}
		})
	}
}

// Every strict prefix of a valid encoding, and the encoding with a byte
// appended, is corrupt.
func TestDecodeTruncatedAndTrailing(t *testing.T) {
	var encs [][]byte
	for _, c := range sampleCalls() {
		encs = append(encs, EncodeCall(c))
	}
	for _, a := range sampleActivates() {
		encs = append(encs, EncodeActivate(a))
	}
	for _, b := range encs {
		for i := 0; i < len(b); i++ {
			if _, err := Decode(b[:i]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decode(%x) (prefix %d of %d): err = %v, want ErrCorrupt", b[:i], i, len(b), err)
			}
		}
		long := append(append([]byte(nil), b...), 0)
		if _, err := Decode(long); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode with trailing byte: err = %v, want ErrCorrupt", err)
		}
	}
}

func TestDecodeCorrupt(t *testing.T) {
	valid := EncodeCall(&Call{Object: testID(1), Ops: []Op{{Kind: OpPut, Key: []byte("k"), Value: []byte("v")}}})
	// Offsets in valid: version, type, epoch, time, ns len, 32 id bytes,
	// base version, 16 client bytes, seq, acked, reply len, clear flag, op count,
	// op kind, ...
	clearAt := 2 + 1 + 1 + 1 + duro.IDLen + 1 + 16 + 1 + 1 + 1
	opKindAt := clearAt + 2
	mut := func(i int, v byte) []byte {
		b := append([]byte(nil), valid...)
		b[i] = v
		return b
	}
	if _, err := Decode(valid); err != nil {
		t.Fatalf("valid entry: %v", err)
	}
	if valid[clearAt] != 0 || valid[clearAt+1] != 1 || valid[opKindAt] != OpPut {
		t.Fatalf("offsets in %x are wrong", valid)
	}
	cases := map[string][]byte{
		"nil":           nil,
		"empty":         {},
		"version 0":     mut(0, 0),
		"version 2":     mut(0, 2),
		"type 0":        mut(1, 0),
		"type 3":        mut(1, 3),
		"clear flag 2":  mut(clearAt, 2),
		"op kind 0":     mut(opKindAt, 0),
		"op kind 3":     mut(opKindAt, 3),
		"huge op count": append(valid[:clearAt+1:clearAt+1], 0xff, 0xff, 0xff, 0xff, 0x0f),
		"overlong uvarint": append([]byte{entryVersion, TypeActivate},
			0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01),
		"length past end": {entryVersion, TypeActivate, 0x05, 'a'},
	}
	for name, b := range cases {
		if e, err := Decode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Decode(%x) = %v, %v; want ErrCorrupt", name, b, e, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range sampleCalls() {
		f.Add(EncodeCall(c))
	}
	for _, a := range sampleActivates() {
		f.Add(EncodeActivate(a))
	}
	f.Add([]byte{})
	f.Add([]byte{entryVersion})
	f.Add([]byte{entryVersion, TypeCall, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		switch v := e.(type) {
		case *Call:
			b := EncodeCall(v)
			e2, err := Decode(b)
			if err != nil {
				t.Fatalf("re-encoded call does not decode: %v\ncall %+v\nbytes %x", err, v, b)
			}
			v2, ok := e2.(*Call)
			if !ok {
				t.Fatalf("re-encoded call decodes as %T", e2)
			}
			if !reflect.DeepEqual(v, v2) {
				t.Fatalf("re-encoded call differs:\n got %+v\nwant %+v", v2, v)
			}
			if len(v.Ops) > len(data) {
				t.Fatalf("%d ops from %d bytes", len(v.Ops), len(data))
			}
		case *Activate:
			e2, err := Decode(EncodeActivate(v))
			if err != nil {
				t.Fatalf("re-encoded activate does not decode: %v", err)
			}
			if v2, ok := e2.(*Activate); !ok || *v2 != *v {
				t.Fatalf("re-encoded activate differs: %+v vs %+v", e2, v)
			}
		default:
			t.Fatalf("Decode returned %T", e)
		}
	})
}
