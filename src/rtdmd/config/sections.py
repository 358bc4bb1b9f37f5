"""Typed, validated configuration of a run: one YAML file holds both stages.

    world:    what to generate: prompts, the teacher's target distribution, evaluation  (kind: gmm, ...)
    backbone: the flow models: teacher, generator and fake score                        (kind: mlp, sd3, ...)
    reward / rewards: one reward, or a weighted list                                      (kind: linear, ...)
    preset:   paper | exact   (defaults of the loss weighting, spec section 1)
    beta:     tilt temperature of p~ ~ p_T exp(r / beta) (used by the exact weighting)
    distill:  stage 1, AC-DMD                 align: stage 2, RTDMD              run: seed, device, logging

Loaded by :mod:`rtdmd.config.loading` (YAML file + ``key=value`` overrides): unknown keys are rejected with the
closest valid key; ``preset`` (:mod:`rtdmd.config.presets`) supplies defaults for the keys the user did not set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from rtdmd.config import strict
from rtdmd.config.strict import Kinded, check
from rtdmd.functional import dmd


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and gradient clipping of one trained role."""

    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables

    def __post_init__(self):
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(all(0 <= b < 1 for b in self.betas), f"betas must lie in [0, 1), got {list(self.betas)}")
        check(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay and grad_clip must be >= 0")


@dataclass(frozen=True)
class DistillConfig:
    """Stage 1, AC-DMD (spec section 4)."""

    iterations: int = 15000
    batch_size: int = 72  # global samples per iteration (all ranks together)
    method: Literal["acdmd", "dmd"] = "acdmd"  # dmd: plain DMD, full rollout to sigma = 0, no random stop
    eta: float = 0.9
    step_list: tuple[int, ...] = (1000, 750, 500, 250)
    fake_update_ratio: int = 10  # TTUR: generator update every N fake updates
    fake_weighting: Literal["min1_10s2", "uniform"] = "min1_10s2"
    consistency_gamma: float | None = None  # default 0.01 for acdmd, 0 (off) for dmd
    consistency_estimator: Literal["two_sample", "one_sample"] = "two_sample"
    # cps: the published regulariser, CPS steps t -> t' < t (biased: the martingale it relies on holds for the
    # diffusion's own reverse kernel, not for CPS at eta 0.9); forward: the exact forward kernel t -> t'' > t and a
    # regression onto the detached prediction at t, whose stationary point is the true denoiser (preset exact).
    consistency_kernel: Literal["cps", "forward"] | None = None
    consistency_delta_max: int = dmd.CONSISTENCY_DELTA_MAX
    renoise_offset: float = dmd.RENOISE_OFFSET  # tau ~ U[1000 s + offset, 1000)
    tau_clamp: tuple[float, float] = dmd.TAU_CLAMP
    generator: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-5))
    fake: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-5))
    ema_decay: float = 0.99  # per generator optimiser step
    checkpoint_every: int = 1000
    log_every: int = 10

    def __post_init__(self):
        if self.consistency_gamma is None:
            object.__setattr__(self, "consistency_gamma", 0.01 if self.method == "acdmd" else 0.0)
        if self.consistency_kernel is None:  # set by the preset when loaded from a config
            object.__setattr__(self, "consistency_kernel", "cps")
        check(self.iterations >= 1, "iterations must be >= 1")
        check(self.batch_size >= 1, "batch_size must be >= 1")
        check(0 <= self.eta <= 1, f"eta must lie in [0, 1], got {self.eta}")
        check(len(self.step_list) >= 1 and all(0 < s <= 1000 for s in self.step_list)
              and list(self.step_list) == sorted(self.step_list, reverse=True) and len(set(self.step_list)) == len(self.step_list),
              f"step_list must be strictly decreasing values in (0, 1000], got {list(self.step_list)}")
        check(self.fake_update_ratio >= 1, "fake_update_ratio must be >= 1")
        check(self.consistency_gamma >= 0, "consistency_gamma must be >= 0")
        check(1 <= self.consistency_delta_max <= 1000, "consistency_delta_max must lie in [1, 1000]")
        check(0 <= self.tau_clamp[0] < self.tau_clamp[1] <= 1000, "tau_clamp must be [lo, hi] within [0, 1000]")
        check(0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1)")
        check(self.checkpoint_every >= 0 and self.log_every >= 1, "checkpoint_every >= 0 and log_every >= 1")


