// Package server starts a duro node: the entry point cmd/durod uses, and the
// one a program with its own classes calls.
//
//	func main() { server.Main(myClass, otherClass) }
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/cmd/durod/builtin"
	"github.com/duro-io/duro/config"
	"github.com/duro-io/duro/rpc"
	"github.com/duro-io/duro/shard"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Main runs a node with the built-in classes plus classes, and exits.
func Main(classes ...*duro.Class) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr, classes...)
	stop()
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "durod:", err)
		os.Exit(1)
	}
}

// Run runs a node until ctx ends.
func Run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer, classes ...*duro.Class) error {
	cfg, err := config.Load(args, lookupEnv)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: durod [flags]\n\n%s", config.FlagSet().FlagUsages())
		return err
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	reg := duro.NewRegistry(append(builtin.Classes(), classes...)...)
	n, err := Start(ctx, cfg, reg, log, failpointsFromEnv(lookupEnv))
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return n.Close(sctx)
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	o := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(w, o)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, o)
	}
	return slog.New(h).With("node", cfg.NodeID)
}

// failpointsFromEnv reads DURO_FAILPOINTS, e.g.
// "drop-reply-after-commit=0.3,clock-control=1". Test use only.
func failpointsFromEnv(lookupEnv func(string) (string, bool)) rpc.Failpoints {
	var fp rpc.Failpoints
	s, _ := lookupEnv("DURO_FAILPOINTS")
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch k {
		case "drop-reply-after-commit":
			fp.DropReplyAfterCommit, _ = strconv.ParseFloat(v, 64)
		case "clock-control":
			fp.ClockControl = v == "1" || v == "true"
		}
	}
	return fp
}

// Node is a running duro node.
type Node struct {
	cfg  config.Config
	log  *slog.Logger
	mux  *rpc.Mux
	host *shard.Host
	srv  *rpc.Server
	http *http.Server
	gw   *client.Client
	// calls routes calls between objects (duro.Context.Stub) through the
	// SDK, to whichever node leads the callee; set once serving started.
	calls atomic.Pointer[client.Client]
	clock *skewClock // nil unless Failpoints.ClockControl
	errCh chan error
	// stopping ends when Close starts; followers (gRPC and SSE) end with it,
	// so they do not hold the HTTP server's graceful shutdown.
	stopping context.Context
	stop     context.CancelFunc
}

