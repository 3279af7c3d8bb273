"""The GELU table unit and its lookup building block against golden.gelu, every int8 code."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.gelu import gelu_int, gelu_table
from rtl.compute.gelu import GELU_ENTRIES, GeluLookup, GeluUnit, exp_cycles
from sim.nonlinear_images import check_gelu, gelu_streams
from sim.pysim_stream import run_streams


def run_gelu(tables, batches, lanes, entries, **flow):
    t_words, i_words = gelu_streams(tables, batches, lanes, entries)
    res = run_streams(GeluUnit(lanes, entries=entries), {"t": t_words, "i": i_words},
                      {"o": len(i_words)}, name=f"gelu_{lanes}_{entries}", **flow)
    check_gelu(res["o"][0], tables, batches, lanes)
    return res


@pytest.mark.parametrize("lanes, entries", [(1, 4), (3, 1), (4, 256), (2, 8)])
def test_every_code_random_tables_with_gaps_and_backpressure(lanes, entries):
    rng = np.random.default_rng(lanes * 100 + entries)
    # Every code in each batch (a fresh permutation), a new random table per batch;
    # batch 2 is a single beat, so its table is replaced right after it is loaded.
    tables = [rng.integers(-128, 128, GELU_ENTRIES) for _ in range(4)]
    batches = [rng.permutation(np.arange(-128, 128)) for _ in range(4)]
    batches[2] = batches[2][:lanes]
    run_gelu(tables, batches, lanes, entries, i_flow=0.6, o_flow=0.5, seed=lanes)


def test_export_table_and_full_rate_cycles():
    # The export-time table of a realistic fc1 output format (input scale 8/255).
    table = gelu_table(8 / 255, -32, 5.2 / 255, -124)
    codes = np.arange(-128, 128)
    res = run_gelu([table, table[::-1].copy(), table], [codes, codes[:8], codes], 4, 4)
    assert res["o"][1][-1] + 1 == exp_cycles([64, 2, 64], entries=4)
    # Steady state: one beat per cycle, latency 1.
    assert res["o"][1][0] - res["i"][0] == GeluUnit.LATENCY
    assert res["o"][1][63] - res["o"][1][0] == 63


def test_cycle_model_of_table_waits():
    # Short batches wait for their tables: each table is 64 beats at entries=4.
    assert exp_cycles([1, 1, 1], entries=4) == 3 * 64 + 2
    # Long batches hide the next table's load.
    assert exp_cycles([100, 100], entries=4) == 64 + 200 + 1


@pytest.mark.parametrize("latency", [0, 1])
def test_lookup_building_block_two_banks(latency):
    lanes, entries = 3, 16
    dut = GeluLookup(lanes, banks=2, entries=entries, latency=latency)
    rng = np.random.default_rng(latency)
    tables = [rng.integers(-128, 128, GELU_ENTRIES) for _ in range(2)]
    codes = rng.integers(-128, 128, (40, lanes))
    banks = rng.integers(0, 2, 40)
    got = []

    async def bench(ctx):
        for bank, table in enumerate(tables):
            for addr in range(GELU_ENTRIES // entries):
                ctx.set(dut.write.en, 1)
                ctx.set(dut.write.bank, bank)
                ctx.set(dut.write.addr, addr)
                ctx.set(dut.write.data, table[addr * entries:(addr + 1) * entries].tolist())
                await ctx.tick()
        ctx.set(dut.write.en, 0)
        ctx.set(dut.read.en, 1)
        for n in range(len(codes) + latency):
            if n < len(codes):
                ctx.set(dut.read.bank, int(banks[n]))
                ctx.set(dut.read.code, codes[n].tolist())
            if latency == 0:
                got.append(list(ctx.get(dut.read.value)))
            await ctx.tick()
            if latency == 1 and n < len(codes):
                got.append(list(ctx.get(dut.read.value)))
        # latency 1: the value holds while en is low.
        ctx.set(dut.read.en, 0)
        ctx.set(dut.read.code, [0] * lanes)
        await ctx.tick()
        if latency == 1:
            assert list(ctx.get(dut.read.value)) == got[-1]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = [gelu_int(codes[n], tables[banks[n]]).tolist() for n in range(len(codes))]
    assert got == expected


@pytest.mark.parametrize("make, message", [
    (lambda: GeluUnit(0), r"lanes must be an integer in \[1, 64\], not 0"),
    (lambda: GeluUnit(4, entries=3), r"entries must be a power of two, not 3"),
    (lambda: GeluUnit(4, entries=512), r"entries must be an integer in \[1, 256\], not 512"),
    (lambda: GeluLookup(2, banks=0), r"banks must be an integer in \[1, 4\], not 0"),
    (lambda: GeluLookup(2, latency=2), r"latency must be an integer in \[0, 1\], not 2"),
])
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
