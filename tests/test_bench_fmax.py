"""bench.fmax without nextpnr's hours: the Fmax read from its log, and the placement-only
run it asks for by default."""

import json
import subprocess

import pytest

import bench.fmax as fmax
from golden.config import tiny_test
from rtl.config import preset

LOG = """Info: Max frequency for clock 'clk': 19.85 MHz (FAIL at 50.00 MHz)
Info: Routing globals...
Info: Max frequency for clock 'clk': 23.10 MHz (FAIL at 50.00 MHz)
"""


def test_placement_fmax_takes_the_last_estimate():
    assert fmax.placement_fmax(LOG) == {"clk": 23.10}
    assert fmax.placement_fmax(LOG.splitlines()[0]) == {"clk": 19.85}
    assert fmax.placement_fmax("Info: Program finished normally.") == {}


@pytest.mark.parametrize("route", [False, True])
def test_place_and_route_stops_after_placement_unless_asked(tmp_path, monkeypatch, route):
    calls = []

    def run(args, stdout, stderr, cwd):
        calls.append(args)
        stdout.write(LOG.splitlines()[0] + "\n")
        (cwd / "nextpnr.json").write_text(json.dumps({
            "fmax": {"clk": {"achieved": 21.5}} if route else {},
            "utilization": {"LUT4": {"used": 10, "available": 100}}}))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(fmax.subprocess, "run", run)
    monkeypatch.setattr(fmax, "synthesize", lambda *a, **k: {"LUT": 10, "other": {}})
    config = preset("ecp5_85f").fitted(tiny_test())
    report = fmax.place_and_route(config, tmp_path, 50.0, route=route)
    assert ("--no-route" in calls[0]) != route
    assert ("--router" in calls[0]) == route
    assert report["stage"] == ("routed" if route else "placement estimate")
    assert report["fmax_mhz"] == ({"clk": 21.5} if route else {"clk": 19.85})
    assert report["utilization"]["LUT4"]["percent"] == 10.0
    assert json.loads((tmp_path / "report.json").read_text()) == report


def _cell(kind, ins, outs):
    return {"type": kind, "port_directions": {**{p: "input" for p in ins},
                                              **{p: "output" for p in outs}},
            "connections": {**ins, **outs}}


def test_longest_paths_rank_chains_by_nominal_delay():
    """Two parts: a flip-flop through two LUTs into a flip-flop of ``core.a``; a flip-flop
    through a multiplier into one of ``core.b``, which is the longer."""
    d = fmax.DELAYS
    cells = {
        "core.a.x_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [9], "CLK": [1]}, {"Q": [2]}),
        "core.a.$1_LUT4_Z": _cell("LUT4", {"A": [2], "B": [2]}, {"Z": [3]}),
        "core.a.$2_LUT4_Z": _cell("LUT4", {"A": [3]}, {"Z": [4]}),
        "core.a.y_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [4], "CLK": [1]}, {"Q": [5]}),
        "core.b.p_MULT18X18D": _cell("MULT18X18D", {"A0": [2], "CLK0": [1]}, {"P0": [6]}),
        "core.b.z_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [6], "CLK": [1]}, {"Q": [7]}),
    }
    netnames = {"core.a.x": {"bits": [2]}, "core.a.s": {"bits": [3]}, "core.a.t": {"bits": [4]},
                "core.b.p": {"bits": [6]}}
    paths = fmax.longest_paths({"modules": {"top": {"cells": cells, "netnames": netnames}}})
    assert paths == [
        (round(d["TRELLIS_FF"] + d["MULT18X18D"], 1), "core.b", ["core.a.x", "core.b.p"]),
        (round(d["TRELLIS_FF"] + 2 * d["LUT4"], 1), "core.a",
         ["core.a.x", "core.a.s", "core.a.t"]),
    ]
    assert fmax.longest_paths({"modules": {"top": {"cells": cells, "netnames": netnames}}},
                              count=1) == paths[:1]


def test_longest_paths_follow_carry_chains_and_refuse_loops():
    """A flip-flop into a two-cell carry chain (operand to carry out, carry in to sum) into
    a flip-flop; a LUT RAM's read address is no endpoint. Then a LUT loop: an error."""
    d = fmax.DELAYS
    cells = {
        "core.c.x_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [9], "CLK": [1]}, {"Q": [2]}),
        "core.c.$1_CCU2C": _cell("CCU2C", {"A0": [2], "CIN": [8]}, {"S0": [10], "COUT": [3]}),
        "core.c.$2_CCU2C": _cell("CCU2C", {"A0": [9], "CIN": [3]}, {"S0": [4], "COUT": [11]}),
        "core.c.y_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [4], "CLK": [1]}, {"Q": [5]}),
        "core.d.ram_TRELLIS_DPR16X4": _cell("TRELLIS_DPR16X4", {"RAD0": [4], "WCK": [1]},
                                            {"DO0": [12]}),
    }
    netnames = {"core.c.x": {"bits": [2]}, "core.c.carry": {"bits": [3]},
                "core.c.sum": {"bits": [4]}}
    netlist = {"modules": {"top": {"cells": cells, "netnames": netnames}}}
    assert fmax.longest_paths(netlist) == [
        (round(d["TRELLIS_FF"] + d["sum"] + d["sum"], 1), "core.c",
         ["core.c.x", "core.c.carry", "core.c.sum"])]
    cells["core.e.$3_LUT4_Z"] = _cell("LUT4", {"A": [13]}, {"Z": [14]})
    cells["core.e.$4_LUT4_Z"] = _cell("LUT4", {"A": [14]}, {"Z": [13]})
    with pytest.raises(ValueError, match="combinational loop through 2 nets"):
        fmax.longest_paths(netlist)


def test_a_placement_run_without_an_estimate_is_an_error(tmp_path, monkeypatch):
    def run(args, stdout, stderr, cwd):
        stdout.write("Info: Program finished normally.\n")
        (cwd / "nextpnr.json").write_text(json.dumps({"fmax": {}, "utilization": {}}))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(fmax.subprocess, "run", run)
    monkeypatch.setattr(fmax, "synthesize", lambda *a, **k: {"LUT": 10, "other": {}})
    with pytest.raises(RuntimeError, match="no Fmax in .*nextpnr.log"):
        fmax.place_and_route(preset("ecp5_85f").fitted(tiny_test()), tmp_path, 50.0)
