package duro_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportBoundaries keeps the package boundaries of STYLE.md true.
func TestImportBoundaries(t *testing.T) {
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"github.com/duro-io/duro", []string{"google.golang.org/grpc", "github.com/hashicorp/raft", "github.com/duro-io/duro/shard", "github.com/duro-io/duro/fsm", "github.com/spf13/viper"}},
		{"github.com/duro-io/duro/fsm", []string{"google.golang.org/grpc", "github.com/duro-io/duro/shard", "github.com/duro-io/duro/rpc", "github.com/spf13/viper"}},
		{"github.com/duro-io/duro/shard", []string{"google.golang.org/grpc", "github.com/duro-io/duro/rpc", "github.com/spf13/viper"}},
		{"github.com/duro-io/duro/client", []string{"github.com/duro-io/duro/shard", "github.com/duro-io/duro/fsm", "github.com/hashicorp/raft", "github.com/spf13/viper"}},
		{"github.com/duro-io/duro/config", []string{"google.golang.org/grpc", "github.com/hashicorp/raft"}},
		// The etcd client is for `duroctl bench compare` only.
		{"github.com/duro-io/duro/cmd/durod", []string{"go.etcd.io/etcd"}},
	}
	for _, r := range rules {
		deps, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", r.pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", r.pkg, err)
		}
		for _, d := range strings.Fields(string(deps)) {
			for _, f := range r.forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s depends on %s (forbidden: %s)", r.pkg, d, f)
				}
			}
		}
	}
}
