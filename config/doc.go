// Package config builds the configuration of a durod node.
//
// It is the only package that imports viper. Everything else receives a plain
// [Config] value, built with [Default] or [Load] and checked with
// [Config.Validate]; nothing outside this package reads files, flags or the
// environment for settings.
//
// # Basics
//
// [Load] layers four sources, each overriding the one before:
//
//  1. the defaults of [Default];
//  2. a config file named by --config or DURO_CONFIG, in YAML (.yaml, .yml)
//     or TOML (.toml), chosen by the file's extension;
//  3. the environment: DURO_ followed by the key in upper case, with dashes and
//     dots turned into underscores (node-id is DURO_NODE_ID,
//     raft.election-timeout is DURO_RAFT_ELECTION_TIMEOUT,
//     limits.max-key-bytes is DURO_LIMITS_MAX_KEY_BYTES);
//  4. command-line flags, but only those actually given: a flag left at its
//     default never hides a value from the file or the environment.
//
// The keys, with their flags:
//
//	node-id                     --node-id
//	data-dir                    --data-dir
//	listen                      --listen            gRPC for clients, admin and Raft
//	http                        --http              health and metrics; "" disables
//	peers                       --peers             "n1=host:port,n2=host:port"
//	shards                      --shards            fixed at cluster creation
//	session-ttl                 --session-ttl
//	log-level                   --log-level         debug|info|warn|error
//	log-format                  --log-format        text|json
//	raft.heartbeat-timeout      --raft-heartbeat-timeout
//	raft.election-timeout       --raft-election-timeout
//	raft.leader-lease-timeout   --raft-leader-lease-timeout
//	raft.commit-timeout         --raft-commit-timeout
//	raft.snapshot-threshold     --raft-snapshot-threshold
//	raft.snapshot-interval      --raft-snapshot-interval
//	raft.trailing-logs          --raft-trailing-logs
//	raft.max-append-entries     --raft-max-append-entries
//	limits.max-key-bytes        --max-key-bytes
//	limits.max-value-bytes      --max-value-bytes
//
// A YAML file:
//
//	node-id: n2
//	listen: 10.0.0.2:7071
//	peers:
//	  - {id: n1, addr: "10.0.0.1:7071"}
//	  - {id: n2, addr: "10.0.0.2:7071"}
//	  - {id: n3, addr: "10.0.0.3:7071"}
//	raft:
//	  election-timeout: 1s
//
// In a file, peers is either that list of {id, addr} maps or the same string
// the flag takes. Durations are Go duration strings ("500ms", "1h"); a bare
// number is rejected rather than read as nanoseconds.
//
// With no configuration at all a node is a single-node cluster "n1" listening
// on 127.0.0.1:7071 and keeping its data in ./data: when no peers are given,
// Peers becomes the node itself, {NodeID, Listen}.
//
// # Caveats
//
//   - Unknown keys in the config file are an error, not ignored, so that a
//     misspelt key cannot silently leave a default in place. Unknown DURO_*
//     variables are not detected.
//   - A variable that is set but empty counts as set: DURO_HTTP= disables the
//     HTTP listener, DURO_NODE_ID= fails validation.
//   - Validate's Raft bounds are those of hashicorp/raft's ValidateConfig
//     (timeouts of at least 5ms, a commit timeout of at least 1ms, at most 1024
//     entries per append), so a config that passes here also passes there.
//   - Every error names the key it is about ("config: shards: ..."), and
//     Validate and Load report all the problems they find at once, joined with
//     errors.Join.
package config
