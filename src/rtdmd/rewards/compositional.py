"""Metadata-driven compositional rewards (GenEval style): is every required object there, in the right number,
colour and place?

Metadata: GenEval's ``evaluation_metadata.jsonl`` schema (``tag``, ``include``, ``exclude``), defined and
validated in :mod:`rtdmd.data.geneval` (re-exported here: :func:`parse_spec`, :class:`CompositionSpec`).

Who sees the pixels is a :class:`Detector`: it returns, per image, :class:`Detection` records (class, box,
confidence, colour). The tiny image world implements one with a pixel oracle; GenEval's Mask2Former detector +
CLIP colour classifier runs out of process behind ``rtdmd reward-server`` (kind ``compositional`` with
``detector: yourmodule:build``) and is used through the HTTP client. :func:`judge` applies the rule, GenEval's:

- include: the ``count`` most confident detections of the class must exist; with ``color``, all of them must
  have it; with ``position``, each of them must be in the relation to each object matched by the target entry
  (which itself must have been satisfied);
- exclude: fewer than ``count`` detections of the class;
- relations compare box centres after shrinking the offset by ``0.1 x`` the summed box sizes per axis: ``A``
  is left of ``B`` when the normalised remaining offset has ``dx < -0.5`` (``right of``: ``dx > 0.5``; ``above``:
  ``dy < -0.5``; ``below``: ``dy > 0.5``, image y pointing down).

Scores: ``strict`` = 1 if every requirement holds else 0 (GenEval's per-image correctness); ``partial`` = the
fraction of requirements (include and exclude entries) that hold, a denser training signal.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from rtdmd.config.strict import check
from rtdmd.data.geneval import RELATIONS, CompositionSpec, ObjectSpec, parse_prompt_set, parse_spec  # noqa: F401  (the schema, re-exported for the reward's users)
from rtdmd.errors import UserError

POSITION_MARGIN = 0.1


@dataclass(frozen=True)
class Detection:
    cls: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (any unit, y down)
    score: float = 1.0
    color: str | None = None


class Detector(Protocol):
    def __call__(self, images: Tensor, specs: Sequence[CompositionSpec]) -> list[list[Detection]]:
        """Detections per image of ``(B, 3, H, W)`` in [0, 1]; ``specs`` say which classes/colours matter."""


def relations(a: Sequence[float], b: Sequence[float], margin: float = POSITION_MARGIN) -> set[str]:
    """Where box ``a`` is relative to box ``b`` (see the module docstring)."""
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    size = (abs(a[2] - a[0]) + abs(b[2] - b[0]), abs(a[3] - a[1]) + abs(b[3] - b[1]))
    offset = (ca[0] - cb[0], ca[1] - cb[1])
    shrunk = [math.copysign(max(abs(o) - margin * s, 0.0), o) for o, s in zip(offset, size)]
    norm = math.hypot(*offset)
    if all(abs(s) < 1e-3 for s in shrunk) or norm == 0:
        return set()
    dx, dy = shrunk[0] / norm, shrunk[1] / norm
    found = set()
    if dx < -0.5:
        found.add("left of")
    if dx > 0.5:
        found.add("right of")
    if dy < -0.5:
        found.add("above")
    if dy > 0.5:
        found.add("below")
    return found


@dataclass(frozen=True)
class Verdict:
    correct: bool
    satisfied: int
    total: int
    reasons: tuple[str, ...] = field(default=())

    @property
    def fraction(self) -> float:
        return self.satisfied / self.total if self.total else 1.0


def judge(spec: CompositionSpec, detections: Sequence[Detection]) -> Verdict:
    """Check one image's detections against its spec (GenEval's rule, module docstring)."""
    by_class: dict[str, list[Detection]] = {}
    for d in sorted(detections, key=lambda d: -d.score):
        by_class.setdefault(d.cls, []).append(d)
    matched: list[list[Detection] | None] = []
    reasons, satisfied = [], 0
    for req in spec.include:
        found = by_class.get(req.cls, [])[:req.count]
        ok = len(found) >= req.count
        if not ok:
            reasons.append(f"expected {req.cls} >= {req.count}, found {len(found)}")
        if ok and req.color is not None:
            right = sum(d.color == req.color for d in found)
            if right < req.count:
                ok = False
                reasons.append(f"expected {req.color} {req.cls} >= {req.count}, found {right}")
        if ok and req.position is not None:
            relation, target = req.position
            if matched[target] is None:
                ok = False
                reasons.append(f"no target for {req.cls} to be {relation}")
            elif not all(relation in relations(d.box, t.box) for d in found for t in matched[target]):
                ok = False
                reasons.append(f"expected {req.cls} {relation} target")
        matched.append(found if ok else None)
        satisfied += ok
    for req in spec.exclude:
        n = len(by_class.get(req.cls, []))
        if n >= req.count:
            reasons.append(f"expected {req.cls} < {req.count}, found {n}")
        else:
            satisfied += 1
    return Verdict(not reasons, satisfied, spec.num_requirements, tuple(reasons))


class CompositionalReward:
    """A :class:`~rtdmd.rewards.base.Reward` from a :class:`Detector` and the prompts' metadata."""

    differentiable = False

    def __init__(self, detector: Detector, score: Literal["strict", "partial"] = "strict", name: str = "compositional"):
        self.detector = detector
        self.score = score
        self.name = name
        self.last_verdicts: list[Verdict] = []  # of the last call, for per-image reasons in evaluation output

    def __call__(self, images: Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> Tensor:
        if metadata is None or len(metadata) != images.shape[0]:
            raise UserError(f"reward '{self.name}' needs one metadata record per image (a JSONL prompt file with "
                            "'include' entries)")
        specs = [parse_spec(m, f"metadata of {p!r}") for m, p in zip(metadata, prompts)]
        detections = self.detector(images.detach(), specs)
        self.last_verdicts = [judge(s, d) for s, d in zip(specs, detections)]
        values = [float(v.correct) if self.score == "strict" else v.fraction for v in self.last_verdicts]
        return torch.tensor(values, dtype=torch.float32, device=images.device)

    def info(self) -> dict[str, Any]:
        detector_info = getattr(self.detector, "info", None)
        return {"kind": "compositional", "score": self.score,
                "detector": detector_info() if callable(detector_info) else type(self.detector).__name__}


@dataclass(frozen=True)
class CompositionalConfig:
    kind: Literal["compositional"] = "compositional"
    detector: str = ""  # "package.module:factory"; factory(device=..., **detector_args) -> Detector
    detector_args: dict[str, Any] = field(default_factory=dict)
    score: Literal["strict", "partial"] = "strict"

    def __post_init__(self):
        check(":" in self.detector, "detector must name a factory as 'package.module:function' "
              "(e.g. the tiny world's oracle, or your GenEval detector module)")


def load_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"detector module {module_name!r} cannot be imported ({err}): install it or fix "
                        "PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise UserError(f"detector module {module_name!r} has no {attr!r}")
    return factory


def build_compositional(cfg: CompositionalConfig, *, world=None, device="cpu") -> CompositionalReward:
    detector = load_factory(cfg.detector)(device=device, **cfg.detector_args)
    return CompositionalReward(detector, cfg.score)
