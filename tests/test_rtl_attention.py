"""The streaming attention kernel against the golden log2-code attention, with its cycle model."""

import numpy as np
import pytest

from rtl.attention import AttentionConfig, AttentionKernel, exp_cycles
from sim.attention_images import (FixedScale, attention_streams, check_attention,
                                  golden_attention, random_heads)
from sim.pysim_stream import run_streams


def run(config, heads, n, *, seed=0, i_flow=1.0, o_flow=1.0):
    rng = np.random.default_rng(seed)
    q, k, v, mult, shift = random_heads(rng, heads, n, config.head_dim)
    if n > 2:
        k[:, 1] = 127                          # a key that dominates some rows: codes of 15
        q[:, 0] = -128
    kb, vb, qb, count = attention_streams(config, q, k, v)
    dut = FixedScale(AttentionKernel(config), mult, shift)
    res = run_streams(dut, {"k": kb, "v": vb, "q": qb}, {"o": count}, name="attention",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_attention(config, res["o"][0], golden_attention(q, k, v, mult, shift))
    return res["o"][1][-1] - res["k"][0] + 1


@pytest.mark.parametrize("r, dp, h, head_dim, heads, n", [
    (2, 4, 1, 8, 2, 5),          # N not a multiple of R, two head groups
    (4, 8, 2, 8, 2, 4),          # N = R, S = 1 (every slice first and last)
    (3, 2, 1, 4, 1, 1),          # one token
    (2, 8, 3, 32, 3, 7),         # head dim 32, three heads side by side
])
def test_bit_exact_with_gaps_and_backpressure(r, dp, h, head_dim, heads, n):
    config = AttentionConfig(r=r, dp=dp, h=h, head_dim=head_dim, max_tokens=8)
    run(config, heads, n, seed=r + dp, i_flow=0.6, o_flow=0.5)


@pytest.mark.parametrize("r, dp, h, head_dim, heads, n", [
    (2, 4, 1, 8, 2, 5), (4, 8, 1, 64, 1, 9), (3, 4, 3, 8, 3, 7),
])
def test_full_rate_cycles_match_model(r, dp, h, head_dim, heads, n):
    config = AttentionConfig(r=r, dp=dp, h=h, head_dim=head_dim, max_tokens=16)
    assert run(config, heads, n) == exp_cycles(config, n, groups=heads // h)


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), r"r must be an integer in \[1, 32\], not 0"),
    (dict(dp=5), r"dp must divide head_dim \(64\), not 5"),
    (dict(h=17), r"h must be an integer in \[1, 16\], not 17"),
    (dict(max_tokens=1025), r"max_tokens must be an integer in \[1, 1024\], not 1025"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionConfig(**{"r": 4, "dp": 8, "h": 1} | kwargs)


def test_kernel_takes_a_config():
    with pytest.raises(TypeError, match="config must be an AttentionConfig"):
        AttentionKernel({"r": 4})


def test_577_tokens():
    # The largest N the issue asks for (ViT-B at 384 x 384), with small heads to keep it quick.
    config = AttentionConfig(r=32, dp=2, h=1, head_dim=2, max_tokens=577)
    assert run(config, 1, 577, seed=5) == exp_cycles(config, 577)