// Start opens the node's shards and starts serving.
func Start(ctx context.Context, cfg config.Config, reg *duro.Registry, log *slog.Logger, fp rpc.Failpoints) (*Node, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	shards, err := checkClusterFile(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Shards = shards
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	n := &Node{cfg: cfg, log: log, errCh: make(chan error, 3)}
	n.stopping, n.stop = context.WithCancel(context.Background())
	var now func() time.Time
	if fp.ClockControl {
		n.clock = &skewClock{}
		now = n.clock.Now
		log.Warn("test clock control enabled: /debug/clock offsets this node's clock")
	}
	n.mux = rpc.NewMux(ln, log, nil)
	var peers []raft.Server
	for _, p := range cfg.Peers {
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
	}
	self := cfg.Self().Addr
	rt := cfg.Raft
	n.host, err = shard.NewHost(shard.HostConfig{
		Settings: shard.Settings{
			NodeID: cfg.NodeID, Peers: peers,
			Timing: shard.RaftTiming{HeartbeatTimeout: rt.HeartbeatTimeout, ElectionTimeout: rt.ElectionTimeout,
				LeaderLeaseTimeout: rt.LeaderLeaseTimeout, CommitTimeout: rt.CommitTimeout, SnapshotThreshold: rt.SnapshotThreshold,
				SnapshotInterval: rt.SnapshotInterval, TrailingLogs: rt.TrailingLogs, MaxAppendEntries: rt.MaxAppendEntries},
			LogStore: rt.LogStore,
			Registry: reg, Limits: shard.Limits{MaxKeyBytes: cfg.Limits.MaxKeyBytes, MaxValueBytes: cfg.Limits.MaxValueBytes},
			SessionTTL: cfg.SessionTTL, IdleTimeout: cfg.IdleTimeout, Logger: log, Now: now,
			Caller: n.callObject, Reachable: reachable,
		},
		DataDir: cfg.DataDir, Shards: cfg.Shards, MaxActive: cfg.MaxActive,
		Transport: func(id shard.ID) (raft.Transport, error) {
			return n.mux.RaftTransport(uint32(id), self, shard.HCLogger(log.With("shard", int(id))))
		},
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	n.srv = rpc.NewServer(rpc.ServerConfig{NodeID: cfg.NodeID, Addr: self, Peers: peers, Host: n.host, Logger: log, Failpoints: fp,
		Follow: func(ctx context.Context, ns string, id duro.ID, from uint64, send func(uint64, []byte) error) error {
			return n.follow(ctx, ns, id, from, func(i uint64, m json.RawMessage) error { return send(i, m) }, nil)
		}})
	go func() { n.errCh <- n.mux.Serve() }()
	go func() { n.errCh <- n.srv.Serve(n.mux.GRPC()) }()
	n.srv.SetServing(true)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cc, err := client.Dial(dctx, []string{self})
	cancel()
	if err != nil {
		n.Close(ctx)
		return nil, fmt.Errorf("client for calls between objects: %w", err)
	}
	n.calls.Store(cc)
	if cfg.HTTP != "" {
		// The gateway calls through the SDK, dialled to this node; routing
		// takes calls on to shard leaders.
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := client.Dial(dctx, []string{self})
		cancel()
		if err != nil {
			n.Close(ctx)
			return nil, fmt.Errorf("http gateway: %w", err)
		}
		n.gw = c
		hl, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			n.Close(ctx)
			return nil, fmt.Errorf("http listen: %w", err)
		}
		n.http = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { n.errCh <- n.http.Serve(hl) }()
	}
	log.Info("durod started", "listen", cfg.Listen, "http", cfg.HTTP, "data", cfg.DataDir, "shards", cfg.Shards, "peers", len(peers))
	return n, nil
}

// checkClusterFile records the cluster shape on first start and refuses to
// start with a different shard count: shards are fixed at creation. It
// returns the shard count to run with: an unset (0) count is the recorded
// one, or for a new cluster one shard per node. Fewer, fuller Raft groups
// make each fsync and RPC carry more calls, and every group costs its
// heartbeats even when idle; one per node lets each node lead one.
func checkClusterFile(cfg config.Config) (int, error) {
	path := cfg.DataDir + "/cluster.json"
	type shape struct {
		Shards int `json:"shards"`
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		shards := cfg.Shards
		if shards == 0 {
			shards = max(len(cfg.Peers), 1)
		}
		b, _ = json.Marshal(shape{Shards: shards})
		return shards, os.WriteFile(path, b, 0o600)
	}
	if err != nil {
		return 0, err
	}
	var s shape
	if err := json.Unmarshal(b, &s); err != nil || s.Shards < 1 {
		return 0, fmt.Errorf("%s: not a cluster shape (%v)", path, err)
	}
	if cfg.Shards != 0 && s.Shards != cfg.Shards {
		return 0, fmt.Errorf("config: shards: the data in %s was created with %d shards, got %d (shards are fixed at cluster creation)", cfg.DataDir, s.Shards, cfg.Shards)
	}
	return s.Shards, nil
}

func (n *Node) httpHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	leaders := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "duro_shards_led", Help: "Shards this node leads."}, func() float64 {
		c := 0
		for _, s := range n.host.Shards() {
			if s.IsLeader() {
				c++
			}
		}
		return float64(c)
	})
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "duro_objects_active", Help: "Objects this node holds in memory."}, func() float64 {
		return float64(n.host.ActiveObjects())
	})
	reg.MustRegister(leaders, active)
	alarmStats := func(f func(shard.AlarmStats) float64) func() float64 {
		return func() float64 {
			t := 0.0
			for _, s := range n.host.Shards() {
				t += f(s.AlarmStats())
			}
			return t
		}
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "duro_alarms_fired_total",
			Help: "Alarm handlers this node ran and committed while leading their shard."},
			alarmStats(func(a shard.AlarmStats) float64 { return float64(a.Fired) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "duro_alarm_failures_total",
			Help: "Failed alarm handler attempts on this node (each retry counts)."},
			alarmStats(func(a shard.AlarmStats) float64 { return float64(a.Failures) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "duro_alarms_failed",
			Help: "Alarms this node gave up on after every retry failed; they stay set (see duroctl status)."},
			alarmStats(func(a shard.AlarmStats) float64 { return float64(len(a.Failed)) })),
	)
	mux := http.NewServeMux()
	if n.gw != nil {
		mux.Handle("/v1/", &gateway{c: n.gw, timeout: 30 * time.Second, follow: n.follow})
		// A short address for the chat page of room {name}.
		mux.HandleFunc("GET /chat/{room}", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/v1/ns/room/objects/"+url.PathEscape(r.PathValue("room"))+"/http/", http.StatusFound)
		})
	}
	// Profiles, for finding where time goes before optimising.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if n.clock != nil {
		mux.Handle("/debug/clock", n.clock)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		for _, s := range n.host.Shards() {
			if addr, _ := s.Leader(); addr == "" {
				http.Error(w, fmt.Sprintf("shard %d has no leader\n", s.ID()), http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

// callObject is the node's shard.Settings.Caller.
func (n *Node) callObject(ctx context.Context, ns string, id duro.ID, method string, arg []byte) ([]byte, error) {
	c := n.calls.Load()
	if c == nil {
		return nil, &duro.Error{Code: duro.CodeUnavailable, Retryable: true, Message: "node still starting: calls between objects not ready"}
	}
	return c.Namespace(ns).Get(id).CallRaw(ctx, method, arg)
}

// Close shuts the node down in order: stop serving health, hand off
// leaderships, stop gRPC (finishing calls), stop the listener, shut down Raft
// and close the stores.
func (n *Node) Close(ctx context.Context) error {
	n.stop()
	n.srv.SetServing(false)
	if n.http != nil {
		n.http.Shutdown(ctx)
	}
	if n.gw != nil {
		n.gw.Close()
	}
	if cc := n.calls.Load(); cc != nil {
		cc.Close()
	}
	n.host.TransferLeaderships(ctx)
	n.srv.Stop(ctx)
	err := n.host.Close(ctx)
	n.mux.Close()
	return err
}

// reachable reports whether the node at addr (its listen address, which
// carries Raft and gRPC) answers its health service as serving within ctx.
// Leadership balancing asks it before handing a shard to that node.
func reachable(ctx context.Context, addr string) bool {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}
