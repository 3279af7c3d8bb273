"""Pack Python/numpy values into stream payload words and back, through Amaranth layouts.

Payload words are plain ints (field 0 / element 0 at the LSB), exactly as the
emitted Verilog sees them, so the same functions serve the Amaranth simulator
and cocotb. Field offsets come from the ``Layout`` objects themselves; no bit
offset is written by hand. Arrays of scalars are packed in bulk with numpy, so
a wide beat costs microseconds, not milliseconds.
"""

import functools

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack"]


@functools.lru_cache(maxsize=None)
def _plan(layout):
    """A packing plan: ("struct", [(name, offset, plan)]) | ("array", n, width, signed) | ("scalar", width, signed)."""
    if isinstance(layout, data.StructLayout):
        return ("struct", tuple((name, field.offset, _plan(field.shape)) for name, field in layout))
    if isinstance(layout, data.ArrayLayout):
        n, elem = layout.length, layout.elem_shape
        while isinstance(elem, data.ArrayLayout):   # nested arrays are contiguous, C order
            n, elem = n * elem.length, elem.elem_shape
        if isinstance(elem, data.Layout):
            raise TypeError(f"arrays of {elem!r} are not supported by the packer")
        shape = Shape.cast(elem)
        return ("array", n, shape.width, shape.signed)
    shape = Shape.cast(layout)
    return ("scalar", shape.width, shape.signed)


def _pack(plan, value):
    kind = plan[0]
    if kind == "struct":
        word = 0
        for name, offset, sub in plan[1]:
            word |= _pack(sub, value[name]) << offset
        return word
    if kind == "array":
        _, n, width, _signed = plan
        v = np.asarray(value, dtype=np.int64).reshape(-1)
        if v.size != n:
            raise ValueError(f"expected {n} elements, got {v.size}")
        bits = ((v[:, None] >> np.arange(width)) & 1).astype(np.uint8).reshape(-1)
        return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")
    return int(value) & ((1 << plan[1]) - 1)


def _unpack(plan, word):
    kind = plan[0]
    if kind == "struct":
        return {name: _unpack(sub, word >> offset) for name, offset, sub in plan[1]}
    if kind == "array":
        _, n, width, signed = plan
        nbits = n * width
        raw = (word & ((1 << nbits) - 1)).to_bytes((nbits + 7) // 8, "little")
        bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")[:nbits]
        v = bits.reshape(n, width).astype(np.int64) @ (np.int64(1) << np.arange(width))
        if signed:
            v = np.where(v >> (width - 1) & 1, v - (np.int64(1) << width), v)
        return v
    _, width, signed = plan
    v = word & ((1 << width) - 1)
    return v - (1 << width) if signed and v >> (width - 1) & 1 else v


def pack(layout, value):
    """Pack ``value`` into an int payload word.

    ``value`` mirrors ``layout``: a dict for a ``StructLayout``, a sequence or
    numpy array (any shape with the right element count, C order) for an
    ``ArrayLayout``, an int for a scalar shape. Values are truncated to their
    field width (two's complement), as assigning to a signal would.
    """
    return _pack(_plan(data.Layout.cast(layout) if isinstance(layout, data.Layout) else layout),
                 value)


def unpack(layout, word):
    """Unpack an int payload word into dicts / flat int64 numpy arrays / ints following ``layout``."""
    return _unpack(_plan(data.Layout.cast(layout) if isinstance(layout, data.Layout) else layout),
                   word)
