"""Rewards that run in their own process, behind a small JSON-over-HTTP protocol (docs/rewards.md).

Protocol (version 1)::

    GET  /info   -> {"protocol": 1, "name": ..., "kind": ..., "version": ..., "differentiable": false,
                     "encodings": ["png", "f32"], "config": {...}}
    POST /score  <- {"protocol": 1, "prompts": [B strings], "metadata": [B objects] | null,
                     "images": {"encoding": "png", "data": [B base64 PNG strings]}
                             | {"encoding": "f32", "shape": [B, 3, H, W], "data": base64 little-endian float32}}
                 -> {"scores": [B numbers]}
    errors       -> HTTP 4xx/5xx with {"error": "one line"}

Images travel as 8-bit RGB PNG by default: that is what detectors, OCR models and VLM judges read anyway, it is
lossless for what they see and about 4-10x smaller than float arrays. ``f32`` sends the exact float pixels
(C order, little-endian) for scorers that must see them unrounded (a pixel oracle, or a test comparing a remote
score with the in-process one).

The client (:class:`RemoteReward`, kind ``remote``) is a reward like any other (not differentiable). It retries
connection failures, timeouts and 502/503/504 answers with exponential backoff, then raises a one-line
:class:`UserError` that names the URL and how to start a server. The server (:func:`make_server`, used by
``rtdmd reward-server``) serves any registered reward with the standard library's ``ThreadingHTTPServer``;
scoring requests are serialised by a lock (one model, one device), ``/info`` answers while a score runs.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rtdmd.configtools import check
from rtdmd.errors import UserError

PROTOCOL = 1
ENCODINGS = ("png", "f32")


# ----------------------------------------------------------------------------------------------------------
# Encoding

def encode_images(images: Tensor, encoding: Literal["png", "f32"]) -> dict[str, Any]:
    """``(B, 3, H, W)`` in [0, 1] -> the ``images`` field of a request."""
    images = images.detach().float().cpu()
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if encoding == "f32":
        data = images.contiguous().numpy().astype("<f4").tobytes()
        return {"encoding": "f32", "shape": list(images.shape), "data": base64.b64encode(data).decode("ascii")}
    from PIL import Image

    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    data = []
    for row in pixels:
        buffer = io.BytesIO()
        Image.fromarray(row, "RGB").save(buffer, format="PNG")
        data.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return {"encoding": "png", "data": data}


def decode_images(field: Any) -> Tensor:
    """The ``images`` field of a request -> ``(B, 3, H, W)`` float32 in [0, 1]; ValueError if malformed."""
    if not isinstance(field, Mapping) or field.get("encoding") not in ENCODINGS:
        raise ValueError(f"'images' must be an object with encoding in {list(ENCODINGS)}")
    if field["encoding"] == "f32":
        shape = field.get("shape")
        valid = isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape)
        if not valid or shape[1] != 3:
            raise ValueError("f32 images need 'shape': [B, 3, H, W]")
        raw = base64.b64decode(field.get("data", ""), validate=True)
        if len(raw) != 4 * int(np.prod(shape)):
            raise ValueError(f"f32 data holds {len(raw)} bytes, shape {shape} needs {4 * int(np.prod(shape))}")
        return torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32))
    from PIL import Image

    data = field.get("data")
    if not isinstance(data, list) or not data:
        raise ValueError("png images need 'data': a non-empty list of base64 PNG strings")
    rows = []
    for item in data:
        image = Image.open(io.BytesIO(base64.b64decode(item, validate=True))).convert("RGB")
        rows.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    if len({tuple(r.shape) for r in rows}) != 1:
        raise ValueError("all images of one request must have the same size")
    return torch.stack(rows).float() / 255


# ----------------------------------------------------------------------------------------------------------
# Client

@dataclass(frozen=True)
class RemoteConfig:
    kind: Literal["remote"] = "remote"
    url: str = "http://127.0.0.1:8765"  # the server's base URL
    timeout: float = 120.0  # seconds per request (connect + read)
    retries: int = 3  # extra attempts after the first, on connection errors, timeouts and 502/503/504
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    encoding: Literal["png", "f32"] = "png"
    batch_size: int = 0  # images per request (0: the whole batch in one request)

    def __post_init__(self):
        check(self.url.startswith(("http://", "https://")), f"url must start with http:// or https://, got {self.url!r}")
        check(self.timeout > 0, "timeout must be positive")
        check(self.retries >= 0 and self.backoff >= 0, "retries and backoff must be >= 0")
        check(self.batch_size >= 0, "batch_size must be >= 0")


class _Retryable(Exception):
    pass


class RemoteReward:
    """A reward served by another process (see the module docstring)."""

    differentiable = False

    def __init__(self, url: str, *, timeout: float = 120.0, retries: int = 3, backoff: float = 1.0,
                 encoding: Literal["png", "f32"] = "png", batch_size: int = 0):
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.encoding, self.batch_size = encoding, batch_size
        self._info: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        if self._info is None:
            info = self._request("GET", "/info", None)
            if info.get("protocol") != PROTOCOL:
                raise UserError(f"reward server {self.url} speaks protocol {info.get('protocol')!r}, this client "
                                f"speaks {PROTOCOL}: use the same rtdmd version on both sides")
            self._info = {**info, "url": self.url}
        return self._info

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        if len(prompts) != images.shape[0] or (metadata is not None and len(metadata) != images.shape[0]):
            raise ValueError("one prompt (and one metadata record, if any) per image")
        step = self.batch_size or images.shape[0]
        scores = []
        for start in range(0, images.shape[0], step):
            stop = start + step
            body = {"protocol": PROTOCOL, "prompts": list(prompts[start:stop]),
                    "metadata": None if metadata is None else [dict(m) for m in metadata[start:stop]],
                    "images": encode_images(images[start:stop], self.encoding)}
            answer = self._request("POST", "/score", body)
            values = answer.get("scores")
            if not isinstance(values, list) or len(values) != len(body["prompts"]):
                raise UserError(f"reward server {self.url} answered without {len(body['prompts'])} scores")
            scores.extend(values)
        return torch.tensor(scores, dtype=torch.float32, device=images.device)

    def _request(self, method: str, path: str, body: dict | None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._once(method, path, data)
            except _Retryable as err:
                if str(err) not in errors:
                    errors.append(str(err))
        raise UserError(f"reward server {self.url} did not answer {method} {path} after {self.retries + 1} attempts "
                        f"({'; then '.join(errors)}): start it with 'rtdmd reward-server --reward KIND --port PORT' "
                        "or fix the url")

    def _once(self, method: str, path: str, data: bytes | None) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            message = _error_message(err)
            if err.code in (502, 503, 504):
                raise _Retryable(f"HTTP {err.code}: {message}") from None
            raise UserError(f"reward server {self.url} refused {method} {path} (HTTP {err.code}): {message}") from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no answer within {self.timeout:g} s") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"no answer within {self.timeout:g} s") from None
            raise _Retryable(f"cannot connect: {reason}") from None
        except (http.client.HTTPException, ConnectionError) as err:
            raise _Retryable(f"connection lost mid-request: {type(err).__name__}") from None
        except json.JSONDecodeError:
            raise UserError(f"reward server {self.url} answered {method} {path} with something that is not JSON") from None


def _error_message(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read().decode("utf-8")).get("error", err.reason))
    except Exception:
        return str(err.reason)


def build_remote(cfg: RemoteConfig, *, world=None, device="cpu") -> RemoteReward:
    reward = RemoteReward(cfg.url, timeout=cfg.timeout, retries=cfg.retries, backoff=cfg.backoff,
                          encoding=cfg.encoding, batch_size=cfg.batch_size)
    reward.info()  # fail at start-up, not at the first rollout, when the server is not there
    return reward


# ----------------------------------------------------------------------------------------------------------
# Server

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
    from rtdmd import __version__

    own = getattr(reward, "info", None)
    return {"protocol": PROTOCOL, "name": name, "kind": kind, "version": __version__, "differentiable": False,
            "encodings": list(ENCODINGS), "config": dict(config), "scorer": own() if callable(own) else None}


def make_server(reward, *, name: str, kind: str, config: Mapping[str, Any] | None = None,
                host: str = "127.0.0.1", port: int = 0, quiet: bool = False) -> RewardServer:
    """A server for ``reward`` bound to ``(host, port)`` (port 0: any free port; read ``server_address``).
    Call ``serve_forever()`` (e.g. in a thread) and ``shutdown()`` + ``server_close()`` to stop."""
    info = server_info(reward, name=name, kind=kind, config=config or {})
    return RewardServer((host, port), reward, info, quiet=quiet)
