#!/usr/bin/env bash
# `make run`: the whole pipeline in the foreground against the local RabbitMQ.
#   producer-service on :8000, email-service (metrics on :9100), SMTP capture on :1025 writing to ./mail-capture,
#   and a redis-server of its own on :6380 (nothing on disk) for dedup and the delivery records (REDIS_URL overrides).
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
: "${AMQP_URL:=amqp://guest:guest@localhost:5672/}"
: "${HTTP_PORT:=8000}"
: "${METRICS_PORT:=9100}"
: "${SMTP_CAPTURE_PORT:=1025}"
: "${CAPTURE_DIR:=mail-capture}"
: "${REDIS_PORT:=6380}"
: "${STATUS_API_TOKEN:=local-status-token-0123456789}"
: "${IDEMPOTENCY_SECRET:=local-idempotency-secret-0123456789}"
export AMQP_URL HTTP_PORT METRICS_PORT STATUS_API_TOKEN IDEMPOTENCY_SECRET

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if [ -z "${REDIS_URL:-}" ]; then
  deploy/local/ensure-packages.sh redis-server
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
  pids+=($!)
  REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
fi
export REDIS_URL

"$BIN/python" deploy/local/smtp_capture.py --port "$SMTP_CAPTURE_PORT" --dir "$CAPTURE_DIR" &
pids+=($!)
SMTP_HOST=127.0.0.1 SMTP_PORT="$SMTP_CAPTURE_PORT" SMTP_SECURITY=none MAIL_FROM="Acme <welcome@acme.test>" \
  RETRY_DELAYS="${RETRY_DELAYS:-1,5,30,120,600}" "$BIN/email-service" run &
pids+=($!)
"$BIN/producer-service" &
pids+=($!)

cat <<MSG

  Pipeline running. In another terminal:
    curl -i -X POST localhost:${HTTP_PORT}/v1/signups -H 'Content-Type: application/json' \\
         -d '{"email": "ada@example.com", "name": "Ada Lovelace", "locale": "en"}'
  The welcome email appears in ./${CAPTURE_DIR}/ (one line per mail below). Its delivery record:
    curl -s localhost:${HTTP_PORT}/v1/signups/<event_id> -H 'Authorization: Bearer ${STATUS_API_TOKEN}'
  Ctrl-C stops everything.

MSG
# Exit (and stop the rest) as soon as any of them stops.
wait -n "${pids[@]}"
