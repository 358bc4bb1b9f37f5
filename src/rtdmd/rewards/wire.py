"""The wire format of remote rewards (protocol version 1; docs/rewards.md)::

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
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

PROTOCOL = 1
ENCODINGS = ("png", "f32")



def encode_images(images: Tensor, encoding: Literal["png", "f32"]) -> dict[str, Any]:
    """``(B, 3, H, W)`` in [0, 1] -> the ``images`` field of a request."""
    images = images.detach().float().cpu()
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if encoding == "f32":
        data = images.contiguous().numpy().astype("<f4").tobytes()
        return {"encoding": "f32", "shape": list(images.shape), "data": base64.b64encode(data).decode("ascii")}
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
