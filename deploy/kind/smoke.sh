#!/usr/bin/env bash
# make smoke: post one signup to the producer through a port-forward, then wait until Mailpit (the
# in-cluster SMTP capture) holds the welcome mail for that address. Exits non-zero otherwise.
# shellcheck source=deploy/kind/common.sh source-path=SCRIPTDIR/../..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_cluster
need curl python3

TIMEOUT=${SMOKE_TIMEOUT:-90}
address="smoke-$(date +%s)-$RANDOM@welcome-mail.test"
pids=()
# shellcheck disable=SC2317,SC2329  # called by the EXIT trap
cleanup() { local pid; for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

port_forward "svc/$RELEASE-producer" http
api=$PF_PORT; pids+=("$PF_PID")
port_forward svc/mailpit http
mailpit=$PF_PORT; pids+=("$PF_PID")

log "POST /v1/signups for $address"
status=$(curl -sS -o /dev/stderr -w '%{http_code}' --max-time 10 \
    -H 'content-type: application/json' \
    -d "{\"email\": \"$address\", \"name\": \"Smoke Test\", \"locale\": \"en\"}" \
    "http://127.0.0.1:$api/v1/signups")
echo >&2
[[ $status == 202 ]] || die "the producer answered $status (expected 202)"

log "waiting up to ${TIMEOUT}s for the mail in Mailpit"
deadline=$((SECONDS + TIMEOUT))
while ((SECONDS < deadline)); do
    found=$(curl -sS --max-time 5 -G "http://127.0.0.1:$mailpit/api/v1/search" \
                --data-urlencode "query=to:\"$address\"" \
            | python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("messages") or []))' 2>/dev/null || echo 0)
    if ((found > 0)); then
        log "smoke test passed: the welcome mail for $address arrived"
        exit 0
    fi
    sleep 2
done
kc logs "deployment/$RELEASE-email" --tail=50 >&2 || true
die "no mail for $address after ${TIMEOUT}s"
