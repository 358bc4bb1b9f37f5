"""Roles without copies: LoRA adapters on one frozen base; merged weights give the same function; training an
adapter never changes the teacher; stage 2 freezes stage 1 and starts fresh adapters at B = 0; role switches set
each adapter layer directly (``lora.set_active``), exactly as peft's own ``set_adapter`` / ``disable_adapters``
leave them."""

import pytest
import torch

from rtdmd.app.export import merged_transformer
from rtdmd.app.sampling import seeded_generators
from tests.backbones.conftest import PROMPTS, build, perturb

SIGMA = torch.tensor([0.6, 0.6])


def velocities(backbone, roles=("teacher", "generator", "fake"), guidance=1.0):
    """Velocities without guidance (so that roles compare like with like), and the teacher's guided one."""
    cond = backbone.encode(PROMPTS)
    x = backbone.noise(seeded_generators([1, 2]))
    with torch.no_grad():
        out = {r: backbone.role(r, guidance)(x, SIGMA, cond) for r in roles}
        out["guided_teacher"] = backbone.role("teacher")(x, SIGMA, cond)
    return out


@pytest.mark.parametrize("family", ["sd3", "flux1_dev", "flux2_klein"])
def test_adapter_output_equals_merged_output(family, folders):
    backbone = build(family, folders[family])
    perturb(backbone, "generator", 0.3, seed=1)
    backbone.start_stage2()
    perturb(backbone, "generator", 0.2, seed=2)  # generator = frozen stage-1 adapter + stage-2 adapter
    v = velocities(backbone, ("teacher", "generator"))
    assert (v["generator"] - v["teacher"]).abs().max() > 1e-2  # the adapters do something
    merged = merged_transformer(backbone)
    assert not any("lora" in k for k in merged.state_dict())
    # Run the merged transformer in place of the base: swap it into the role's forward.
    x = backbone.noise(seeded_generators([1, 2]))
    with torch.no_grad():
        v_merged = backbone._forward(merged, x, *_inputs(backbone, family, x))
    torch.testing.assert_close(v_merged, v["generator"], rtol=1e-5, atol=1e-5)


def _inputs(backbone, family, x):
    cond = backbone.encode(PROMPTS)
    if family == "sd3":
        return SIGMA * 1000, cond
    if family == "flux1_dev":
        return SIGMA, cond, torch.ones(2)
    return SIGMA, cond


def test_teacher_is_unchanged_by_adapter_training(folders):
    backbone = build("sd3", folders["sd3"])
    before = velocities(backbone)
    torch.testing.assert_close(before["generator"], before["teacher"], rtol=0, atol=0)  # B = 0 at the start
    cond = backbone.encode(PROMPTS)
    x = backbone.noise(seeded_generators([1, 2]))
    for role in ("generator", "fake"):
        params = list(backbone.trainable(role).values())
        optimizer = torch.optim.Adam(params, lr=1e-2)
        for _ in range(3):
            loss = backbone.role(role)(x, SIGMA, cond).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = velocities(backbone)
    torch.testing.assert_close(after["teacher"], before["teacher"], rtol=0, atol=0)
    torch.testing.assert_close(after["guided_teacher"], before["guided_teacher"], rtol=0, atol=0)
    assert (after["generator"] - before["generator"]).abs().max() > 1e-3
    assert (after["fake"] - after["generator"]).abs().max() > 1e-3


def test_only_the_current_adapters_train(folders):
    backbone = build("flux2_klein", folders["flux2_klein"], dtype=torch.bfloat16)
    gen = backbone.trainable("generator")
    assert gen and all(p.dtype == torch.float32 and p.requires_grad for p in gen.values())
    assert set(gen) == set(backbone.trainable("fake"))  # same keys, distinct tensors
    assert all(gen[k] is not backbone.trainable("fake")[k] for k in gen)
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in gen)
    base = [p for n, p in backbone.pipe.transformer.named_parameters() if "lora" not in n]
    assert not any(p.requires_grad for p in base)
    # The single-stream fused projections are adapted too (spec 4.7).
    assert any("single_transformer_blocks.0.attn.to_qkv_mlp_proj" in k for k in gen)
    assert any("single_transformer_blocks.0.attn.to_out.lora" in k for k in gen)
    with pytest.raises(ValueError):
        backbone.trainable("teacher")
    # A bf16 base runs with fp32 adapters: fp32 in, fp32 out, fp32 gradients on every adapter tensor; decode is
    # differentiable (reward back-propagation reaches x).
    x = backbone.noise(seeded_generators([1])).requires_grad_(True)
    v = backbone.role("generator")(x, torch.tensor([0.5]), backbone.encode(PROMPTS[:1]))
    assert v.dtype == torch.float32
    (v.square().mean() + backbone.decode(x).mean()).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in gen.values())
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_stage2_freezes_stage1_and_starts_fresh(folders):
    backbone = build("flux1_dev", folders["flux1_dev"])
    perturb(backbone, "generator", 0.3, seed=1)
    perturb(backbone, "fake", 0.3, seed=2)
    stage1 = velocities(backbone)
    old = {k: p for k, p in backbone.trainable("generator").items()}
    backbone.start_stage2()
    new = backbone.trainable("generator")
    assert set(new) == set(old) and all(new[k] is not old[k] for k in new)
    assert all(not p.requires_grad for p in old.values())
    assert all(p.abs().max() == 0 for k, p in new.items() if "lora_B" in k)
    stage2 = velocities(backbone)
    for role in stage1:  # fresh adapters leave every function unchanged
        torch.testing.assert_close(stage2[role], stage1[role], rtol=1e-6, atol=1e-6)
    # Training now moves only the new tensors: a backward reaches no stage-1 tensor.
    cond = backbone.encode(PROMPTS)
    x = backbone.noise(seeded_generators([1, 2]))
    perturb(backbone, "generator", 0.1, seed=3)
    backbone.role("generator")(x, SIGMA, cond).square().mean().backward()
    assert all(p.grad is None for p in old.values())
    assert all(p.grad is not None for p in new.values())


