"""The published architectures with random weights on one GPU: a few iterations of each stage at the recipe's
per-GPU batch, with peak memory, seconds per iteration and model-FLOPs utilisation.

    python -m benchmarks.gpu                                   # all five recipes on cuda (one 80 GB GPU)
    python -m benchmarks.gpu --recipes sd35m,flux1_dev --out FILE.md
    python -m benchmarks.gpu --depth 1 --batch 1 --resolution 64   # depth-reduced, on the CPU (CI)

No download: every model is built from the published configs shipped in ``rtdmd/assets/architectures`` and
initialised on the device by its constructor (random weights; timings and memory do not depend on the values).
Each recipe runs as shipped (bf16 base under autocast, activation checkpointing, text encoders used once to encode
the prompts and then freed), with the published per-GPU batch (stage 1: 9; stage 2: the recipe's global batch over
its published GPU count, in its micro-batches) on one process: FSDP has nothing to shard on one GPU.

- Iterations are those of :mod:`rtdmd.app.plan.iteration` (the loops' calls, in order): stage 1 with every
  rollout step (k = 4) and a generator update, its most expensive iteration; stage 2 with ``--rounds`` sampling
  rounds (default 1; a step of the published 16 rounds costs 16 times a round's work).
- Seconds per iteration: median of ``--iterations`` timed iterations after one warm-up iteration; the device is
  synchronised around each.
- Peak memory: ``torch.cuda.max_memory_allocated`` over the warm-up (CPU: the allocator's peak through torch's
  profiler, as benchmarks/plan_check.py measures it); the optimizer state exists from the start, so the warm-up
  holds what every iteration holds.
- MFU: model FLOPs of the iteration (matrix products and attention, forward and backward, without the
  recomputation of activation checkpointing) per second, over the device's peak dense bf16 rate (a table of
  datacenter GPUs, or ``--peak-tflops``; on a CPU, a dense matrix product timed here stands in for the peak).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import time
from pathlib import Path

import torch

from benchmarks.recipe_plans import PUBLISHED_GPUS
from benchmarks.report import table

# Peak dense bf16 tensor-core rates (TFLOP/s) by device name (datasheet facts), for MFU.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0, "B200": 2250.0}
STAGES = ("distill", "align")
DEPTH_KEYS = ("num_layers", "num_single_layers", "num_hidden_layers", "num_decoder_layers")


def capped(depth: int | None):
    """A config transform keeping at most ``depth`` layers of every stack (None: the published depth)."""
    def transform(config: dict) -> dict:
        if depth is None:
            return config
        out = {k: transform(v) if isinstance(v, dict) else min(v, depth) if k in DEPTH_KEYS and isinstance(v, int)
               else v for k, v in config.items()}
        if "dual_attention_layers" in out:  # SD3.5: the blocks with a second attention, among those kept
            out["dual_attention_layers"] = [i for i in out["dual_attention_layers"] if i < out["num_layers"]]
        return out

    return transform


class FlopCount(torch.utils._python_dispatch.TorchDispatchMode):
    """Model FLOPs on real tensors: torch's formulas (:func:`rtdmd.app.plan.tracker.flop_formulas`), skipping
    what activation checkpointing recomputes (``roles.recomputing``)."""

    def __init__(self, roles):
        super().__init__()
        from rtdmd.app.plan.tracker import flop_formulas

        self.formulas, self.roles, self.flops = flop_formulas(), roles, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None and not self.roles.recomputing:
            self.flops += formula(*args, **(kwargs or {}), out_val=out)
        return out


def peak_rate(device: torch.device, given: float | None, dtype: torch.dtype) -> tuple[float | None, str]:
    """The device's peak TFLOP/s and where it comes from."""
    if given:
        return given, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        rate = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        return rate, (f"{name} datasheet" if rate else f"{name}: unknown, pass --peak-tflops")
    a = torch.randn(1024, 1024, dtype=dtype)
    a @ a
    start = time.perf_counter()
    for _ in range(8):
        a @ a
    return 8 * 2 * 1024**3 / (time.perf_counter() - start) / 1e12, f"a {dtype} matrix product timed here"


