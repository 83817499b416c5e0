"""Placeholder service: answers /healthz on $EDAENV_METRICS_PORT until the real code lands."""

import http.server
import os


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["EDAENV_METRICS_PORT"])), Health).serve_forever()
