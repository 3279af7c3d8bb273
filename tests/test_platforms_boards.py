"""Board platforms, build trees, the self-test core, its report line and the capacity check."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from amaranth.sim import Simulator

from moevit.packing import unpack
from platforms import flows
from platforms.boards import BOARDS, board
from platforms.devices import DEVICES, RESOURCES
from platforms.dfu import with_dfu_suffix
from platforms.flows import check_fit, synth_report, vivado_project
from platforms.selftest import BoardTop, SelfTest, StatusLine, make_vectors
from platforms.uart import UartTx
from rtl.compute.systolic import result_layout

CLOCK_PINS = {"zcu102": "G21", "u280": "BJ43", "ulx3s": "G2", "orangecrab": "A9"}


@pytest.mark.parametrize("name", list(BOARDS))
def test_every_board_elaborates_the_selftest_top(name):
    platform, device, flow = board(name)
    plan = platform.build(BoardTop(), name="selftest", do_build=False)
    assert {"selftest.v", "selftest.il"} & set(plan.files)
    constraints = plan.files["selftest.xdc" if flow == "vivado" else "selftest.lpf"]
    assert CLOCK_PINS[name] in constraints
    assert device.family == ("xcup" if flow == "vivado" else "ecp5")


@pytest.mark.parametrize("name, part, pins", [
    ("zcu102", "xczu9eg-ffvb1156-2-e", ("G21", "F21", "AM13", "AG14", "AL12", "AG13", "E13")),
    ("u280", "xcu280-fsvh2892-2L-e", ("BJ43", "BJ44", "L30", "D32")),
])
def test_vivado_tree_references_part_top_and_constraints(name, part, pins, tmp_path):
    out = vivado_project(name, tmp_path / name)
    tcl = (out / "selftest.tcl").read_text()
    assert f"create_project -force -name selftest -part {part}" in tcl
    assert "add_files selftest.v" in tcl and "read_xdc selftest.xdc" in tcl
    assert "synth_design -top selftest" in tcl and "write_bitstream -force" in tcl
    assert "module selftest(" in (out / "selftest.v").read_text()
    xdc = (out / "selftest.xdc").read_text()
    assert all(f"set_property LOC {pin} " in xdc for pin in pins)
    period = {"zcu102": "8.0", "u280": "10.0"}[name]
    assert f"-period {period} " in xdc
    assert "selftest.tcl" in (out / "build_selftest.sh").read_text()
    assert part in (out / "README.md").read_text()


def test_u280_tree_has_the_card_settings(tmp_path):
    xdc = (vivado_project("u280", tmp_path) / "selftest.xdc").read_text()
    assert 'set_property PULLTYPE "PULLDOWN" [get_ports "hbm_cattrip_0__io"]' in xdc
    assert "set_property CONFIG_VOLTAGE 1.8 [current_design]" in xdc
    assert "set_property CONFIG_MODE SPIx4 [current_design]" in xdc
    verilog = (tmp_path / "selftest.v").read_text()
    for name in ("busy", "done", "passed", "cycles"):   # the only way to observe the test
        assert re.search(r'\(\* MARK_DEBUG = "TRUE" \*\)\s*\(\* keep = "TRUE" \*\)\s*'
                         rf"wire (\[31:0\] )?selftest_{name};", verilog)
    assert "src =" not in verilog                          # reproducible text


def test_orangecrab_flow_needs_only_pypi_tools():
    platform, _, _ = board("orangecrab")
    script = platform.build(BoardTop(), name="selftest", do_build=False).files["build_selftest.sh"]
    assert "dfu-suffix" not in script and '"$ECPPACK" --compress --freq 38.8' in script
    assert "dfu-suffix" not in platform.required_tools


def test_dfu_suffix_matches_dfu_util():
    # Reference: dfu-util 0.11, `dfu-suffix -v 1209 -p 5af0 -a` on the same 768 bytes.
    image = bytes(range(256)) * 3
    out = with_dfu_suffix(image, vendor=0x1209, product=0x5AF0)
    assert out[:-16] == image
    assert out[-16:].hex() == "fffff05a09120001554644100d564ad2"


def test_unknown_board_and_wrong_flow_are_named():
    with pytest.raises(ValueError,
                       match=r"unknown board 'arty'; valid: zcu102, u280, ulx3s, orangecrab"):
        board("arty")
    with pytest.raises(ValueError, match=r"board 'ulx3s' uses the trellis flow, not Vivado"):
        vivado_project("ulx3s")
    with pytest.raises(ValueError,
                       match=r"board 'zcu102' uses the vivado flow, not the open ECP5 flow"):
        flows.bitstream("zcu102")


def test_capacity_tables_cover_every_resource():
    for device in DEVICES.values():
        assert all(device.capacity(r) >= 0 for r in RESOURCES) and device.source
        assert set(device.primitives) == set(RESOURCES)
    assert DEVICES["LFE5U-85F"].DSP == 156 and DEVICES["xcu280-fsvh2892-2L-e"].URAM == 960


def test_capacity_check_names_the_overshoot():
    device = DEVICES["xczu9eg-ffvb1156-2-e"]
    rows, errors = check_fit({"LUT": 1000, "FF": 10, "DSP": 3000, "BRAM": 912, "URAM": 1}, device)
    assert errors == ["DSP: needs 3000, device xczu9eg-ffvb1156-2-e has 2520 (over by 480)",
                      "URAM: needs 1, device xczu9eg-ffvb1156-2-e has 0 (over by 1)"]
    assert [r["percent"] for r in rows] == [0.4, 0.0, 119.0, 100.0, None]
    assert check_fit({"DSP": 156}, DEVICES["LFE5U-85F"])[1] == []


def test_synth_report_cli_fails_over_capacity(monkeypatch, capsys, tmp_path):
    """The make target's entry point: table, one line per overshoot, exit status 1."""
    def fake_synthesize(verilog, target, log=None):
        return {"LUT": 900, "FF": 2000, "DSP": 256, "BRAM": 0, "URAM": 0, "other": {}}
    monkeypatch.setattr(flows, "synthesize", fake_synthesize)
    monkeypatch.setattr(flows, "BUILD_DIR", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        flows.main(["synth-report", "--board", "orangecrab", "--unit", "systolic_4x4"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "does not fit: DSP: needs 256, device LFE5U-85F has 156 (over by 100)" in out
    entry = json.loads((tmp_path / "synth-report" / "orangecrab.json").read_text())["systolic_4x4"]
    assert entry["fits"] is False and entry["errors"] == [
        "DSP: needs 256, device LFE5U-85F has 156 (over by 100)"]


@pytest.mark.parametrize("name", ["orangecrab", "u280"])
def test_synth_report_of_the_selftest_top(name, tmp_path):
    """The board top as it goes on the part (I/O buffers included) fits; on the U280, with
    no LED or UART, the kept status nets still hold the whole self-test in place."""
    report, errors = synth_report(name, out_dir=tmp_path)
    used = {row["resource"]: row["used"] for row in report["resources"]}
    assert errors == [] and report["fits"]
    assert used["DSP"] == 16 and 500 < used["LUT"] < 4000 and used["FF"] > 1000


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


def test_status_line_text():
    dut = StatusLine()
    lines = []

    async def bench(ctx):
        for passed, cycles in ((1, 0x6A), (0, 0xDEADBEEF)):
            ctx.set(dut.passed, passed)
            ctx.set(dut.cycles, cycles)
            ctx.set(dut.done, 1)
            text = bytearray()
            cycle = 0
            while len(text) < StatusLine.LENGTH:
                ctx.set(dut.o.ready, cycle % 3 != 1)         # back-pressure every third cycle
                cycle += 1
                _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                      dut.o.payload)
                if valid and ready:
                    text.append(payload)
            ctx.set(dut.done, 0)
            await ctx.tick()
            assert not ctx.get(dut.o.valid)
            lines.append(bytes(text))

    _run(dut, bench, 200)
    assert lines == [b"PASS 0000006a\r\n", b"FAIL deadbeef\r\n"]


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
    layout = result_layout(2)
    good, bad = unpack(layout, v.expected[0]), unpack(layout, v.corrupted(0).expected[0])
    assert bad["acc"][0] == good["acc"][0] + 1 and bad["acc"][1] == good["acc"][1]
    assert bad["last"] == good["last"] and v.corrupted(0).expected[1:] == v.expected[1:]


@pytest.mark.slow
def test_over_capacity_unit_fails_synth_report():
    # A 16 x 16 array needs 256 multipliers; the ECP5-85F has 156.
    res = subprocess.run([sys.executable, "-m", "platforms.flows", "synth-report",
                          "--board", "ulx3s", "--unit", "systolic_16x16"],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert "does not fit: DSP: needs 256, device LFE5U-85F has 156 (over by 100)" in res.stdout


@pytest.mark.slow
def test_ulx3s_bitstream(tmp_path):
    report = flows.bitstream("ulx3s", tmp_path)
    assert (tmp_path / "selftest.bit").stat().st_size > 100_000
    clock = report["fmax_mhz"]["clk25"]
    assert clock["constraint"] == 25 and clock["achieved"] > 25
    assert report["utilization"]["MULT18X18D"]["used"] == 16
    assert np.isfinite(report["wall_s"])
