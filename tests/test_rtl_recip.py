"""The bit-serial reciprocal and square root against the golden spec, with their latencies."""

import math

import numpy as np
import pytest

from golden.softmax import normalized_reciprocal
from rtl.recip import ISqrt, Reciprocal, recip_layout
from sim.packing import unpack
from sim.pysim_stream import run_streams


def _operands(rng, width, count):
    edges = [1, 2, 3, (1 << width) - 1, 1 << (width - 1), (1 << (width - 1)) - 1]
    return [v for v in edges if 1 <= v < 1 << width] + rng.integers(1, 1 << width, count).tolist()


@pytest.mark.parametrize("width", [1, 5, 24, 40])
def test_reciprocal_matches_golden(width):
    rng = np.random.default_rng(width)
    dens = _operands(rng, width, 60)
    res = run_streams(Reciprocal(width), {"i": dens}, {"o": len(dens)}, name=f"recip_{width}",
                      i_flow=0.6, o_flow=0.5, seed=width)
    rec, k = normalized_reciprocal(np.array(dens))
    got = [unpack(recip_layout(width), w) for w in res["o"][0]]
    assert [g["rec"] for g in got] == rec.tolist()
    assert [g["k"] for g in got] == k.tolist()


def test_reciprocal_exhaustive_small_width():
    dens = list(range(1, 1 << 10))
    res = run_streams(Reciprocal(10), {"i": dens}, {"o": len(dens)}, name="recip_10")
    rec, k = normalized_reciprocal(np.array(dens))
    got = [unpack(recip_layout(10), w) for w in res["o"][0]]
    assert [(g["rec"], g["k"]) for g in got] == list(zip(rec.tolist(), k.tolist()))
    # Back to back: one division per LATENCY + 1 cycles.
    assert res["o"][1][1] - res["o"][1][0] == Reciprocal.LATENCY + 1
    assert res["o"][1][0] - res["i"][0] == Reciprocal.LATENCY


@pytest.mark.parametrize("width", [2, 16, 52])
def test_isqrt_matches_math_isqrt(width):
    rng = np.random.default_rng(width)
    values = [0, 1, 3, 4, (1 << width) - 1] + rng.integers(0, 1 << width, 60, dtype=np.uint64).tolist()
    values = [v for v in values if v < 1 << width]
    res = run_streams(ISqrt(width), {"i": values}, {"o": len(values)}, name=f"isqrt_{width}",
                      i_flow=0.7, o_flow=0.6, seed=width)
    assert res["o"][0] == [math.isqrt(int(v)) for v in values]


def test_isqrt_exhaustive_and_latency():
    values = list(range(1 << 12))
    unit = ISqrt(12)
    res = run_streams(unit, {"i": values}, {"o": len(values)}, name="isqrt_12")
    assert res["o"][0] == [math.isqrt(v) for v in values]
    assert res["o"][1][0] - res["i"][0] == unit.latency


@pytest.mark.parametrize("make, message", [
    (lambda: Reciprocal(0), r"width must be an integer in \[1, 48\], not 0"),
    (lambda: ISqrt(7), r"width must be even, not 7"),
    (lambda: ISqrt(66), r"width must be an integer in \[2, 64\], not 66"),
])
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
