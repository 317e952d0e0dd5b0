#!/usr/bin/env bash
# make images: build both images with docker (build context = the service folder).
# Without docker use `make images-build` (buildah, deploy/images/build.sh).
# shellcheck source=deploy/kind/common.sh source-path=SCRIPTDIR/../..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need docker

for service in producer-service email-service; do
    log "building $REGISTRY/$service:$TAG"
    docker build ${PYTHON_IMAGE:+--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"} \
        --tag "$REGISTRY/$service:$TAG" "$ROOT/$service"
done
