import math

import pytest
import torch

from rtdmd.rng import Streams, hash32, key_seed


def test_draws_depend_only_on_key_and_index():
    streams = Streams(7)
    full = streams.randn(("noise", 3), range(6), (2, 3))
    part = streams.randn(("noise", 3), [4, 1], (2, 3))
    torch.testing.assert_close(part, full[[4, 1]])
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(Streams(8).randn(("noise", 3), [0], (2, 3))[0], full[0])
    assert not torch.equal(streams.randn(("noise", 4), [0], (2, 3))[0], full[0])


def test_normal_statistics():
    z = Streams(1).randn(("x",), range(2000), (500,), dtype=torch.float64)
    flat = z.flatten()
    assert abs(flat.mean().item()) < 0.005 and abs(flat.var().item() - 1) < 0.005
    # higher moments of a standard normal: skew 0, kurtosis 3
    assert abs((flat**3).mean().item()) < 0.02 and abs((flat**4).mean().item() - 3) < 0.05
    # Kolmogorov-Smirnov distance to the normal CDF
    s = flat[:200_000].sort().values
    cdf = 0.5 * (1 + torch.erf(s / math.sqrt(2)))
    ecdf = torch.arange(1, len(s) + 1, dtype=torch.float64) / len(s)
    assert (cdf - ecdf).abs().max().item() < 0.004
    # no correlation between neighbouring elements, samples, or keys
    assert abs((z[:, :-1] * z[:, 1:]).mean().item()) < 0.01
    assert abs((z[:-1] * z[1:]).mean().item()) < 0.01
    other = Streams(1).randn(("y",), range(2000), (500,), dtype=torch.float64)
    assert abs((z * other).mean().item()) < 0.01


def test_uniform_range_and_mean():
    u = Streams(2).rand(("u",), range(100_000))
    assert u.min().item() > 0 and u.max().item() < 1 and abs(u.mean().item() - 0.5) < 0.005


def test_hash_matches_python_reference():
    def lowbias32(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 12345, 0xFFFFFFFF, 0x80000000]
    assert hash32(torch.tensor(values)).tolist() == [lowbias32(v) for v in values]


def test_key_seed_is_stable():
    assert key_seed(1, "a", 2) == key_seed(1, "a", 2) != key_seed(1, "a", 3)
    assert 0 <= key_seed("x") < 2**63
    assert Streams(1).randint(("stop", 5), 4, 0) == Streams(1).randint(("stop", 5), 4, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype(dtype):
    assert Streams(0).randn(("k",), [0, 1], (3,), dtype=dtype).dtype == dtype


def test_draws_equal_the_out_of_place_formulas():
    """The in-place implementation gives the bits of the plain formulas (so runs stay reproducible)."""
    def lowbias32(x):
        x = x ^ (x >> 16)
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x = x ^ (x >> 15)
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    def randn(seed, key, indices, shape):
        k = key_seed(seed, *key)
        k0, k1 = k & 0xFFFFFFFF, (k >> 32) & 0xFFFFFFFF
        idx = torch.tensor(indices, dtype=torch.int64)
        s0 = lowbias32(lowbias32(idx ^ k0) ^ k1)
        s1 = lowbias32(s0 ^ k0 ^ 0x5BD1E995)
        counter = torch.arange(2 * math.prod(shape), dtype=torch.int64)
        bits = lowbias32(lowbias32(counter[None, :] ^ s0[:, None]) ^ s1[:, None])
        u = ((bits >> 8).float() + 0.5) / float(1 << 24)
        u1, u2 = u[:, 0::2].double(), u[:, 1::2].double()
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).reshape(-1, *shape).float()

    for shape, indices in (((3,), [0, 5]), ((4, 8, 8), [2, 1, 7]), ((16, 32, 32), [0])):
        assert torch.equal(Streams(11).randn(("n", 4), indices, shape), randn(11, ("n", 4), indices, shape))
