"""Plan one stage of a config: per-rank peak memory by term, FLOPs of an iteration, on ``gpus`` processes.

The backbone and the rewards are built from their configs alone (:mod:`rtdmd.app.plan.architectures`), with the
real builders and classes, and every tensor is a fake tensor (shapes, dtypes and devices, no memory). One
iteration of the stage (:mod:`rtdmd.app.plan.iteration`) then runs at the config's true sizes and this rank's
batch under :class:`~rtdmd.app.plan.tracker.MemoryTracker` and torch's FLOP counter:

- what exists before the iteration is counted from the objects that hold it, by term: the frozen base, the
  adapters (trained and frozen), the optimizer state (created by a warm-up step on zero gradients, as it exists
  from the second iteration on), the EMA, the text encoders (0 once ``run.free_text_encoders`` freed them), the
  VAE, the reward models, the prompt embeddings kept on the device;
- what the iteration creates is tracked op by op; at its peak it splits into gradients and activations
  (everything else: saved tensors, rollout states, CFG copies, temporaries).

With ``run.parallel: fsdp`` on ``gpus`` ranks, the base, adapters, gradients, optimizer state and EMA of the
transformer(s) are this rank's shards (each tensor's first dimension padded to a multiple of ``gpus``, as FSDP2
pads), plus the units FSDP gathers around their forward and backward: two of the largest (the current unit and
the prefetched next one) and the root module, which stays gathered from its forward to its backward. Text
encoders, VAE and rewards are replicated. Start-up (loading and encoding the prompts, before the encoders are
freed) is planned separately: it must fit too.

Stage 2 is planned with one sampling round; ``align.sampling_rounds`` rounds keep that many rounds' trajectories,
prompt rows and scores (measured on the round) until the generator update, and cost that many times the FLOPs.
"""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rtdmd import registry
from rtdmd.app.plan import architectures, iteration
from rtdmd.app.plan.tracker import MemoryTracker
from rtdmd.backbones.base import TRAINED_ROLES
from rtdmd.config import Config
from rtdmd.devices import torch_dtype
from rtdmd.errors import UserError
from rtdmd.rewards.base import RewardSet, WeightedReward
from rtdmd.train import objectives
from rtdmd.train.parallel import configure_execution
from rtdmd.train.state import TrainState

TERMS = ("frozen base", "adapters", "gradients", "optimizer", "EMA", "activations", "FSDP gathered",
         "text encoders", "VAE", "rewards", "prompt embeddings", "other")
STAGES = ("distill", "align")
ENCODE_BATCH = 32  # prompts per batch of the up-front encode (rtdmd.backbones.common.ENCODE_BATCH)
PROMPTS = [f"prompt {i}" for i in range(ENCODE_BATCH)]


@dataclass
class StagePlan:
    """One stage on ``gpus`` ranks: per-rank bytes by term at the training peak, the start-up peak (loading and
    encoding), the FLOPs of one iteration of this rank, and what stays in host memory."""

    stage: str
    gpus: int
    local_batch: int
    micro_batch: int
    checkpointing: bool
    terms: dict[str, int]
    startup: int
    flops: float
    mean_flops: float  # the stage's mean iteration (stage 1: random stop and generator every fake_update_ratio)
    host: dict[str, int] = field(default_factory=dict)
    phase_peaks: dict[str, int] = field(default_factory=dict)  # tracked bytes (gradients, activations) per phase
    transformer_bytes: int = 0  # one frozen transformer (the teacher's), whole
    lora_params: int = 0  # one role's trained adapter parameters
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return sum(self.terms.values())

    @property
    def needed(self) -> int:
        """What must fit: the larger of the training peak and the start-up peak."""
        return max(self.peak, self.startup)


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, Tensor):
            storage = t.untyped_storage()
            seen[id(storage)] = storage.nbytes()
    return sum(seen.values())


def module_tensors(modules) -> list[Tensor]:
    return list({id(t): t for m in modules for t in (*m.parameters(), *m.buffers())}.values())


def local_batch(config: Config, stage: str, gpus: int) -> tuple[int, int]:
    """(samples per rank and iteration or round, samples per backward pass of the generator)."""
    if stage == "distill":
        total = config.distill.batch_size
    else:
        total = config.align.samples_per_iteration
    if total % gpus:
        raise UserError(f"{stage}: the global batch ({total}) is not divisible by --gpus {gpus}: use a divisor of it")
    rows = total // gpus
    micro = (config.align.micro_batch or rows) if stage == "align" else rows
    return rows, min(micro, rows)


