"""A minimal receiver for curvedit webhooks (standard library + ``standardwebhooks``).

    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000

It verifies each POST's ``webhook-signature`` over the raw body with the endpoint's secret (a
wrong or replayed-too-late message gets 400), skips a ``webhook-id`` it has already handled
(retries and redeliveries reuse the id), prints one JSON line per new event and answers 204.
Any 2xx tells curvedit the delivery succeeded; anything else makes it retry with back-off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def make_handler(secret: str) -> type[BaseHTTPRequestHandler]:
    verifier = Webhook(secret)
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                message = verifier.verify(body, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                self.send_error(400, f"bad signature: {exc}")
                return
            msg_id = self.headers["webhook-id"]
            if msg_id not in seen:  # at-least-once delivery: handle each message id once
                seen.add(msg_id)
                data = message["data"]
                line = {"id": msg_id, "type": message["type"], "job": data["job_id"], "status": data["status"]}
                print(json.dumps(line), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        sys.exit("set WEBHOOK_SECRET to the whsec_... secret curvedit showed when the webhook was created")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(secret))
    print(f"listening on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
