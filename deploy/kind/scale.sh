#!/usr/bin/env bash
# make scale N=4: set the number of email consumers with `kubectl scale` and wait for them.
# Helm leaves `replicas` to whoever set it last: the next `make deploy` resets it to
# email.replicaCount unless you pass --set email.replicaCount=N.
# shellcheck source=deploy/kind/common.sh source-path=SCRIPTDIR/../..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_cluster

replicas=${1:-${N:-}}
[[ $replicas =~ ^[0-9]+$ ]] || die "usage: scale.sh N (a number of replicas, got '${replicas}')"
deployment="deployment/$RELEASE-email"

# Any HPA aimed at the Deployment (the chart's own, or the keda-hpa-* that KEDA creates) would undo it.
owners=$(kc get hpa -o jsonpath='{range .items[*]}{.metadata.name} {.spec.scaleTargetRef.name}{"\n"}{end}' \
         | awk -v target="$RELEASE-email" '$2 == target {print $1}')
if [[ -n $owners ]]; then
    die "HPA $owners owns the replicas of $deployment (autoscaling is on): change its min/max replicas instead"
fi
log "scaling $deployment to $replicas"
kc scale "$deployment" --replicas="$replicas"
kc rollout status "$deployment" --timeout=180s
kc get "$deployment"
