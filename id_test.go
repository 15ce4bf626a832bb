package duro

import (
	"errors"
	"strings"
	"testing"
)

func TestIDFromNameDeterministic(t *testing.T) {
	a, b := IDFromName("counter", "x"), IDFromName("counter", "x")
	if a != b {
		t.Fatalf("same name gave %s and %s", a, b)
	}
	if IDFromName("counter", "y") == a || IDFromName("kv", "x") == a {
		t.Fatal("different names or namespaces gave the same id")
	}
}

func TestParseID(t *testing.T) {
	good := IDFromName("counter", "x")
	uniq := NewUniqueID("counter")
	if got, err := ParseID("counter", good.String()); err != nil || got != good {
		t.Fatalf("ParseID(named) = %v, %v", got, err)
	}
	if got, err := ParseID("counter", uniq.String()); err != nil || got != uniq {
		t.Fatalf("ParseID(unique) = %v, %v", got, err)
	}
	flipped := good
	flipped[3] ^= 1
	for name, s := range map[string]string{
		"empty":          "",
		"short":          good.String()[:63],
		"long":           good.String() + "0",
		"upper":          strings.ToUpper(good.String()),
		"non-hex":        "zz" + good.String()[2:],
		"other ns":       IDFromName("kv", "x").String(),
		"corrupted body": flipped.String(),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseID("counter", s)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("ParseID(%q) err = %v, want invalid argument", s, err)
			}
		})
	}
}

func FuzzParseID(f *testing.F) {
	f.Add(IDFromName("a", "b").String())
	f.Add("00")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID("a", s)
		if err == nil && id.String() != s {
			t.Fatalf("accepted %q but prints %q", s, id)
		}
	})
}

// IDs are stored (keys of every object's state) and handed out: a name must
// map to the same ID in every release.
func TestIDFromNameIsStable(t *testing.T) {
	for _, c := range []struct{ ns, name, want string }{
		{"counter", "a", "27301a22a4259c41e45bb0ad7a41d02c26b6ed5ac0a000e76d5bbeca9660e657"},
		{"", "", "62fce7dc9c8ca5db15559a0dd3d2b1568f01f6a3fe501b440e04a6ae4a2fbd6f"},
	} {
		if got := IDFromName(c.ns, c.name).String(); got != c.want {
			t.Errorf("IDFromName(%q, %q) = %s, want %s", c.ns, c.name, got, c.want)
		}
	}
}

// BenchmarkIDValid is the check every call makes of its object's ID.
func BenchmarkIDValid(b *testing.B) {
	id := NewUniqueID("bench")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !id.Valid("bench") {
			b.Fatal("a new ID is not valid")
		}
	}
}
