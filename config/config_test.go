package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// env returns a lookupEnv backed by m.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// writeFile writes content to name in a fresh temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if got, want := c.Self(), (Peer{ID: "n1", Addr: "127.0.0.1:7071"}); got != want {
		t.Errorf("Self() = %+v, want %+v", got, want)
	}
}

func TestLoadNothingIsSingleNode(t *testing.T) {
	for _, args := range [][]string{nil, {}} {
		c, err := Load(args, env(nil))
		if err != nil {
			t.Fatalf("Load(%q) = %v", args, err)
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("Load(%q) = %+v, want Default() %+v", args, c, Default())
		}
		if c.DataDir != "./data" || len(c.Peers) != 1 || c.Self() != (Peer{"n1", "127.0.0.1:7071"}) {
			t.Errorf("not a single-node cluster with data in ./data: %+v", c)
		}
	}
}

const yamlFile = `
node-id: file
listen: 127.0.0.1:7100
raft:
  election-timeout: 1s
limits:
  max-key-bytes: 100
`

const tomlFile = `
node-id = "file"
listen = "127.0.0.1:7100"

[raft]
election-timeout = "1s"

[limits]
max-key-bytes = 100
`

func TestLoadPrecedence(t *testing.T) {
	for _, file := range []struct{ name, content string }{
		{"duro.yaml", yamlFile},
		{"duro.toml", tomlFile},
	} {
		path := writeFile(t, file.name, file.content)
		tests := []struct {
			name         string
			env          map[string]string
			args         []string
			wantNode     string
			wantElection time.Duration
		}{
			{
				name:         "file",
				args:         []string{"--config", path},
				wantNode:     "file",
				wantElection: time.Second,
			},
			{
				name:         "file named by DURO_CONFIG",
				env:          map[string]string{"DURO_CONFIG": path},
				wantNode:     "file",
				wantElection: time.Second,
			},
			{
				name: "env over file",
				env: map[string]string{
					"DURO_NODE_ID":               "env",
					"DURO_RAFT_ELECTION_TIMEOUT": "2s",
				},
				args:         []string{"--config", path},
				wantNode:     "env",
				wantElection: 2 * time.Second,
			},
			{
				name: "flag over env over file",
				env: map[string]string{
					"DURO_CONFIG":                path,
					"DURO_NODE_ID":               "env",
					"DURO_RAFT_ELECTION_TIMEOUT": "2s",
				},
				args:         []string{"--node-id=flag", "--raft-election-timeout", "3s"},
				wantNode:     "flag",
				wantElection: 3 * time.Second,
			},
			{
				name: "ungiven flag keeps env",
				env: map[string]string{
					"DURO_NODE_ID":               "env",
					"DURO_RAFT_ELECTION_TIMEOUT": "2s",
				},
				args:         []string{"--config", path, "--node-id", "flag"},
				wantNode:     "flag",
				wantElection: 2 * time.Second,
			},
			{
				name:         "flag over file, no env",
				args:         []string{"--config", path, "--raft-election-timeout=750ms"},
				wantNode:     "file",
				wantElection: 750 * time.Millisecond,
			},
			{
				name:         "flag naming the file beats DURO_CONFIG",
				env:          map[string]string{"DURO_CONFIG": "/does/not/exist.yaml"},
				args:         []string{"--config", path},
				wantNode:     "file",
				wantElection: time.Second,
			},
		}
		for _, tt := range tests {
			t.Run(file.name+"/"+tt.name, func(t *testing.T) {
				c, err := Load(tt.args, env(tt.env))
				if err != nil {
					t.Fatalf("Load = %v", err)
				}
				if c.NodeID != tt.wantNode {
					t.Errorf("NodeID = %q, want %q", c.NodeID, tt.wantNode)
				}
				if c.Raft.ElectionTimeout != tt.wantElection {
					t.Errorf("Raft.ElectionTimeout = %s, want %s", c.Raft.ElectionTimeout, tt.wantElection)
				}
				// Untouched by env and flags: the file's value, then defaults.
				if c.Listen != "127.0.0.1:7100" || c.Limits.MaxKeyBytes != 100 {
					t.Errorf("Listen, MaxKeyBytes = %q, %d; want the file's", c.Listen, c.Limits.MaxKeyBytes)
				}
				if c.Raft.HeartbeatTimeout != Default().Raft.HeartbeatTimeout || c.Shards != 0 {
					t.Errorf("defaults lost: %+v", c)
				}
				want := []Peer{{ID: tt.wantNode, Addr: "127.0.0.1:7100"}}
				if !reflect.DeepEqual(c.Peers, want) {
					t.Errorf("Peers = %+v, want %+v", c.Peers, want)
				}
			})
		}
	}
}

