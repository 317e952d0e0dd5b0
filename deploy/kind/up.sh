#!/usr/bin/env bash
# make kind-up: create the kind cluster, the namespace, RabbitMQ and the Mailpit SMTP capture.
# shellcheck source=deploy/kind/common.sh source-path=SCRIPTDIR/../..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need kind kubectl

if cluster_exists; then
    log "kind cluster $KIND_CLUSTER exists"
else
    log "creating kind cluster $KIND_CLUSTER"
    kind create cluster --name "$KIND_CLUSTER" --config "$KIND_DIR/kind-config.yaml" \
        ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi

kubectl --context "$CONTEXT" create namespace "$NAMESPACE" --dry-run=client -o yaml \
    | kubectl --context "$CONTEXT" apply -f -
log "deploying RabbitMQ and Mailpit into namespace $NAMESPACE"
kc apply -f "$KIND_DIR/rabbitmq.yaml" -f "$KIND_DIR/mailpit.yaml"
kc rollout status statefulset/rabbitmq --timeout=300s
kc rollout status deployment/mailpit --timeout=180s
log "ready: next make images kind-load deploy smoke"
