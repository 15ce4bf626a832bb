package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Peer is one voting member of the cluster.
type Peer struct {
	ID   string // the member's node-id
	Addr string // host:port of its gRPC listener, dialled by the other members
}

// Raft holds the hashicorp/raft settings shared by every shard's group.
type Raft struct {
	HeartbeatTimeout   time.Duration // default 200ms
	ElectionTimeout    time.Duration // default 200ms
	LeaderLeaseTimeout time.Duration // default 200ms
	CommitTimeout      time.Duration // default 50ms: idle followers learn the commit index this often
	SnapshotThreshold  uint64        // default 8192
	SnapshotInterval   time.Duration // default 30s
	TrailingLogs       uint64        // default 10240
	MaxAppendEntries   int           // default 256
	// LogStore is the Raft log's storage: "wal" (shard/wal: one fdatasync
	// per append), "boltdb" (raft-boltdb: two), or "auto", the default:
	// what each shard's directory already holds, and wal for a new one.
	// Fixed when a shard's directory is created.
	LogStore string
}

// Limits bounds the size of what clients may store.
type Limits struct {
	MaxKeyBytes   int // default 2048
	MaxValueBytes int // default 131072
}

// Config is the complete configuration of one durod node.
type Config struct {
	NodeID     string        // default "n1"
	DataDir    string        // default "./data"
	Listen     string        // default "127.0.0.1:7071"; gRPC for clients, admin and Raft
	HTTP       string        // default "127.0.0.1:7081"; health and metrics; "" disables
	Peers      []Peer        // default [{NodeID, Listen}], a single-node cluster; sorted by ID
	Shards     int           // fixed at cluster creation; 0: as recorded, or one per node for a new cluster
	SessionTTL time.Duration // default 1h; exactly-once sessions expire by log time
	// IdleTimeout evicts objects unused this long from memory (storage stays);
	// negative disables idle eviction. Default 5m.
	IdleTimeout time.Duration
	// MaxActive caps the objects in memory on this node; the least recently
	// used idle ones are evicted beyond it. Default 100000.
	MaxActive int
	LogLevel  string // default "info"; debug|info|warn|error
	LogFormat string // default "text"; text|json
	Raft      Raft
	Limits    Limits
}

// Default returns the configuration of a single-node cluster "n1" listening on
// 127.0.0.1:7071 with its data in ./data. It is valid.
func Default() Config {
	c := Config{
		NodeID:      "n1",
		DataDir:     "./data",
		Listen:      "127.0.0.1:7071",
		HTTP:        "127.0.0.1:7081",
		Shards:      0,
		SessionTTL:  time.Hour,
		IdleTimeout: 5 * time.Minute,
		MaxActive:   100000,
		LogLevel:    "info",
		LogFormat:   "text",
		Raft: Raft{
			// A follower starts an election 1-2 heartbeat timeouts after it
			// last heard from its leader, so this bounds failover; a leader
			// steps down when a quorum has not answered within the lease,
			// as long as the heartbeat timeout (the most hashicorp/raft
			// allows) so that a loaded node does not give up spuriously.
			HeartbeatTimeout:   200 * time.Millisecond,
			ElectionTimeout:    200 * time.Millisecond,
			LeaderLeaseTimeout: 200 * time.Millisecond,
			CommitTimeout:      50 * time.Millisecond,
			SnapshotThreshold:  8192,
			SnapshotInterval:   30 * time.Second,
			TrailingLogs:       10240,
			MaxAppendEntries:   256,
			LogStore:           "auto",
		},
		Limits: Limits{
			MaxKeyBytes:   2048,
			MaxValueBytes: 128 << 10,
		},
	}
	c.Peers = []Peer{{ID: c.NodeID, Addr: c.Listen}}
	return c
}

// Self returns the entry of Peers whose ID is NodeID. If there is none, which
// Validate reports as an error, it returns {NodeID, Listen}.
func (c Config) Self() Peer {
	for _, p := range c.Peers {
		if p.ID == c.NodeID {
			return p
		}
	}
	return Peer{ID: c.NodeID, Addr: c.Listen}
}

