#!/usr/bin/env bash
# Build both service images without a container engine, then prove the producer image starts.
#
#   deploy/images/build.sh            (make images-build; needs root, buildah and debootstrap:
#                                      apt-get install buildah debootstrap)
#
# - buildah with chroot isolation: no daemon, no user namespaces. Storage is buildah's default (overlay here:
#   buildah 1.28 does not honour STORAGE_DRIVER=vfs, checked with `buildah info`).
# - The base image is made locally with debootstrap (Debian bookworm minbase + python3.11 + venv),
#   because no image registry is reachable here. The Dockerfiles take it through their
#   PYTHON_IMAGE build argument; set PYTHON_IMAGE=python:3.11-slim-bookworm to use the official
#   base instead where a registry is reachable.
# - CA certificates under EXTRA_CA_DIR (default /usr/local/share/ca-certificates, e.g. a proxy's CA)
#   are added to the locally made base so pip can reach PyPI from inside the build.
# - Afterwards the producer image runs once (`buildah run`): /healthz must answer 200 and /readyz 503
#   (no broker on purpose), then SIGTERM must stop it.
# - The images are also written as docker archives to $IMAGES_WORKDIR/archives/ for
#   `kind load image-archive` (deploy/kind/load.sh uses them when there is no docker).
#
# Not part of `make test`: it takes minutes and needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/helm/welcome-mail/Chart.yaml")}
REGISTRY=${REGISTRY:-localhost/welcome-mail}
WORKDIR=${IMAGES_WORKDIR:-/var/tmp/welcome-mail-images}
BASE_IMAGE=${BASE_IMAGE:-localhost/welcome-mail-base:bookworm}
PYTHON_IMAGE=${PYTHON_IMAGE:-}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
EXTRA_CA_DIR=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
REBUILD_BASE=${REBUILD_BASE:-0}

export BUILDAH_ISOLATION=chroot

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (buildah with chroot isolation, debootstrap)"
command -v buildah >/dev/null || die "buildah is missing: apt-get install buildah"
[[ -n $TAG ]] || die "could not read appVersion from helm/welcome-mail/Chart.yaml; set TAG"

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

make_base() {
    if [[ $REBUILD_BASE != 1 ]] && image_exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE exists (REBUILD_BASE=1 to make it again)"
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    local rootfs="$WORKDIR/rootfs"
    rm -rf "$rootfs" && mkdir -p "$WORKDIR"
    log "debootstrap $DEBIAN_SUITE (minbase + python3, python3-venv) into $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$WORKDIR/debootstrap.log" 2>&1 \
        || { tail -20 "$WORKDIR/debootstrap.log" >&2; die "debootstrap failed (log: $WORKDIR/debootstrap.log)"; }
    if compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
        log "adding the CA certificates of $EXTRA_CA_DIR to the base"
        cp "$EXTRA_CA_DIR"/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the base"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" -cf "$WORKDIR/base.tar" .
    local ctr
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$WORKDIR/base.tar" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /usr/bin/python3 "$ctr"
    buildah commit --rm --quiet "$ctr" "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" "$WORKDIR/base.tar"
    log "base image $BASE_IMAGE made"
}

build() {
    local service=$1 image="$REGISTRY/$1:$TAG"
    log "building $image from $service/Dockerfile (PYTHON_IMAGE=$PYTHON_IMAGE)"
    buildah bud --isolation chroot --layers \
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
        --tag "$image" --file "$ROOT/$service/Dockerfile" "$ROOT/$service" >"$WORKDIR/build-$service.log" 2>&1 \
        || { tail -30 "$WORKDIR/build-$service.log" >&2; die "building $service failed (log: $WORKDIR/build-$service.log)"; }
    mkdir -p "$WORKDIR/archives"
    rm -f "$WORKDIR/archives/$service.tar"
    buildah push --quiet "$image" "docker-archive:$WORKDIR/archives/$service.tar:$image"
    log "built $image ($(du -h "$WORKDIR/archives/$service.tar" | cut -f1) as a docker archive)"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The deepest descendant of a process: the service that `buildah run` started (runner ->
# buildah-chroot-exec -> python). Found by parent id, never by name.
leaf_of() {
    local level=$1 next leaf=""
    while [[ -n $level ]]; do
        next=$(for p in $level; do pgrep -P "$p" || true; done | xargs)
        [[ -n $next ]] && leaf=${next##* }
        level=$next
    done
    echo "$leaf"
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

check_producer() {
    local image="$REGISTRY/producer-service:$TAG" port ctr runner service uid code=""
    port=$(free_port)
    ctr=$(buildah from "$image")
    # chroot isolation shares the host network: listen on loopback only, on a free port. The broker
    # URL points at a closed port on purpose: the process must be alive (/healthz) but not ready.
    buildah run --isolation chroot \
        --env HTTP_HOST=127.0.0.1 --env "HTTP_PORT=$port" --env AMQP_URL=amqp://guest:guest@127.0.0.1:1/ \
        "$ctr" producer-service >"$WORKDIR/run-producer.log" 2>&1 &
    runner=$!
    # shellcheck disable=SC2064  # expand now: the trap must clean up this container
    trap "kill $runner 2>/dev/null || true; buildah rm $ctr >/dev/null 2>&1 || true" EXIT
    for _ in $(seq 1 60); do
        code=$(http_code "http://127.0.0.1:$port/healthz")
        [[ $code == 200 ]] && break
        kill -0 "$runner" 2>/dev/null || break
        sleep 0.5
    done
    [[ $code == 200 ]] || { cat "$WORKDIR/run-producer.log" >&2; die "producer image: /healthz answered '${code:-nothing}' (expected 200)"; }
    code=$(http_code "http://127.0.0.1:$port/readyz")
    [[ $code == 503 ]] || die "producer image: /readyz answered '$code' without a broker (expected 503)"
    service=$(leaf_of "$runner")
    [[ -n $service ]] || die "producer image: cannot find the service process under buildah run ($runner)"
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$service/status")
    [[ $uid == 10001 ]] || die "producer image: the service runs as uid $uid (expected 10001)"
    log "producer image: /healthz 200, /readyz 503 without a broker, runs as uid $uid: $(tr '\0' ' ' <"/proc/$service/cmdline")"
    # SIGTERM to the service process (PID 1 of the container elsewhere) must end it.
    kill -TERM "$service"
    for _ in $(seq 1 40); do
        kill -0 "$runner" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$runner" 2>/dev/null; then
        die "producer image: still running 20 s after SIGTERM"
    fi
    log "producer image: stopped on SIGTERM"
    trap - EXIT
    buildah rm "$ctr" >/dev/null
}

mkdir -p "$WORKDIR"
if [[ -z $PYTHON_IMAGE ]]; then
    make_base
    PYTHON_IMAGE=$BASE_IMAGE
fi
build producer-service
build email-service
check_producer
buildah images --filter "reference=$REGISTRY/*" >&2
log "done: $REGISTRY/producer-service:$TAG and $REGISTRY/email-service:$TAG (archives in $WORKDIR/archives/)"
