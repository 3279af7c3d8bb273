"""The soft-logic census (platforms.logic) on small designs whose bits are known, and the
fitted LUT / FF model's use in the resource estimate."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Array, Cat, Elaboratable, Module, Mux, Signal, signed
from amaranth.lib import memory

from platforms.boards import board
from platforms.logic import (COEFFICIENTS, FITTED_MAC_UNITS, MUX_LUTS, LogicCounts,
                             design_logic, mapped_logic, predict)
from platforms.memories import design_memories, map_memory
from platforms.multipliers import design_multipliers
from platforms.resources import estimate, logic_by_unit
from rtl.config import preset


def total(elaboratable, ports=()):
    """The design's counts; ``ports`` are its inputs (an undriven signal is a constant)."""
    return sum(design_logic(elaboratable, ports=ports).values(), LogicCounts())


def test_registers_are_counted_once_per_signal():
    m = Module()
    a, r, o = Signal(12), Signal(12), Signal(12)
    c = Signal()
    m.d.sync += r.eq(a)
    with m.If(c):
        m.d.sync += r[:4].eq(0)         # the same register, again: no new bits
    m.d.comb += [c.eq(a[0]),            # combinational: no register
                 o.eq(r)]
    counts = total(m, ports=[a])
    assert counts.ff == 12
    assert counts.mux == 4              # one conditional assignment of 4 bits


def test_only_read_and_varying_register_bits_count():
    """Yosys removes the register bits nothing reads and those that never leave their
    init value; the census counts neither."""
    m = Module()
    a, c = Signal(8), Signal()
    whole, sliced, dead = Signal(8), Signal(8), Signal(8)
    stuck, five, padded, port = Signal(8), Signal(8), Signal(8), Signal(8)
    wide = Signal(8)                    # combinational: its top half is constant
    o = Signal(64)
    m.d.comb += wide.eq(Cat(a[:4], 0))
    m.d.sync += [whole.eq(a), sliced.eq(a), dead.eq(a), padded.eq(wide), port.eq(a)]
    with m.If(c):
        m.d.sync += [stuck.eq(0),       # its init: constant
                     five.eq(5)]        # 0b101 from init 0: bits 0 and 2 vary
    m.d.comb += [c.eq(a[7]), o.eq(Cat(whole, sliced[2:5], stuck, five, padded))]
    ff = total(m, ports=[a, port]).ff
    assert ff == 8 + 3 + 0 + 0 + 2 + 4 + 8              # dead: 0; port: read by the port
    assert total(m, ports=[a]).ff == ff - 8
    # Undriven, a is a constant: of the registers it feeds only the port is left (a port
    # is taken to vary).
    assert total(m, ports=[port]).ff == 8 + 2


def test_constants_propagate_through_any_order_memories_and_sign():
    """Which register bits can vary does not depend on statement order; memory read data
    and a wider signed source vary; a register read only in an ``If`` test is read; a
    variable-position target may change every bit."""
    m = Module()
    a, s4, u4 = Signal(8), Signal(signed(4)), Signal(4)
    r1, r2, flag, r6, r7 = Signal(8), Signal(8), Signal(), Signal(8), Signal(8)
    r3, r4, r5 = Signal(8), Signal(signed(8)), Signal(8)
    o = Signal(48)
    m.submodules.mem = mem = memory.Memory(shape=8, depth=16, init=[])
    wr, rd = mem.write_port(), mem.read_port(domain="comb")
    m.d.comb += [wr.addr.eq(a[:4]), wr.data.eq(a), wr.en.eq(1), rd.addr.eq(a[4:])]
    m.d.sync += [r2.eq(r1), r1.eq(a),             # r2's statement before its source's
                 r3.eq(rd.data),
                 r4.eq(s4),                       # sign-extended: all 8 bits vary
                 r5.eq(u4),                       # zero-extended: 4
                 flag.eq(a[0]),
                 r7.bit_select(a[:3], 1).eq(a[7])]
    with m.If(flag):
        m.d.sync += r6.eq(a)
    m.d.comb += o.eq(Cat(r2, r3, r4, r5, r6, r7))
    assert total(m, ports=[a, s4, u4]).ff == 8 + 8 + 8 + 8 + 4 + 1 + 8 + 8


def test_operator_bits():
    m = Module()
    a, b = Signal(8), Signal(signed(10))
    s, o = Signal(3), Signal(16)
    m.d.comb += o.eq(Cat(a + b, a < b, a == 3, a & b[:8], a << s))
    counts = total(m)
    assert counts.add == 10             # the wider operand
    assert counts.compare == 10
    assert counts.equal == 8            # a == 3: the constant is widened to a
    assert counts.logic == 8
    assert counts.select == len(a << s) * 3     # a barrel shifter of 3 levels
    assert counts.mux == 0
    assert counts.ff == 0