// Bounds checked by Validate. The Raft minima are hashicorp/raft's own
// (raft.ValidateConfig), so a valid Config never fails there.
const (
	maxShards        = 4096
	maxKeyBytes      = 65535
	maxValueBytes    = 64 << 20
	minRaftTimeout   = 5 * time.Millisecond
	minCommitTimeout = time.Millisecond
	maxAppendEntries = 1024
)

var (
	nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	logLevels     = []string{"debug", "info", "warn", "error"}
	logFormats    = []string{"text", "json"}
)

// keyError builds an error that names the offending key.
func keyError(key, format string, args ...any) error {
	return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...))
}

// Validate checks every setting and reports all the problems at once, joined
// with errors.Join; each error names its key, e.g.
// `config: shards: must be between 1 and 4096, got 0`.
func (c Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, keyError(key, format, args...))
	}

	if !nodeIDPattern.MatchString(c.NodeID) {
		add("node-id", "%q must be 1 to 64 characters from [A-Za-z0-9._-]", c.NodeID)
	}
	if c.DataDir == "" {
		add("data-dir", "must not be empty")
	}
	listenOK := true
	if err := checkAddr(c.Listen); err != nil {
		add("listen", "%v", err)
		listenOK = false
	}
	if c.HTTP != "" {
		if err := checkAddr(c.HTTP); err != nil {
			add("http", "%v", err)
		} else if listenOK && collide(c.HTTP, c.Listen) {
			add("http", "%q collides with listen %q", c.HTTP, c.Listen)
		}
	}

	errs = append(errs, c.validatePeers(listenOK)...)

	if c.Shards < 0 || c.Shards > maxShards {
		add("shards", "must be between 1 and %d (or 0 for the default), got %d", maxShards, c.Shards)
	}
	if c.IdleTimeout == 0 {
		add("idle-timeout", "must not be zero (negative disables idle eviction)")
	}
	if c.MaxActive < 1 {
		add("max-active", "must be at least 1, got %d", c.MaxActive)
	}
	if c.SessionTTL <= 0 {
		add("session-ttl", "must be positive, got %s", c.SessionTTL)
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		add("log-level", "must be one of %s, got %q", strings.Join(logLevels, "|"), c.LogLevel)
	}
	if !slices.Contains(logFormats, c.LogFormat) {
		add("log-format", "must be one of %s, got %q", strings.Join(logFormats, "|"), c.LogFormat)
	}

	r := c.Raft
	for _, d := range []struct {
		key string
		val time.Duration
		min time.Duration
	}{
		{"raft.heartbeat-timeout", r.HeartbeatTimeout, minRaftTimeout},
		{"raft.election-timeout", r.ElectionTimeout, minRaftTimeout},
		{"raft.leader-lease-timeout", r.LeaderLeaseTimeout, minRaftTimeout},
		{"raft.commit-timeout", r.CommitTimeout, minCommitTimeout},
		{"raft.snapshot-interval", r.SnapshotInterval, minRaftTimeout},
	} {
		if d.val < d.min {
			add(d.key, "must be at least %s, got %s", d.min, d.val)
		}
	}
	if r.LeaderLeaseTimeout > r.HeartbeatTimeout {
		add("raft.leader-lease-timeout", "%s must not exceed raft.heartbeat-timeout %s",
			r.LeaderLeaseTimeout, r.HeartbeatTimeout)
	}
	if r.ElectionTimeout < r.HeartbeatTimeout {
		add("raft.election-timeout", "%s must not be less than raft.heartbeat-timeout %s",
			r.ElectionTimeout, r.HeartbeatTimeout)
	}
	if r.SnapshotThreshold < 1 {
		add("raft.snapshot-threshold", "must be at least 1, got %d", r.SnapshotThreshold)
	}
	if r.MaxAppendEntries < 1 || r.MaxAppendEntries > maxAppendEntries {
		add("raft.max-append-entries", "must be between 1 and %d, got %d", maxAppendEntries, r.MaxAppendEntries)
	}
	if r.LogStore != "auto" && r.LogStore != "boltdb" && r.LogStore != "wal" {
		add("raft.log-store", `must be "auto", "wal" or "boltdb", got %q`, r.LogStore)
	}

	if l := c.Limits.MaxKeyBytes; l < 1 || l > maxKeyBytes {
		add("limits.max-key-bytes", "must be between 1 and %d, got %d", maxKeyBytes, l)
	}
	if l := c.Limits.MaxValueBytes; l < 1 || l > maxValueBytes {
		add("limits.max-value-bytes", "must be between 1 and %d, got %d", maxValueBytes, l)
	}
	return errors.Join(errs...)
}

