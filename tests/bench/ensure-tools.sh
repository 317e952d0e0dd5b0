#!/usr/bin/env bash
# Debian packages `make bench` needs: postfix (only for /usr/sbin/smtp-sink) and wrk.
# Installing postfix must not start a mail server: when it is not installed yet, preseed debconf with
# "No configuration", so the package writes no main.cf and its postinst starts no master on port 25.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo
if ! dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q "install ok installed"; then
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
fi
"$here/../../deploy/local/ensure-packages.sh" postfix wrk
for tool in /usr/sbin/smtp-sink wrk rabbitmqctl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done