def test_selects_and_switches():
    m = Module()
    a, b, c = Signal(8), Signal(8), Signal(8)
    i, sel = Signal(2), Signal()
    o1, o2, o3 = Signal(8), Signal(8), Signal(4)
    m.d.comb += [o1.eq(Mux(sel, a, b)), o2.eq(Array([a, b, c])[i]),
                 o3.eq(a.word_select(i[:1], 4))]
    with m.Switch(i):
        with m.Case(0):
            m.d.sync += c.eq(a)
        with m.Case(1, 2):
            m.d.sync += c.eq(b)
        with m.Default():
            m.d.sync += c.eq(0)
    counts = total(m, ports=[a, b, i, sel])
    # Mux: 8; Array of 3: 8 x 2; a 4-bit word of 2 positions: 4.
    assert counts.select == 8 + 16 + 4
    assert counts.mux == 3 * 8          # three conditional assignments of 8 bits
    assert counts.equal == 2 * 2        # the 2-bit test against two non-default cases
    assert counts.ff == 8


class _Memory(Elaboratable):
    """A memory of ``depth`` words of ``width`` bits with a clocked read port."""

    def __init__(self, width, depth):
        self.width, self.depth = width, depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        addr = Signal(range(self.depth))
        m.d.comb += [wr.addr.eq(addr), rd.addr.eq(addr + 1), wr.data.eq(rd.data),
                     wr.en.eq(1)]
        m.d.sync += addr.eq(addr + 1)
        return m


@pytest.mark.parametrize("width, depth, kind", [(1, 2, "logic"), (8, 32, "lutram"),
                                               (8, 4096, "block")])
def test_memories_by_their_mapping(width, depth, kind):
    top = _Memory(width, depth)
    memories = design_memories(top)
    assert map_memory(memories[0], "xcup").kind == kind
    mapped = sum(mapped_logic(memories, design_multipliers(top), "xcup").values(),
                 LogicCounts())
    if kind == "logic":                 # flip-flops, the read's register, a read multiplexer
        assert mapped.ram_ff == width * (depth + 1) and mapped.select == width * (depth - 1)
    elif kind == "lutram":              # the clocked read's register
        assert mapped.ram_ff == width and mapped.select == 0
    else:                               # all inside the block RAM
        assert mapped == LogicCounts()


@pytest.mark.parametrize("family, width, depth, rows", [
    ("ecp5", 8, 64, 4), ("xcup", 8, 64, 1),           # LUT RAM cells: 16 deep, 64 deep
    ("ecp5", 36, 8192, 4), ("xcup", 36, 8192, 2)])    # block RAM: 2 K x 9, 4 K x 9
def test_a_memory_cascaded_in_depth_has_a_read_multiplexer(family, width, depth, rows):
    """A memory deeper than the cell ``memory_libmap`` picks is cascaded in rows whose
    outputs a multiplexer in soft logic selects: ``width x (rows - 1)`` 2:1 stages per
    read, each :data:`MUX_LUTS` LUTs."""
    shape, = design_memories(_Memory(width, depth))
    assert map_memory(shape, family).rows == rows
    mapped = sum(mapped_logic([shape], (), family).values(), LogicCounts())
    assert mapped.ram_mux == width * (rows - 1)
    assert predict(LogicCounts(ram_mux=36), family)["lut"] == round(36 * MUX_LUTS[family])


def test_soft_products_only():
    m = Module()
    a, b, c = Signal(4), Signal(4), Signal(16)
    o1, o2 = Signal(8), Signal(32)
    m.d.comb += [o1.eq(a * b), o2.eq(c * c)]
    found = design_multipliers(m)
    xcup = sum(mapped_logic((), found, "xcup").values(), LogicCounts())
    ecp5 = sum(mapped_logic((), found, "ecp5").values(), LogicCounts())
    assert xcup.add == 4 * 4            # 8-bit product: under the DSP48E2's 9-bit minimum
    assert ecp5.add == 0                # a MULT18X18D takes both
    assert (xcup.dsp, ecp5.dsp) == (1, 2)           # hard cells counted, not their bits


def test_predict_weights_and_errors():
    weights = {"xcup": {"lut": {"add": 1.0, "mux": 0.5}, "ff": {"ff": 0.9}}}
    counts = LogicCounts(ff=100, add=10, mux=4)
    assert predict(counts, "xcup", weights) == {"lut": 12, "ff": 90}
    with pytest.raises(ValueError, match=r"family must be one of xcup .*not 'ice40'"):
        predict(counts, "ice40", weights)


