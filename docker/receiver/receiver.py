"""A sample webhook receiver for docker-compose.yml.

Answers every POST with 200 and `{}`, and logs one line per request: the
path, `webhook-id`, `webhook-timestamp`, the body size and, when
RECEIVER_SECRET holds the endpoint's `whsec_` secret, whether the Standard
Webhooks signature (`webhook-signature: v1,<base64>`, HMAC-SHA256 over
`<webhook-id>.<webhook-timestamp>.<body>`) is valid. It answers 200 either
way: it is a demonstration, not a gatekeeper.

Standard library only; runs on python:3.12-alpine as is.
"""

import base64
import binascii
import hashlib
import hmac
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8000"))
SECRET = os.environ.get("RECEIVER_SECRET", "")


def signing_key(secret):
    """The HMAC key of a `whsec_<base64>` secret, or None."""
    if not secret:
        return None
    encoded = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(encoded, validate=True) or None
    except (binascii.Error, ValueError):
        return None


KEY = signing_key(SECRET)


def check_signature(key, webhook_id, timestamp, body, header):
    """'valid', 'invalid' or 'unchecked' for a `webhook-signature` header."""
    if key is None:
        return "unchecked"
    if not (webhook_id and timestamp and header):
        return "invalid"
    signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for part in header.split():
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return "valid"
    return "invalid"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        webhook_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        signature = check_signature(
            KEY, webhook_id, timestamp, body, self.headers.get("webhook-signature", "")
        )
        print(
            f"POST {self.path} webhook-id={webhook_id or '-'} "
            f"webhook-timestamp={timestamp or '-'} bytes={len(body)} signature={signature}",
            flush=True,
        )
        self.reply(200, b"{}")

    def do_GET(self):
        # Liveness for curious humans: `curl http://receiver:8000/` on the network.
        self.reply(200, b'{"status":"ok"}')

    def reply(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        # One line per webhook is printed by do_POST; skip the default access log.
        pass


def main():
    if SECRET and KEY is None:
        print("RECEIVER_SECRET is not a whsec_<base64> secret; signatures unchecked", file=sys.stderr)
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print(f"sample receiver listening on :{PORT} (signatures {'checked' if KEY else 'unchecked'})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
