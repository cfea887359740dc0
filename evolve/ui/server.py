"""Serving the UI with uvicorn on a socket bound here (so a busy port is one clear error, and port 0 works)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from pathlib import Path

import uvicorn

from evolve.ui.app import UIConfig, create_app


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: binds nobody else can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``OSError`` if it cannot be had)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only on connections whose socket says TCP,
    # and with it on, every response with a body (headers, then body: two writes) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class UIServer:
    """The UI on a socket: ``run()`` blocks (the CLI), ``start()``/``stop()`` serve from a thread (tests, bench)."""

    def __init__(self, root: str | Path, token: str, host: str = "127.0.0.1", port: int = 0,
                 pictures: bool = True, poll_seconds: float = 2.0):
        self.config = UIConfig(root=Path(root), token=token, host=host, pictures=pictures,
                               poll_seconds=poll_seconds)
        self.app = create_app(self.config)
        self.socket = bind(host, port)
        self.port = int(self.socket.getsockname()[1])
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                     lifespan="off", timeout_graceful_shutdown=2))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"http://{shown}:{self.port}"

    def run(self) -> None:
        self._server.run(sockets=[self.socket])

    def start(self, timeout: float = 30.0) -> UIServer:
        self._thread = threading.Thread(target=self.run, name="evolve-ui", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the UI server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()
        self.app.state.store.close()

    def __enter__(self) -> UIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
