# raftd build, test and tooling entry points. Run `make help` for a list.

GO        ?= go
BIN       := $(CURDIR)/bin
# buf (lint, breaking check, code generation) runs as a Go tool from its own
# module, tools/go.mod: its dependencies would otherwise raise versions in
# raftd's go.mod (protobuf, x/net, klauspost/compress, ...) and so change
# what raftd is built with. protoc-gen-go and protoc-gen-go-grpc are tool
# directives in the root go.mod, at the versions of google.golang.org/protobuf
# and grpc the project uses (proto/buf.gen.yaml runs them with `go tool`).
# No protoc and no network access to buf.build are needed.
BUF       := $(GO) tool -modfile=$(CURDIR)/tools/go.mod buf
# The descriptors of the last release, for `buf breaking` (see proto-release).
PROTO_BASELINE := release/raftd-protos.binpb
# What `raftd version` and the raftd_build_info metric report
# (core/buildinfo): the release tag if HEAD has one (else "devel"), the
# commit, and whether the tree had uncommitted changes.
VERSION   ?= $(shell git describe --tags --exact-match 2>/dev/null)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED  ?= $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true)
LDFLAGS   := -X github.com/raftd/raftd/core/buildinfo.version=$(VERSION) \
	-X github.com/raftd/raftd/core/buildinfo.commit=$(COMMIT) \
	-X github.com/raftd/raftd/core/buildinfo.modified=$(MODIFIED)
NODE_KV   := fsms/node-kv
PYTHON_KV := fsms/python-kv

# Test knobs: `make test` stays well under 15 minutes on 2 cores.
SIM_SEEDS ?= 100000
SIM_STEPS ?= 2000
FUZZTIME  ?= 60s
RACE_PKGS := ./core/node/... ./core/transport/... ./core/server/... ./plugin/host/...

.PHONY: help build docs node run test test-node test-go test-race vet proto proto-check proto-lint proto-breaking proto-release sim fuzz soak bench bench-cluster clean

help:
	@echo "make run    build everything and start a local 3-node kv cluster"
	@echo "make test   the whole test suite (what CI runs)"
	@echo "make sim    long simulator run ($(SIM_SEEDS) seeds)"
	@echo "make fuzz   fuzz targets, $(FUZZTIME) each"
	@echo "make soak   long end-to-end and crash runs"
	@echo "make bench  the 3-node cluster table, then the Go benchmarks"
	@echo "make bench-cluster  the 3-node cluster table alone (BENCH_CONC, BENCH_OPS, BENCH_DURATION)"
	@echo "make proto  regenerate the protobuf code (buf as a Go tool; no protoc)"
	@echo "make docs   regenerate docs/cli, the command reference"
	@echo "make proto-release  record the protos of a release for the breaking check"

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# docs/cli is the command and flag reference, generated from the command
# tree with cobra/doc. TestCLIReference (run by make test) fails while it
# is stale; this rewrites it.
docs:
	$(GO) test ./cmd/raftd/internal/cli -run '^TestCLIReference$$' -count=1 -update-docs

# The Node.js kv plugin needs its dependencies installed from the lock file.
# Without npm the Node plugin (and its tests) are skipped, not failed.
node:
	@if [ -f $(NODE_KV)/package-lock.json ]; then \
		if ! command -v npm >/dev/null 2>&1; then \
			echo "npm not found: skipping the Node.js plugin's dependencies"; \
		elif [ ! -d $(NODE_KV)/node_modules ] || [ $(NODE_KV)/package-lock.json -nt $(NODE_KV)/node_modules ]; then \
			cd $(NODE_KV) && npm ci --no-audit --no-fund --loglevel=error; \
		fi; \
	fi

run: build
	$(BIN)/raftd dev --fsm $(BIN)/raftd-fsm-kv --nodes 3

test: build node vet proto-check test-node test-go test-race

# The Node.js plugin's own unit tests (the Go tests drive it through plugin/host).
test-node: node
	@if command -v node >/dev/null 2>&1 && [ -d $(NODE_KV)/node_modules ]; then cd $(NODE_KV) && node --test test/; fi

vet:
	$(GO) vet ./...

test-go:
	RAFTD_BIN=$(BIN) $(GO) test -count=1 -timeout 14m ./...

# The race detector over the packages with concurrency of their own (the
# node's loop, apply and snapshot goroutines, peer streams, the API server,
# the plugin host). On 2 cores: about 35 s with a warm build cache; from an
# empty cache (the race build of every dependency) about 7 minutes of CPU.
test-race: build
	RAFTD_BIN=$(BIN) $(GO) test -race -count=1 -timeout 10m $(RACE_PKGS)

