"""``/metrics``, ``/healthz`` and ``/readyz`` on one small threaded HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

ReadyCheck = Callable[[], tuple[bool, str]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a burst of scrapes and probes past
    # it waits in the kernel instead of being refused or left to time out.
    request_queue_size = 1024


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class ServiceHTTP:
    """Serves the registry and the health checks; ``port=0`` picks a free port.

    >>> srv = ServiceHTTP(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"))
    >>> port = srv.start(); srv.stop(); port > 0
    True
    """

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, ready: ReadyCheck
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._ready = ready
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            ok, why = self._ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [(why + "\n").encode()]
        if path in ("/metrics", "/"):
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    def start(self) -> int:
        self._server = make_server(
            self._host,
            self._port,
            self._app,
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="streamlearn-http", daemon=True
        )
        self._thread.start()
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
