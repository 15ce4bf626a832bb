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
