#!/usr/bin/env bash
# make kind-down: delete the kind cluster (and everything in it).
# shellcheck source=deploy/kind/common.sh source-path=SCRIPTDIR/../..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need kind

if cluster_exists; then
    kind delete cluster --name "$KIND_CLUSTER"
else
    log "kind cluster $KIND_CLUSTER does not exist"
fi