// validatePeers checks Peers and that Listen agrees with this node's entry.
func (c Config) validatePeers(listenOK bool) []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, keyError(key, format, args...))
	}
	if len(c.Peers) == 0 {
		add("peers", "must list at least this node")
		return errs
	}
	ids := make(map[string]bool, len(c.Peers))
	addrs := make(map[string]string, len(c.Peers))
	for _, p := range c.Peers {
		if !nodeIDPattern.MatchString(p.ID) {
			add("peers", "id %q must be 1 to 64 characters from [A-Za-z0-9._-]", p.ID)
		} else if ids[p.ID] {
			add("peers", "duplicate id %q", p.ID)
		}
		ids[p.ID] = true
		if err := checkAddr(p.Addr); err != nil {
			add("peers", "peer %q: %v", p.ID, err)
			continue
		}
		if other, dup := addrs[p.Addr]; dup {
			add("peers", "peers %q and %q share address %q", other, p.ID, p.Addr)
		}
		addrs[p.Addr] = p.ID
		// The other members dial these addresses, so in a real cluster they
		// must name a host and a fixed port.
		if len(c.Peers) > 1 {
			host, port, _ := net.SplitHostPort(p.Addr)
			if isWildcard(host) {
				add("peers", "peer %q: address %q needs a host the other peers can dial", p.ID, p.Addr)
			}
			if port == "0" {
				add("peers", "peer %q: address %q needs a fixed port", p.ID, p.Addr)
			}
		}
	}
	if !ids[c.NodeID] {
		add("peers", "node-id %q is not among the peers", c.NodeID)
		return errs
	}
	self := c.Self()
	if !listenOK || checkAddr(self.Addr) != nil {
		return errs
	}
	lhost, lport, _ := net.SplitHostPort(c.Listen)
	_, sport, _ := net.SplitHostPort(self.Addr)
	switch {
	case isWildcard(lhost) && lport != sport:
		add("listen", "port of %q differs from the address of node-id %q in peers, %q", c.Listen, c.NodeID, self.Addr)
	case !isWildcard(lhost) && c.Listen != self.Addr:
		add("listen", "%q differs from the address of node-id %q in peers, %q", c.Listen, c.NodeID, self.Addr)
	}
	return errs
}

// checkAddr accepts host:port with a numeric port; the host may be empty.
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("address must not be empty")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, unwrapAddrError(err))
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("address %q: port %q must be a number from 0 to 65535", addr, port)
	}
	return nil
}

// unwrapAddrError drops net.AddrError's repetition of the address.
func unwrapAddrError(err error) error {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return errors.New(ae.Err)
	}
	return err
}

// isWildcard reports whether host means "every interface".
func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// collide reports whether two valid listen addresses would claim the same port.
func collide(a, b string) bool {
	ah, ap, _ := net.SplitHostPort(a)
	bh, bp, _ := net.SplitHostPort(b)
	if ap != bp || ap == "0" {
		return false
	}
	return ah == bh || isWildcard(ah) || isWildcard(bh)
}