func TestLoadPeers(t *testing.T) {
	want := []Peer{
		{ID: "n1", Addr: "10.0.0.1:7071"},
		{ID: "n2", Addr: "10.0.0.2:7071"},
		{ID: "n3", Addr: "10.0.0.3:7071"},
	}
	tests := []struct {
		name string
		file string // name and content as "name\ncontent"
		env  map[string]string
		args []string
	}{
		{
			name: "yaml list",
			file: "c.yaml\nnode-id: n2\nlisten: 10.0.0.2:7071\npeers:\n  - {id: n3, addr: \"10.0.0.3:7071\"}\n  - {id: n1, addr: \"10.0.0.1:7071\"}\n  - {id: n2, addr: \"10.0.0.2:7071\"}\n",
		},
		{
			name: "yaml string",
			file: "c.yml\nnode-id: n2\nlisten: 10.0.0.2:7071\npeers: n3=10.0.0.3:7071,n1=10.0.0.1:7071,n2=10.0.0.2:7071\n",
		},
		{
			name: "toml list",
			file: "c.toml\nnode-id = \"n2\"\nlisten = \"10.0.0.2:7071\"\n[[peers]]\nid = \"n1\"\naddr = \"10.0.0.1:7071\"\n[[peers]]\nid = \"n3\"\naddr = \"10.0.0.3:7071\"\n[[peers]]\nid = \"n2\"\naddr = \"10.0.0.2:7071\"\n",
		},
		{
			name: "env",
			env: map[string]string{
				"DURO_NODE_ID": "n2",
				"DURO_LISTEN":  "0.0.0.0:7071",
				"DURO_PEERS":   "n1=10.0.0.1:7071, n2=10.0.0.2:7071, n3=10.0.0.3:7071",
			},
		},
		{
			name: "flag over file list",
			file: "c.yaml\npeers:\n  - {id: x, addr: \"10.0.0.9:7071\"}\n",
			args: []string{"--node-id=n2", "--listen=:7071", "--peers=n2=10.0.0.2:7071,n1=10.0.0.1:7071,n3=10.0.0.3:7071"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				name, content, _ := strings.Cut(tt.file, "\n")
				args = append([]string{"--config", writeFile(t, name, content)}, args...)
			}
			c, err := Load(args, env(tt.env))
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			if !reflect.DeepEqual(c.Peers, want) {
				t.Errorf("Peers = %+v, want %+v", c.Peers, want)
			}
			if got := c.Self(); got != want[1] {
				t.Errorf("Self() = %+v, want %+v", got, want[1])
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		file  string // "name\ncontent"
		env   map[string]string
		args  []string
		wants []string
	}{
		{
			name:  "missing file",
			args:  []string{"--config", "/no/such/duro.yaml"},
			wants: []string{`"/no/such/duro.yaml" does not exist`},
		},
		{
			name:  "missing file from env",
			env:   map[string]string{"DURO_CONFIG": "/no/such/duro.toml"},
			wants: []string{`"/no/such/duro.toml" does not exist`},
		},
		{
			name:  "unsupported extension",
			file:  "duro.json\n{}",
			wants: []string{`extension ".json"`},
		},
		{
			name:  "unknown keys",
			file:  "duro.yaml\nnode_id: n1\nraft:\n  election-timeot: 1s\n",
			wants: []string{"config: node_id: unknown key", "config: raft.election-timeot: unknown key"},
		},
		{
			name:  "section not a table",
			file:  "duro.toml\nraft = 5\n",
			wants: []string{"config: raft: must be a table"},
		},
		{
			name:  "bare number duration in file",
			file:  "duro.yaml\nraft:\n  election-timeout: 500\n",
			wants: []string{"config: raft.election-timeout: want a duration", "from config file"},
		},
		{
			name:  "bad env values",
			env:   map[string]string{"DURO_SHARDS": "many", "DURO_SESSION_TTL": "forever"},
			wants: []string{"config: shards: want an integer", "DURO_SHARDS", "config: session-ttl:", "DURO_SESSION_TTL"},
		},
		{
			name:  "negative uint in file",
			file:  "duro.yaml\nraft:\n  trailing-logs: -1\n",
			wants: []string{"config: raft.trailing-logs: want a non-negative integer"},
		},
		{
			name:  "bad peers list entry",
			file:  "duro.yaml\npeers:\n  - {id: n1, address: \"a:1\"}\n",
			wants: []string{"config: peers:", `unknown key "address"`, "empty address"},
		},
		{
			name:  "bad peers flag",
			args:  []string{"--peers", "n1=a:1,n2,n3=a:1"},
			wants: []string{"config: peers:", `"n2" is missing '='`, `duplicate address "a:1"`, "flag --peers"},
		},
		{
			name:  "invalid after loading",
			args:  []string{"--shards=-1", "--log-level=loud"},
			wants: []string{"config: shards: must be between 1 and 4096 (or 0 for the default), got -1", "config: log-level:"},
		},
		{
			name:  "unknown flag",
			args:  []string{"--nodeid=n1"},
			wants: []string{"config: flags:", "nodeid"},
		},
		{
			name:  "positional argument",
			args:  []string{"serve"},
			wants: []string{`unexpected argument "serve"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				name, content, _ := strings.Cut(tt.file, "\n")
				args = append([]string{"--config", writeFile(t, name, content)}, args...)
			}
			c, err := Load(args, env(tt.env))
			if err == nil {
				t.Fatalf("Load = %+v, nil; want an error", c)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "config: ") {
					t.Errorf("error line %q does not start with \"config: \"", line)
				}
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Errorf("Load returned a non-zero Config with its error: %+v", c)
			}
		})
	}
}

func TestLoadMissingFileIsErrNotExist(t *testing.T) {
	_, err := Load([]string{"--config", filepath.Join(t.TempDir(), "x.yaml")}, env(nil))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadHelp(t *testing.T) {
	_, err := Load([]string{"--help"}, env(nil))
	if !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("Load(--help) = %v, want pflag.ErrHelp", err)
	}
}

func TestLoadEmptyHTTPDisables(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"DURO_HTTP": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP != "" {
		t.Errorf("HTTP = %q, want disabled", c.HTTP)
	}
}

func TestFlagSetNames(t *testing.T) {
	names := []string{
		"config", "node-id", "data-dir", "listen", "http", "peers", "shards",
		"session-ttl", "idle-timeout", "max-active", "log-level", "log-format", "raft-heartbeat-timeout",
		"raft-election-timeout", "raft-leader-lease-timeout", "raft-commit-timeout",
		"raft-snapshot-threshold", "raft-snapshot-interval", "raft-trailing-logs",
		"raft-max-append-entries", "raft-log-store", "max-key-bytes", "max-value-bytes",
	}
	fs := FlagSet()
	for _, n := range names {
		if fs.Lookup(n) == nil {
			t.Errorf("missing flag --%s", n)
		}
	}
	count := 0
	fs.VisitAll(func(*pflag.Flag) { count++ })
	if count != len(names) {
		t.Errorf("FlagSet has %d flags, want %d", count, len(names))
	}
}

func TestValidate(t *testing.T) {
	three := []Peer{{"n1", "10.0.0.1:7071"}, {"n2", "10.0.0.2:7071"}, {"n3", "10.0.0.3:7071"}}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{"node-id empty", func(c *Config) { c.NodeID = ""; c.Peers = nil }, "config: node-id:"},
		{"node-id bad char", func(c *Config) { c.NodeID = "n 1"; c.Peers[0].ID = "n 1" }, "config: node-id:"},
		{"node-id too long", func(c *Config) { c.NodeID = strings.Repeat("a", 65); c.Peers[0].ID = c.NodeID }, "config: node-id:"},
		{"data-dir empty", func(c *Config) { c.DataDir = "" }, "config: data-dir:"},
		{"listen no port", func(c *Config) { c.Listen = "127.0.0.1" }, "config: listen:"},
		{"listen named port", func(c *Config) { c.Listen = "127.0.0.1:http"; c.Peers[0].Addr = c.Listen }, "config: listen:"},
		{"listen differs from self", func(c *Config) { c.Listen = "127.0.0.1:7072" }, "config: listen:"},
		{"listen wildcard same port", func(c *Config) { c.Listen = "0.0.0.0:7071" }, ""},
		{"listen ipv6 wildcard same port", func(c *Config) { c.Listen = "[::]:7071" }, ""},
		{"listen wildcard other port", func(c *Config) { c.Listen = "0.0.0.0:7072" }, "config: listen:"},
		{"listen port 0 single node", func(c *Config) { c.Listen = "127.0.0.1:0"; c.Peers[0].Addr = c.Listen; c.HTTP = "" }, ""},
		{"http bad", func(c *Config) { c.HTTP = "localhost" }, "config: http:"},
		{"http disabled", func(c *Config) { c.HTTP = "" }, ""},
		{"http collides", func(c *Config) { c.HTTP = "0.0.0.0:7071" }, "config: http:"},
		{"peers empty", func(c *Config) { c.Peers = nil }, "config: peers:"},
		{"peers without node-id", func(c *Config) { c.NodeID = "n4"; c.Peers = three }, `config: peers: node-id "n4" is not among the peers`},
		{"peers three", func(c *Config) { c.NodeID = "n2"; c.Listen = "10.0.0.2:7071"; c.Peers = three }, ""},
		{"peers duplicate id", func(c *Config) { c.Peers = append(c.Peers, Peer{"n1", "127.0.0.1:7072"}) }, `config: peers: duplicate id "n1"`},
		{"peers duplicate addr", func(c *Config) { c.Peers = append(c.Peers, Peer{"n2", "127.0.0.1:7071"}) }, "config: peers:"},
		{"peers bad addr", func(c *Config) { c.Peers = append(c.Peers, Peer{"n2", "nowhere"}) }, "config: peers:"},
		{"peers bad id", func(c *Config) { c.Peers = append(c.Peers, Peer{"", "127.0.0.1:7072"}) }, "config: peers:"},
		{"peers wildcard in cluster", func(c *Config) { c.Peers = append(c.Peers, Peer{"n2", "0.0.0.0:7072"}) }, "config: peers:"},
		{"shards negative", func(c *Config) { c.Shards = -1 }, "config: shards: must be between 1 and 4096 (or 0 for the default), got -1"},
		{"shards 0 means the default", func(c *Config) { c.Shards = 0 }, ""},
		{"shards too many", func(c *Config) { c.Shards = 4097 }, "config: shards:"},
		{"shards max", func(c *Config) { c.Shards = 4096 }, ""},
		{"session-ttl 0", func(c *Config) { c.SessionTTL = 0 }, "config: session-ttl:"},
		{"log-level", func(c *Config) { c.LogLevel = "trace" }, "config: log-level:"},
		{"log-format", func(c *Config) { c.LogFormat = "xml" }, "config: log-format:"},
		{"heartbeat 0", func(c *Config) { c.Raft.HeartbeatTimeout = 0 }, "config: raft.heartbeat-timeout:"},
		{"election 0", func(c *Config) { c.Raft.ElectionTimeout = 0 }, "config: raft.election-timeout:"},
		{"election below heartbeat", func(c *Config) { c.Raft.ElectionTimeout = c.Raft.HeartbeatTimeout - time.Millisecond }, "config: raft.election-timeout:"},
		{"lease 0", func(c *Config) { c.Raft.LeaderLeaseTimeout = 0 }, "config: raft.leader-lease-timeout:"},
		{"lease above heartbeat", func(c *Config) { c.Raft.LeaderLeaseTimeout = time.Second }, "config: raft.leader-lease-timeout:"},
		{"commit 0", func(c *Config) { c.Raft.CommitTimeout = 0 }, "config: raft.commit-timeout:"},
		{"snapshot-interval 0", func(c *Config) { c.Raft.SnapshotInterval = 0 }, "config: raft.snapshot-interval:"},
		{"snapshot-threshold 0", func(c *Config) { c.Raft.SnapshotThreshold = 0 }, "config: raft.snapshot-threshold:"},
		{"max-append-entries 0", func(c *Config) { c.Raft.MaxAppendEntries = 0 }, "config: raft.max-append-entries:"},
		{"max-append-entries too many", func(c *Config) { c.Raft.MaxAppendEntries = 1025 }, "config: raft.max-append-entries:"},
		{"unknown log store", func(c *Config) { c.Raft.LogStore = "rocksdb" }, "config: raft.log-store:"},
		{"max-key-bytes 0", func(c *Config) { c.Limits.MaxKeyBytes = 0 }, "config: limits.max-key-bytes:"},
		{"max-key-bytes too big", func(c *Config) { c.Limits.MaxKeyBytes = 65536 }, "config: limits.max-key-bytes:"},
		{"max-value-bytes 0", func(c *Config) { c.Limits.MaxValueBytes = 0 }, "config: limits.max-value-bytes:"},
		{"max-value-bytes too big", func(c *Config) { c.Limits.MaxValueBytes = 64<<20 + 1 }, "config: limits.max-value-bytes:"},
		{"max-value-bytes max", func(c *Config) { c.Limits.MaxValueBytes = 64 << 20 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Peers = append([]Peer(nil), c.Peers...)
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate() = nil, want %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := Default()
	c.Shards = -1
	c.LogFormat = "xml"
	c.Limits.MaxKeyBytes = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, key := range []string{"shards", "log-format", "limits.max-key-bytes"} {
		if !strings.Contains(err.Error(), "config: "+key+":") {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func TestParsePeers(t *testing.T) {
	tests := []struct {
		in    string
		want  []Peer
		wants []string // error substrings; nil means no error
	}{
		{in: "", want: nil},
		{in: "  ", want: nil},
		{in: "n1=127.0.0.1:7071", want: []Peer{{"n1", "127.0.0.1:7071"}}},
		{
			in:   " n2 = 127.0.0.1:7072 ,n1=127.0.0.1:7071",
			want: []Peer{{"n1", "127.0.0.1:7071"}, {"n2", "127.0.0.1:7072"}},
		},
		{in: "n1", wants: []string{`"n1" is missing '='`}},
		{in: "=127.0.0.1:7071", wants: []string{"empty id"}},
		{in: "n1=", wants: []string{`peer "n1" has an empty address`}},
		{in: "n1=a:1,n1=b:1", wants: []string{`duplicate id "n1"`}},
		{in: "n1=a:1,n2=a:1", wants: []string{`duplicate address "a:1"`}},
		{in: "n1=a:1,,n2=b:1", wants: []string{"entry 2 is empty"}},
		{in: "n1,n2=", wants: []string{"missing '='", "empty address"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePeers(tt.in)
			if tt.wants == nil {
				if err != nil {
					t.Fatalf("ParsePeers = %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("ParsePeers = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParsePeers = %+v, nil; want an error", got)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "config: peers:") {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSelfFallback(t *testing.T) {
	c := Default()
	c.NodeID, c.Peers = "n9", []Peer{{"n1", "a:1"}}
	if got, want := c.Self(), (Peer{"n9", c.Listen}); got != want {
		t.Errorf("Self() = %+v, want %+v", got, want)
	}
}
