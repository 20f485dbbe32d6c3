# ketch: `make run` builds, installs the defaults and starts ketchd; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
# Semantic, as kubelet parses it for the node's containerRuntimeVersion ("Unknown" otherwise).
VERSION ?= 0.1.0+$(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PREFIX ?= /usr/local
KETCH_TEST_CACHE ?= /var/cache/ketch-test
export KETCH_TEST_CACHE
# Packages with goroutines shared state: unit-tested with the race detector.
RACE_PKGS := ./image/... ./cri/... ./reaper/...

.PHONY: all build run stop install test lint unit e2e e2e-kubelet e2e-argo cluster cluster-down critest crashtest fuzz bench compare scale generate clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ketchd ./cmd/ketchd
	# ketch-init is bind-mounted into sandboxes: tiny and static.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/ketch-init ./cmd/ketch-init
	# The shim lives as long as its pods: no cgo, no libcontainer.
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ketch-shim ./cmd/ketch-shim
	# libcontainer needs cgo (nsenter); containers need seccomp.
	CGO_ENABLED=1 $(GO) build -tags seccomp -ldflags "$(LDFLAGS)" -o bin/ketch-runc ./cmd/ketch-runc

# ketchd finds ketch-shim and ketch-init beside itself, and ketch-shim ketch-runc. A node without a CNI network
# config gets ketch's bridge network (contrib/10-ketch.conflist); one that has its own
# keeps it.
install: build
	install -D -m 0755 bin/ketchd $(PREFIX)/bin/ketchd
	install -m 0755 bin/ketch-shim bin/ketch-runc bin/ketch-init $(PREFIX)/bin/
	install -d -m 0755 /etc/ketch/certs.d /etc/cni/net.d
	[ -e /etc/ketch/config.toml ] || install -m 0644 contrib/config.toml /etc/ketch/config.toml
	[ -n "$$(ls /etc/cni/net.d)" ] || install -m 0644 contrib/10-ketch.conflist /etc/cni/net.d/
	[ -x "$$(command -v crictl)" ] || { test/tools.sh && install -m 0755 $(KETCH_TEST_CACHE)/bin/crictl $(PREFIX)/bin/crictl; }

# Starts ketchd under systemd when systemd runs the host, otherwise in the
# background with its PID in /run/ketch/ketchd.pid and its log in /var/log/ketchd.log.
run: install
	contrib/run.sh start

stop:
	contrib/run.sh stop

# A one-node Kubernetes cluster on the ketchd `make run` starts: etcd, API server,
# controller-manager, scheduler and kubelet on 127.0.0.1 (test/kube/cluster.sh), with
# the local registry of test images; ARGO=1 adds Argo Workflows.
CLUSTER_DIR ?= /var/lib/ketch-cluster
cluster: run
	test/kube/build.sh
	test/images/build.sh
	test/registry.sh start
	test/registry.sh push
	[ -z "$(ARGO)" ] || test/kube/argo.sh
	ARGO=$(ARGO) test/kube/cluster.sh up $(CLUSTER_DIR)
	@echo "kubectl: $(KETCH_TEST_CACHE)/kube-$${KUBE_VERSION:-v1.37.2}/kubectl --kubeconfig $(CLUSTER_DIR)/admin.kubeconfig"

# Removes the cluster (its pods, processes, files, /etc/hosts line); ketchd keeps running.
cluster-down:
	test/kube/cluster.sh down $(CLUSTER_DIR)

generate:
	$(GO) generate ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(GO) tool staticcheck ./...
	$(GO) tool staticcheck -tags e2e ./test/...

unit:
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e /image -e /cri -e /reaper)

# The end-to-end tests and critest need root, the local registry and the test images.
e2e: build
	test/setup.sh
	KETCHD=$(CURDIR)/bin/ketchd $(GO) test -tags e2e -count=1 -timeout 30m -skip '^(TestKubelet|TestArgo)$$' ./test/e2e/...

# A real kubelet, API server and scheduler on ketch (test/kube/cluster.sh), case by
# case; the cases run side by side. A cluster a killed run left is taken down.
CLUSTER_TEST = set -o pipefail; trap 'for d in /tmp/ketch-kube-*/c; do [ -d "$$d" ] && test/kube/cluster.sh down "$$d"; done; true' EXIT; \
	KETCHD=$(CURDIR)/bin/ketchd $(GO) test -tags e2e -count=1 -timeout 40m -parallel 32 -run '$(1)' -v ./test/e2e/... \
	| grep --line-buffered -v -e '^ *time=' -e 'ketchd log:' -e '^=== \(RUN\|PAUSE\|CONT\)'
e2e-kubelet: build
	test/setup.sh
	test/kube/build.sh
	@$(call CLUSTER_TEST,^TestKubelet$$)

# Argo Workflows on a cluster on ketch, then the same workflows on containerd 1.6.
e2e-argo: build
	test/setup.sh
	test/kube/build.sh
	test/kube/argo.sh
	@$(call CLUSTER_TEST,^TestArgo$$)