// ParsePeers parses "n1=127.0.0.1:7071,n2=127.0.0.1:7072" into peers sorted
// by ID. Spaces around entries, ids and addresses are ignored, and an empty
// string is an empty list. It reports every malformed entry, empty id or
// address, duplicate id and duplicate address; Validate checks the rest.
func ParsePeers(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var (
		peers []Peer
		errs  []error
	)
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		id, addr, ok := strings.Cut(entry, "=")
		if !ok {
			if entry == "" {
				errs = append(errs, keyError("peers", "entry %d is empty", i+1))
			} else {
				errs = append(errs, keyError("peers", "entry %q is missing '=' (want ID=HOST:PORT)", entry))
			}
			continue
		}
		peers = append(peers, Peer{ID: strings.TrimSpace(id), Addr: strings.TrimSpace(addr)})
	}
	errs = append(errs, checkPeerList(peers)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sortPeers(peers)
	return peers, nil
}

// checkPeerList reports empty fields and duplicates.
func checkPeerList(peers []Peer) []error {
	var errs []error
	ids := make(map[string]bool, len(peers))
	addrs := make(map[string]bool, len(peers))
	for _, p := range peers {
		switch {
		case p.ID == "":
			errs = append(errs, keyError("peers", "peer with address %q has an empty id", p.Addr))
		case ids[p.ID]:
			errs = append(errs, keyError("peers", "duplicate id %q", p.ID))
		}
		ids[p.ID] = true
		switch {
		case p.Addr == "":
			errs = append(errs, keyError("peers", "peer %q has an empty address", p.ID))
		case addrs[p.Addr]:
			errs = append(errs, keyError("peers", "duplicate address %q", p.Addr))
		}
		addrs[p.Addr] = true
	}
	return errs
}

