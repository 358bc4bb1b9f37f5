"""``run.compile``: each transformer block's forward through ``torch.compile`` gives the eager velocities and
gradients, with the roles switching between compiled calls and under activation checkpointing.

The backend here is ``aot_eager`` (dynamo traces each block, AOTAutograd splits forward and backward, the graph
runs eagerly): every step of ``torch.compile`` except inductor's code generation. Inductor works on this CPU
(gcc), but compiles each block variant in tens of seconds (a 2-line function forward and backward: 19 s), and
even tracing costs seconds per variant (role x gradient mode x block), so the test keeps to a few variants.
Tolerance: aot_eager runs the same aten kernels in the same order, so agreement is to round-off (1e-6 relative).
"""

import torch

from rtdmd.app.sampling import seeded_generators
from tests.backbones.conftest import PROMPTS, build
from tests.backbones.test_checkpointing import SIGMA, prepare


def run(backbone) -> dict[str, torch.Tensor]:
    """The teacher's velocity without gradient, then the generator's loss and its gradients, whose backward
    recomputes (checkpointing) after the teacher's pass switched the adapters off."""
    cond = backbone.encode(PROMPTS)
    x = backbone.noise(seeded_generators([5, 6]))
    v = backbone.role("generator")(x, SIGMA, cond)
    with torch.no_grad():
        teacher = backbone.role("teacher")(x, SIGMA, cond)
    params = backbone.trainable("generator")
    grads = torch.autograd.grad((v * teacher).sum(), list(params.values()))
    return {"generator": v.detach(), "teacher": teacher, **dict(zip(params, grads))}


def test_compiled_blocks_equal_eager(folders):
    import torch._dynamo

    torch._dynamo.reset()
    eager, compiled = build("sd3", folders["sd3"]), build("sd3", folders["sd3"])
    for backbone in (eager, compiled):
        prepare(backbone)
        backbone.enable_activation_checkpointing()
    compiled.compile_blocks("aot_eager")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    expected, got = run(eager), run(compiled)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # the blocks really were compiled
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-8, msg=key)
    assert (expected["generator"] - expected["teacher"]).abs().max() > 1e-2  # the roles differ
