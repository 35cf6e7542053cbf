# gebeta-operator: the commands README.md documents.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test lint crds control-plane release

## demo: the operator's main job on a local control plane and gebeta-sim (Ctrl-C stops it)
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
