"""The streaming softmax unit against golden.softmax, with gaps, backpressure and its cycle model."""

import numpy as np
import pytest

from rtl.softmax import SoftmaxUnit, exp_cycles
from sim.nonlinear_images import check_softmax, softmax_words
from sim.pysim_stream import run_streams

def run_rows(u, lanes, mode, *, i_flow=1.0, o_flow=1.0, seed=0):
    words = softmax_words(u, lanes)
    res = run_streams(SoftmaxUnit(u.shape[1], lanes, mode), {"i": words}, {"o": len(words)},
                      name=f"softmax_{mode}_{u.shape[1]}_{lanes}", i_flow=i_flow, o_flow=o_flow,
                      seed=seed)
    check_softmax(res["o"][0], u, lanes, mode)
    return res["o"][1][-1] - res["i"][0] + 1


def scores(rng, rows, row):
    u = rng.integers(-600, 600, (rows, row))
    u[0] = rng.integers(-32768, 32768, row)         # the whole int16 range
    if rows > 2:
        u[1] = 77                                     # all equal
        u[2, ::3] = -32768
        u[2, 1::3] = 32767
    return u


@pytest.mark.parametrize("mode", ["probs", "codes"])
@pytest.mark.parametrize("row, lanes", [(1, 1), (16, 1), (16, 4), (129, 3), (6, 2)])
def test_bit_exact_with_gaps_and_backpressure(mode, row, lanes):
    rng = np.random.default_rng(row * 7 + lanes)
    run_rows(scores(rng, 5, row), lanes, mode, i_flow=0.6, o_flow=0.5, seed=row)


@pytest.mark.parametrize("mode", ["probs", "codes"])
def test_row_of_256(mode):
    run_rows(scores(np.random.default_rng(3), 3, 256), 4, mode, o_flow=0.8)


@pytest.mark.parametrize("mode, row, lanes, rows", [
    ("probs", 16, 1, 6), ("probs", 129, 1, 4), ("probs", 8, 2, 5), ("probs", 1, 1, 4),
    ("codes", 16, 1, 6), ("codes", 129, 3, 4), ("codes", 1, 1, 3),
])
def test_full_rate_cycles_match_model(mode, row, lanes, rows):
    u = np.random.default_rng(row).integers(-500, 500, (rows, row))
    assert run_rows(u, lanes, mode) == exp_cycles(row, lanes, mode, rows)


def test_steady_state_row_period():
    # Rows longer than the divider's latency: pass A (4 cycles of turnaround) bounds probs,
    # pass B (1 cycle) bounds codes; shorter rows wait for the divider.
    assert exp_cycles(160, 4, "probs", 11) - exp_cycles(160, 4, "probs", 10) == 40 + 4
    assert exp_cycles(160, 4, "codes", 11) - exp_cycles(160, 4, "codes", 10) == 40 + 1
    assert exp_cycles(16, 1, "probs", 11) - exp_cycles(16, 1, "probs", 10) == 20


@pytest.mark.parametrize("args, message", [
    ((0, 1, "probs"), r"row must be an integer in \[1, 1024\], not 0"),
    ((10, 4, "probs"), r"row must be a multiple of lanes \(4\), not 10"),
    ((16, 17, "codes"), r"lanes must be an integer in \[1, 16\], not 17"),
    ((16, 1, "exp"), r"mode must be one of \('probs', 'codes'\), not 'exp'"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxUnit(*args)
