import math

import numpy as np
import pytest

from golden.layernorm import D_MAX, NORM_FRAC, _isqrt, affine_params, eps_int, int_layernorm
from golden.quant import dequantize


def _float_layernorm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_isqrt_is_exact_floor():
    rng = np.random.default_rng(0)
    v = np.concatenate([np.arange(0, 5000), rng.integers(0, 1 << 51, 20000),
                        np.array([(1 << 51) - 1, (1 << 26) ** 2, (1 << 26) ** 2 - 1])])
    r = _isqrt(v)
    assert all(int(a) == math.isqrt(int(b)) for a, b in zip(r, v))


@pytest.mark.parametrize("d", [192, 384])
def test_int_layernorm_against_float(d):
    rng = np.random.default_rng(d)
    res_scale = 0.004
    x_real = rng.normal(0, 1.5, (64, d)) + rng.normal(0, 2, (64, 1))
    x_real[:, 5] *= 12                                   # an outlier channel, as in real ViTs
    x = np.clip(np.round(x_real / res_scale), -32768, 32767).astype(np.int16)
    gamma = 1 + rng.normal(0, 0.2, d)
    beta = rng.normal(0, 0.1, d)
    ref = _float_layernorm(x.astype(float) * res_scale, gamma, beta, 1e-6)
    scale_out = (ref.max() - ref.min()) / 255
    zp = int(np.round(-ref.min() / scale_out)) - 128
    gain, bias, shift = affine_params(gamma, beta, scale_out, zp)
    y = int_layernorm(x, gain, bias, shift, eps_int(1e-6, d, res_scale))
    assert y.dtype == np.int8
    err = np.abs(dequantize(y, scale_out, zp) - ref)
    # Half an output step for the final rounding plus the Q5.10 normalised value.
    assert err.max() <= scale_out * 0.5 + np.abs(gamma).max() * 2.0**-NORM_FRAC + 1e-9


def test_constant_rows_and_extremes():
    d = 192
    gain, bias, shift = affine_params(np.ones(d), np.full(d, 0.25), 1 / 64, 0)
    # A constant row has zero variance: eps keeps the reciprocal finite, the output is beta.
    for value in (-32768, 0, 32767):
        y = int_layernorm(np.full((1, d), value), gain, bias, shift, 1)
        assert (y == 16).all()
    # The largest possible variance: half the row at each end of int16.
    x = np.where(np.arange(d) % 2, 32767, -32768)[None]
    y = int_layernorm(x, gain, bias, shift, 1)
    assert set(y.ravel().tolist()) == {-48, 80}         # (-1 + 0.25) * 64, (1 + 0.25) * 64
    # One hot in a long row saturates z near sqrt(D - 1), and the output saturates.
    x = np.zeros((1, D_MAX), int)
    x[0, 0] = 32767
    g, b, s = affine_params(np.ones(D_MAX), np.zeros(D_MAX), 1 / 64, 0)
    assert int_layernorm(x, g, b, s, 1)[0, 0] == 127


@pytest.mark.parametrize("args, message", [
    ((np.zeros((2, 0), int),), r"x must have shape \(M, D\) with D in \[1, 1024\]"),
    ((np.full((1, 4), 40000),), r"x must hold int16 values"),
    ((np.zeros((1, 4)),), r"x must be an integer array"),
])
def test_bad_inputs_are_named(args, message):
    d = np.asarray(args[0]).shape[-1]
    with pytest.raises((ValueError, TypeError), match=message):
        int_layernorm(*args, np.ones(d, int), np.zeros(d, int), 0, 1)


def test_bad_parameters_are_named():
    x = np.zeros((1, 4), int)
    with pytest.raises(ValueError, match=r"gain and bias must have shape \(4,\)"):
        int_layernorm(x, np.ones(3, int), np.zeros(4, int), 0, 1)
    with pytest.raises(ValueError, match=r"eps must be in \[1, 2\*\*40\]"):
        int_layernorm(x, np.ones(4, int), np.zeros(4, int), 0, 0)
    with pytest.raises(ValueError, match=r"shift must be in \[0, 46\]"):
        int_layernorm(x, np.ones(4, int), np.zeros(4, int), 47, 1)
    with pytest.raises(ValueError, match="LayerNorm affine does not fit"):
        affine_params(np.ones(4), np.full(4, 1e12), 1e-3, 0)