# The crash test, long: `make e2e` runs TestCrash for a few cycles, this for CRASH_CYCLES
# (KETCH_CRASH_SEED=<seed> replays a run's random choices, not its timing).
CRASH_CYCLES ?= 300
crashtest: build
	test/setup.sh
	set -o pipefail; KETCH_CRASH_CYCLES=$(CRASH_CYCLES) KETCHD=$(CURDIR)/bin/ketchd $(GO) test -tags e2e -count=1 -timeout 60m -run '^TestCrash$$' -v ./test/e2e/... | grep -v -e '^ *time=' -e 'ketchd log:'

# The CRI fuzzer, long: `make e2e` sends 1,000 requests, this FUZZ_REQUESTS at a live ketchd
# (KETCH_FUZZ_SEED=<seed> replays a run), then the Go fuzz targets FUZZ_TIME each.
FUZZ_REQUESTS ?= 10000
FUZZ_TIME ?= 30s
fuzz: build
	test/setup.sh
	set -o pipefail; KETCH_FUZZ_REQUESTS=$(FUZZ_REQUESTS) KETCHD=$(CURDIR)/bin/ketchd $(GO) test -tags e2e -count=1 -timeout 60m -run '^TestFuzzCRI$$' -v ./test/e2e/... | grep -v -e '^ *time=' -e 'ketchd log:'
	$(GO) test ./cri -run '^$$' -fuzz '^FuzzCheckPodConfig$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./cri -run '^$$' -fuzz '^FuzzPodSandboxConfigProto$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./oci -run '^$$' -fuzz '^FuzzSpec$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./image -run '^$$' -fuzz '^FuzzNormalize$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./sandbox/cni -run '^$$' -fuzz '^FuzzRuntimeConf$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./oci/shim/server -run '^$$' -fuzz '^FuzzOpenLogFile$$' -fuzztime $(FUZZ_TIME)

# Then the Streaming specs again over websocket (v5 exec/attach, SPDY tunnelled port-forward).
critest: build
	test/setup.sh
	test/critest.sh
	CRITEST_FOCUS='\[k8s\.io\] Streaming' CRITEST_ARGS='-websocket-exec -websocket-attach -websocket-portforward' test/critest.sh

# Everything, critest included. The local registries it starts are stopped at the end.
test:
	@trap 'test/registry.sh stop' EXIT; $(MAKE) --no-print-directory lint unit e2e e2e-kubelet e2e-argo critest

# Image benchmarks 10 runs each; 50 sequential pod lifecycles, container lifecycles, ExecSyncs;
# memory with 20 pods of one container; the store's open and the container
# lists at 11,000 containers; `make compare`'s workloads, critest's own benchmark mode
# among them, for ketch alone.
BENCH = KETCHD=$(CURDIR)/bin/ketchd $(GO) test -tags e2e -run '^$$' -count=1 -timeout 30m ./test/e2e/... -bench
bench: build
	test/setup.sh
	$(BENCH) 'Image' -benchmem -benchtime 10x
	$(BENCH) 'PodSandbox$$|Container$$|ExecSync' -benchtime 50x
	$(BENCH) 'PodMemory|InitMemory' -benchtime 1x
	$(BENCH) 'WorkflowStop' -benchtime 10x
	$(BENCH) 'Restart' -benchtime 3x
	$(BENCH) 'Stats$$' -benchtime 200x
	$(BENCH) 'Scale$$' -benchtime 1x
	KETCH_COMPARE=ketch $(BENCH) 'Compare$$' -benchtime 1x
	$(GO) test -run '^$$' -count=1 -bench 'Open$$|ListPodContainers|ListContainers$$' -benchmem ./cri/...

# ketch and its peers, one after another in one run, through the same workloads
# (BenchmarkCompare): critest -benchmark, 110 pods with the memory of each runtime's
# per-pod processes, ExecSync, a 5-layer pull; one table with ketch's ratios. The peers:
# Debian's containerd 1.6 + runc, and CRI-O 1.36 built by test/crio.sh with Debian's conmon.
compare: build
	test/setup.sh
	test/crio.sh
	$(BENCH) 'Compare$$' -benchtime 1x -timeout 60m

# 1,000 pods of one container, 10,000 exited containers, ketchd killed -9 and
# restarted, everything removed: ketchd's threads, memory, fds and latencies
# as the pod count grows (BenchmarkScale; SCALE_PODS, SCALE_EXITED).
SCALE_PODS ?= 1000
SCALE_EXITED ?= 10000
scale: build
	test/setup.sh
	KETCH_SCALE_PODS=$(SCALE_PODS) KETCH_SCALE_EXITED=$(SCALE_EXITED) $(BENCH) 'Scale$$' -benchtime 1x -timeout 3h -v

clean:
	rm -rf bin
