"""Integer GELU: a 256-entry int8 -> int8 table, exact for every input code.

GELU sits between fc1 and fc2. fc1's accumulator is requantized to int8 at the
GELU input's scale and zero point; the table maps every one of the 256 input codes
to the int8 code of ``gelu(x)`` at the output tensor's scale and zero point (the
input of fc2). The table is built once at export time from the exact erf GELU, so
the datapath is one 256 x 8-bit ROM per lane and no arithmetic.

Error bound: for inputs that are exactly representable, the output error against
erf GELU is at most half an output step (``scale_out / 2``) unless the output
saturates; the input's own quantization error (``scale_in / 2``) adds at most
``1.13 * scale_in / 2`` (GELU's slope is below 1.13).
"""

import numpy as np

from .float_model import gelu
from .quant import check_bits, dequantize, quantize

__all__ = ["gelu_table", "gelu_int"]


def gelu_table(scale_in, zero_point_in, scale_out, zero_point_out, bits=8):
    """The 256-entry table: ``table[q + 128] = quantize(gelu(dequantize(q)))`` for q in -128..127.

    ``bits`` (in [2, 8]) is the output width: entries saturate to its signed range
    (below 8 emulates narrower activations; the inputs then use a part of the table).

    Returns
    -------
    numpy.ndarray of int8, shape (256,)
    """
    for name, value in (("scale_in", scale_in), ("scale_out", scale_out)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be finite and positive, got {value}")
    for name, value in (("zero_point_in", zero_point_in), ("zero_point_out", zero_point_out)):
        if not -128 <= value <= 127:
            raise ValueError(f"{name} must be in [-128, 127], got {value}")
    codes = np.arange(-128, 128)
    check_bits("bits", bits, 2, 8)
    return quantize(gelu(dequantize(codes, scale_in, zero_point_in)), scale_out, zero_point_out,
                    bits).astype(np.int8)


def gelu_int(x, table):
    """Look up int8 codes ``x`` in a :func:`gelu_table` (``table[x + 128]``).

    Parameters
    ----------
    x : int array, int8 values
    table : int array, shape (256,), int8 values

    Returns
    -------
    numpy.ndarray of int8, shape like ``x``
    """
    table = np.asarray(table)
    if table.shape != (256,) or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"table must be 256 integers, got {table.dtype} {table.shape}")
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"x must be an integer array, not {x.dtype}")
    if x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError(f"x must hold int8 values, found [{int(x.min())}, {int(x.max())}]")
    return table.astype(np.int8)[x.astype(np.int64) + 128]