@dataclass(frozen=True)
class AlignConfig:
    """Stage 2, RTDMD: distribution matching + SubGRPO + final-step reward back-propagation (spec section 5).

    Fields left at None take their value from the preset (``paper`` or ``exact``)."""

    iterations: int = 1000
    prompts_per_iteration: int = 3  # groups per iteration (global)
    group_size: int = 24  # K images per prompt
    micro_batch: int = 0  # samples per backward pass of the generator update (0: the whole local batch)
    # Sampling rounds of prompts_per_iteration x group_size samples accumulated into one optimiser step; the
    # advantages are normalised over all of them (spec 5.8: the published recipes take 16).
    sampling_rounds: int = 1
    eta: float = 0.9
    step_list: tuple[int, ...] = (1000, 750, 500, 250)
    subset_size: int = 2  # SubGRPO: stochastic steps trained per iteration (= all of them: plain GRPO)
    policy: bool = True  # the SubGRPO term
    bp: bool = True  # reward back-propagation through the deterministic last step
    dm: bool = True  # the distribution-matching term (off: reward only)
    log_prob: Literal["simplified", "gaussian"] | None = None
    advantages: Literal["paper", "exact"] | None = None
    advantage_clip: float = 5.0
    ppo_clip: float = 1e-5
    # The old log-probability of the PPO ratio: the rollout's (published), or the recomputed one without gradient,
    # so that the ratio is exactly 1 with one update per rollout and no numerical difference clips a sample.
    old_log_prob: Literal["behaviour", "recomputed"] | None = None
    # published: every step term (the policy term of each trained step, and the final-step DM + BP term) is divided
    # by |S| + 1, the number of steps with a term; unbiased: the policy terms summed and scaled by
    # (#stochastic steps / subset_size), the final-step terms with weight 1 (the gradient of E[r] / beta).
    step_weighting: Literal["published", "unbiased"] | None = None
    policy_weight: float = 1.0
    dm_loss: Literal["dmd", "score"] | None = None  # normalised DMD at s = 0, or unnormalised score difference
    dm_weight: float | None = None
    # Levels of the final-step DM term and of the fake score's training: None is the spec's
    # tau ~ U[10, 1000) clamped to [20, 980]; (lo, hi) draws t ~ U[lo, hi].
    dm_sigma_range: tuple[float, float] | None = None
    dm_backprop: Literal["last_step", "full"] | None = None  # DM gradient through the last step or all steps
    # dm_loss score: conjugate-gradient iterations that undo the level-t shrinkage of the data-level score
    # difference through the teacher denoiser's Jacobian (0: off); exact for Gaussian components at any t.
    dm_deconvolution: int = 0
    bp_loss: Literal["hinge", "linear"] | None = None  # hinge: max(0, margin - r); linear: -r / beta
    bp_weight: float | None = None
    bp_margin: float = 3.0
    fake_update_ratio: int = 1  # fake updates per generator update
    fake_weighting: Literal["min1_10s2", "uniform"] | None = None
    fake_consistency_gamma: float | None = None  # default 0.01 (paper); off under exact (see consistency_kernel)
    generator: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-6, weight_decay=1e-4))
    fake: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-5))
    ema_decay: float = 0.9
    ema_every: int = 8  # optimiser steps between EMA updates
    checkpoint_every: int = 100
    log_every: int = 1

    def __post_init__(self):
        if self.fake_consistency_gamma is None:  # set by the preset when loaded from a config
            object.__setattr__(self, "fake_consistency_gamma", 0.01)
        check(self.iterations >= 1, "iterations must be >= 1")
        check(self.prompts_per_iteration >= 1, "prompts_per_iteration must be >= 1")
        check(self.group_size >= 2, f"group_size must be >= 2 (a group baseline needs 2 samples), got {self.group_size}")
        check(self.micro_batch >= 0, "micro_batch must be >= 0")
        check(self.sampling_rounds >= 1, f"sampling_rounds must be >= 1, got {self.sampling_rounds}")
        check(0 < self.eta <= 1, f"eta must lie in (0, 1] (stage 2 needs stochastic steps), got {self.eta}")
        check(len(self.step_list) >= 2 and all(0 < s <= 1000 for s in self.step_list)
              and list(self.step_list) == sorted(set(self.step_list), reverse=True),
              f"step_list must be at least 2 strictly decreasing values in (0, 1000], got {list(self.step_list)}")
        n_stochastic = len(self.step_list) - 1
        check(1 <= self.subset_size <= n_stochastic,
              f"subset_size must lie in [1, {n_stochastic}] (the stochastic steps), got {self.subset_size}")
        check(self.policy or self.bp or self.dm, "at least one of policy, bp, dm must be on")
        check(self.ppo_clip > 0 and self.advantage_clip > 0, "ppo_clip and advantage_clip must be positive")
        if self.dm_sigma_range is not None:
            lo, hi = self.dm_sigma_range
            check(0 < lo < hi < 1, f"dm_sigma_range must satisfy 0 < lo < hi < 1, got {[lo, hi]}")
        check(self.fake_update_ratio >= 1, "fake_update_ratio must be >= 1")
        check(self.fake_consistency_gamma >= 0, "fake_consistency_gamma must be >= 0")
        check(self.dm_deconvolution >= 0, f"dm_deconvolution must be >= 0 (0: off), got {self.dm_deconvolution}")
        check(0 <= self.ema_decay < 1 and self.ema_every >= 1, "ema_decay in [0, 1) and ema_every >= 1")
        check(self.checkpoint_every >= 0 and self.log_every >= 1, "checkpoint_every >= 0 and log_every >= 1")

    @property
    def samples_per_iteration(self) -> int:
        return self.prompts_per_iteration * self.group_size