def test_klein_generator_on_its_own_base(folders):
    backbone = build("flux2_klein", folders["flux2_klein"],
                     generator_path=str(folders["flux2_klein_distilled"]))
    v = velocities(backbone)
    # Teacher and fake (B = 0) are klein-base; the generator (B = 0) is the other base.
    torch.testing.assert_close(v["fake"], v["teacher"], rtol=0, atol=0)
    assert (v["generator"] - v["teacher"]).abs().max() > 1e-2
    assert backbone.roles.bases["generator"] is not backbone.pipe.transformer
    assert backbone.generator_folder == folders["flux2_klein_distilled"]


@pytest.mark.parametrize("family", ["sd3", "flux2_klein"])
def test_folded_generator_is_the_merged_function_without_adapters(family, folders):
    """``fold`` (sampling-only processes): the generator's velocity as with live adapters, peft's wrappers gone,
    and the teacher on the same base refused instead of silently running the generator."""
    backbone = build(family, folders[family])
    perturb(backbone, "generator", 0.3, seed=1)
    backbone.start_stage2()
    perturb(backbone, "generator", 0.2, seed=2)
    live = velocities(backbone, ("teacher", "generator"))
    backbone.fold("generator")
    model = backbone.roles.bases["generator"]
    assert not any("lora" in name for name, _ in model.named_parameters())
    cond, x = backbone.encode(PROMPTS), backbone.noise(seeded_generators([1, 2]))
    with torch.no_grad():
        folded = backbone.role("generator", 1.0)(x, SIGMA, cond)
    assert (live["generator"] - live["teacher"]).abs().max() > 1e-2  # the adapters matter
    torch.testing.assert_close(folded, live["generator"], rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="folded"):
        backbone.role("teacher", 1.0)(x, SIGMA, cond)


def test_switching_roles_matches_peft_api(folders):
    backbone = build("sd3", folders["sd3"])
    perturb(backbone, "generator", 0.3, seed=1)
    perturb(backbone, "fake", 0.3, seed=2)
    backbone.start_stage2()  # roles now run two adapters each: the frozen stage-1 one and a new one
    perturb(backbone, "generator", 0.2, seed=3)
    perturb(backbone, "fake", 0.2, seed=4)
    cond = backbone.encode(PROMPTS)
    x = torch.randn(2, *backbone.sample_shape, generator=torch.Generator().manual_seed(0))
    model = backbone.pipe.transformer
    roles = backbone.roles
    with torch.no_grad():
        for role in ("generator", "fake", "teacher", "generator", "teacher", "fake"):
            ours = backbone.role(role, 1.0)(x, SIGMA, cond)
            layers = roles._layers[id(model)]
            assert all(layer.disable_adapters == (role == "teacher") for layer in layers)
            if role != "teacher":
                assert all(layer.active_adapters == roles.adapters(role) for layer in layers)
            # The same role through peft's public API, then the transformer called directly.
            if role == "teacher":
                model.disable_adapters()
            else:
                model.enable_adapters()
                model.set_adapter(roles.adapters(role))
            peft = backbone._forward(model, x, SIGMA * 1000, cond)
            roles._state.clear()  # peft changed the layers behind our back: force the next switch
            assert torch.equal(ours, peft), role
    with torch.no_grad():  # the roles differ, so the comparisons above could fail
        assert not torch.equal(backbone.role("generator", 1.0)(x, SIGMA, cond),
                               backbone.role("fake", 1.0)(x, SIGMA, cond))
    roles._fix_requires_grad()  # peft's set_adapter above toggled requires_grad; our switches must not
    for role in ("teacher", "fake", "generator"):
        roles.activate(role)
        assert all(p.requires_grad for r in ("generator", "fake") for p in backbone.trainable(r).values())
        frozen = [p for r in ("generator", "fake") for name in roles.frozen[r] for p in roles._params[name].values()]
        assert frozen and not any(p.requires_grad for p in frozen)
