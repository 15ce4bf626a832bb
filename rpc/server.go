package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/fsm"
	"github.com/duro-io/duro/rpc/pb"
	"github.com/duro-io/duro/shard"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Failpoints inject faults for tests. The zero value injects nothing.
type Failpoints struct {
	// DropReplyAfterCommit is the probability that a successful call's reply
	// is replaced by an Unavailable transport error after the call committed.
	DropReplyAfterCommit float64
	// ClockControl lets the node's clock be offset at run time through
	// the HTTP endpoint /debug/clock (chaos clock-skew tests). The rpc
	// package does not read it; durod's server does.
	ClockControl bool
}

// ServerConfig configures the gRPC services of a node.
type ServerConfig struct {
	NodeID     string
	Addr       string
	Peers      []raft.Server
	Host       *shard.Host
	Logger     *slog.Logger
	Failpoints Failpoints
	// Follow serves Objects.Follow (see pb.FollowRequest): it calls send for
	// each entry in order until ctx ends. nil: Follow is unimplemented.
	Follow func(ctx context.Context, ns string, id duro.ID, from uint64, send func(index uint64, msg []byte) error) error
}

// Server is a node's gRPC server: Objects, Admin and health.
type Server struct {
	pb.UnimplementedObjectsServer
	pb.UnimplementedAdminServer
	cfg    ServerConfig
	grpc   *grpc.Server
	health *health.Server

	stopping chan struct{} // closed by Stop: long-lived streams wind down
	stopOnce sync.Once
}

// NewServer builds the server; Serve starts it. Its HTTP/2 windows are fixed
// (1 MiB), as the SDK's are: that turns off gRPC's bandwidth probe, a PING
// and its answer every round trip on every busy connection.
func NewServer(cfg ServerConfig) *Server {
	s := &Server{cfg: cfg, grpc: grpc.NewServer(grpc.MaxRecvMsgSize(16<<20),
		grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(1<<20)), health: health.NewServer(), stopping: make(chan struct{})}
	pb.RegisterObjectsServer(s.grpc, s)
	pb.RegisterAdminServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	return s
}

// Serve serves gRPC on l until Stop.
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(l) }

// Stop stops accepting calls and waits for running ones, bounded by ctx.
// Call streams (which other nodes' SDKs keep open indefinitely) stop taking
// requests, answer the ones they took, and end with Unavailable, so the
// callers move to another node instead of Stop waiting out ctx.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
	}
}

// GRPC returns the underlying server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

func toRequest(r *pb.CallRequest) (*shard.Request, *duro.Error) {
	if len(r.ObjectId) != duro.IDLen {
		return nil, duro.Errorf(duro.CodeInvalidArgument, "object id must be %d bytes, got %d", duro.IDLen, len(r.ObjectId))
	}
	req := &shard.Request{Namespace: r.Namespace, Method: r.Method, Arg: r.Arg, Seq: r.Seq, AckedBelow: r.AckedBelow}
	copy(req.Object[:], r.ObjectId)
	for _, h := range r.CallChain {
		if len(h.ObjectId) != duro.IDLen {
			return nil, duro.Errorf(duro.CodeInvalidArgument, "call chain: object id must be %d bytes, got %d", duro.IDLen, len(h.ObjectId))
		}
		hop := duro.Hop{Namespace: h.Namespace}
		copy(hop.ID[:], h.ObjectId)
		req.Chain = append(req.Chain, hop)
	}
	switch len(r.ClientId) {
	case 0:
	case len(req.Client):
		copy(req.Client[:], r.ClientId)
		if req.Client == (fsm.ClientID{}) {
			return nil, duro.Errorf(duro.CodeInvalidArgument, "client id must not be all zero")
		}
	default:
		return nil, duro.Errorf(duro.CodeInvalidArgument, "client id must be 16 bytes, got %d", len(r.ClientId))
	}
	return req, nil
}

func toPBError(e *duro.Error) *pb.Error {
	if e == nil {
		return nil
	}
	return &pb.Error{Code: int32(e.Code), Message: e.Message, Retryable: e.Retryable,
		Overloaded: e.Overloaded, Indeterminate: e.Indeterminate, Leader: e.Leader}
}

func (s *Server) dropReply(res shard.Result) bool {
	p := s.cfg.Failpoints.DropReplyAfterCommit
	return p > 0 && res.Err == nil && rand.Float64() < p
}

// Call runs one call.
func (s *Server) Call(ctx context.Context, r *pb.CallRequest) (*pb.CallResponse, error) {
	req, verr := toRequest(r)
	if verr != nil {
		return &pb.CallResponse{Error: toPBError(verr)}, nil
	}
	res := s.cfg.Host.Call(ctx, req)
	if s.dropReply(res) {
		return nil, status.Error(codes.Unavailable, "failpoint: reply dropped after commit")
	}
	return &pb.CallResponse{Reply: res.Reply, Error: toPBError(res.Err)}, nil
}