func sortPeers(peers []Peer) {
	slices.SortStableFunc(peers, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
}

// setting ties a config key to its flag, its place in Config and its help.
type setting struct {
	key   string // config-file key; nested keys use '.'
	flag  string
	usage string
	field func(*Config) any // pointer to the field the key fills
}

// envName is the environment variable for key: node-id is DURO_NODE_ID.
func (s setting) envName() string {
	return "DURO_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(s.key))
}

const (
	flagConfig = "config"
	envConfig  = "DURO_CONFIG"
)

var settings = []setting{
	{"node-id", "node-id", "this node's ID, one of the peers", func(c *Config) any { return &c.NodeID }},
	{"data-dir", "data-dir", "directory for Raft logs, snapshots and object data", func(c *Config) any { return &c.DataDir }},
	{"listen", "listen", "gRPC address for clients, admin and Raft (host:port)", func(c *Config) any { return &c.Listen }},
	{"http", "http", `HTTP address for health and metrics; "" disables it`, func(c *Config) any { return &c.HTTP }},
	{"peers", "peers", `cluster members "n1=host:port,n2=host:port" (default: this node alone, node-id=listen)`, func(c *Config) any { return &c.Peers }},
	{"shards", "shards", "number of shards, fixed when the cluster is created; 0: what the data dir recorded, or one per node for a new cluster", func(c *Config) any { return &c.Shards }},
	{"session-ttl", "session-ttl", "expiry of exactly-once sessions, measured in log time", func(c *Config) any { return &c.SessionTTL }},
	{"idle-timeout", "idle-timeout", "evict objects idle this long from memory (storage stays); negative: never", func(c *Config) any { return &c.IdleTimeout }},
	{"max-active", "max-active", "most objects in memory on this node; least recently used idle ones are evicted", func(c *Config) any { return &c.MaxActive }},
	{"log-level", "log-level", "debug|info|warn|error", func(c *Config) any { return &c.LogLevel }},
	{"log-format", "log-format", "text|json", func(c *Config) any { return &c.LogFormat }},
	{"raft.heartbeat-timeout", "raft-heartbeat-timeout", "Raft heartbeat timeout", func(c *Config) any { return &c.Raft.HeartbeatTimeout }},
	{"raft.election-timeout", "raft-election-timeout", "Raft election timeout; at least the heartbeat timeout", func(c *Config) any { return &c.Raft.ElectionTimeout }},
	{"raft.leader-lease-timeout", "raft-leader-lease-timeout", "Raft leader lease; at most the heartbeat timeout", func(c *Config) any { return &c.Raft.LeaderLeaseTimeout }},
	{"raft.commit-timeout", "raft-commit-timeout", "how often an idle leader sends followers the commit index (each shard, each follower)", func(c *Config) any { return &c.Raft.CommitTimeout }},
	{"raft.snapshot-threshold", "raft-snapshot-threshold", "log entries since the last snapshot that trigger a new one", func(c *Config) any { return &c.Raft.SnapshotThreshold }},
	{"raft.snapshot-interval", "raft-snapshot-interval", "how often to check whether to snapshot", func(c *Config) any { return &c.Raft.SnapshotInterval }},
	{"raft.trailing-logs", "raft-trailing-logs", "log entries kept after a snapshot", func(c *Config) any { return &c.Raft.TrailingLogs }},
	{"raft.max-append-entries", "raft-max-append-entries", "most log entries sent in one append", func(c *Config) any { return &c.Raft.MaxAppendEntries }},
	{"raft.log-store", "raft-log-store", `Raft log storage: "wal" (one fdatasync per append) or "boltdb" (raft-boltdb, two); "auto": what the data dir holds, wal for a new one`, func(c *Config) any { return &c.Raft.LogStore }},
	{"limits.max-key-bytes", "max-key-bytes", "largest key accepted, in bytes", func(c *Config) any { return &c.Limits.MaxKeyBytes }},
	{"limits.max-value-bytes", "max-value-bytes", "largest value accepted, in bytes", func(c *Config) any { return &c.Limits.MaxValueBytes }},
}

// sections are the file's nested tables.
var sections = []string{"raft", "limits"}

// FlagSet returns a new set of the flags Load parses, with Default's values
// as their defaults, so that cmd/durod can print usage. It uses
// ContinueOnError.
func FlagSet() *pflag.FlagSet {
	fs := pflag.NewFlagSet("durod", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.String(flagConfig, "", "config file, YAML (.yaml, .yml) or TOML (.toml) (env "+envConfig+")")
	def := Default()
	for _, s := range settings {
		usage := s.usage + " (env " + s.envName() + ")"
		switch p := s.field(&def).(type) {
		case *string:
			fs.String(s.flag, *p, usage)
		case *int:
			fs.Int(s.flag, *p, usage)
		case *uint64:
			fs.Uint64(s.flag, *p, usage)
		case *time.Duration:
			fs.Duration(s.flag, *p, usage)
		case *[]Peer:
			fs.String(s.flag, "", usage)
		default:
			panic(fmt.Sprintf("config: no flag type for %s (%T)", s.key, p))
		}
	}
	return fs
}

// Load builds the config: defaults < config file < DURO_* environment < flags.
// args are the command-line args (without program name). lookupEnv is
// os.LookupEnv in production (injectable for tests).
//
// Only flags present in args override the other sources. The config file is
// named by --config, else by DURO_CONFIG. If no peers are given, Peers is
// [{NodeID, Listen}]. The result is validated; on any error Load returns the
// zero Config and every problem it found, each naming its key. Load prints
// nothing: for -h or --help it returns an error wrapping pflag.ErrHelp, and
// the caller prints FlagSet's usage.
func Load(args []string, lookupEnv func(string) (string, bool)) (Config, error) {
	fs := FlagSet()
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("config: flags: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: flags: unexpected argument %q", fs.Arg(0))
	}

	v := viper.New()
	path, _ := fs.GetString(flagConfig)
	if !fs.Changed(flagConfig) {
		path, _ = lookupEnv(envConfig)
	}
	if path != "" {
		if err := readFile(v, path); err != nil {
			return Config{}, err
		}
	}

	// Bind after reading the file: unknown-key detection relies on AllKeys
	// holding only the file's keys. BindPFlag is safe for every flag because
	// viper consults a bound flag only if it was Changed, and a default is set
	// for every key but peers (whose flag default is ""), so a flag's default
	// never shadows the file or the environment.
	def := Default()
	for _, s := range settings {
		f := fs.Lookup(s.flag)
		if err := v.BindPFlag(s.key, f); err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", s.key, err)
		}
		if s.key != "peers" {
			v.SetDefault(s.key, reflectValue(s.field(&def)))
		}
		// viper reads the environment itself, without an injection point, so
		// the variables are copied in. Set outranks flags in viper, hence only
		// for keys whose flag was not given.
		if !f.Changed {
			if val, ok := lookupEnv(s.envName()); ok {
				v.Set(s.key, val)
			}
		}
	}

	var c Config
	var errs []error
	for _, s := range settings {
		err := decode(s.field(&c), v.Get(s.key))
		if err == nil {
			continue
		}
		// One line per problem, each naming the key and where it came from.
		parts := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			parts = j.Unwrap()
		}
		from := source(s, fs, lookupEnv, v, path)
		for _, e := range parts {
			errs = append(errs, fmt.Errorf("config: %s: %w (from %s)", s.key, e, from))
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	if len(c.Peers) == 0 {
		c.Peers = []Peer{{ID: c.NodeID, Addr: c.Listen}}
	}
	sortPeers(c.Peers)
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// readFile reads the config file into v and rejects keys it does not know.
func readFile(v *viper.Viper, path string) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("config: config file %q does not exist: %w", path, fs.ErrNotExist)
		}
		return fmt.Errorf("config: config file %q: %w", path, err)
	}
	var typ string
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		typ = "yaml"
	case ".toml":
		typ = "toml"
	default:
		return fmt.Errorf("config: config file %q: extension %q is neither .yaml, .yml nor .toml", path, ext)
	}
	v.SetConfigFile(path)
	v.SetConfigType(typ)
	if err := v.ReadInConfig(); err != nil {
		return fmt.Errorf("config: config file %q: %w", path, err)
	}

	known := make(map[string]bool, len(settings))
	for _, s := range settings {
		known[s.key] = true
	}
	var errs []error
	for _, k := range v.AllKeys() { // sorted by viper
		switch {
		case known[k]:
		case slices.Contains(sections, k):
			// A section that is not a table hides its keys; empty is fine.
			if v.Get(k) != nil {
				errs = append(errs, fmt.Errorf("config: %s: must be a table of settings (in config file %q)", k, path))
			}
		default:
			errs = append(errs, fmt.Errorf("config: %s: unknown key in config file %q", k, path))
		}
	}
	return errors.Join(errs...)
}

