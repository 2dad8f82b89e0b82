"""A tiny HTTP endpoint per worker: /healthz (the loop is alive), /readyz (it owns its
partitions and has restored their state) and /metrics (Prometheus text format)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def serve_health(
    port: int,
    alive: Callable[[], bool],
    ready: Callable[[], bool],
    host: str = "0.0.0.0",
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
            elif self.path in ("/healthz", "/readyz"):
                ok = alive() if self.path == "/healthz" else ready()
                body = b"ok\n" if ok else b"not ok\n"
                status, ctype = (200 if ok else 503), "text/plain"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep probes out of the logs
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def heartbeat_alive(
    last_beat: Callable[[], float], max_silence_s: float = 60.0
) -> Callable[[], bool]:
    return lambda: time.monotonic() - last_beat() < max_silence_s
