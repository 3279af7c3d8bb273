import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from golden.quant import (BIAS_MAX, K_MAX_BIASED, MULT_MAX, SHIFT_MAX, dequantize, dyadic,
                          fold_zero_point, linear, quantize, quantize_weight_per_channel,
                          requantize, residual_add, round_shift)

INT32 = st.integers(-(1 << 31), (1 << 31) - 1)


@given(x=st.integers(-(1 << 40), 1 << 40), s=st.integers(0, 20))
def test_round_shift_is_round_half_up(x, s):
    exact = Fraction(x, 1 << s)
    expected = math.floor(exact + Fraction(1, 2))
    assert int(round_shift(x, s)) == expected


@given(acc=INT32, mult=st.integers(0, MULT_MAX), shift=st.integers(0, SHIFT_MAX),
       zp=st.integers(-128, 127))
def test_requantize_rounds_half_up_then_saturates(acc, mult, shift, zp):
    exact = Fraction(acc * mult, 1 << shift)
    expected = min(127, max(-128, math.floor(exact + Fraction(1, 2)) + zp))
    out = requantize(np.array([acc]), mult, shift, zp)
    assert out.dtype == np.int8 and int(out[0]) == expected


@given(acc=INT32, mult=st.integers(1, MULT_MAX), shift=st.integers(0, 30))
def test_requantize_16_bit_saturates_both_ends(acc, mult, shift):
    out = int(requantize(acc, mult, shift, bits=16))
    exact = math.floor(Fraction(acc * mult, 1 << shift) + Fraction(1, 2))
    assert out == min(32767, max(-32768, exact))


def test_requantize_edges():
    # Halves round towards +infinity, on both signs.
    assert requantize(np.array([1, -1, 3, -3]), 1, 1).tolist() == [1, 0, 2, -1]
    # The most extreme accumulator and multiplier do not overflow int64 and saturate.
    assert requantize(np.array([-(1 << 31), (1 << 31) - 1]), MULT_MAX, 0).tolist() == [-128, 127]
    assert requantize(np.array([-(1 << 31), (1 << 31) - 1]), MULT_MAX, SHIFT_MAX, bits=16).tolist() == [0, 0]
    # Per-channel multipliers broadcast over the last axis.
    acc = np.array([[100, 100]])
    assert requantize(acc, np.array([1, 3]), np.array([0, 1])).tolist() == [[100, 127]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(acc=np.array([1 << 31]), mult=1, shift=0), r"acc must be in \[-2147483648, 2147483647\]"),
    (dict(acc=np.array([1]), mult=MULT_MAX + 1, shift=0), r"mult must be in \[0, 32767\]"),
    (dict(acc=np.array([1]), mult=1, shift=48), r"shift must be in \[0, 47\]"),
    (dict(acc=np.array([1]), mult=1, shift=0, zero_point=128), r"zero_point must be in \[-128, 127\]"),
    (dict(acc=np.array([1]), mult=1, shift=0, bits=1), r"bits must be an integer in \[2, 32\], got 1"),
    (dict(acc=np.array([1]), mult=1, shift=0, bits=33), r"bits must be an integer in \[2, 32\], got 33"),
])
def test_requantize_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        requantize(**kwargs)


def test_requantize_rejects_float_accumulators():
    with pytest.raises(TypeError, match="acc must be an integer array"):
        requantize(np.array([1.5]), 1, 0)


@given(st.floats(min_value=2.0**-32, max_value=32767.0))
def test_dyadic_relative_error_below_2_pow_minus_15(scale):
    mult, shift = dyadic(scale)
    assert 0 < mult <= MULT_MAX and 0 <= shift <= SHIFT_MAX
    assert abs(mult / 2.0**shift - scale) <= scale * 2.0**-14.9


def test_dyadic_uses_the_full_multiplier_width():
    mult, shift = dyadic(np.array([1.0, 0.75, 1e-3]))
    assert ((mult >= 1 << 14) & (mult <= MULT_MAX)).all()
    assert mult.tolist()[0] == 1 << 14 and shift.tolist()[0] == 14


@pytest.mark.parametrize("scale, message", [
    (0.0, "scale must be finite and positive"),
    (-1.0, "scale must be finite and positive"),
    (math.nan, "scale must be finite and positive"),
    (40000.0, r"scale must be below 32767.5"),
])
def test_dyadic_bad_scales(scale, message):
    with pytest.raises(ValueError, match=message):
        dyadic(scale)


def test_quantize_dequantize_error_is_half_a_step():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 4.9, 10_000)
    scale, zp = 8 / 255, -32      # codes cover [-3.01, 4.99]
    q = quantize(x, scale, zp)
    assert np.abs(dequantize(q, scale, zp) - x).max() <= scale / 2 + 1e-12
    # Out of range saturates.
    assert quantize(np.array([1e9, -1e9]), scale, zp).tolist() == [127, -128]


def test_weight_quantization_is_symmetric_per_channel():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 40))
    w[3] = 0
    q, scale = quantize_weight_per_channel(w)
    assert q.dtype == np.int8 and q.min() >= -127
    assert (np.abs(q).max(axis=1)[[0, 1, 2, 4, 5]] == 127).all()
    assert not q[3].any()
    assert np.abs(q * scale[:, None] - w).max() <= scale.max() / 2 + 1e-12


def test_fold_zero_point_preserves_the_linear_function():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (9, 33))
    w = rng.integers(-127, 128, (7, 33))
    b = rng.integers(-1000, 1000, 7)
    zp = -17
    folded = fold_zero_point("fc", w, b, zp)
    assert (linear(x, w, folded) == (x - zp) @ w.T + b).all()


def test_fold_zero_point_overflow_names_the_layer():
    w = np.full((1, 70000), 127)
    with pytest.raises(ValueError, match=r"blocks.0.fc1 \(folded bias\) must be in"):
        fold_zero_point("blocks.0.fc1", w, np.zeros(1, int), -128)


def test_linear_bounds():
    assert K_MAX_BIASED * (1 << 14) + BIAS_MAX <= (1 << 31) - 1
    with pytest.raises(ValueError, match=r"bias must be in \[-1073741824, 1073741824\]"):
        linear(np.zeros((1, 2), int), np.zeros((1, 2), int), np.array([BIAS_MAX + 1]))


def test_residual_add_saturates():
    out = residual_add(np.array([32000, -32000, 5]), np.array([1000, -1000, -7]))
    assert out.dtype == np.int16 and out.tolist() == [32767, -32768, -2]
    with pytest.raises(ValueError, match=r"y must be in \[-32768, 32767\]"):
        residual_add(np.array([0]), np.array([40000]))