def test_estimate_has_lut_and_ff_by_unit():
    assert set(COEFFICIENTS) == {"ecp5", "xcup"}
    config = preset("ecp5_85f")
    est = estimate(config, board("ulx3s")[1])
    by_unit = logic_by_unit(config, "ecp5")
    assert est["lut"] == sum(est["by_unit"]["lut"].values()) > 0
    assert est["ff"] == sum(est["by_unit"]["ff"].values()) > 0
    assert {"linear", "attention", "layernorm", "core"} <= set(est["by_unit"]["lut"])
    assert est["by_unit"]["lut"]["linear"] == predict(by_unit["linear"], "ecp5")["lut"]
    # The census passes the top's ports: without them its inputs would be constants.
    from rtl.top.accelerator import Accelerator
    bare = sum(design_logic(Accelerator(config)).values(), LogicCounts()).ff
    assert sum(by_unit.values(), LogicCounts()).ff > bare
    # The linear kernel's registers grow with its array: a larger kernel, more flip-flops.
    assert by_unit["linear"].ff < logic_by_unit(preset("zcu102"), "ecp5")["linear"].ff


def test_fit_recovers_known_weights():
    """bench.logic.fit on tops whose LUTs and flip-flops follow known weights exactly (one
    weight per feature group)."""
    from bench.logic import FEATURES, fit
    rng = np.random.default_rng(0)
    truth = {kind: {f: w for group, w in zip(groups, (0.9, 0.05, 3.0)) for f in group}
             for kind, groups in FEATURES.items()}
    truth["lut"]["ram_mux"] = MUX_LUTS["ecp5"]            # not fitted: from the LUT
    rows = []
    for _ in range(8):
        counts = LogicCounts(**{f: int(rng.integers(1_000, 100_000))
                                for f in LogicCounts().as_dict()})
        cells = {kind.upper(): sum(w * getattr(counts, f) for f, w in weights.items())
                 for kind, weights in truth.items()}
        rows.append((counts, cells))
    weights = fit(rows, "ecp5")
    for kind in truth:
        assert weights[kind] == pytest.approx(truth[kind], abs=1e-4)


class _BlockMemory(Elaboratable):
    """A 4096 x 8 memory (block RAM on both families), its clocked read transparent or
    returning the old word."""

    def __init__(self, transparent):
        self.transparent = transparent

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=8, depth=4096, init=[])
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=[wr] if self.transparent else ())
        addr = Signal(12)
        m.d.comb += [wr.addr.eq(addr), rd.addr.eq(addr), wr.data.eq(rd.data + 1), wr.en.eq(1)]
        m.d.sync += addr.eq(addr + 1)
        return m


def test_transparent_lut_ram_read_has_one_register():
    """A transparent clocked read of LUT RAM bypasses the written word into its read
    register: one word of flip-flops, as for a read of the old word."""
    top = _Memory(8, 32)
    memories = [dataclasses.replace(design_memories(top)[0], transparent_reads=1)]
    assert map_memory(memories[0], "ecp5").kind == "lutram"
    assert sum(mapped_logic(memories, (), "ecp5").values(), LogicCounts()).ram_ff == 8


@pytest.mark.parametrize("transparent, family, words", [
    (True, "xcup", 1), (True, "ecp5", 1),       # the written word kept for the bypass
    (False, "xcup", 0),                         # RAMB36E2 reads first itself
    (False, "ecp5", 1),                         # DP16KD cannot: the write is delayed
])
def test_block_ram_emulation_registers(transparent, family, words):
    top = _BlockMemory(transparent)
    memories = design_memories(top)
    assert map_memory(memories[0], family).kind == "block"
    mapped = sum(mapped_logic(memories, (), family).values(), LogicCounts())
    assert mapped.ram_ff == 8 * words


def test_lut_and_ff_count_within_the_fitted_sizes_only():
    small = preset("ecp5_85f")          # within the fitted kernel sizes
    assert small.linear.macs + small.attention.macs <= FITTED_MAC_UNITS
    roomy = dataclasses.replace(board("ulx3s")[1], DSP=10**6, BRAM=10**6)
    est = estimate(small, roomy)
    assert est["fits"] and not est["logic_extrapolated"]
    tight = dataclasses.replace(roomy, LUT=est["lut"])          # 100 % > the 75 % ceiling
    assert estimate(small, tight)["over"] == \
        f"LUT {est['lut']:,} > 75% of {est['lut']:,} on LFE5U-85F"
    big = preset("zcu102")              # beyond them: reported, not checked
    est = estimate(big, dataclasses.replace(board("zcu102")[1], LUT=1, FF=1))
    assert est["logic_extrapolated"] and est["fits"] and est["lut"] > 1
