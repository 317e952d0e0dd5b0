#!/usr/bin/env bash
# make kind-load: copy both images into the kind nodes. Takes them from docker when docker has
# them, else from the docker archives that deploy/images/build.sh (buildah) wrote.
# shellcheck source=deploy/kind/common.sh source-path=SCRIPTDIR/../..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_cluster

for service in producer-service email-service; do
    image="$REGISTRY/$service:$TAG"
    archive="$IMAGES_WORKDIR/archives/$service.tar"
    if command -v docker >/dev/null && docker image inspect "$image" >/dev/null 2>&1; then
        log "loading $image from docker"
        kind load docker-image --name "$KIND_CLUSTER" "$image"
    elif [[ -f $archive ]]; then
        log "loading $image from $archive"
        kind load image-archive --name "$KIND_CLUSTER" "$archive"
    else
        die "$image not found in docker nor as $archive: make images (docker) or make images-build (buildah)"
    fi
done