@dataclass(frozen=True)
class RunConfig:
    """Everything about where and how a run executes (not what it learns)."""

    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu; or any torch device string
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"  # model (frozen) dtype; trainable tensors stay fp32
    # With dtype bf16 or fp16: the model's forward passes run under torch.autocast in that dtype (matrix products
    # of base and adapters in bf16; the velocity, CFG, CPS steps and losses in float32). No effect with fp32.
    autocast: bool = True
    parallel: Literal["ddp", "fsdp"] = "ddp"  # strategy when launched with several processes
    # Encode the training and evaluation prompts once at start (and the empty prompt), then free the text
    # encoders; rows are kept in host memory, or read back from run.embedding_cache when it is set.
    free_text_encoders: bool = False
    embedding_cache: str = ""  # folder of prompt embeddings on disk (safetensors, keyed by model and settings)
    reward_device: str = ""  # where reward models run ("" = run.device; e.g. cpu, or another GPU: cuda:1)
    reward_offload: bool = False  # reward weights wait in host memory between calls
    # Keep only each transformer block's inputs in passes with gradient and recompute the rest in the backward
    # pass (about one more forward of the trained passes, for a fraction of their activation memory).
    activation_checkpointing: bool = False
    # torch.compile of each transformer block's forward (aot_eager: traced, not code-generated; for checks)
    compile: Literal["off", "inductor", "aot_eager"] = "off"
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "rtdmd"
    progress: bool = True
    eval_samples: int = 2000  # samples per prompt for evaluation metrics (vector worlds)
    eval_every: int = 0  # evaluate the EMA generator every N iterations during training (0: only at the end)
    nonfinite_patience: int = 20  # stop (with a checkpoint) after this many consecutive non-finite updates

    def __post_init__(self):
        check(self.eval_samples >= 1 and self.eval_every >= 0, "eval_samples must be >= 1 and eval_every >= 0")
        check(self.nonfinite_patience >= 1, f"nonfinite_patience must be >= 1, got {self.nonfinite_patience}")


@dataclass(frozen=True)
class RewardEntry:
    """One weighted reward; its kind-specific keys are checked by the kind's own config class."""

    kind: str
    weight: float = 1.0
    bp_scale: float = 1.0  # factor on this reward in the back-propagation path (PickScore: 1/26 in the recipe)
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    world: Kinded["world"]  # noqa: F821
    backbone: Kinded["backbone"]  # noqa: F821
    rewards: tuple[RewardEntry, ...]
    preset: Literal["paper", "exact"] = "paper"
    beta: float = 1.0
    distill: DistillConfig = field(default_factory=DistillConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        check(self.beta > 0, f"beta must be positive, got {self.beta}")
        names = [r.name for r in self.rewards]
        check(len(set(names)) == len(names), f"reward names must be unique, got {names}")
        for i, r in enumerate(self.rewards):
            # bp_scale rescales a reward in the back-propagation path only: the pathwise and score-function parts
            # of grad E[r] would then estimate the gradients of two different rewards.
            check(self.preset != "exact" or r.bp_scale == 1.0,
                  f"rewards[{i}].bp_scale is {r.bp_scale}, but preset exact needs 1 (a scale in the back-propagation "
                  f"path only biases the reward gradient): remove it, or scale the reward with weight instead")

    def fingerprint(self, *sections: str) -> str:
        """Hash of the named sections: a checkpoint is only compatible with the same world and backbone."""
        payload = {s: strict.to_dict(getattr(self, s)) for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
