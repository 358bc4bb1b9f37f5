"""The trained roles' AdamW: ``build_optimizer`` uses torch's multi-tensor (foreach) implementation, which must
give the same bits as the per-tensor loop (so that the choice never changes a run)."""

import torch

from rtdmd.config import OptimConfig
from rtdmd.train.optim import build_optimizer


def test_foreach_adamw_equals_the_per_tensor_loop():
    cfg = OptimConfig(lr=1e-2, weight_decay=1e-4)
    shapes = [(4, 16), (16, 4), (3,), (8, 8)]

    def params():
        g = torch.Generator().manual_seed(1)
        return {str(i): torch.nn.Parameter(torch.randn(s, generator=g)) for i, s in enumerate(shapes)}

    ours, loop = params(), params()
    opt = build_optimizer(ours, cfg)
    reference = torch.optim.AdamW(list(loop.values()), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                  weight_decay=cfg.weight_decay, foreach=False)
    assert opt.defaults["foreach"]
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        for a, b in zip(ours.values(), loop.values()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        opt.step()
        reference.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.values(), loop.values()))
    assert not torch.equal(ours["0"], params()["0"])  # the steps moved the weights
