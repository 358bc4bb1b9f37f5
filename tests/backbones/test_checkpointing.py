"""Activation checkpointing of the LoRA roles (``run.activation_checkpointing``): the same gradients, blocks that
really recompute in the backward pass, and passes without gradient that pay nothing.

The scenario switches roles between a forward pass and its backward, as the losses do (DMD: the generator's
forward with gradient, then teacher and fake score without; the fake score's loss, then a generator pass), so a
recomputation with the adapters active at backward time would differentiate another role's function.
Tolerance: the recomputation repeats the same kernels on the same inputs, so gradients agree to round-off
(measured: bitwise on this CPU); we allow 1e-6 relative, while differentiating the wrong role moves them by more
than 1e-2 (checked below by the mutation the test is meant to catch).
"""

import pytest
import torch

from rtdmd.app.sampling import seeded_generators
from rtdmd.train.parallel import full_tensor
from tests.backbones.conftest import PROMPTS, build, perturb

FAMILIES = ["sd3", "flux1_dev", "flux2_klein"]
SIGMA = torch.tensor([0.7, 0.4])


def prepare(backbone, stage2: bool = False) -> None:
    """Roles that differ (random adapters), optionally with stage 2's frozen + fresh adapters."""
    perturb(backbone, "generator", 0.3, seed=1)
    perturb(backbone, "fake", 0.3, seed=2)
    if stage2:
        backbone.start_stage2()
        perturb(backbone, "generator", 0.2, seed=3)
        perturb(backbone, "fake", 0.2, seed=4)


def role_switching_grads(backbone) -> dict[str, torch.Tensor]:
    """Full gradients of both trained roles after two losses whose backward runs with another role active."""
    cond = backbone.encode(PROMPTS)
    x = backbone.noise(seeded_generators([3, 4]))
    generator, fake, teacher = (backbone.role(r) for r in ("generator", "fake", "teacher"))
    for role in ("generator", "fake"):
        for p in backbone.trainable(role).values():
            p.grad = None
    # DMD-like: generator with gradient, then teacher and fake score without, then the backward.
    v = generator(x, SIGMA, cond)
    with torch.no_grad():
        target = teacher(x, SIGMA, cond) - fake(x, SIGMA, cond)
    (v * target).sum().backward()
    # Fake-score-like: fake score with gradient, then a generator pass without, then the backward.
    v = fake(x, SIGMA, cond)
    with torch.no_grad():
        target = generator(x, SIGMA, cond)
    (v - target).square().mean().backward()
    return {f"{role}/{name}": full_tensor(p.grad).clone()
            for role in ("generator", "fake") for name, p in backbone.trainable(role).items()}


def block_calls(backbone) -> dict[str, int]:
    """Counts of transformer-block forward calls, by whether gradients were enabled."""
    counts = {"grad": 0, "no_grad": 0}

    def hook(module, args):
        counts["grad" if torch.is_grad_enabled() else "no_grad"] += 1

    for base in dict.fromkeys(backbone.roles.bases.values()):
        for block in [*base.transformer_blocks, *getattr(base, "single_transformer_blocks", [])]:
            block.register_forward_pre_hook(hook)
    return counts


@pytest.mark.parametrize("stage2", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointed_gradients_equal_plain_ones(family, stage2, folders):
    plain, checkpointed = build(family, folders[family]), build(family, folders[family])
    for backbone in (plain, checkpointed):
        prepare(backbone, stage2)
    checkpointed.enable_activation_checkpointing()
    expected, got = role_switching_grads(plain), role_switching_grads(checkpointed)
    assert expected.keys() == got.keys() and len(got) > 0
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-9, msg=key)
    assert max(g.abs().max().item() for g in expected.values()) > 1e-3  # the comparison has power


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_recompute_only_in_passes_with_gradient(family, folders):
    backbone = build(family, folders[family])
    prepare(backbone)
    base = backbone.roles.bases["generator"]
    blocks = len(base.transformer_blocks) + len(getattr(base, "single_transformer_blocks", []))
    cond = backbone.encode(PROMPTS)
    x = backbone.noise(seeded_generators([3, 4]))
    backbone.enable_activation_checkpointing()
    counts = block_calls(backbone)
    with torch.no_grad():
        backbone.role("teacher")(x, SIGMA, cond)
    assert counts == {"grad": 0, "no_grad": blocks}  # the teacher pays nothing
    backbone.role("generator")(x, SIGMA, cond).square().sum().backward()
    # Forward once per block, then once more per block in the backward pass (the recomputation).
    assert counts == {"grad": 2 * blocks, "no_grad": blocks}


@pytest.mark.parametrize("family", ["sd3", "flux2_klein"])
def test_vae_decoder_checkpointed_too(family, folders):
    """Stage 2's reward back-propagation decodes with gradient: the decoder's blocks are checkpointed as well,
    with the same gradients, and a decode without gradient (the rollout's, for the rewards) pays nothing."""
    grads, calls = [], []
    for checkpointing in (False, True):
        backbone = build(family, folders[family])
        if checkpointing:
            backbone.enable_activation_checkpointing()
        up = backbone.pipe.vae.decoder.up_blocks
        count = {"n": 0}
        for block in up:
            block.register_forward_pre_hook(lambda m, a, count=count: count.__setitem__("n", count["n"] + 1))
        x = backbone.noise(seeded_generators([3, 4])).requires_grad_(True)
        with torch.no_grad():
            backbone.decode(x)
        no_grad = count["n"]
        (grad,) = torch.autograd.grad(backbone.decode(x).square().sum(), x)
        grads.append(grad)
        calls.append((no_grad, count["n"] - no_grad))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-9)
    blocks = len(up)
    assert calls == [(blocks, blocks), (blocks, 2 * blocks)]  # recomputed in the backward pass only