// CallStream submits calls in the order received, so calls to one object run
// in the order the client sent them; responses may come back in any order,
// matched by tag.
func (s *Server) CallStream(stream pb.Objects_CallStreamServer) error {
	ctx := stream.Context()
	// Responses are queued and sent by one goroutine: a result callback
	// runs on an object's turn goroutine (or the shard's leadership
	// watcher), which a client that stops reading must not block. The
	// queue holds at most one response per call the client sent.
	var (
		wg     sync.WaitGroup // result callbacks still to run
		outMu  sync.Mutex     // guards out
		out    []*pb.CallResponse
		wake   = make(chan struct{}, 1)
		flush  = make(chan struct{}) // closed once every callback ran
		sender = make(chan struct{}) // closed when the sender is done
	)
	send := func(resp *pb.CallResponse) {
		outMu.Lock()
		out = append(out, resp)
		outMu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	go func() {
		defer close(sender)
		for {
			last := false
			select {
			case <-wake:
			case <-flush:
				last = true
			case <-ctx.Done():
				return
			}
			outMu.Lock()
			batch := out
			out = nil
			outMu.Unlock()
			for _, r := range batch {
				if stream.Send(r) != nil {
					return
				}
			}
			if last {
				return
			}
		}
	}()
	// On the way out, answer every call taken, then end the stream.
	defer func() {
		wg.Wait()
		close(flush)
		<-sender
	}()
	type received struct {
		r   *pb.CallRequest
		err error
	}
	// Recv blocks, so it runs apart and the loop can also watch for Stop.
	// Once the handler returns, the stream's context ends and Recv with it.
	in := make(chan received)
	go func() {
		for {
			r, err := stream.Recv()
			select {
			case in <- received{r, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var r *pb.CallRequest
		select {
		case <-s.stopping:
			return status.Error(codes.Unavailable, "node shutting down")
		case got := <-in:
			if errors.Is(got.err, io.EOF) {
				return nil
			}
			if got.err != nil {
				return got.err
			}
			r = got.r
		}
		tag := r.Tag
		req, verr := toRequest(r)
		if verr != nil {
			send(&pb.CallResponse{Tag: tag, Error: toPBError(verr)})
			continue
		}
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if r.TimeoutMs > 0 {
			cctx, cancel = context.WithTimeout(ctx, time.Duration(r.TimeoutMs)*time.Millisecond)
		}
		wg.Add(1)
		s.cfg.Host.Submit(cctx, req, func(res shard.Result) {
			defer wg.Done()
			cancel()
			if s.dropReply(res) {
				res = shard.Result{Err: &duro.Error{Code: duro.CodeUnavailable, Indeterminate: true, Message: "failpoint: reply dropped after commit"}}
			}
			send(&pb.CallResponse{Tag: tag, Reply: res.Reply, Error: toPBError(res.Err)})
		})
	}
}

// Follow streams an ordered log object's entries as they commit.
func (s *Server) Follow(r *pb.FollowRequest, stream pb.Objects_FollowServer) error {
	if s.cfg.Follow == nil {
		return status.Error(codes.Unimplemented, "follow is not served by this node")
	}
	if len(r.ObjectId) != duro.IDLen {
		return status.Errorf(codes.InvalidArgument, "object id must be %d bytes, got %d", duro.IDLen, len(r.ObjectId))
	}
	var id duro.ID
	copy(id[:], r.ObjectId)
	if !id.Valid(r.Namespace) {
		return status.Errorf(codes.InvalidArgument, "object id %s does not belong to namespace %q", id, r.Namespace)
	}
	fctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-fctx.Done():
		}
	}()
	err := s.cfg.Follow(fctx, r.Namespace, id, r.From, func(index uint64, msg []byte) error {
		return stream.Send(&pb.FollowEvent{Index: index, Message: msg})
	})
	if e, ok := err.(*duro.Error); ok {
		return status.Error(codes.Code(e.Code), e.Message)
	}
	return err
}

// Status reports the node's view of every shard.
func (s *Server) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	h := s.cfg.Host
	resp := &pb.StatusResponse{NodeId: s.cfg.NodeID, Addr: s.cfg.Addr, Shards: int32(len(h.Shards())),
		SlotCount: duro.SlotCount, Namespaces: h.Registry().Namespaces()}
	for _, p := range s.cfg.Peers {
		resp.Nodes = append(resp.Nodes, &pb.Node{Id: string(p.ID), Addr: string(p.Address)})
	}
	for _, sh := range h.Shards() {
		r0 := sh.Raft()
		st := r0.Stats()
		addr, id := sh.Leader()
		ss := &pb.ShardStatus{Id: int32(sh.ID()), State: r0.State().String(), LeaderId: id, LeaderAddr: addr,
			Term: r0.CurrentTerm(), Applied: sh.Machine().Applied(), Commit: parseU64(st["commit_index"]), LastLog: r0.LastIndex()}
		if f := r0.GetConfiguration(); f.Error() == nil {
			for _, srv := range f.Configuration().Servers {
				if srv.Suffrage == raft.Voter {
					ss.Voters = append(ss.Voters, string(srv.ID))
				}
			}
		}
		as := sh.AlarmStats()
		ss.AlarmsFired, ss.AlarmFailures = as.Fired, as.Failures
		for _, f := range as.Failed {
			ss.FailedAlarms = append(ss.FailedAlarms, &pb.FailedAlarm{Namespace: f.Namespace, ObjectId: f.Object[:],
				AtUnixMs: f.At.UnixMilli(), Attempts: int32(f.Attempts), Error: f.Err})
		}
		if r.Hashes {
			applied, sum, err := sh.Machine().Hash()
			if err == nil {
				ss.Applied = applied
				ss.StateHash = sum[:]
			}
		}
		resp.Shard = append(resp.Shard, ss)
	}
	return resp, nil
}

func parseU64(s string) uint64 {
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}

// SetServing marks the node serving (or not) in gRPC health checks.
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
}
