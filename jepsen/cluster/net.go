package cluster

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Names of the kernel objects the harness makes. They are unique to duro's
// chaos suite so that stale ones from a crashed run can be removed without
// touching anything else on the machine.
const (
	Bridge   = "duro-br0"
	nsPrefix = "duroj-"
	// Subnet is the private /24 the nodes live on; the host side of the
	// bridge (where clients run) is .1, node i is .10+i.
	Subnet = "10.77.0."
	// HostIP is the address clients connect from.
	HostIP = Subnet + "1"
)

// run runs a command and returns its combined output in the error.
func run(stdin string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// EnsureTools installs iproute2 and nftables with apt-get when absent.
func EnsureTools() error {
	var pkgs []string
	if _, err := exec.LookPath("ip"); err != nil {
		pkgs = append(pkgs, "iproute2")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		pkgs = append(pkgs, "nftables")
	}
	if len(pkgs) == 0 {
		return nil
	}
	// Wait for dpkg's lock when another installer holds it.
	lock := []string{"-o", "DPkg::Lock::Timeout=600"}
	if err := run("", "apt-get", append(lock, "update")...); err != nil {
		return err
	}
	return run("", "apt-get", append(lock, append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)...)
}

// CleanStale removes namespaces and the bridge left by an earlier run.
// Deleting a namespace kills nothing, but its veth pair goes with it.
func CleanStale() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			// A process left inside keeps the namespace (and its veth
			// pair) alive after the delete.
			pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
			for _, p := range strings.Fields(string(pids)) {
				if pid, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			_ = run("", "ip", "netns", "del", f[0])
		}
	}
	// The kernel tears a deleted namespace down asynchronously, and under
	// load its veth pairs can outlive it by tens of seconds; deleting the
	// host ends removes the pairs now.
	out, _ = exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, nsPrefix+"v") {
				_ = run("", "ip", "link", "del", name)
			}
		}
	}
	if exec.Command("ip", "link", "show", Bridge).Run() == nil {
		_ = run("", "ip", "link", "del", Bridge)
	}
	for exec.Command("iptables", forwardRule("-D")...).Run() == nil {
	}
}

// forwardRule is the iptables rule that lets frames cross the bridge: with
// br_netfilter loaded (bridge-nf-call-iptables=1, as Docker leaves it),
// bridged traffic passes the FORWARD chain, whose policy Docker sets to DROP.
func forwardRule(op string) []string {
	args := []string{op, "FORWARD"}
	if op == "-I" {
		args = append(args, "1")
	}
	return append(args, "-i", Bridge, "-o", Bridge, "-j", "ACCEPT", "-m", "comment", "--comment", "duro-jepsen")
}

// nsName is node i's namespace (i from 1).
func nsName(i int) string { return fmt.Sprintf("%sn%d", nsPrefix, i) }

// nodeIP is node i's address.
func nodeIP(i int) string { return fmt.Sprintf("%s%d", Subnet, 10+i) }

func setupBridge() error {
	steps := [][]string{
		{"link", "add", Bridge, "type", "bridge"},
		{"addr", "add", HostIP + "/24", "dev", Bridge},
		{"link", "set", Bridge, "up"},
	}
	for _, s := range steps {
		if err := run("", "ip", s...); err != nil {
			return err
		}
	}
	if _, err := exec.LookPath("iptables"); err == nil {
		if err := run("", "iptables", forwardRule("-I")...); err != nil {
			return err
		}
	}
	return nil
}

// baseRules is the nft table every node namespace starts with: empty chains
// the nemeses fill.
const baseRules = `table inet duro {
	chain input { type filter hook input priority 0; policy accept; }
	chain output { type filter hook output priority 0; policy accept; }
}
`

func setupNamespace(i int) error {
	ns, host := nsName(i), fmt.Sprintf("%sv%d", nsPrefix, i)
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", host, "master", Bridge},
		{"link", "set", host, "up"},
		{"-n", ns, "addr", "add", nodeIP(i) + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	// A pair left by the previous cluster may still be going away.
	_ = exec.Command("ip", "link", "del", host).Run()
	for _, s := range steps {
		if err := run("", "ip", s...); err != nil {
			return err
		}
	}
	return run(baseRules, "ip", "netns", "exec", ns, "nft", "-f", "-")
}

// SetRules replaces the nemesis rules in node i's namespace: in and out are
// nft rule bodies (e.g. "ip saddr { 10.77.0.12 } drop") for the input and
// output chains. Empty slices heal.
func SetRules(i int, in, out []string) error {
	var b strings.Builder
	b.WriteString("flush chain inet duro input\nflush chain inet duro output\n")
	for _, r := range in {
		fmt.Fprintf(&b, "add rule inet duro input %s\n", r)
	}
	for _, r := range out {
		fmt.Fprintf(&b, "add rule inet duro output %s\n", r)
	}
	return run(b.String(), "ip", "netns", "exec", nsName(i), "nft", "-f", "-")
}
