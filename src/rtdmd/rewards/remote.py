"""A reward that runs in its own process, behind a small JSON-over-HTTP protocol (:mod:`rtdmd.rewards.wire`).

The client (:class:`RemoteReward`, kind ``remote``) is a reward like any other (not differentiable). It retries
connection failures, timeouts and 502/503/504 answers with exponential backoff, then raises a one-line
:class:`UserError` that names the URL and how to start a server (:mod:`rtdmd.rewards.server`,
``rtdmd reward-server``).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from rtdmd.config.strict import check
from rtdmd.errors import UserError
from rtdmd.rewards.wire import PROTOCOL, encode_images


@dataclass(frozen=True)
class RemoteConfig:
    kind: Literal["remote"] = "remote"
    # Scored by another process, without gradient: no model of it on a training GPU (read by rtdmd plan)
    served: ClassVar[bool] = True
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
