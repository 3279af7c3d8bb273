"""The streaming softmax unit against golden.softmax: gaps, backpressure, its cycle model."""

import numpy as np
import pytest

from golden.softmax import EXP2_TABLE, LOG2_FRAC
from rtl.compute.recip import recip_latency
from rtl.compute.softmax import (OUT_LATENCY, RECIP_DIGITS, SUM_LATENCY, SoftmaxUnit,
                                 exp_cycles)
from sim.nonlinear_images import check_softmax, softmax_words
from sim.pysim_stream import run_streams


def run_rows(rows, row_max, lanes, mode, *, i_flow=1.0, o_flow=1.0, seed=0):
    """Run ``rows`` through a unit; check against golden; return cycles first in .. last out."""
    words = softmax_words(rows, lanes)
    res = run_streams(SoftmaxUnit(row_max, lanes, mode), {"i": words}, {"o": len(words)},
                      name=f"softmax_{mode}_{row_max}_{lanes}", i_flow=i_flow, o_flow=o_flow,
                      seed=seed)
    check_softmax(res["o"][0], rows, lanes, mode)
    return res["o"][1][-1] - res["i"][0] + 1


def scores(rng, lengths):
    """Rows of the given lengths: moderate spread, the whole int16 range, all equal, extremes."""
    rows = [rng.integers(-600, 600, n) for n in lengths]
    rows[0] = rng.integers(-32768, 32768, lengths[0])
    if len(rows) > 3:
        rows[1][:] = 77
        rows[2][::3] = -32768
        rows[2][1::3] = 32767
        rows[3][:] = -32768
    return rows


@pytest.mark.parametrize("mode", ["probs", "codes"])
@pytest.mark.parametrize("lanes", [1, 3, 4])
def test_row_lengths_with_gaps_and_backpressure(mode, lanes):
    # 1, lanes - 1, lanes, lanes + 1, 16, 129 and the maximum, mixed in one stream.
    lengths = sorted({1, max(1, lanes - 1), lanes, lanes + 1, 16, 129, 140}, reverse=True)
    lengths += [1, 129, 2, lanes + 1]
    rng = np.random.default_rng(lanes * 7 + len(mode))
    run_rows(scores(rng, lengths), 140, lanes, mode, i_flow=0.6, o_flow=0.5, seed=lanes)


@pytest.mark.parametrize("mode", ["probs", "codes"])
def test_rows_of_256(mode):
    rows = scores(np.random.default_rng(3), [256] * 4)
    run_rows(rows, 256, 2, mode, i_flow=0.8, o_flow=0.7, seed=3)


@pytest.mark.parametrize("mode", ["probs", "codes"])
def test_every_exponent_offset(mode):
    # max - u covers 0..1100: every table entry at every shift up to 17 (e = 0 beyond 16 * 64).
    d = np.arange(1101)
    rows = [np.concatenate([[0], -d[j:j + 128]]) for j in range(0, len(d), 128)]
    rows += [np.concatenate([[32767], 32767 - d[j:j + 128]]) for j in range(0, len(d), 128)]
    assert len(EXP2_TABLE) == 1 << LOG2_FRAC and 1100 >> LOG2_FRAC > 16
    run_rows(rows, 129, 4, mode, o_flow=0.8, seed=5)


def test_over_long_row_is_cut_at_row_max():
    # No `last` within row_max (rounded up to beats): the unit ends the row there.
    rng = np.random.default_rng(9)
    long_row = rng.integers(-300, 300, 12)
    words = softmax_words([long_row], 4)
    res = run_streams(SoftmaxUnit(6, 4, "probs"), {"i": words}, {"o": 3}, name="softmax_cut")
    check_softmax(res["o"][0], [long_row[:8], long_row[8:]], 4, "probs")


@pytest.mark.parametrize("mode, lanes, lengths", [
    ("probs", 1, [16] * 6),
    ("probs", 1, [129] * 4),
    ("probs", 2, [8, 8, 1, 30, 30, 30, 2, 40]),
    ("probs", 4, [129, 1, 1, 1, 64, 129, 129]),
    ("probs", 1, [1] * 5),
    ("codes", 1, [16] * 6),
    ("codes", 3, [129] * 4),
    ("codes", 4, [1, 5, 129, 4, 4, 1, 1, 60]),
])
def test_full_rate_cycles_match_model(mode, lanes, lengths):
    rng = np.random.default_rng(len(lengths))
    rows = [rng.integers(-500, 500, n) for n in lengths]
    assert run_rows(rows, max(lengths), lanes, mode) == exp_cycles(lengths, lanes, mode)


def test_steady_state_row_period():
    # One beat per cycle once rows cover the divider; shorter rows go at its pace.
    for mode in ("probs", "codes"):
        for beats in (16, 33, 129):
            period = exp_cycles([beats] * 11, 1, mode) - exp_cycles([beats] * 10, 1, mode)
            assert period == beats
    assert exp_cycles([129] * 11, 4, "codes") - exp_cycles([129] * 10, 4, "codes") == 33
    for beats in range(1, 20):                        # 4 rows (the ring) per period
        period = exp_cycles([beats] * 14, 1, "probs") - exp_cycles([beats] * 10, 1, "probs")
        assert period == max(40, 3 * beats + 14, 4 * beats)
    # One row of B = 40 on an idle unit: it enters in B cycles; pass B (codes) or pass A
    # (probs) starts the cycle after and reads it in B. Probs: the sum reaches the divider
    # SUM_LATENCY cycles after pass A's last read, the reciprocal is ready its latency
    # later, pass B reads the row from the cycle after. The last output leaves
    # OUT_LATENCY cycles after its read.
    assert exp_cycles([40], 1, "codes") == 40 + 1 + 40 + OUT_LATENCY["codes"]
    recip = recip_latency(RECIP_DIGITS)
    assert exp_cycles([40], 1, "probs") == (40 + 1 + 40 - 1 + SUM_LATENCY + recip + 1 + 40
                                            + OUT_LATENCY["probs"])


@pytest.mark.parametrize("args, message", [
    ((0, 1, "probs"), r"row_max must be an integer in \[1, 4096\], not 0"),
    ((5000, 1, "codes"), r"row_max must be an integer in \[1, 4096\], not 5000"),
    ((16, 17, "codes"), r"lanes must be an integer in \[1, 16\], not 17"),
    ((16, 1, "exp"), r"mode must be one of \('probs', 'codes'\), not 'exp'"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxUnit(*args)
