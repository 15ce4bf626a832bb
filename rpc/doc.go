// Package rpc is the only package that imports gRPC. It holds the protobuf
// definitions (pb), the Objects and Admin services, and the Raft transport.
//
// # One port per node
//
// A node listens on one TCP address. Mux reads the first bytes of each
// connection: a Raft connection starts with the magic "DRFT" and a 4-byte
// shard ID and is handed to that shard's hashicorp/raft NetworkTransport;
// anything else (the HTTP/2 preface of gRPC) goes to the gRPC server. So all
// shards' Raft traffic and all client and admin calls share one listener,
// while Raft keeps its pipelined, battle-tested wire protocol.
package rpc
