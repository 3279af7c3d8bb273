"""The streaming LayerNorm unit against golden.layernorm.int_layernorm."""

import numpy as np
import pytest

from golden.layernorm import affine_params, int_layernorm
from rtl.layernorm import LayerNormUnit, exp_cycles, in_layout, out_layout, param_layout
from sim.packing import pack, unpack
from sim.pysim_stream import run_streams


def batch(rng, tokens, d, *, extremes=False):
    """Tokens at a realistic residual scale, the LayerNorm parameters, and the golden output."""
    x = np.clip(rng.normal(0, 3000, (tokens, d)) + rng.normal(0, 2000, (tokens, 1)),
                -32768, 32767).astype(np.int64)
    if extremes and tokens >= 3:
        x[0] = 1234                                           # constant: only eps keeps it finite
        x[1] = np.where(np.arange(d) % 2, 32767, -32768)      # the largest variance
        x[2] = 0
        x[2, 0] = -32768                                      # one-hot: z saturates
    gamma, beta = 1 + rng.normal(0, 0.3, d), rng.normal(0, 0.2, d)
    gain, bias, shift = affine_params(gamma, beta, 4.5 / 255, int(rng.integers(-20, 20)))
    eps = int(rng.integers(1, 5000))
    return {"x": x, "gain": gain, "bias": bias, "shift": shift, "eps": eps,
            "y": int_layernorm(x, gain, bias, shift, eps)}


def run_batches(batches, d, lanes, *, i_flow=1.0, o_flow=1.0, seed=0):
    beats = d // lanes
    p_words, i_words, count = [], [], 0
    for b in batches:
        for j in range(beats):
            sl = slice(j * lanes, (j + 1) * lanes)
            p_words.append(pack(param_layout(lanes), {"gain": b["gain"][sl], "bias": b["bias"][sl],
                                                      "shift": b["shift"], "eps": b["eps"]}))
        tokens = len(b["x"])
        for t in range(tokens):
            for j in range(beats):
                i_words.append(pack(in_layout(lanes), {
                    "data": b["x"][t, j * lanes:(j + 1) * lanes],
                    "last": int(t == tokens - 1 and j == beats - 1)}))
        count += tokens * beats
    res = run_streams(LayerNormUnit(d, lanes), {"p": p_words, "i": i_words}, {"o": count},
                      name=f"layernorm_{d}_{lanes}", i_flow=i_flow, o_flow=o_flow, seed=seed)
    words, cycles = res["o"]
    out = [unpack(out_layout(lanes), w) for w in words]
    pos = 0
    for n, b in enumerate(batches):
        tokens = len(b["x"])
        got = np.concatenate([o["data"] for o in out[pos:pos + tokens * beats]]).reshape(tokens, d)
        lasts = [o["last"] for o in out[pos:pos + tokens * beats]]
        assert np.array_equal(got, b["y"]), f"batch {n}"
        assert lasts == [0] * (tokens * beats - 1) + [1]
        pos += tokens * beats
    return res


@pytest.mark.parametrize("d, lanes", [(6, 1), (6, 3), (192, 4), (384, 2)])
def test_bit_exact_with_gaps_and_backpressure(d, lanes):
    rng = np.random.default_rng(d + lanes)
    batches = [batch(rng, 5, d, extremes=True), batch(rng, 1, d), batch(rng, 4, d)]
    run_batches(batches, d, lanes, i_flow=0.6, o_flow=0.5, seed=d)


@pytest.mark.parametrize("d, lanes, tokens", [(192, 1, 5), (192, 4, 6), (8, 2, 7), (384, 16, 4)])
def test_full_rate_cycles_match_model(d, lanes, tokens):
    rng = np.random.default_rng(tokens)
    b = batch(rng, tokens, d)
    res = run_batches([b], d, lanes)
    # Parameters arrive first; count from the first token beat.
    assert res["o"][1][-1] - res["i"][0] + 1 == exp_cycles(d, lanes, tokens)


def test_steady_state_token_period():
    assert exp_cycles(192, 1, 11) - exp_cycles(192, 1, 10) == 192 + 1
    assert exp_cycles(192, 8, 11) - exp_cycles(192, 8, 10) == 28     # the bit-serial square root


@pytest.mark.parametrize("args, message", [
    ((192, 5), r"d must be a multiple of lanes \(5\), not 192"),
    ((1, 1), r"d must be an integer in \[2, 1024\], not 1"),
    ((192, 0), r"lanes must be an integer in \[1, 16\], not 0"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        LayerNormUnit(*args)
