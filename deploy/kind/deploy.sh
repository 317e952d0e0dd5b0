#!/usr/bin/env bash
# make deploy: install or upgrade the chart into the kind cluster with deploy/kind/values.yaml.
# Extra helm flags pass through: deploy/kind/deploy.sh --set email.autoscaling.hpa.enabled=true
# shellcheck source=deploy/kind/common.sh source-path=SCRIPTDIR/../..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_cluster
need helm

log "helm upgrade --install $RELEASE (namespace $NAMESPACE, context $CONTEXT)"
helm upgrade --install "$RELEASE" "$CHART" \
    --kube-context "$CONTEXT" --namespace "$NAMESPACE" --create-namespace \
    --values "$KIND_DIR/values.yaml" \
    --set "producer.image.tag=$TAG" --set "email.image.tag=$TAG" \
    --wait --timeout 5m "$@"
kc get deployments,pods -l "app.kubernetes.io/instance=$RELEASE"
