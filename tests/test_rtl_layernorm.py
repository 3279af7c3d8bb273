"""The streaming LayerNorm unit against golden.layernorm.int_layernorm."""

import numpy as np
import pytest

from rtl.layernorm import LayerNormUnit, exp_cycles
from sim.nonlinear_images import check_layernorm, layernorm_batch, layernorm_streams
from sim.pysim_stream import run_streams


def run_batches(batches, d, lanes, *, i_flow=1.0, o_flow=1.0, seed=0):
    p_words, i_words, count = layernorm_streams(batches, d, lanes)
    res = run_streams(LayerNormUnit(d, lanes), {"p": p_words, "i": i_words}, {"o": count},
                      name=f"layernorm_{d}_{lanes}", i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_layernorm(res["o"][0], batches, d, lanes)
    return res


@pytest.mark.parametrize("d, lanes", [(6, 1), (6, 3), (192, 4), (384, 2)])
def test_bit_exact_with_gaps_and_backpressure(d, lanes):
    rng = np.random.default_rng(d + lanes)
    batches = [layernorm_batch(rng, 5, d, extremes=True), layernorm_batch(rng, 1, d), layernorm_batch(rng, 4, d)]
    run_batches(batches, d, lanes, i_flow=0.6, o_flow=0.5, seed=d)


@pytest.mark.parametrize("d, lanes, tokens", [(192, 1, 5), (192, 4, 6), (8, 2, 7), (384, 16, 4)])
def test_full_rate_cycles_match_model(d, lanes, tokens):
    rng = np.random.default_rng(tokens)
    b = layernorm_batch(rng, tokens, d)
    res = run_batches([b], d, lanes)
    # Parameters arrive first; count from the first token beat.
    assert res["o"][1][-1] - res["i"][0] + 1 == exp_cycles(d, lanes, tokens)


def test_steady_state_token_period():
    assert exp_cycles(192, 1, 11) - exp_cycles(192, 1, 10) == 192 + 1
    assert exp_cycles(192, 8, 11) - exp_cycles(192, 8, 10) == 27     # the bit-serial square root


@pytest.mark.parametrize("args, message", [
    ((192, 5), r"d must be a multiple of lanes \(5\), not 192"),
    ((1, 1), r"d must be an integer in \[2, 1024\], not 1"),
    ((192, 0), r"lanes must be an integer in \[1, 16\], not 0"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        LayerNormUnit(*args)
