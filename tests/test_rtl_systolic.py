"""Unit tests of the systolic MAC array in Amaranth's simulator, against golden.gemm."""

import numpy as np
import pytest

from golden.gemm import int8_matmul
from rtl.compute.systolic import Mesh, ProcessingElement, SystolicArray, exp_cycles
from sim.gemm_tiles import gemm_result, gemm_words
from sim.pysim_stream import run_stream_test


def rtl_matmul(a, b, rows, cols, k_lanes=1, operand_width=8, i_flow=1.0, o_flow=1.0, seed=0,
               row_broadcast=False, dsp_packing=False):
    dut = SystolicArray(rows, cols, k_lanes=k_lanes, operand_width=operand_width,
                        row_broadcast=row_broadcast, dsp_packing=dsp_packing)
    words, out_count = gemm_words(a, b, rows, cols, k_lanes, operand_width)
    res = run_stream_test(dut, words, out_count, name=f"systolic_{rows}x{cols}x{k_lanes}",
                          i_flow=i_flow, o_flow=o_flow, seed=seed)
    return gemm_result(res.words, a.shape[0], b.shape[1], rows, cols), res.cycles


@pytest.mark.parametrize("rows, cols, k_lanes, width, row_broadcast, dsp_packing", [
    (1, 1, 1, 8, False, False), (4, 4, 1, 8, False, False), (3, 5, 2, 8, False, False),
    (2, 8, 4, 4, False, False), (8, 2, 1, 8, False, False), (3, 16, 2, 8, True, False),
    (4, 4, 1, 8, True, False), (1, 3, 1, 8, True, False),
    (3, 5, 2, 8, False, True), (3, 16, 2, 8, True, True), (2, 3, 3, 4, True, True),
    (1, 1, 1, 8, True, True),
])
@pytest.mark.parametrize("i_flow, o_flow", [(1.0, 1.0), (0.6, 0.4)])
def test_random_gemm_bit_exact(rows, cols, k_lanes, width, row_broadcast, dsp_packing,
                               i_flow, o_flow):
    rng = np.random.default_rng(rows * 100 + cols * 10 + k_lanes)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    m, k, n = 2 * rows + 1, 3 * k_lanes + 2, cols + 3
    a = rng.integers(lo, hi + 1, (m, k))
    b = rng.integers(lo, hi + 1, (k, n))
    out, _ = rtl_matmul(a, b, rows, cols, k_lanes, width, i_flow, o_flow, seed=7,
                        row_broadcast=row_broadcast, dsp_packing=dsp_packing)
    assert np.array_equal(out, int8_matmul(a, b))


@pytest.mark.parametrize("x, y", [(-128, -128), (-128, 127), (127, -128), (127, 127), (0, -128)])
@pytest.mark.parametrize("k", [1, 5, 300])
@pytest.mark.parametrize("dsp_packing", [False, True])
def test_extremes_and_k1(x, y, k, dsp_packing):
    a, b = np.full((3, k), x), np.full((k, 2), y)
    b[:, 1] = -1 - y if y else 127     # the packed pair's two columns differ in sign
    out, _ = rtl_matmul(a, b, 2, 2, i_flow=0.7, o_flow=0.7, seed=k, dsp_packing=dsp_packing)
    assert np.array_equal(out, int8_matmul(a, b))


def test_mixed_signs_and_zeros():
    a = np.array([[-128, 127, 0, -1], [0, 0, 0, 0], [1, -1, 1, -1]])
    b = np.array([[127, -128], [-128, 127], [5, 0], [-128, -128]])
    out, _ = rtl_matmul(a, b, 2, 2, o_flow=0.5)
    assert np.array_equal(out, int8_matmul(a, b))


@pytest.mark.parametrize("rows, cols, k_lanes, m, k, n, row_broadcast, dsp_packing", [
    (4, 4, 1, 8, 16, 8, False, False), (4, 4, 1, 8, 2, 8, False, False),
    (2, 2, 1, 3, 1, 3, False, False), (3, 5, 2, 7, 40, 11, False, False),
    (8, 8, 1, 16, 24, 16, False, False), (1, 8, 1, 4, 3, 9, False, False),
    (3, 16, 4, 7, 48, 40, True, False), (3, 16, 4, 7, 4, 40, True, False),
    (4, 2, 1, 9, 2, 3, True, False), (2, 8, 1, 4, 3, 16, False, True),
    (3, 16, 4, 7, 48, 40, True, True),
])
def test_full_rate_cycles_match_model(rows, cols, k_lanes, m, k, n, row_broadcast, dsp_packing):
    rng = np.random.default_rng(0)
    a, b = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
    out, cycles = rtl_matmul(a, b, rows, cols, k_lanes, row_broadcast=row_broadcast,
                             dsp_packing=dsp_packing)
    assert np.array_equal(out, int8_matmul(a, b))
    assert cycles == exp_cycles(m, k, n, rows=rows, cols=cols, k_lanes=k_lanes,
                                row_broadcast=row_broadcast, dsp_packing=dsp_packing)


def test_steady_state_is_one_beat_per_cycle():
    # 4 tiles of 64 beats on 4x4: the array is busy 256 of the counted cycles.
    cycles = exp_cycles(8, 64, 8, rows=4, cols=4)
    assert cycles == 4 * 64 + 4 + 3 + 4 - 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=0, cols=4), r"rows must be an integer in \[1, 64\], not 0"),
    (dict(rows=4, cols=65), r"cols must be an integer in \[1, 64\], not 65"),
    (dict(rows=2.5, cols=4), r"rows must be an integer in \[1, 64\], not 2.5"),
    (dict(rows=True, cols=4), r"rows must be an integer in \[1, 64\], not True"),
    (dict(rows=4, cols=4, k_lanes=0), r"k_lanes must be an integer in \[1, 64\], not 0"),
    (dict(rows=4, cols=4, operand_width=16), r"operand_width must be an integer in \[2, 8\], not 16"),
    (dict(rows=4, cols=4, operand_width=1), r"operand_width must be an integer in \[2, 8\], not 1"),
])
def test_invalid_parameters_are_named(kwargs, message):
    rows, cols = kwargs.pop("rows"), kwargs.pop("cols")
    with pytest.raises(ValueError, match=message):
        SystolicArray(rows, cols, **kwargs)


def test_submodules_validate_too():
    with pytest.raises(ValueError, match=r"k_lanes must be an integer in \[1, 64\], not 65"):
        ProcessingElement(k_lanes=65)
    with pytest.raises(ValueError, match=r"cols must be an integer in \[1, 64\], not 0"):
        Mesh(2, 0)
