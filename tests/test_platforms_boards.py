"""Board platforms, build trees, the self-test core and the capacity check (no vendor tools)."""

import subprocess
import sys

import numpy as np
import pytest
from amaranth.sim import Simulator

from platforms.boards import BOARDS, board
from platforms.devices import DEVICES
from platforms.flows import check_fit, vivado_project
from platforms.selftest import BoardTop, SelfTest, make_vectors
from platforms.uart import UartTx


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_board_elaborates_the_selftest_top(name):
    platform, device, flow = board(name)
    plan = platform.build(BoardTop(), name="selftest", do_build=False)
    assert {"selftest.v", "selftest.il"} & set(plan.files)
    constraints = plan.files["selftest.xdc" if flow == "vivado" else "selftest.lpf"]
    clock_pin = {"zcu102": "AL8", "u280": "BJ43", "ulx3s": "G2", "orangecrab": "A9"}[name]
    assert clock_pin in constraints


@pytest.mark.parametrize("name, part", [("zcu102", "xczu9eg-ffvb1156-2-e"),
                                        ("u280", "xcu280-fsvh2892-2L-e")])
def test_vivado_tree_references_part_top_and_constraints(name, part, tmp_path):
    out = vivado_project(name, tmp_path / name)
    tcl = (out / "selftest.tcl").read_text()
    assert f"-part {part}" in tcl
    assert "read_xdc selftest.xdc" in tcl and "add_files selftest.v" in tcl
    assert "synth_design -top selftest" in tcl and "write_bitstream" in tcl
    assert "module selftest(" in (out / "selftest.v").read_text()
    xdc = (out / "selftest.xdc").read_text()
    if name == "zcu102":
        assert all(pin in xdc for pin in ("AL8", "AM13", "AG14", "AL12", "F13"))
    else:
        assert all(pin in xdc for pin in ("BJ43", "BJ44", "D32", "A28"))
    assert (out / "build_selftest.sh").exists() and (out / "README.txt").exists()


def test_unknown_board_is_named():
    with pytest.raises(ValueError, match=r"unknown board 'arty'; valid: zcu102, u280, ulx3s, orangecrab"):
        board("arty")
    with pytest.raises(ValueError, match=r"board 'ulx3s' uses the trellis flow, not Vivado"):
        vivado_project("ulx3s")


def test_capacity_check_names_the_overshoot():
    device = DEVICES["xczu9eg-ffvb1156-2-e"]
    rows, errors = check_fit({"LUT": 1000, "FF": 10, "DSP": 3000, "BRAM": 912, "URAM": 1}, device)
    assert errors == ["DSP: needs 3000, device xczu9eg-ffvb1156-2-e has 2520 (over by 480)",
                      "URAM: needs 1, device xczu9eg-ffvb1156-2-e has 0 (over by 1)"]
    assert [r["percent"] for r in rows][:4] == [0.4, 0.0, 119.0, 100.0]
    assert check_fit({"DSP": 156}, DEVICES["LFE5U-85F"])[1] == []


def _run(dut, bench, cycles):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-8)


@pytest.mark.parametrize("corrupt", [None, 5, 15])
def test_selftest_core_passes_and_fails(corrupt):
    vectors = make_vectors(seed=2)
    if corrupt is not None:
        vectors = vectors.corrupted(corrupt)
    dut = SelfTest(vectors)
    seen = {}

    async def bench(ctx):
        for run in range(2):                         # a second run after the first
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(dut.done)
            seen[run] = (ctx.get(dut.passed), ctx.get(dut.cycles))

    _run(dut, bench, 4 * vectors.cycles)
    for run in range(2):
        assert seen[run] == (int(corrupt is None), vectors.cycles)


def test_uart_frames():
    dut = UartTx(4)
    line = []

    async def bench(ctx):
        for byte in b"PA\n":
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            await ctx.tick()
            bits = []
            for _ in range(10):
                bits.append(ctx.get(dut.tx))
                await ctx.tick().repeat(4)
            line.append(bits)

    _run(dut, bench, 200)
    for bits, byte in zip(line, b"PA\n"):
        assert bits[0] == 0 and bits[9] == 1
        assert sum(b << n for n, b in enumerate(bits[1:9])) == byte


def test_vectors_are_the_golden_product():
    v = make_vectors(rows=2, cols=2, m=3, k=5, n=3, seed=1)
    assert len(v.operands) == 4 * 5 and len(v.expected) == 4 * 2
    assert v.cycles > 0 and v.corrupted(0).expected[0] != v.expected[0]


@pytest.mark.slow
def test_over_capacity_unit_fails_synth_report():
    # A 16 x 16 array needs 256 multipliers; the ECP5-85F has 156.
    res = subprocess.run([sys.executable, "-m", "platforms.flows", "synth-report", "--board", "ulx3s",
                          "--unit", "systolic_16x16"], capture_output=True, text=True)
    assert res.returncode == 1
    assert "DSP: needs 256, device LFE5U-85F has 156 (over by 100)" in res.stdout.replace("\n", " ")


@pytest.mark.slow
def test_ulx3s_bitstream():
    from platforms.flows import bitstream
    report = bitstream("ulx3s")
    assert report["fmax_mhz"] and all(v["achieved"] > 0 for v in report["fmax_mhz"].values())
    assert np.isfinite(report["wall_s"])
