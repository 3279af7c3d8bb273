"""The digit-serial reciprocal and square root against the golden spec, with their latencies."""

import math

import numpy as np
import pytest

from rtl.compute.recip import ISqrt, Reciprocal
from sim.nonlinear_images import check_isqrt, check_reciprocal, edge_operands
from sim.pysim_stream import run_streams


def run_recip(width, dens, digits=1, **flow):
    unit = Reciprocal(width, digits=digits)
    res = run_streams(unit, {"i": dens}, {"o": len(dens)}, name=f"recip_{width}_{digits}", **flow)
    check_reciprocal(res["o"][0], dens, width)
    return unit, res


@pytest.mark.parametrize("width, digits", [(1, 1), (5, 2), (24, 1), (26, 3), (40, 1), (40, 17)])
def test_reciprocal_matches_golden(width, digits):
    rng = np.random.default_rng(width)
    run_recip(width, edge_operands(rng, width, 60), digits, i_flow=0.6, o_flow=0.5, seed=width)


@pytest.mark.parametrize("width, digits", [(10, 1), (8, 2)])
def test_reciprocal_exhaustive_small_width_and_latency(width, digits):
    unit, res = run_recip(width, list(range(1, 1 << width)), digits)
    # Back to back (o always ready): one division per latency cycles.
    assert unit.latency == -(-17 // digits) + 1
    assert res["o"][1][0] - res["i"][0] == unit.latency
    assert np.all(np.diff(res["o"][1]) == unit.latency)
    assert np.all(np.diff(res["i"]) == unit.latency)


def run_isqrt(width, values, digits=1, **flow):
    unit = ISqrt(width, digits=digits)
    res = run_streams(unit, {"i": values}, {"o": len(values)}, name=f"isqrt_{width}_{digits}",
                      **flow)
    check_isqrt(res["o"][0], values)
    return unit, res


@pytest.mark.parametrize("width, digits", [(2, 1), (16, 1), (52, 1), (52, 2), (52, 3), (64, 5)])
def test_isqrt_matches_math_isqrt(width, digits):
    rng = np.random.default_rng(width + digits)
    values = edge_operands(rng, width, 60, lo=0) + [math.isqrt((1 << width) - 1) ** 2,
                                                 math.isqrt((1 << width) - 1) ** 2 - 1]
    run_isqrt(width, values, digits, i_flow=0.7, o_flow=0.6, seed=width)


@pytest.mark.parametrize("width, digits", [(10, 1), (12, 4)])
def test_isqrt_exhaustive_and_latency(width, digits):
    unit, res = run_isqrt(width, list(range(1 << width)), digits)
    assert unit.latency == -(-width // 2 // digits) + 1
    assert res["o"][1][0] - res["i"][0] == unit.latency
    assert np.all(np.diff(res["o"][1]) == unit.latency)


@pytest.mark.parametrize("make, message", [
    (lambda: Reciprocal(0), r"width must be an integer in \[1, 48\], not 0"),
    (lambda: Reciprocal(26, digits=18), r"digits must be an integer in \[1, 17\], not 18"),
    (lambda: ISqrt(7), r"width must be even, not 7"),
    (lambda: ISqrt(66), r"width must be an integer in \[2, 64\], not 66"),
    (lambda: ISqrt(8, digits=5), r"digits must be an integer in \[1, 4\], not 5"),
])
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
