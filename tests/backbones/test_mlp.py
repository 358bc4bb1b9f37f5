"""The analytic world's MLP backbone."""

import torch

from rtdmd.train.components import build_components
from tests.tiny import tiny_config


def test_init_students_leaves_no_gradients():
    # A gradient left by the regression onto the teacher would be added to the first stage-1 generator update
    # (found by comparing FSDP, whose fresh shards carry no gradient, with one process).
    backbone = build_components(tiny_config(), torch.device("cpu")).backbone
    before = {k: v.detach().clone() for k, v in backbone.trainable("generator").items()}
    backbone.init_students()
    after = backbone.trainable("generator")
    assert any(not torch.equal(before[k], after[k]) for k in after)  # the fit ran
    for role in ("generator", "fake"):
        assert all(p.grad is None for p in backbone.trainable(role).values()), role
