// Package etcdbench runs the workloads of `duroctl bench` against a local
// 3-member etcd cluster, the baseline of `duroctl bench compare`. It is its
// own package so that the etcd client stays out of durod: only duroctl
// imports it.
//
// The workloads are what an etcd user writes for the same job:
//
//	put   Put of a 64-byte value to one of N keys
//	incr  Get, then Txn(If ModRevision == seen, Then Put(n+1)); retried from
//	      the Get while the compare fails (another caller won)
//	hot   incr on one key
//	seq   put from one caller
//	read  linearizable Get (etcd's default) of one of N keys
package etcdbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/duro-io/duro/cmd/duroctl/internal/loadgen"
	"github.com/duro-io/duro/cmd/duroctl/internal/local"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// FindEtcd returns the etcd server binary: explicit when set, else etcd on
// PATH or in /usr/bin. When there is none and install is set, it installs
// Debian's etcd-server with apt-get (root only), logging apt's output to log.
func FindEtcd(ctx context.Context, explicit string, install bool, log io.Writer) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("etcd binary: %w", err)
		}
		return explicit, nil
	}
	look := func() string {
		if p, err := exec.LookPath("etcd"); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/bin/etcd"); err == nil {
			return "/usr/bin/etcd"
		}
		return ""
	}
	if p := look(); p != "" {
		return p, nil
	}
	if !install {
		return "", errors.New("etcd not found on PATH (install Debian's etcd-server or pass --etcd)")
	}
	if os.Geteuid() != 0 {
		return "", errors.New("etcd not found on PATH and installing etcd-server needs root (apt-get install etcd-server, or pass --etcd)")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", errors.New("etcd not found on PATH and there is no apt-get to install etcd-server (pass --etcd)")
	}
	apt := func(args ...string) error {
		// Wait for dpkg's lock when another installer holds it.
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-o", "DPkg::Lock::Timeout=600"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if log != nil {
			cmd.Stdout, cmd.Stderr = log, log
		}
		return cmd.Run()
	}
	if log != nil {
		fmt.Fprintln(log, "bench: installing etcd-server with apt-get")
	}
	if err := apt("install", "-y", "etcd-server"); err != nil {
		// The package lists may be missing or stale on a fresh machine.
		if err := apt("update"); err != nil {
			return "", fmt.Errorf("apt-get update: %w", err)
		}
		if err := apt("install", "-y", "etcd-server"); err != nil {
			return "", fmt.Errorf("apt-get install etcd-server: %w", err)
		}
	}
	if p := look(); p != "" {
		return p, nil
	}
	return "", errors.New("etcd-server installed but no etcd binary found")
}

// Cluster is a 3-member etcd cluster on loopback, fsync on (etcd's default).
type Cluster struct {
	Dir       string
	Endpoints []string // client URLs
	procs     []*exec.Cmd
	dones     []chan struct{}
	temp      bool
}

