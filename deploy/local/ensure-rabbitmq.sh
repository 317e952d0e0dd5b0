#!/usr/bin/env bash
# Make sure RabbitMQ answers at AMQP_URL; start the local one if it is installed and down.
set -euo pipefail
url="${AMQP_URL:-amqp://guest:guest@localhost:5672/}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$host" ] && port=5672
answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }
if answers; then exit 0; fi
if command -v rabbitmq-server >/dev/null 2>&1 && { [ "$host" = localhost ] || [ "$host" = 127.0.0.1 ]; }; then
  echo "RabbitMQ does not answer at $host:$port; starting the local one (rabbitmq-server -detached)"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do answers && { rabbitmqctl await_startup >/dev/null 2>&1 || true; exit 0; }; sleep 1; done
  echo "RabbitMQ did not come up within 60 s; look at /var/log/rabbitmq/" >&2
  exit 1
fi
echo "RabbitMQ does not answer at $host:$port (AMQP_URL). Start it (Debian: apt-get install rabbitmq-server && rabbitmq-server -detached) or point AMQP_URL at one." >&2
exit 1
