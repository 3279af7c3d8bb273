"""Pack Python/numpy values into stream payload words and back, through Amaranth layouts.

Payload words are plain ints (field 0 / element 0 at the LSB), exactly as the
emitted Verilog sees them, so the same functions serve the Amaranth simulator
and cocotb. Field offsets come from the ``Layout`` objects themselves; no bit
offset is written by hand. Arrays of scalars are packed in bulk with numpy, so
a wide beat costs microseconds, not milliseconds; :func:`pack_rows` and
:func:`unpack_rows` do many words of one layout at once (matrix images).
"""

import functools

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack", "pack_rows", "unpack_rows"]


@functools.cache
def _plan(layout):
    """A packing plan: ("struct", [(name, offset, plan)]) | ("array", n, width, signed) |
    ("scalar", width, signed)."""
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
    """Unpack an int payload word into dicts / flat int64 numpy arrays / ints per ``layout``."""
    return _unpack(_plan(data.Layout.cast(layout) if isinstance(layout, data.Layout) else layout),
                   word)


def _cast(layout):
    return data.Layout.cast(layout) if isinstance(layout, data.Layout) else layout


def _leaves(plan, offset=0, path=()):
    """``(path, offset, elements, width, signed, is_array)`` of every scalar or scalar array."""
    kind = plan[0]
    if kind == "struct":
        return [leaf for name, off, sub in plan[1] for leaf in _leaves(sub, offset + off,
                                                                       path + (name,))]
    if kind == "array":
        return [(path, offset, plan[1], plan[2], plan[3], True)]
    return [(path, offset, 1, plan[1], plan[2], False)]


def _size(plan):
    return max((off + n * w for _, off, n, w, _, _ in _leaves(plan)), default=0)


def pack_rows(layout, values):
    """Pack ``n`` words of one layout at once: a list of ``n`` ints.

    ``values`` mirrors ``layout`` with a leading axis of length ``n`` on every
    leaf: an ``(n, ...)`` array for a scalar array, an ``(n,)`` array or an int
    (broadcast) for a scalar, a dict of those for a struct.
    """
    plan = _plan(_cast(layout))
    columns, n = [], None
    for path, offset, count, width, _signed, is_array in _leaves(plan):
        v = values
        for name in path:
            v = v[name]
        v = np.asarray(v, np.int64)
        v = v.reshape(-1, 1) if not is_array else v.reshape(v.shape[0], -1)
        if v.shape[1] != count:
            raise ValueError(f"field {'.'.join(path) or 'value'}: expected {count} elements "
                             f"per word, got {v.shape[1]}")
        columns.append((offset, width, v))
        if v.shape[0] != 1:
            if n is not None and v.shape[0] != n:
                raise ValueError(f"field {'.'.join(path)}: {v.shape[0]} words, others {n}")
            n = v.shape[0]
    n = 1 if n is None else n
    bits = np.zeros((n, -(-max(_size(plan), 1) // 8) * 8), np.uint8)
    for offset, width, v in columns:
        v = np.broadcast_to(v, (n, v.shape[1]))
        field = ((v[:, :, None] >> np.arange(width)) & 1).astype(np.uint8)
        bits[:, offset:offset + v.shape[1] * width] = field.reshape(n, -1)
    packed = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def unpack_rows(layout, words):
    """Inverse of :func:`pack_rows`: ``words`` (a sequence of ints) to the same structure,
    every leaf an int64 array with a leading axis of ``len(words)``."""
    plan = _plan(_cast(layout))
    size = _size(plan)
    nbytes = -(-max(size, 1) // 8)
    raw = b"".join((int(w) & ((1 << size) - 1)).to_bytes(nbytes, "little") for w in words)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8).reshape(len(words), nbytes), axis=1,
                         bitorder="little").astype(np.int64)
    out = {}
    for path, offset, count, width, signed, is_array in _leaves(plan):
        field = bits[:, offset:offset + count * width].reshape(len(words), count, width)
        v = field @ (np.int64(1) << np.arange(width))
        if signed:
            v = np.where(v >> (width - 1) & 1, v - (np.int64(1) << width), v)
        v = v if is_array else v[:, 0]
        if not path:
            return v
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = v
    return out