def modules_of(obj, depth: int = 6) -> list[nn.Module]:
    """The outermost ``nn.Module`` objects reachable from ``obj`` through attributes, dicts and lists."""
    found: dict[int, nn.Module] = {}

    def walk(value, level: int) -> None:
        if isinstance(value, nn.Module):
            found[id(value)] = value
        elif level > 0 and not isinstance(value, (type, Tensor, str, bytes)):
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) \
                else vars(value).values() if hasattr(value, "__dict__") else ()
            for item in items:
                walk(item, level - 1)

    walk(obj, depth)
    inner = {id(m) for top in found.values() for m in top.modules() if m is not top}
    return [m for m in found.values() if id(m) not in inner]


@dataclass
class Measured:
    """What one fake iteration gave, before the per-rank layout: the plan on one rank, the shapes of the tensors
    FSDP would shard (per term: first dimension, elements, bytes per element) and the FSDP units' sizes."""

    plan: StagePlan
    shards: dict[str, list[tuple[int, int, int]]]
    units: dict[str, int]


class Planner:
    """Plans stages of one config (``plan(stage, gpus, checkpointing)``); fake iterations are cached per
    (stage, per-rank batch, checkpointing)."""

    def __init__(self, config: Config, device: str = "cpu"):
        self.config, self.device = config, torch.device(device)
        self._cache: dict[tuple, Measured] = {}
        self._parts: dict[tuple, tuple] = {}

    def plan(self, stage: str, gpus: int, checkpointing: bool | None = None) -> StagePlan:
        if checkpointing is None:
            checkpointing = self.config.run.activation_checkpointing
        rows, micro = local_batch(self.config, stage, gpus)
        key = (stage, rows, checkpointing)
        if key not in self._cache:
            self._cache[key] = self._measure(stage, rows, checkpointing)
        measured = self._cache[key]
        return dataclasses.replace(measured.plan, gpus=gpus, terms=self._per_rank(measured, gpus),
                                   local_batch=rows, micro_batch=micro)

    # -- one fake iteration --------------------------------------------------------------------------------

    def _built(self, stage: str, checkpointing: bool):
        """The fake backbone and rewards of ``stage``, the fake mode and the start-up peak, built once per stage
        and checkpointing setting (the per-rank batch only changes the iteration)."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        key = (stage, checkpointing)
        if key in self._parts:
            return self._parts[key]
        config = self.config
        run = dataclasses.replace(config.run, activation_checkpointing=checkpointing, compile="off")
        dtype = torch_dtype(run.dtype)
        with architectures.configs_only(dtype, "meta"):
            backbone = registry.builder("backbone", config.backbone.kind)(
                config.backbone, world=None, device=self.device, dtype=dtype)
        rewards = RewardSet([WeightedReward(e.name or e.kind, architectures.reward_model(e.params, "meta"), e.weight,
                                            e.bp_scale) for e in config.rewards])
        if stage == "align":
            backbone.start_stage2()
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        architectures.fake_tensors([*modules_of(backbone), *modules_of(rewards)], mode, self.device)
        configure_execution(backbone, run)
        with mode:
            startup = self._startup(backbone, rewards, run)
        self._parts[key] = backbone, rewards, mode, startup
        return self._parts[key]

    def _measure(self, stage: str, rows: int, checkpointing: bool) -> Measured:
        config = self.config
        backbone, rewards, mode, startup = self._built(stage, checkpointing)
        texts, metadata = self._prompts(stage, rows)
        sigmas = backbone.generator_sigmas(getattr(config, stage).step_list)
        with mode:
            state = self._train_state(backbone, stage)
            terms, host, shards = self._persistent(backbone, rewards, state, stage)
            known = [o for o in gc.get_objects() if isinstance(o, Tensor)]
            tracker, phases = MemoryTracker(known), {}
            hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.tag(p.grad, "gradients"))
                     for role in TRAINED_ROLES for p in backbone.trainable(role).values()]
            hold: list = []
            with tracker:
                self._iteration(stage, backbone, rewards, state, texts, metadata, sigmas, hold, phases, tracker)
            round_bytes = storage_bytes(_tensors_of(hold))
            hold.clear()
            for hook in hooks:
                hook.remove()
            forward = self._forward_flops(backbone, texts, sigmas) if stage == "distill" else 0.0
            del state
        terms.update(gradients=tracker.peak_split.get("gradients", 0),
                     activations=tracker.peak_split.get("activations", 0))
        rounds = config.align.sampling_rounds if stage == "align" else 1
        terms["activations"] += (rounds - 1) * round_bytes
        total = mean = float(tracker.flops) * rounds
        if stage == "distill":
            total, mean = self._stage1_flops(phases, forward, len(sigmas) - 1)
        micro = min(config.align.micro_batch or rows, rows) if stage == "align" else rows
        teacher = backbone.roles.bases["teacher"]
        transformer = storage_bytes(t for n, t in (*teacher.named_parameters(), *teacher.named_buffers())
                                    if ".lora_" not in n)
        lora = sum(p.numel() for p in backbone.trainable("generator").values())
        notes = [e.reward.note for e in rewards.entries if getattr(e.reward, "note", "")]
        plan = StagePlan(stage, 1, rows, micro, checkpointing, terms, startup, total, mean, host,
                         dict(tracker.phase_peaks), transformer, lora, notes)
        return Measured(plan, shards, self._units(backbone))

    def _prompts(self, stage: str, rows: int) -> tuple[list[str], list[dict]]:
        """Synthetic prompts, one per sample (stage 2: one per group of ``group_size``, as the loop repeats them),
        among ``ENCODE_BATCH`` distinct ones (rows are copied per sample either way); every text encoder here
        pads to a fixed length, so their text does not matter."""
        group = self.config.align.group_size if stage == "align" else 1
        texts = [PROMPTS[j // group % ENCODE_BATCH] for j in range(rows)]
        return texts, [{} for _ in texts]

    def _startup(self, backbone, rewards, run) -> int:
        """Peak while every model is loaded and a full batch of prompts is encoded (before the encoders are
        freed): the up-front encode of the session."""
        known = [o for o in gc.get_objects() if isinstance(o, Tensor)]
        resident = storage_bytes(module_tensors([*modules_of(backbone), *modules_of(rewards)]))
        tracker = MemoryTracker(known)
        with tracker:
            backbone.precompute_embeddings([PROMPTS], free_text_encoders=run.free_text_encoders)
        return resident + tracker.peak

    def _train_state(self, backbone, stage: str) -> TrainState:
        return iteration.train_state(backbone, self.config, stage)

    def _persistent(self, backbone, rewards, state: TrainState, stage: str):
        """Device bytes held before the iteration, by term; host bytes (stage-1 copies, one prompt's row); and the
        shapes of what FSDP shards."""
        bases = list(dict.fromkeys(backbone.roles.bases.values()))
        base_tensors = [t for m in bases for n, t in (*m.named_parameters(), *m.named_buffers()) if ".lora_" not in n]
        adapters = [t for m in bases for n, t in m.named_parameters() if ".lora_" in n]
        optim = [v for role in (state.generator, state.fake) for s in role.optimizer.state.values()
                 for v in s.values() if isinstance(v, Tensor) and v.ndim > 0]
        ema = list(state.generator.ema.shadow.values())
        pipe = backbone.pipe
        encoders = [m for n, m in pipe.components.items() if n.startswith("text_encoder") and isinstance(m, nn.Module)]
        cache = backbone._cache
        pinned = [t for p in cache.pinned if p in cache._rows for t in cache._rows[p].values()]
        host_rows = [t for p, row in cache._rows.items() if p not in cache.pinned for t in row.values()]
        terms = {
            "frozen base": storage_bytes(base_tensors),
            "adapters": storage_bytes(adapters),
            "optimizer": storage_bytes(optim),
            "EMA": storage_bytes(ema),
            "text encoders": storage_bytes(module_tensors(encoders)),
            "VAE": storage_bytes(module_tensors([pipe.vae] if pipe.vae is not None else [])),
            "rewards": storage_bytes(module_tensors(modules_of(rewards))),
            "prompt embeddings": storage_bytes(pinned),
        }
        counted = {id(t.untyped_storage()) for t in (*base_tensors, *adapters, *optim, *ema, *pinned, *host_rows)}
        rest = [t for m in [*modules_of(backbone), *modules_of(rewards)] for t in (*m.parameters(), *m.buffers())
                if id(t.untyped_storage()) not in counted]
        terms["other"] = storage_bytes(rest) - terms["text encoders"] - terms["VAE"] - terms["rewards"]
        lora = sum(p.numel() for p in backbone.trainable("generator").values())
        rows = max(1, len(cache._rows) - len(cache.pinned & cache._rows.keys()))
        host = {"stage-1 copies": 2 * 4 * lora if stage == "align" else 0,
                "prompt row": storage_bytes(host_rows) // rows}
        trained = [p for r in TRAINED_ROLES for p in backbone.trainable(r).values()]
        shape = lambda ts: [(t.shape[0] if t.ndim else 1, t.numel(), t.element_size())
                            for t in {id(t): t for t in ts}.values()]
        shards = {"frozen base": shape(base_tensors), "adapters": shape(adapters), "optimizer": shape(optim),
                  "EMA": shape(ema), "gradients": shape(trained)}
        return terms, host, shards

    def _iteration(self, stage, backbone, rewards, state, texts, metadata, sigmas, hold, phases, tracker) -> None:
        cfg = getattr(self.config, stage)

        @contextmanager
        def phase(name: str) -> Iterator[None]:
            before, tracker.phase = tracker.flops, name
            yield
            phases[name] = tracker.flops - before

        if stage == "distill":
            objective = objectives.stage1(cfg)
            iteration.distill_iteration(backbone, state, objective, cfg, texts, sigmas, self.device, stop=1,
                                        phase=phase)
        else:
            objective = objectives.stage2(cfg, self.config.beta, rewards)
            iteration.align_iteration(backbone, rewards, state, objective, cfg, texts, metadata, sigmas,
                                      self.device, phase=phase, hold=hold)

    def _forward_flops(self, backbone, texts, sigmas) -> float:
        """FLOPs of one generator forward without gradient on this rank's batch (a rollout step)."""
        counter = MemoryTracker()
        cond = backbone.encode(texts)
        x = torch.zeros(len(texts), *backbone.sample_shape, device=self.device)
        with counter, torch.no_grad():
            backbone.role("generator")(x, sigmas[:1].expand(len(texts)), cond)
        return float(counter.flops)

    def _stage1_flops(self, phases, forward, steps) -> tuple[float, float]:
        """Stage 1 planned with the random stop k = 1: FLOPs of the iteration with k = ``steps`` (rollouts of every
        step, the most expensive) and of the mean iteration (k ~ U{1..steps}, mean (steps + 1) / 2, and the
        generator updated every ``fake_update_ratio`` iterations), from the cost of one rollout step."""
        cfg = self.config.distill
        fake, generator = phases["fake-score update"], phases["generator update"]
        mean_k = (steps + 1) / 2 if cfg.method == "acdmd" else steps
        worst = fake + generator + 2 * (steps - 1) * forward
        mean = fake + (mean_k - 1) * forward + (generator + (mean_k - 1) * forward) / cfg.fake_update_ratio
        return worst, mean

    # -- per rank ----------------------------------------------------------------------------------------------

    def _units(self, backbone) -> dict[str, int]:
        """Full bytes of the largest FSDP unit (a block) and of the root units (what is not in a block)."""
        units = backbone.fsdp_units() if hasattr(backbone, "fsdp_units") else []
        bases = set(map(id, backbone.roles.bases.values()))
        blocks = [u for u in units if id(u) not in bases]
        block_bytes = max((storage_bytes(module_tensors([b])) for b in blocks), default=0)
        in_blocks = {id(t) for b in blocks for t in (*b.parameters(), *b.buffers())}
        root = sum(storage_bytes(t for t in (*m.parameters(), *m.buffers()) if id(t) not in in_blocks)
                   for m in backbone.roles.bases.values())
        return {"block": block_bytes, "root": root}

    def _per_rank(self, measured: Measured, gpus: int) -> dict[str, int]:
        terms = {**measured.plan.terms, "FSDP gathered": 0}
        if gpus > 1 and self.config.run.parallel == "fsdp":
            for name, shapes in measured.shards.items():
                sharded = sum(math.ceil(rows / gpus) * (numel // max(rows, 1)) * size for rows, numel, size in shapes)
                full = sum(numel * size for rows, numel, size in shapes)
                # Gradients at the peak may be a part of all (one role): shard what was measured.
                terms[name] = sharded if name != "gradients" else math.ceil(terms[name] * sharded / max(full, 1))
            terms["FSDP gathered"] = 2 * measured.units["block"] + measured.units["root"]
        return {k: terms.get(k, 0) for k in TERMS}


def _tensors_of(objects) -> Iterator[Tensor]:
    """Tensors reachable from ``objects`` through dataclass fields, dicts, lists and tuples."""
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if isinstance(obj, Tensor):
            yield obj
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
