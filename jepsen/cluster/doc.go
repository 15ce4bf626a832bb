// Package cluster runs a duro cluster of real durod processes for the chaos
// suite, each in its own network namespace (duroj-n<i>) with its own address
// on the bridge duro-br0 (10.77.0.0/24; the host, where clients run, is
// 10.77.0.1). It needs root.
//
// Basics: New cleans up what an earlier run left (namespaces, bridge, the
// iptables FORWARD rule) and builds the network; StartAll starts the nodes;
// Kill, Stop, Pause and Resume signal them (ip netns exec keeps the PID);
// SetRules replaces a node's nft rules (the nemeses' partitions and loss);
// Close stops everything and removes the network. Every node's output goes to
// <dir>/n<i>/node.log, its data to <dir>/n<i>/data.
//
// Caveats: one cluster per machine at a time (a flock on LockPath enforces
// it, since the names are fixed). With Config.Proxy, Raft links go through a
// delaying proxy in the harness, so peers see the host's address and
// partitions by peer address do not apply.
package cluster
