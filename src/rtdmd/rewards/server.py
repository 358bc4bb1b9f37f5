"""Serving any registered reward over HTTP (the protocol of :mod:`rtdmd.rewards.wire`), for runs in other
processes: the standard library's ``ThreadingHTTPServer``; scoring requests are serialised by a lock (one model,
one device), ``/info`` answers while a score runs. ``rtdmd reward-server`` is the command."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from torch import Tensor

from rtdmd import __version__
from rtdmd.rewards.wire import ENCODINGS, PROTOCOL, decode_images


class RewardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, reward, info: Mapping[str, Any], *, quiet: bool = False,
                 max_body: int = 1 << 30):
        super().__init__(address, _Handler)
        self.reward, self.info, self.quiet, self.max_body = reward, dict(info), quiet, max_body
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: RewardServer
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") == "/info":
            self._send(200, self.server.info)
        else:
            self._send(404, {"error": f"no such endpoint {self.path}: use GET /info or POST /score"})

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/score":
            self._send(404, {"error": f"no such endpoint {self.path}: use POST /score"})
            return
        try:
            images, prompts, metadata = self._parse()
        except ValueError as err:
            self._send(400, {"error": str(err)})
            return
        try:
            with self.server.lock, torch.no_grad():
                scores = self.server.reward(images, prompts, metadata)
        except Exception as err:  # the reward's own failure: report it, keep serving
            self._send(500, {"error": f"{type(err).__name__}: {err}".splitlines()[0]})
            return
        self._send(200, {"scores": [float(s) for s in scores.detach().float().cpu()]})

    def _parse(self) -> tuple[Tensor, list[str], list[dict] | None]:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= self.server.max_body:
            raise ValueError(f"request body must be 1..{self.server.max_body} bytes, got {length}")
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"body is not JSON: {err}") from None
        if not isinstance(body, dict) or body.get("protocol") != PROTOCOL:
            raise ValueError(f"body must be an object with \"protocol\": {PROTOCOL}")
        try:
            images = decode_images(body.get("images"))
        except (ValueError, OSError) as err:  # PIL raises OSError subclasses for broken PNGs
            raise ValueError(f"bad images: {err}") from None
        prompts, metadata = body.get("prompts"), body.get("metadata")
        if not isinstance(prompts, list) or len(prompts) != images.shape[0] or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"'prompts' must be a list of {images.shape[0]} strings")
        if metadata is not None and (not isinstance(metadata, list) or len(metadata) != images.shape[0]
                                     or not all(isinstance(m, dict) for m in metadata)):
            raise ValueError(f"'metadata' must be null or a list of {images.shape[0]} objects")
        return images, prompts, metadata

    def _send(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        if not self.server.quiet:
            super().log_message(format, *args)


def server_info(reward, *, name: str, kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/info`` answer: protocol, name, kind, version (the reward's own info when it has one)."""
    own = getattr(reward, "info", None)
    return {"protocol": PROTOCOL, "name": name, "kind": kind, "version": __version__, "differentiable": False,
            "encodings": list(ENCODINGS), "config": dict(config), "scorer": own() if callable(own) else None}


def make_server(reward, *, name: str, kind: str, config: Mapping[str, Any] | None = None,
                host: str = "127.0.0.1", port: int = 0, quiet: bool = False) -> RewardServer:
    """A server for ``reward`` bound to ``(host, port)`` (port 0: any free port; read ``server_address``).
    Call ``serve_forever()`` (e.g. in a thread) and ``shutdown()`` + ``server_close()`` to stop."""
    info = server_info(reward, name=name, kind=kind, config=config or {})
    return RewardServer((host, port), reward, info, quiet=quiet)
