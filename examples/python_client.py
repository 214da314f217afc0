#!/usr/bin/env python3
"""Enqueue a WhatsApp message through waq, poll its status, and handle an error.

Standard library only: HTTP/1.1 over waq's Unix socket.
Usage: python3 python_client.py [--socket /run/waq/waq.sock] [--to +14155551234]
"""
import argparse
import http.client
import json
import os
import socket
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    """An http.client connection that dials a Unix socket instead of TCP."""

    def __init__(self, path, timeout=10):
        super().__init__("waq", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Waq:
    def __init__(self, path):
        self.path = path
        self.conn = UnixHTTPConnection(path)  # one keep-alive connection for every call

    def call(self, method, path, body=None):
        # UTF-8, not \u escapes: an emoji escaped takes 12 bytes of socket.max_request_bytes.
        payload = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        headers = {"content-type": "application/json"} if payload else {}
        try:
            try:
                self.conn.request(method, path, body=payload, headers=headers)
            except BrokenPipeError:
                # waq closed this keep-alive connection while it was idle (after 30 s, or to
                # make room for another client): nothing of the request reached it, so it is
                # sent once more on a new connection, keyed or not.
                self.conn.close()
                self.conn = UnixHTTPConnection(self.path)
                self.conn.request(method, path, body=payload, headers=headers)
            resp = self.conn.getresponse()
            data = json.loads(resp.read() or b"null")
        except (OSError, http.client.HTTPException, ValueError):
            self.conn.close()  # the next call dials again
            self.conn = UnixHTTPConnection(self.path)
            raise
        return resp.status, data

    def enqueue(self, request, attempts=5):
        """POST /v1/messages, retried while waq cannot take it now: 503 (stopping, or storage
        unavailable) and 507 (disk full) store nothing, so they are always retried. No answer
        at all (waq restarting) is retried only when the request has an idempotency_key, since
        the lost answer may have been a 202: the key makes the retry answer 200 with that
        message ("duplicate": true) instead of creating a second one. Any other refusal (4xx)
        is final: the request itself must change. The retries span about 3 s here; size them
        to how long your waq takes to restart."""
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                status, answer = self.call("POST", "/v1/messages", request)
                if status not in (503, 507) or last:
                    return status, answer
            except (OSError, http.client.HTTPException, ValueError):
                if last or "idempotency_key" not in request:
                    raise
            time.sleep(min(0.2 * 2 ** attempt, 5))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", default=os.environ.get("WAQ_SOCKET", "/run/waq/waq.sock"))
    ap.add_argument("--to", default="+1 415 555 0100")
    ap.add_argument("--sender", help="the configured sender to send from (needed when there are several)")
    args = ap.parse_args()
    waq = Waq(args.socket)
    via = {"sender": args.sender} if args.sender else {}

    # 1. Enqueue a template (allowed outside the 24-hour window). The idempotency key names
    #    the business event the message is for (here: welcoming this number, once), so the
    #    same event never sends twice and two different events never share a key.
    digits = "".join(c for c in args.to if c.isdigit())
    status, answer = waq.enqueue({
        "to": args.to,
        "message": {"type": "template",
                    "template": {"name": "hello_world", "language": {"code": "en_US"}}},
        "idempotency_key": f"welcome-{digits}",
        **via,
    })
    if status not in (200, 202):
        err = (answer or {}).get("error", {})
        print(f"enqueue refused ({status}): {err.get('message')}", file=sys.stderr)
        return 1
    msg_id = answer["id"]
    seen = " (already enqueued with this key)" if answer.get("duplicate") else ""
    print(f"enqueued {msg_id} ({answer['state']}){seen}")

    # 2. Poll its status until Meta accepted it or it ended.
    for _ in range(50):
        status, msg = waq.call("GET", f"/v1/messages/{msg_id}")
        print(f"  state: {msg['state']}")
        if msg["state"] in ("sent", "delivered", "read", "failed", "expired", "cancelled"):
            break
        time.sleep(0.2)

    # 3. An error, handled: free-form text to someone who never wrote to us is refused at enqueue.
    status, answer = waq.call("POST", "/v1/messages", {
        "to": "+1 415 555 0199",
        "message": {"type": "text", "text": {"body": "hi!"}},
        **via,
    })
    err = answer.get("error", {})
    print(f"free-form to a closed window: {status} {err.get('code')} (field {err.get('field')}): {err.get('message')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, http.client.HTTPException, ValueError) as e:  # unreachable, or no answer
        print(f"waq unreachable: {e}", file=sys.stderr)
        sys.exit(3)