class Peak:
    """Peak bytes over a block of work on ``device``."""

    def __init__(self, device: torch.device):
        self.device, self.value = device, 0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            from benchmarks.plan_check import AllocatorPeak

            self.meter = AllocatorPeak()
            self.meter.start("work")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.value = torch.cuda.max_memory_allocated(self.device)
        else:
            self.meter.stop()
            self.value = self.meter.peak["work"]


def filled(modules, device: torch.device) -> None:
    """Modules created on the meta device made real on ``device`` with constant values (``--init fill``: random
    initialisation of a billion parameters takes minutes on a CPU; time and memory do not depend on the values):
    floating tensors 0.02, integer buffers (position ids) 0."""
    for module in {id(m): m for m in modules}.values():
        module.to_empty(device=device)
        with torch.no_grad():
            for t in (*module.parameters(), *module.buffers()):
                t.fill_(0.02 if t.is_floating_point() else 0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_rows(config, stage: str, name: str, batch: int | None) -> tuple[int, int]:
    """(per-GPU samples, micro-batch) of the recipe's published layout, or ``batch`` for both."""
    gpus = PUBLISHED_GPUS[name][0 if stage == "distill" else 1]
    total = config.distill.batch_size if stage == "distill" else config.align.samples_per_iteration
    rows = batch or total // gpus
    micro = min(config.align.micro_batch or rows, rows) if stage == "align" else rows
    return rows, micro


def run_recipe(config, name: str, device: torch.device, args) -> dict[str, dict]:
    """Both stages of one recipe on one backbone, as a run does: stage 1, then the stage-2 adapters on top."""
    from rtdmd import registry
    from rtdmd.app.plan import architectures
    from rtdmd.app.plan.planner import PROMPTS, modules_of
    from rtdmd.devices import torch_dtype
    from rtdmd.rewards.base import RewardSet, WeightedReward
    from rtdmd.train.parallel import configure_execution

    transform, dtype = capped(args.depth), torch_dtype(config.run.dtype)
    create_on = device if args.init == "random" else torch.device("meta")
    with architectures.configs_only(dtype, create_on, transform):
        backbone = registry.builder("backbone", config.backbone.kind)(config.backbone, world=None, device=device,
                                                                       dtype=dtype)
    rewards = RewardSet([WeightedReward(e.name or e.kind, architectures.reward_model(e.params, create_on, transform),
                                        e.weight, e.bp_scale) for e in config.rewards])
    if args.init == "fill":
        filled([*modules_of(backbone), *modules_of(rewards)], device)
    layouts = {stage: stage_rows(config, stage, name, args.batch) for stage in STAGES}
    texts = {stage: [PROMPTS[j // (config.align.group_size if stage == "align" else 1) % len(PROMPTS)]
                     for j in range(rows)] for stage, (rows, _) in layouts.items()}
    backbone.precompute_embeddings([sorted(set(texts["distill"]) | set(texts["align"]))],
                                   free_text_encoders=config.run.free_text_encoders)
    out = {}
    for stage in STAGES:
        if stage == "align":
            backbone.start_stage2()
        configure_execution(backbone, config.run)
        out[stage] = run_stage(backbone, rewards, config, stage, texts[stage], layouts[stage], device, args)
    del backbone, rewards
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def run_stage(backbone, rewards, config, stage: str, texts, layout, device: torch.device, args) -> dict:
    """One warm-up iteration that counts the FLOPs and the peak memory, then ``--iterations`` timed ones. The
    optimizer state exists from the start (``train_state``), so the warm-up holds what later iterations hold."""
    from rtdmd.app.plan import iteration
    from rtdmd.train import objectives

    rows, micro = layout
    cfg = getattr(config, stage)
    if stage == "align":
        cfg = dataclasses.replace(cfg, micro_batch=micro)
    state = iteration.train_state(backbone, config, stage)
    sigmas = backbone.generator_sigmas(cfg.step_list)

    def one(it: int) -> None:
        if stage == "distill":
            iteration.distill_iteration(backbone, state, objectives.stage1(cfg), cfg, texts, sigmas, device, it=it)
        else:
            iteration.align_iteration(backbone, rewards, state, objectives.stage2(cfg, config.beta, rewards), cfg,
                                      texts, [{} for _ in texts], sigmas, device, rounds=args.rounds, it=it)

    counter = FlopCount(backbone.roles)
    with Peak(device) as peak, counter:
        one(0)
    seconds = []
    for it in range(1, args.iterations + 1):
        synchronize(device)
        start = time.perf_counter()
        one(it)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return {"rows": rows, "micro": micro, "peak": peak.value, "seconds": statistics.median(seconds),
            "flops": counter.flops}


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark; returns ``{(recipe, stage): {"rows", "micro", "peak", "seconds", "flops"}}``."""
    from rtdmd.commands.plan import quiet
    from rtdmd.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(PUBLISHED_GPUS), help="comma-separated recipe names")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per stage (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="stage-2 sampling rounds per iteration")
    parser.add_argument("--depth", type=int, default=None, help="keep at most this many layers per stack (CPU)")
    parser.add_argument("--batch", type=int, default=None, help="per-GPU samples instead of the published ones")
    parser.add_argument("--resolution", type=int, default=None, help="image side instead of the recipe's")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak dense bf16 TFLOP/s")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="run.dtype instead of the recipe's "
                        "(a CPU without bf16 matrix units runs fp32 faster)")
    parser.add_argument("--init", choices=["random", "fill"], default="random",
                        help="weights: the constructors' random initialisation, or constants (fast, for CPU checks)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key (e.g. backbone.max_sequence_length=8 for a quick CPU check)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    quiet()
    device = torch.device(args.device)
    rate, source = peak_rate(device, args.peak_tflops, torch.float32 if args.dtype == "fp32" else torch.bfloat16)
    rows, results, started = [], {}, time.perf_counter()
    for name in args.recipes.split(","):
        overrides = [f"run.device={device}", *args.overrides] + ([f"run.dtype={args.dtype}"] if args.dtype else [])
        if args.resolution:
            overrides += [f"backbone.height={args.resolution}", f"backbone.width={args.resolution}"]
        config = load_config(f"recipes/{name}", overrides)
        layers = getattr(config.backbone, "hidden_layers", None)
        if args.depth is not None and layers is not None:  # text-encoder layers stacked into the embedding
            config = dataclasses.replace(config, backbone=dataclasses.replace(
                config.backbone, hidden_layers=tuple(min(k, args.depth) for k in layers)))
        for stage, r in run_recipe(config, name, device, args).items():
            results[(name, stage)] = r
            achieved = r["flops"] / r["seconds"] / 1e12
            rows.append([name, stage, f"{r['rows']}" + (f" ({r['micro']})" if r["micro"] != r["rows"] else ""),
                         f"{r['peak'] / 2**30:.2f}", f"{r['seconds']:.2f}", f"{r['flops'] / 1e12:.2f}",
                         f"{achieved:.2f}", f"{achieved / rate:.1%}" if rate else "n/a"])
            print(f"benchmarks.gpu: {name} {stage} done", flush=True)
    depth = f", at most {args.depth} layers per stack" if args.depth else ""
    text = (f"{device} ({source}: peak {rate or 0:.0f} TFLOP/s){depth}; {time.perf_counter() - started:.0f} s\n\n"
            + table(["recipe", "stage", "per GPU (micro-batch)", "peak GiB", "s / iteration", "TFLOP / iteration",
                     "TFLOP/s", "MFU"], rows))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
