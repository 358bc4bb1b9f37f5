"""Serving any registered reward over HTTP (the protocol of :mod:`rtdmd.rewards.wire`), for runs in other
processes: the standard library's ``ThreadingHTTPServer``; scoring requests are serialised by a lock (one model,
one device), ``/info`` answers while a score runs. ``rtdmd reward-server`` is the command.

What a client cannot do to it (each case answered with one JSON line ``{"error": ...}`` and logged in one line,
never a traceback):

- send a body larger than ``max_body`` bytes: 413 before the body is read (``Content-Length`` is checked; the
  body is then read and dropped in small chunks, so that the client reads the answer instead of a reset
  connection, and memory does not grow);
  a request without ``Content-Length``: 411;
- hold a connection without sending: every socket read and write times out after ``timeout`` seconds and the
  connection is closed (a thread per connection is not held forever);
- open more than ``max_connections`` connections at once: the next ones get 503 at once, without a thread (the
  client retries 503 with backoff), so memory stays below about ``max_connections x max_body``;
- hang up mid-request or mid-answer: a one-line log entry (BrokenPipe, ConnectionReset, timeouts).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from torch import Tensor

from rtdmd import __version__
from rtdmd.rewards.wire import ENCODINGS, PROTOCOL, decode_images

MAX_BODY = 64 << 20  # bytes: 64 MiB, e.g. 64 PNG images of 512 x 512 or 5 float32 images of 1024 x 1024
TIMEOUT = 60.0  # seconds a socket read or write may wait
MAX_CONNECTIONS = 16
CHUNK = 1 << 16
DISCONNECTS = (ConnectionError, TimeoutError, socket.timeout)  # a client that hung up or stalled


class RequestError(Exception):
    """A request refused with an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.close = status, close


class RewardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, reward, info: Mapping[str, Any], *, quiet: bool = False, max_body: int = MAX_BODY,
                 timeout: float = TIMEOUT, max_connections: int = MAX_CONNECTIONS):
        super().__init__(address, _Handler)
        self.reward, self.info, self.quiet, self.max_body = reward, dict(info), quiet, max_body
        self.socket_timeout = timeout
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        """One thread per connection, up to ``max_connections``; beyond, 503 from this (the accepting) thread."""
        if not self.slots.acquire(blocking=False):
            self._busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _busy(self, request) -> None:
        body = json.dumps({"error": "the reward server is busy (all its connections are in use): retry later"})
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: "
                f"{len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
        try:
            request.settimeout(1.0)
            request.sendall((head + body).encode())
        except OSError:
            pass
        self.log("503: busy, connection refused")

    def handle_error(self, request, client_address):
        """Anything that escaped a handler: one line, not the standard library's traceback."""
        err = sys.exc_info()[1]
        self.log(f"{client_address[0]}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"rtdmd reward-server: {message}", file=sys.stderr, flush=True)


class _Handler(BaseHTTPRequestHandler):
    server: RewardServer
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.timeout = self.server.socket_timeout  # StreamRequestHandler applies it to the socket
        super().setup()

    def handle(self):
        try:
            super().handle()
        except DISCONNECTS as err:  # the client hung up or stalled: nothing to answer
            self.close_connection = True
            self.server.log(f"{self.client_address[0]}: connection dropped ({type(err).__name__})")

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") == "/info":
            self._send(200, self.server.info)
        else:
            self._send(404, {"error": f"no such endpoint {self.path}: use GET /info or POST /score"})

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/score":
            self._refuse(RequestError(404, f"no such endpoint {self.path}: use POST /score", close=True))
            return
        try:
            images, prompts, metadata = self._parse()
        except RequestError as err:
            self._refuse(err)
            return
        try:
            with self.server.lock, torch.no_grad():
                scores = self.server.reward(images, prompts, metadata)
        except Exception as err:  # the reward's own failure: report it, keep serving
            self._send(500, {"error": f"{type(err).__name__}: {err}".splitlines()[0]})
            return
        self._send(200, {"scores": [float(s) for s in scores.detach().float().cpu()]})

    def _body(self) -> bytes:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise RequestError(411, "a request needs a Content-Length header", close=True)
        try:
            length = int(raw)
        except ValueError:
            raise RequestError(400, f"Content-Length {raw!r} is not a number", close=True) from None
        limit = self.server.max_body
        if length > limit:
            raise RequestError(413, f"request body of {length} bytes exceeds the server's limit of {limit} bytes: "
                                    "send fewer images per request (the remote reward's batch_size) or start the "
                                    "server with a larger --max-request-mb", close=True)
        if length <= 0:
            raise RequestError(400, "request body is empty: POST a JSON object (docs/rewards.md)")
        data = self.rfile.read(length)
        if len(data) != length:
            raise ConnectionResetError(f"body cut short at {len(data)} of {length} bytes")
        return data

    def _parse(self) -> tuple[Tensor, list[str], list[dict] | None]:
        try:
            body = json.loads(self._body().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(400, f"body is not JSON: {err}") from None
        if not isinstance(body, dict) or body.get("protocol") != PROTOCOL:
            raise RequestError(400, f"body must be an object with \"protocol\": {PROTOCOL}")
        try:
            images = decode_images(body.get("images"))
        except (ValueError, OSError) as err:  # PIL raises OSError subclasses for broken PNGs
            raise RequestError(400, f"bad images: {err}") from None
        prompts, metadata = body.get("prompts"), body.get("metadata")
        if not isinstance(prompts, list) or len(prompts) != images.shape[0] or not all(isinstance(p, str) for p in prompts):
            raise RequestError(400, f"'prompts' must be a list of {images.shape[0]} strings")
        if metadata is not None and (not isinstance(metadata, list) or len(metadata) != images.shape[0]
                                     or not all(isinstance(m, dict) for m in metadata)):
            raise RequestError(400, f"'metadata' must be null or a list of {images.shape[0]} objects")
        return images, prompts, metadata

    def _refuse(self, err: RequestError) -> None:
        """Answer ``err``; a body left unread (too large, or of an unknown endpoint) is discarded up to a bound
        and the connection closed, so the client reads the answer rather than a reset."""
        self._send(err.status, {"error": str(err)}, close=err.close)
        if err.close:
            self._discard()

    def _discard(self) -> None:
        """Read and drop the declared body (constant memory; each read is bounded by the socket timeout)."""
        try:
            left = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        while left > 0:
            chunk = self.rfile.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)

    def _send(self, status: int, payload: Mapping[str, Any], close: bool = False) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        if not self.server.quiet:
            super().log_message(format, *args)


def server_info(reward, *, name: str, kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/info`` answer: protocol, name, kind, version (the reward's own info when it has one)."""
    own = getattr(reward, "info", None)
    return {"protocol": PROTOCOL, "name": name, "kind": kind, "version": __version__, "differentiable": False,
            "encodings": list(ENCODINGS), "config": dict(config), "scorer": own() if callable(own) else None}


def make_server(reward, *, name: str, kind: str, config: Mapping[str, Any] | None = None,
                host: str = "127.0.0.1", port: int = 0, quiet: bool = False, max_body: int = MAX_BODY,
                timeout: float = TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> RewardServer:
    """A server for ``reward`` bound to ``(host, port)`` (port 0: any free port; read ``server_address``).
    Call ``serve_forever()`` (e.g. in a thread) and ``shutdown()`` + ``server_close()`` to stop."""
    info = server_info(reward, name=name, kind=kind, config=config or {})
    return RewardServer((host, port), reward, info, quiet=quiet, max_body=max_body, timeout=timeout,
                        max_connections=max_connections)
