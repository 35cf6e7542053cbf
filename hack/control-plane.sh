#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager, etcd, kubectl, helm) from the official Go
# modules with this machine's Go toolchain, into a cache outside the clone. Does nothing when
# the pinned versions are already built.
#
#   hack/control-plane.sh          build if needed, print the bin directory
#   hack/control-plane.sh --print  print the bin directory only (no build)
#
# Cache: $GEBETA_CONTROL_PLANE_CACHE (default ~/.cache/gebeta-operator/control-plane).
set -euo pipefail

# The one place the versions are pinned. KUBERNETES_VERSION's minor must match the
# k8s-openapi feature in Cargo.toml (v1_37).
KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
HELM_VERSION=v3.22.0

cache_root=${GEBETA_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gebeta-operator/control-plane}
stamp="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
bin_dir="$cache_root/$stamp/bin"

die() { echo "control-plane: $*" >&2; exit 1; }

if [[ "${1:-}" == "--print" ]]; then
  echo "$bin_dir"
  exit 0
fi

# How helm is built, beyond its version: bump when the build changes, so that only helm is
# rebuilt in a cache that has the rest (the stamp above would rebuild everything).
#   2: the Kubernetes version helm assumes without a cluster (.Capabilities.KubeVersion in
#      `helm template`, `helm lint` deprecation checks) set as helm's own Makefile does.
HELM_BUILD=2

k8s_binaries=(kube-apiserver kube-controller-manager kubectl)
missing() {
  local b
  for b in "$@"; do [[ -x "$bin_dir/$b" ]] || return 0; done
  return 1
}
helm_current() {
  [[ -x "$bin_dir/helm" && "$(cat "$bin_dir/helm.build" 2>/dev/null)" == "$HELM_BUILD" ]]
}

if ! missing "${k8s_binaries[@]}" etcd && helm_current; then
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH: install Go >= 1.26 (e.g. apt-get install golang-go or the machine's Go) and retry"

mkdir -p "$bin_dir"
work=$(mktemp -d "${TMPDIR:-/tmp}/gebeta-cp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$cache_root/$stamp/build.log"
: >"$log"

# Every Go step is bounded so a stuck download fails instead of hanging CI.
run() {
  local what=$1; shift
  echo "control-plane: $what" >&2
  if ! timeout 2400 "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "$what failed (full log: $log). If a module download failed, check that the Go module proxy is reachable (go env GOPROXY) and retry."
  fi
}

export CGO_ENABLED=0 GOFLAGS=-mod=mod
ldflags_version="-X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=${KUBERNETES_VERSION}"

# kube-apiserver and kubectl: k8s.io/kubernetes replaces its staging modules with local paths,
# which a consumer cannot use, so pin each staging module to its published v0.X.Y instead.
if missing "${k8s_binaries[@]}"; then
  k8s="$work/k8s"; mkdir -p "$k8s"; cd "$k8s"
  run "init module for kubernetes $KUBERNETES_VERSION" go mod init gebeta.local/controlplane
  gomod=$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@${KUBERNETES_VERSION} from the Go module proxy"
  staging_version="v0.${KUBERNETES_VERSION#v1.}"
  replaces=()
  while read -r mod; do
    replaces+=("-replace=${mod}=${mod}@${staging_version}")
  done < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  ((${#replaces[@]} > 0)) || die "found no staging replace lines in $gomod"
  run "pin ${#replaces[@]} staging modules to $staging_version" go mod edit "${replaces[@]}"
  run "fetch k8s.io/kubernetes@$KUBERNETES_VERSION" go get "k8s.io/kubernetes@${KUBERNETES_VERSION}"
  for b in "${k8s_binaries[@]}"; do
    missing "$b" || continue
    run "build $b (slow on a cold cache)" go build -trimpath -ldflags "-s -w $ldflags_version" -o "$bin_dir/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$bin_dir/$b.tmp" "$bin_dir/$b"
  done
fi

if [[ ! -x "$bin_dir/etcd" ]]; then
  e="$work/etcd"; mkdir -p "$e"; cd "$e"
  run "init module for etcd $ETCD_VERSION" go mod init gebeta.local/etcd
  run "fetch etcd $ETCD_VERSION" go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  run "build etcd" go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
fi

if ! helm_current; then
  h="$work/helm"; mkdir -p "$h"; cd "$h"
  run "init module for helm $HELM_VERSION" go mod init gebeta.local/helm
  run "fetch helm $HELM_VERSION" go get "helm.sh/helm/v3@${HELM_VERSION}"
  # As helm's Makefile does: the default Kubernetes version (offline `helm template`, whose
  # built-in default is otherwise v1.20 and fails any chart's kubeVersion above it) is the one
  # of the client-go helm is built with, v0.X.Y meaning 1.X.
  client_go=$(go list -f '{{.Version}}' -m k8s.io/client-go)
  [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || die "unexpected k8s.io/client-go version for helm: '$client_go'"
  k8s_minor=${BASH_REMATCH[1]}
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  run "build helm (Kubernetes 1.$k8s_minor by default)" go build -trimpath -ldflags "$helm_ldflags" -o "$bin_dir/helm.tmp" helm.sh/helm/v3/cmd/helm
  mv "$bin_dir/helm.tmp" "$bin_dir/helm"
  echo "$HELM_BUILD" >"$bin_dir/helm.build"
fi

echo "$bin_dir"
