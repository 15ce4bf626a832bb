package nemesis

import (
	"fmt"
	"testing"

	"github.com/duro-io/duro/jepsen/cluster"
)

func nodes(n int) []*cluster.Node {
	var out []*cluster.Node
	for i := 1; i <= n; i++ {
		out = append(out, &cluster.Node{Index: i, ID: fmt.Sprintf("n%d", i)})
	}
	return out
}

// sees returns, for each node, the nodes it can still reach (itself
// included) once the grudge is made symmetric, as Net.setGrudge does.
func sees(n int, g map[int][]int) map[int]map[int]bool {
	cut := map[[2]int]bool{}
	for a, bs := range g {
		for _, b := range bs {
			cut[[2]int{a, b}], cut[[2]int{b, a}] = true, true
		}
	}
	out := map[int]map[int]bool{}
	for a := 1; a <= n; a++ {
		out[a] = map[int]bool{}
		for b := 1; b <= n; b++ {
			if !cut[[2]int{a, b}] {
				out[a][b] = true
			}
		}
	}
	return out
}

func TestGrudges(t *testing.T) {
	t.Run("halves", func(t *testing.T) {
		for _, n := range []int{3, 5} {
			g, _ := halves(nodes(n))
			vis := sees(n, g)
			majority := 0
			for a := 1; a <= n; a++ {
				if len(vis[a]) > n/2 {
					majority++
				}
			}
			if majority != n/2+1 {
				t.Fatalf("%d nodes: %d nodes see a majority, want %d", n, majority, n/2+1)
			}
		}
	})
	t.Run("ring", func(t *testing.T) {
		g, _ := ring(nodes(5))
		vis := sees(5, g)
		seen := map[string]bool{}
		for a := 1; a <= 5; a++ {
			if len(vis[a]) != 3 {
				t.Fatalf("n%d sees %d nodes, want a bare majority of 3", a, len(vis[a]))
			}
			seen[fmt.Sprint(vis[a])] = true
		}
		if len(seen) != 5 {
			t.Fatalf("majorities are not all different: %v", seen)
		}
	})
	t.Run("bridge", func(t *testing.T) {
		g, _ := bridge(nodes(5))
		vis := sees(5, g)
		if len(vis[3]) != 5 {
			t.Fatalf("bridge n3 sees %v, want everyone", vis[3])
		}
		for _, a := range []int{1, 2, 4, 5} {
			if len(vis[a]) != 3 {
				t.Fatalf("n%d sees %v, want its side and the bridge", a, vis[a])
			}
		}
	})
}
