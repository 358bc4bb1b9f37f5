import torch

from rtdmd.rng import Streams, key_seed


def test_draws_depend_only_on_key_and_index():
    streams = Streams(7)
    full = streams.randn(("noise", 3), range(6), (2, 3))
    part = streams.randn(("noise", 3), [4, 1], (2, 3))
    torch.testing.assert_close(part, full[[4, 1]])
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(Streams(8).randn(("noise", 3), [0], (2, 3))[0], full[0])
    assert not torch.equal(streams.randn(("noise", 4), [0], (2, 3))[0], full[0])


def test_key_seed_is_stable():
    assert key_seed(1, "a", 2) == key_seed(1, "a", 2) != key_seed(1, "a", 3)
    assert 0 <= key_seed("x") < 2**63
    assert Streams(1).randint(("stop", 5), 4, 0) == Streams(1).randint(("stop", 5), 4, 0)