# The plugins in other languages carry what they load at run time in their
# own directory, so that each works when copied out of the repository: a
# copy of fsm.proto (Node.js loads it as text) and, for Python, the
# descriptor set compiled by buf from its proto/ directory.
PROTO_COPIES := $(NODE_KV)/proto/fsm.proto $(PYTHON_KV)/proto/fsm.proto
PYTHON_DESCRIPTORS := $(PYTHON_KV)/proto/descriptors.binpb
PYTHON_DESCRIPTORS_BUILD = cd $(PYTHON_KV)/proto && $(BUF) build --as-file-descriptor-set --exclude-source-info

# Regenerates the Go code from proto/**/*.proto (configuration:
# proto/buf.yaml, proto/buf.gen.yaml) and refreshes the plugins' copies.
proto:
	cd proto && $(BUF) generate
	for f in $(PROTO_COPIES); do cp proto/fsm/v1/fsm.proto $$f; done
	$(PYTHON_DESCRIPTORS_BUILD) -o descriptors.binpb

proto-lint:
	cd proto && $(BUF) lint

# The plugin protocol (proto/fsm/v1) and the client API (proto/api/v1) must
# stay compatible with the last release's descriptors, committed as
# proto/$(PROTO_BASELINE). To change them incompatibly, make a new version
# (fsm/v2) instead.
proto-breaking:
	cd proto && $(BUF) breaking --against $(PROTO_BASELINE)

# Run at a release (after the release's protos are final): records the
# descriptors that later changes must stay compatible with. Commit the file
# with the release.
proto-release:
	cd proto && $(BUF) build --exclude-source-info -o $(PROTO_BASELINE)

# Lint, breaking check, and: fails when the committed generated code
# differs from what `make proto` makes (or a generated file is missing or
# left over from a removed .proto), or the plugins' copies are stale.
proto-check: proto-lint proto-breaking
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	(cd proto && $(BUF) generate -o $$tmp) || exit 1; \
	stale=0; \
	for f in $$(cd $$tmp && find . -name '*.go' | sort); do \
		cmp -s $$tmp/$$f proto/$$f || { echo "proto-check: proto/$${f#./} is stale; run make proto" >&2; stale=1; }; \
	done; \
	for f in $$(cd proto && find . -name '*.pb.go' | sort); do \
		[ -f $$tmp/$$f ] || { echo "proto-check: proto/$${f#./} is not generated from any .proto; remove it" >&2; stale=1; }; \
	done; \
	for f in $(PROTO_COPIES); do \
		cmp -s proto/fsm/v1/fsm.proto $$f || { echo "proto-check: $$f differs from proto/fsm/v1/fsm.proto; run make proto" >&2; stale=1; }; \
	done; \
	($(PYTHON_DESCRIPTORS_BUILD) -o $$tmp/descriptors.binpb) || exit 1; \
	cmp -s $$tmp/descriptors.binpb $(PYTHON_DESCRIPTORS) || { echo "proto-check: $(PYTHON_DESCRIPTORS) is stale; run make proto" >&2; stale=1; }; \
	[ $$stale = 0 ] && echo "proto-check: generated code is up to date"

sim:
	$(GO) test -count=1 -timeout 0 ./core/raft/rafttest -run 'TestSim$$' -sim.seeds=$(SIM_SEEDS) -sim.steps=$(SIM_STEPS)

fuzz:
	@for pkg in $$($(GO) list ./... ); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

soak: build node
	RAFTD_BIN=$(BIN) RAFTD_SOAK=1 $(GO) test -count=1 -timeout 0 ./...

# The cluster table (cmd/raftd-bench): a local 3-node raftd cluster with the
# kv plugin, puts then linearizable gets from each number of closed-loop
# clients, 2 s warm-up + BENCH_DURATION measured per step: about 90 s with
# the defaults. `raftd-bench -h` lists its other flags (BENCH_FLAGS).
BENCH_CONC     ?= 1,64,256
BENCH_OPS      ?= put,get
BENCH_DURATION ?= 10s
BENCH_FLAGS    ?=
BENCH_CLUSTER   = $(BIN)/raftd-bench -bin $(BIN) -conc $(BENCH_CONC) -ops $(BENCH_OPS) -duration $(BENCH_DURATION) $(BENCH_FLAGS)

bench-cluster: build
	$(BENCH_CLUSTER)

# The cluster table, then every benchmark once at the default -benchtime:
# about 10 minutes on 2 cores (plugin/host's million-put runs are most of
# it). The Node.js and Python plugins' benchmarks skip without
# node_modules or python3-grpcio.
bench: build node
	$(BENCH_CLUSTER)
	RAFTD_BIN=$(BIN) $(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

clean:
	rm -rf $(BIN)
