"""Dual-stage PTQ building blocks: calibration quantizers and the RepQ re-parameterisation."""

import math

import numpy as np
import pytest

from golden.float_model import layer_norm
from golden.quant import round_half_up
from golden.quantizers import (log_sqrt2_codes, log_sqrt2_dequant, search_uniform, sqrt2_to_shift,
                               uniform_fake_quant, uniform_params)
from golden.reparam import per_tensor_target, reparam_layernorm, reparam_linear


def test_uniform_quantizer_error_and_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 3.0, 5000)
    scale, zp = uniform_params(x.min(), x.max(), 8)
    assert np.abs(uniform_fake_quant(x, scale, zp, 8) - x).max() <= scale / 2 + 1e-12
    assert uniform_fake_quant(np.array([100.0]), scale, zp, 8)[0] == pytest.approx((255 - zp) * scale)


def test_percentile_search_clips_outliers():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, 100_000), [80.0]])        # one outlier
    scale, zp, pct = search_uniform(x, 4)
    assert pct < 1.0 and scale < 80 / 15
    # Per channel: a channel without outliers keeps its full range.
    chans = np.stack([rng.normal(0, 1, 20_000), np.linspace(-1, 1, 20_000)])
    scale_c, zp_c, pct_c = search_uniform(chans, 8, axis=0)
    assert scale_c.shape == (2,) and pct_c[1] == 1.0


def test_log_sqrt2_codes_and_their_shift_form():
    delta, bits = 1.0, 4
    x = np.array([1.0, 0.8, 2 ** -0.5, 0.5, 2 ** -3.2, 2 ** -7.4, 2 ** -8.0, 0.0])
    codes = log_sqrt2_codes(x, delta, bits)
    assert codes.tolist() == [0, 1, 1, 2, 6, 15, 16, 16]            # 16 = quantized to zero
    assert log_sqrt2_dequant(codes, delta, bits)[-1] == 0
    err = np.abs(np.log2(log_sqrt2_dequant(codes[:6], delta, bits)) - np.log2(x[:6]))
    assert err.max() <= 0.25 + 1e-12                                # half a sqrt(2) step
    shift, odd = sqrt2_to_shift(np.arange(17), bits)
    for q in range(16):
        assert 2 ** (-q / 2) == pytest.approx(2.0 ** -shift[q] * (math.sqrt(2) if odd[q] else 1))
    assert shift[16] == -1 and not odd[16]


def test_reparam_preserves_the_function():
    rng = np.random.default_rng(2)
    d, out = 16, 24
    x = rng.normal(0, 2, (50, d)) + rng.normal(0, 1, (50, 1))
    gamma, beta = 1 + rng.normal(0, 0.3, d), rng.normal(0, 0.5, d)
    w, bias = rng.normal(0, 0.3, (out, d)), rng.normal(0, 0.1, out)
    y = layer_norm(x, gamma, beta, 1e-6)
    lo, hi = y.min(axis=0), y.max(axis=0)
    scale_c, zp_c = uniform_params(lo, hi, 8)
    scale, zp, r, b = per_tensor_target(scale_c, zp_c)
    g2, b2 = reparam_layernorm(gamma, beta, r, b)
    w2, bias2 = reparam_linear(w, bias, r, b)
    y2 = layer_norm(x, g2, b2, 1e-6)
    assert np.allclose(y2 @ w2.T + bias2, y @ w.T + bias, atol=1e-9)
    # The per-tensor codes of y' are exactly the per-channel codes of y.
    codes_c = round_half_up(y / scale_c) + zp_c
    codes_t = round_half_up(y2 / scale) + zp
    assert np.array_equal(codes_c, codes_t)
    # A layer without a bias (the MoE gate) gets one.
    w3, bias3 = reparam_linear(w, None, r, b)
    assert np.allclose(y2 @ w3.T + bias3, y @ w.T, atol=1e-9)


@pytest.mark.parametrize("call, message", [
    (lambda: uniform_params(0, 1, 1), r"bits must be an integer in \[2, 16\], got 1"),
    (lambda: per_tensor_target([1.0, -1.0], [0, 0]), "scale_c must be finite and positive"),
    (lambda: per_tensor_target([1.0], [0, 0]), "scale_c and zp_c must be 1-D of equal length"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
