import numpy as np
import pytest

from golden.float_model import gelu
from golden.gelu import gelu_int, gelu_table
from golden.quant import dequantize


@pytest.mark.parametrize("s_in, zp_in, s_out, zp_out", [
    (8 / 255, -32, 6 / 255, -100),      # a typical fc1 output range [-3, 5]
    (0.1, 0, 0.05, -120),
    (0.01, 50, 0.02, 0),
])
def test_table_error_is_half_an_output_step_at_every_code(s_in, zp_in, s_out, zp_out):
    table = gelu_table(s_in, zp_in, s_out, zp_out)
    codes = np.arange(-128, 128)
    out = gelu_int(codes, table)
    assert out.dtype == np.int8
    ref = gelu(dequantize(codes, s_in, zp_in))
    err = np.abs(dequantize(out, s_out, zp_out) - ref)
    representable = (ref >= s_out * (-128 - zp_out)) & (ref <= s_out * (127 - zp_out))
    assert err[representable].max() <= s_out / 2 + 1e-12
    # Outside the representable output range the table saturates.
    assert (out[ref > s_out * (127 - zp_out)] == 127).all()
    assert (out[ref < s_out * (-128 - zp_out)] == -128).all()


def test_lookup_is_the_table():
    rng = np.random.default_rng(0)
    table = rng.integers(-128, 128, 256)
    x = rng.integers(-128, 128, (5, 7))
    assert (gelu_int(x, table) == table[x + 128]).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scale_in must be finite and positive"):
        gelu_table(0.0, 0, 0.1, 0)
    with pytest.raises(ValueError, match=r"zero_point_out must be in \[-128, 127\]"):
        gelu_table(0.1, 0, 0.1, 200)
    with pytest.raises(ValueError, match=r"table must be 256 integers"):
        gelu_int(np.zeros(3, int), np.zeros(10, int))
    with pytest.raises(ValueError, match=r"x must hold int8 values"):
        gelu_int(np.array([128]), np.zeros(256, int))
