#!/usr/bin/env bash
# `make run`: the whole pipeline in the foreground against the local RabbitMQ.
#   producer-service on :8000, email-service (metrics on :9100), SMTP capture on :1025 writing to ./mail-capture,
#   its mail viewer on http://127.0.0.1:1080/, and a redis-server of its own on :6380 (nothing on disk) for dedup and
#   the delivery records (REDIS_URL overrides).
# When the producer or the email-service stops, this says which one and with what status, stops the rest and exits
# with that status. The SMTP capture may stop alone (kill its pid, printed below): the pipeline goes on, the
# email-service retries, and `make capture` starts the capture again. Ctrl-C stops everything and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
: "${AMQP_URL:=amqp://guest:guest@localhost:5672/}"
: "${HTTP_PORT:=8000}"
: "${METRICS_PORT:=9100}"
: "${SMTP_CAPTURE_PORT:=1025}"
: "${MAIL_VIEWER_PORT:=1080}"
: "${CAPTURE_DIR:=mail-capture}"
: "${REDIS_PORT:=6380}"
: "${STATUS_API_TOKEN:=local-status-token-0123456789}"
: "${IDEMPOTENCY_SECRET:=local-idempotency-secret-0123456789}"
export AMQP_URL HTTP_PORT METRICS_PORT STATUS_API_TOKEN IDEMPOTENCY_SECRET

declare -A names=()  # pid -> component, for the ones still running

start() {  # start NAME COMMAND...: in the background, remembered by pid
  local name=$1
  shift
  "$@" &
  names[$!]=$name
}

stop_all() {  # SIGTERM to every component still running, then say how each one ended
  local pid status
  for pid in "${!names[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${!names[@]}"; do
    status=0
    wait "$pid" || status=$?
    echo "make run: ${names[$pid]} stopped (exit status $status)"
  done
  names=()
}

on_signal() {
  trap - INT TERM
  echo
  echo "make run: stopping everything..."
  stop_all
  exit 0
}
# Each component runs in a process group of its own (job control), so Ctrl-C reaches this script alone and every
# component gets exactly one SIGTERM from stop_all (a second signal would cut the email-service's drain short).
set -m
trap on_signal INT TERM
trap 'trap - EXIT; stop_all' EXIT

if [ -z "${REDIS_URL:-}" ]; then
  deploy/local/ensure-packages.sh redis-server
  start redis-server redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning
  REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
fi
export REDIS_URL

start smtp-capture "$BIN/python" deploy/local/smtp_capture.py --port "$SMTP_CAPTURE_PORT" --dir "$CAPTURE_DIR" \
  --http-port "$MAIL_VIEWER_PORT"
capture_pid=$!
SMTP_HOST=127.0.0.1 SMTP_PORT="$SMTP_CAPTURE_PORT" SMTP_SECURITY=none MAIL_FROM="Acme <welcome@acme.test>" \
  RETRY_DELAYS="${RETRY_DELAYS:-1,5,30,120,600}" start email-service "$BIN/email-service" run
start producer-service "$BIN/producer-service"

cat <<MSG

  Pipeline running. In another terminal:
    curl -i -X POST localhost:${HTTP_PORT}/v1/signups -H 'Content-Type: application/json' \\
         -d '{"email": "ada@example.com", "name": "Ada Lovelace", "locale": "en"}'
  The welcome email appears in ${CAPTURE_DIR}/ (one line per mail below) and in the mail viewer:
    http://127.0.0.1:${MAIL_VIEWER_PORT}/
  Its delivery record (the event_id is in the 202's body):
    curl -s localhost:${HTTP_PORT}/v1/signups/<event_id> -H 'Authorization: Bearer ${STATUS_API_TOKEN}'
  To watch retries: kill ${capture_pid} (the SMTP capture alone), sign up, then \`make capture\` to start it again.
  Ctrl-C stops everything.

MSG

while ((${#names[@]})); do
  status=0
  wait -n -p stopped "${!names[@]}" || status=$?
  name=${names[$stopped]}
  unset "names[$stopped]"
  if [[ $name == smtp-capture ]]; then
    echo "make run: smtp-capture stopped (exit status $status); the pipeline goes on and email-service retries" \
      "what it cannot deliver; \`make capture\` starts the capture again"
    continue
  fi
  echo "make run: $name stopped (exit status $status); stopping the rest"
  trap - INT TERM
  stop_all
  exit "$status"
done
