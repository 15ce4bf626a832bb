# duro — make help lists the targets.
GO      ?= go
BIN     := bin
PEERS   := n1=127.0.0.1:7071,n2=127.0.0.1:7072,n3=127.0.0.1:7073
TESTFLAGS ?=
BENCHFLAGS ?=

.PHONY: help build run test test-deps lint proto clean fuzz bench bench-compare bench-failover bench-scale jepsen jepsen-smoke

JEPSEN_NODES ?= 5
JEPSEN_TIME  ?= 60s

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build durod and duroctl into ./bin
	$(GO) build -o $(BIN)/ ./cmd/...

run: build ## start a local 3-node cluster in the foreground (data under ./data; Ctrl-C stops it)
	@mkdir -p data
	@trap 'kill $$(jobs -p) 2>/dev/null; wait' INT TERM EXIT; \
	for i in 1 2 3; do \
	  $(BIN)/durod --node-id n$$i --data-dir data/n$$i --listen 127.0.0.1:707$$i --http 127.0.0.1:708$$i --peers $(PEERS) & \
	done; \
	echo "duro: 3 nodes on 127.0.0.1:7071-7073 (HTTP 7081-7083); try: $(BIN)/duroctl --endpoints 127.0.0.1:7071 status"; \
	wait

test: test-deps ## run the whole test suite (race detector on)
	$(GO) vet ./...
	$(GO) build -o $(BIN)/ ./cmd/...
	@[ "$$(id -u)" = 0 ] || echo "jepsen smoke (TestSmoke): will skip, it needs root for network namespaces and nftables"
	@command -v chromium >/dev/null || echo "chat page (TestChatPageTwoTabs): will skip unless it can install chromium itself"
	$(GO) test -race -timeout 15m $(TESTFLAGS) ./...
	@echo "shard: again on the raft-boltdb log store (new shards use shard/wal; older ones keep raft-boltdb)"
	DURO_TEST_LOG_STORE=boltdb $(GO) test -race -timeout 5m $(TESTFLAGS) ./shard/

# The tests install these themselves when they can; installing them first, one
# apt-get at a time, keeps test packages running in parallel from contending
# for dpkg's lock.
TEST_PKGS := etcd:etcd-server chromium:chromium nft:nftables ip:iproute2

test-deps: ## install the Debian packages the tests use (as root with apt-get; otherwise a no-op)
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || exit 0; \
	missing=""; for p in $(TEST_PKGS); do command -v $${p%%:*} >/dev/null || missing="$$missing $${p#*:}"; done; \
	[ -n "$$missing" ] || exit 0; \
	echo "test-deps: installing$$missing with apt-get"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing >/dev/null || \
	{ apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && \
	  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing >/dev/null; } || \
	echo "test-deps: could not install$$missing; the tests that need them will try again or skip"

lint: ## gofmt and vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

jepsen: build ## chaos suite (root): CHAOS.md cases then every workload x nemesis, JEPSEN_TIME each, JEPSEN_NODES=3|5
	$(GO) build -o $(BIN)/jepsen ./jepsen/cmd/jepsen
	$(BIN)/jepsen --binary $(BIN)/durod --nodes $(JEPSEN_NODES) --time $(JEPSEN_TIME) --chaos-cases; a=$$?; \
	$(BIN)/jepsen --binary $(BIN)/durod --nodes $(JEPSEN_NODES) --time $(JEPSEN_TIME) --matrix; b=$$?; \
	test $$a -eq 0 -a $$b -eq 0

jepsen-smoke: build ## chaos smoke (root, <= 3 min): register under partitions, counter under kills
	$(GO) build -o $(BIN)/jepsen ./jepsen/cmd/jepsen
	$(BIN)/jepsen --binary $(BIN)/durod --nodes 3 --time 30s --smoke

proto: ## regenerate rpc/pb from duro.proto (needs protoc)
	command -v protoc >/dev/null || apt-get install -y protobuf-compiler
	GOFLAGS= $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOFLAGS= $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	cd rpc && PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative pb/duro.proto

fuzz: ## run each fuzz target for 30 s
	$(GO) test -run XXX -fuzz FuzzDecode -fuzztime 30s ./fsm
	$(GO) test -run XXX -fuzz FuzzParseID -fuzztime 30s .

bench: build ## duroctl bench: put, incr, hot, seq, read on a local 3-node cluster (BENCHFLAGS="--duration 30s ...")
	$(BIN)/duroctl bench $(BENCHFLAGS)

bench-compare: build ## the bench workloads on duro, then on a local 3-member etcd: one table with the ratios
	command -v etcd >/dev/null || apt-get install -y etcd-server || (apt-get update && apt-get install -y etcd-server)
	$(BIN)/duroctl bench compare $(BENCHFLAGS)

bench-failover: build ## SIGKILL the busiest leader under incr load, 5 trials: failover time, failed calls, no lost increments
	$(BIN)/duroctl bench failover $(BENCHFLAGS)

bench-scale: build ## many objects: disk per object, RSS per active object, activation latency (BENCHFLAGS="--objects 1000000")
	$(BIN)/duroctl bench scale $(BENCHFLAGS)

clean: ## remove binaries and local data
	rm -rf $(BIN) data
