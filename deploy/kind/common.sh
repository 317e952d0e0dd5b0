# shellcheck shell=bash
# Shared settings and helpers of the kind scripts (sourced, not run). Every kubectl call goes to the
# kind cluster's own context, never to whatever context happens to be current.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this file
KIND_DIR="$ROOT/deploy/kind"
CHART="$ROOT/helm/welcome-mail"
KIND_CLUSTER=${KIND_CLUSTER:-welcome-mail}
NAMESPACE=${NAMESPACE:-welcome-mail}
RELEASE=${RELEASE:-welcome}
CONTEXT="kind-$KIND_CLUSTER"
REGISTRY=${REGISTRY:-localhost/welcome-mail}
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")}
IMAGES_WORKDIR=${IMAGES_WORKDIR:-/var/tmp/welcome-mail-images}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is needed (see docs/kubernetes.md: Trying it in kind)"
    done
}

kc() { kubectl --context "$CONTEXT" --namespace "$NAMESPACE" "$@"; }

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; }

require_cluster() {
    need kind kubectl
    cluster_exists || die "kind cluster $KIND_CLUSTER does not exist: make kind-up"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# port_forward TARGET REMOTE_PORT: forwards a free local port to TARGET (svc/NAME) in the background.
# Sets PF_PORT and PF_PID; the caller kills PF_PID (by id) when done.
port_forward() {
    local target=$1 remote=$2 _
    PF_PORT=$(free_port)
    # kubectl itself in the background (not the kc function, which would run in a subshell), so
    # that PF_PID is the port-forward's own process id.
    kubectl --context "$CONTEXT" --namespace "$NAMESPACE" port-forward "$target" "$PF_PORT:$remote" >/dev/null 2>&1 &
    PF_PID=$!
    for _ in $(seq 1 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PF_PORT") 2>/dev/null; then
            return 0
        fi
        kill -0 "$PF_PID" 2>/dev/null || break
        sleep 0.2
    done
    die "port-forward to $target:$remote did not come up"
}