// Start starts three etcd members on free loopback ports with their data in
// dir (a temporary directory, removed by Close, when empty) and waits until
// every member answers and the cluster has a leader.
func Start(ctx context.Context, bin, dir string, log io.Writer) (*Cluster, error) {
	c := &Cluster{Dir: dir}
	var err error
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "etcd-bench-*"); err != nil {
			return nil, err
		}
		c.temp = true
	} else if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	addrs, err := local.FreeAddrs(6)
	if err != nil {
		c.Close()
		return nil, err
	}
	var initial []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("m%d=http://%s", i+1, addrs[2*i+1]))
	}
	for i := range 3 {
		name := fmt.Sprintf("m%d", i+1)
		client, peer := "http://"+addrs[2*i], "http://"+addrs[2*i+1]
		logf, err := os.Create(filepath.Join(c.Dir, name+".log"))
		if err != nil {
			c.Close()
			return nil, err
		}
		cmd := exec.Command(bin, "--name", name, "--data-dir", filepath.Join(c.Dir, name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "duro-bench",
			"--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn", "--log-outputs", "stderr")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			c.Close()
			return nil, fmt.Errorf("start etcd: %w", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); logf.Close(); close(done) }()
		c.procs, c.dones = append(c.procs, cmd), append(c.dones, done)
		c.Endpoints = append(c.Endpoints, client)
	}
	if log != nil {
		fmt.Fprintf(log, "bench: local 3-member etcd cluster on %s (data in %s)\n", strings.Join(c.Endpoints, ","), c.Dir)
	}
	if err := c.waitHealthy(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) waitHealthy(ctx context.Context) error {
	cli, err := newClient(c.Endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		last = nil
		for i, ep := range c.Endpoints {
			select {
			case <-c.dones[i]:
				return fmt.Errorf("etcd member m%d exited; see %s", i+1, filepath.Join(c.Dir, fmt.Sprintf("m%d.log", i+1)))
			default:
			}
			sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := cli.Status(sctx, ep)
			scancel()
			if err == nil && st.Leader == 0 {
				err = errors.New("no leader")
			}
			if err != nil {
				last = fmt.Errorf("%s: %w", ep, err)
				break
			}
		}
		if last == nil {
			gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
			_, last = cli.Get(gctx, "/bench/health")
			gcancel()
			if last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd cluster not healthy: %v", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close stops the members (SIGTERM, then SIGKILL after 20 s) and removes
// the directory if Start created it.
func (c *Cluster) Close() {
	for _, p := range c.procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	for i, done := range c.dones {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			c.procs[i].Process.Kill()
			<-done
		}
	}
	if c.temp {
		os.RemoveAll(c.Dir)
	}
}

func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Target runs workloads through etcd clients, each connected to every
// member; every call picks one of them at random.
type Target struct {
	clis    []*clientv3.Client
	retries atomic.Int64
}

// NewTarget connects n clients (at least 1) to endpoints.
func NewTarget(endpoints []string, n int) (*Target, error) {
	t := &Target{}
	for range max(n, 1) {
		cli, err := newClient(endpoints)
		if err != nil {
			t.Close()
			return nil, err
		}
		t.clis = append(t.clis, cli)
	}
	return t, nil
}

// Close closes the clients.
func (t *Target) Close() error {
	for _, c := range t.clis {
		c.Close()
	}
	return nil
}

func (t *Target) pick(rng *rand.Rand) *clientv3.Client { return t.clis[rng.IntN(len(t.clis))] }

// TakeRetries returns the compare-and-swap conflicts retried since the last
// call.
func (t *Target) TakeRetries() int64 { return t.retries.Swap(0) }

// Prepare implements loadgen.Target.
func (t *Target) Prepare(ctx context.Context, w string, objects int) (loadgen.Op, error) {
	keys := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("/bench/%s/%d", prefix, i)
		}
		return out
	}
	value := strings.Repeat("v", loadgen.ValueBytes)
	kv := keys("kv", objects)
	put := func(ctx context.Context, rng *rand.Rand) error {
		_, err := t.pick(rng).Put(ctx, kv[rng.IntN(len(kv))], value)
		return err
	}
	t.retries.Store(0)
	switch w {
	case "put", "seq":
		return put, nil
	case "incr":
		ctrs := keys("ctr", objects)
		return func(ctx context.Context, rng *rand.Rand) error {
			return t.increment(ctx, t.pick(rng), ctrs[rng.IntN(len(ctrs))])
		}, nil
	case "hot":
		return func(ctx context.Context, rng *rand.Rand) error { return t.increment(ctx, t.pick(rng), "/bench/hot") }, nil
	case "read":
		err := loadgen.Parallel(ctx, len(kv), loadgen.DefaultCallers, "read: writing keys", nil, func(ctx context.Context, i int) error {
			_, err := t.clis[i%len(t.clis)].Put(ctx, kv[i], value)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("writing the keys to read: %w", err)
		}
		return func(ctx context.Context, rng *rand.Rand) error {
			resp, err := t.pick(rng).Get(ctx, kv[rng.IntN(len(kv))])
			if err == nil && len(resp.Kvs) != 1 {
				err = errors.New("etcd: key written before the run is missing")
			}
			return err
		}, nil
	}
	return nil, fmt.Errorf("unknown workload %q", w)
}

// increment adds one to the decimal counter at key with the compare-and-swap
// loop etcd users write: read value and ModRevision, then a Txn that puts
// n+1 only if the key's ModRevision is unchanged (0: still absent).
func (t *Target) increment(ctx context.Context, cli *clientv3.Client, key string) error {
	for {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return err
		}
		var n int64
		var rev int64
		if len(resp.Kvs) == 1 {
			rev = resp.Kvs[0].ModRevision
			if n, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64); err != nil {
				return fmt.Errorf("etcd: counter %s holds %q", key, resp.Kvs[0].Value)
			}
		}
		txn, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, strconv.FormatInt(n+1, 10))).
			Commit()
		if err != nil {
			return err
		}
		if txn.Succeeded {
			return nil
		}
		t.retries.Add(1)
	}
}

var _ loadgen.Target = (*Target)(nil)

// Run starts etcd, runs workloads against it one after the other and stops
// it.
func Run(ctx context.Context, bin, dir string, clients int, workloads []string, cfg loadgen.Config, log io.Writer) ([]loadgen.Result, error) {
	c, err := Start(ctx, bin, dir, log)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	t, err := NewTarget(c.Endpoints, clients)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var out []loadgen.Result
	for _, w := range workloads {
		r, err := loadgen.RunWorkload(ctx, t, w, cfg)
		if err != nil {
			return out, fmt.Errorf("etcd: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}
