#!/usr/bin/env bash
# Enqueue a WhatsApp message through waq with curl, poll its status, and handle an error.
# Usage: ./curl_client.sh [socket-path] [to] [sender]  (the sender is needed when there are several)
# Exit codes as the other clients: 1 the daemon refused the enqueue, 3 it could not be reached.
set -euo pipefail
SOCK="${1:-${WAQ_SOCKET:-/run/waq/waq.sock}}"
TO="${2:-+1 415 555 0102}"
VIA="${3:+\"sender\":\"$3\",}"

# curl failing (no socket, nothing listening, no answer) means no daemon to talk to: exit 3
# (also from inside $(...), where set -e passes the code on).
waq() {
  curl -sS --unix-socket "$SOCK" "$@" || {
    echo "waq unreachable on $SOCK (curl exit $?)" >&2
    exit 3
  }
}

# The string field $1 of the JSON object on stdin, at its top level (not one of the same name
# in a nested object or array), wherever it stands among the keys.
field() {
  awk -v want="$1" '{ s = s $0 } END {
    d = 0; key = 1; n = length(s)
    for (i = 1; i <= n; i++) {
      c = substr(s, i, 1)
      if (c == "\"") {                          # a string: to its closing quote
        for (j = i + 1; j <= n && (c = substr(s, j, 1)) != "\""; j++) if (c == "\\") j++
        str = substr(s, i + 1, j - i - 1); i = j
        if (d == 1 && key) k = str
        else if (d == 1 && k == want) { print str; exit }
      } else if (c == "{" || c == "[") d++
      else if (c == "}" || c == "]") d--
      else if (d == 1 && c == ":") key = 0
      else if (d == 1 && c == ",") { key = 1; k = "" }
    }
  }'
}

# Enqueue a template; -w appends the HTTP status on its own line.
answer=$(waq -w '\n%{http_code}' -H 'content-type: application/json' \
  -d "{$VIA\"to\":\"$TO\",\"message\":{\"type\":\"template\",\"template\":{\"name\":\"hello_world\",\"language\":{\"code\":\"en_US\"}}}}" \
  http://waq/v1/messages)
code=$(tail -n1 <<<"$answer"); body=$(head -n -1 <<<"$answer")
if [ "$code" != 202 ] && [ "$code" != 200 ]; then
  echo "enqueue refused ($code): $body" >&2; exit 1
fi
id=$(field id <<<"$body")
echo "enqueued $id"

for _ in $(seq 1 50); do
  state=$(waq "http://waq/v1/messages/$id" | field state)
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
