#!/usr/bin/env bash
# Enqueue a WhatsApp message through waq with curl, poll its status, and handle an error.
# Usage: ./curl_client.sh [socket-path] [to] [sender]  (the sender is needed when there are several)
set -euo pipefail
SOCK="${1:-${WAQ_SOCKET:-/run/waq/waq.sock}}"
TO="${2:-+1 415 555 0102}"
VIA="${3:+\"sender\":\"$3\",}"
waq() { curl -sS --unix-socket "$SOCK" "$@"; }

# Enqueue a template; -w appends the HTTP status on its own line.
answer=$(waq -w '\n%{http_code}' -H 'content-type: application/json' \
  -d "{$VIA\"to\":\"$TO\",\"message\":{\"type\":\"template\",\"template\":{\"name\":\"hello_world\",\"language\":{\"code\":\"en_US\"}}}}" \
  http://waq/v1/messages)
code=$(tail -n1 <<<"$answer"); body=$(head -n -1 <<<"$answer")
if [ "$code" != 202 ] && [ "$code" != 200 ]; then
  echo "enqueue refused ($code): $body" >&2; exit 1
fi
id=$(sed -E 's/.*"id":"([0-9a-f]+)".*/\1/' <<<"$body")
echo "enqueued $id"

for _ in $(seq 1 50); do
  state=$(waq "http://waq/v1/messages/$id" | sed -E 's/.*"state":"([a-z]+)".*/\1/')
  echo "  state: $state"
  case "$state" in sent|delivered|read|failed|expired|cancelled) break ;; esac
  sleep 0.2
done

# An error, handled: a text body over 4096 characters is refused with the field named.
long=$(printf 'x%.0s' $(seq 1 5000))
waq -H 'content-type: application/json' \
  -d "{$VIA\"to\":\"$TO\",\"message\":{\"type\":\"text\",\"text\":{\"body\":\"$long\"}}}" \
  http://waq/v1/messages
echo
