# gebeta-operator: the commands README.md documents.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test lint crds control-plane release

## demo: the operator's main job on a local control plane and gebeta-sim (Ctrl-C stops it and
## prints the path of an SVG plot of the refresh margins it saw, target/demo/margins.svg)
DEMO_ARGS ?=
demo: control-plane
	$(CARGO) build --locked --bins
	./target/debug/gebeta-demo $(DEMO_ARGS)

## test: build the local control plane if needed, then run every test (unit, integration, chart)
test: control-plane
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## crds: regenerate crds/ and the chart's crds/ from the Rust types
crds:
	$(CARGO) run --locked --quiet --bin crdgen

## control-plane: build etcd, kube-apiserver, kube-controller-manager, kubectl and helm from
## the official Go modules into ~/.cache/gebeta-operator (does nothing when already built)
control-plane:
	@hack/control-plane.sh >/dev/null

## release: the optimized operator binary the Dockerfile packs
release:
	$(CARGO) build --locked --release --bin gebeta-operator

.PHONY: bench bench-full

## bench: the benchmark at a small size (CI proves it works; ~2 min): a local control plane
## with an audit log, gebeta-sim and the release operator; prints the table, writes
## target/bench/small.json and its plots target/bench/small-*.svg (see README, "Benchmarks")
BENCH_ARGS ?= --accounts 20 --tokens 20 --token-ttl 10 --steady-seconds 10 --restart-window 15 --unrelated-secrets 200 --settle-seconds 5 --overload-seconds 30
bench: control-plane
	$(CARGO) build --locked --release --bins
	./target/release/gebeta-bench $(BENCH_ARGS) --json target/bench/small.json

## bench-full: the figures in README: N = M = 100, 1,000 and 10,000 (about 40 minutes)
bench-full: control-plane
	$(CARGO) build --locked --release --bins
	./target/release/gebeta-bench --accounts 100 --tokens 100 --token-ttl 30 --steady-seconds 30 --unrelated-secrets 10000 --json target/bench/bench-100.json
	./target/release/gebeta-bench --accounts 1000 --tokens 1000 --token-ttl 60 --steady-seconds 60 --unrelated-secrets 10000 --json target/bench/bench-1000.json
	@# 15-minute tokens: 10,000 tokens of 240 s need 69 new tokens/s, more than this 2-core machine
	@# (API server, etcd and operator together) sustains; see README, "Benchmarks".
	./target/release/gebeta-bench --accounts 10000 --tokens 10000 --token-ttl 900 --lifetimes 1 --steady-seconds 60 --unrelated-secrets 10000 --concurrency 128 --json target/bench/bench-10000.json