// source names where the value of s came from, for error messages.
func source(s setting, fs *pflag.FlagSet, lookupEnv func(string) (string, bool), v *viper.Viper, path string) string {
	if fs.Changed(s.flag) {
		return "flag --" + s.flag
	}
	if _, ok := lookupEnv(s.envName()); ok {
		return "environment " + s.envName()
	}
	if path != "" && v.InConfig(s.key) {
		return fmt.Sprintf("config file %q", path)
	}
	return "default"
}

// reflectValue dereferences a field pointer for SetDefault.
func reflectValue(p any) any {
	switch p := p.(type) {
	case *string:
		return *p
	case *int:
		return *p
	case *uint64:
		return *p
	case *time.Duration:
		return *p
	}
	panic(fmt.Sprintf("config: no default for %T", p))
}

// decode stores raw, as found by viper in a flag, variable, file or default,
// into the field p. nil leaves the field unset.
func decode(p any, raw any) error {
	if raw == nil {
		return nil
	}
	switch p := p.(type) {
	case *string:
		switch r := raw.(type) {
		case string:
			*p = r
		case int, int64, uint64, float64, bool:
			*p = fmt.Sprint(r) // e.g. an unquoted YAML node-id: 1
		default:
			return fmt.Errorf("want a string, got %T", raw)
		}
	case *int:
		n, err := toInt(raw, strconv.IntSize)
		if err != nil {
			return err
		}
		*p = int(n)
	case *uint64:
		switch r := raw.(type) {
		case uint64:
			*p = r
		case string:
			n, err := strconv.ParseUint(strings.TrimSpace(r), 10, 64)
			if err != nil {
				return fmt.Errorf("want a non-negative integer, got %q", r)
			}
			*p = n
		default:
			n, err := toInt(raw, 64)
			if err != nil {
				return err
			}
			if n < 0 {
				return fmt.Errorf("want a non-negative integer, got %d", n)
			}
			*p = uint64(n)
		}
	case *time.Duration:
		switch r := raw.(type) {
		case time.Duration:
			*p = r
		case string:
			d, err := time.ParseDuration(strings.TrimSpace(r))
			if err != nil {
				return fmt.Errorf("want a duration such as \"500ms\", got %q", r)
			}
			*p = d
		default:
			return fmt.Errorf("want a duration string such as \"500ms\", got %v (%T)", raw, raw)
		}
	case *[]Peer:
		peers, err := toPeers(raw)
		if err != nil {
			return err
		}
		*p = peers
	default:
		panic(fmt.Sprintf("config: cannot decode into %T", p))
	}
	return nil
}

