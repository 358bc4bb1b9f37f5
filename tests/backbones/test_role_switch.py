"""Role switches set each adapter layer directly (``lora.set_active``) instead of going through peft's model-wide
API: the layers must end up exactly as peft's own ``set_adapter`` / ``disable_adapters`` leave them, so that every
role computes the same function, and the trained / frozen split of ``requires_grad`` must not move."""

import torch

from tests.backbones.conftest import PROMPTS, build, perturb

SIGMA = torch.tensor([0.6, 0.6])


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
