"""Fake gateways for failover tests: real local HTTP servers answering ``POST /v1/events``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import zstandard


class FakeGateway:
    """A local HTTP server answering ``POST /v1/events`` like a gateway."""

    def __init__(self) -> None:
        self.status = 200
        self.retry_after: str | None = None
        self.ids: list[str] = []
        self.requests = 0
        gw = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "zstd":
                    body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                gw.requests += 1
                events = json.loads(body)["events"]
                if gw.status == 200:
                    gw.ids += [e["id"] for e in events]
                    out = json.dumps({"accepted": len(events), "rejected": []}).encode()
                else:
                    out = json.dumps({"error": "transport unavailable"}).encode()
                self.send_response(gw.status)
                if gw.retry_after is not None:
                    self.send_header("Retry-After", gw.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        # Bound here, on a port the kernel picks: no other test or xdist worker can take it
        # between choosing the port and listening on it.
        self._server: ThreadingHTTPServer | None = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._serving = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeGateway:
        assert self._server is not None, "a stopped FakeGateway cannot start again"
        # A short poll: stop() waits for the serving loop to notice (0.5 s by default).
        server = self._server
        threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), daemon=True
        ).start()
        self._serving = True
        return self

    def stop(self) -> None:
        if self._server is not None:
            if self._serving:
                self._server.shutdown()
            self._server.server_close()
            self._server = None