func toInt(raw any, bits int) (int64, error) {
	switch r := raw.(type) {
	case int:
		return int64(r), nil
	case int64:
		if bits < 64 && (r > 1<<(bits-1)-1 || r < -1<<(bits-1)) {
			return 0, fmt.Errorf("%d is out of range", r)
		}
		return r, nil
	case uint64:
		if r > 1<<(bits-1)-1 {
			return 0, fmt.Errorf("%d is out of range", r)
		}
		return int64(r), nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(r), 10, bits)
		if err != nil {
			return 0, fmt.Errorf("want an integer, got %q", r)
		}
		return n, nil
	}
	return 0, fmt.Errorf("want an integer, got %v (%T)", raw, raw)
}

// toPeers accepts the "n1=addr,..." string or a list of {id, addr} tables.
func toPeers(raw any) ([]Peer, error) {
	switch r := raw.(type) {
	case string:
		peers, err := ParsePeers(r)
		if err != nil {
			// ParsePeers's errors already say "config: peers:"; Load adds it back.
			parts := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				parts = j.Unwrap()
			}
			var errs []error
			for _, e := range parts {
				errs = append(errs, errors.New(strings.TrimPrefix(e.Error(), "config: peers: ")))
			}
			return nil, errors.Join(errs...)
		}
		return peers, nil
	case []any:
		var (
			peers []Peer
			errs  []error
		)
		for i, e := range r {
			m, ok := toStringMap(e)
			if !ok {
				errs = append(errs, fmt.Errorf("entry %d: want a table with id and addr, got %T", i+1, e))
				continue
			}
			var p Peer
			for _, k := range slices.Sorted(maps.Keys(m)) {
				val := m[k]
				s, ok := val.(string)
				if !ok {
					errs = append(errs, fmt.Errorf("entry %d: %s: want a string, got %T", i+1, k, val))
					continue
				}
				switch strings.ToLower(k) {
				case "id":
					p.ID = strings.TrimSpace(s)
				case "addr":
					p.Addr = strings.TrimSpace(s)
				default:
					errs = append(errs, fmt.Errorf("entry %d: unknown key %q (want id and addr)", i+1, k))
				}
			}
			peers = append(peers, p)
		}
		for _, err := range checkPeerList(peers) {
			errs = append(errs, errors.New(strings.TrimPrefix(err.Error(), "config: peers: ")))
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		sortPeers(peers)
		return peers, nil
	}
	return nil, fmt.Errorf(`want "id=host:port,..." or a list of {id, addr}, got %T`, raw)
}

func toStringMap(e any) (map[string]any, bool) {
	switch m := e.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}
