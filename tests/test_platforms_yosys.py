"""Open synthesis smoke test: a 2x2 array maps each int8 MAC to one DSP on both families."""

import pytest

from platforms.yosys import TARGETS, group_cells, synthesize
from rtl.compute.systolic import SystolicArray
from sim.verilog import emit_verilog


@pytest.mark.parametrize("target", ["ecp5", "xcup"])
def test_one_dsp_per_mac(tmp_path, target):
    vfile = emit_verilog(SystolicArray(2, 2), tmp_path / "top.v")
    cells = synthesize(vfile, target, log=tmp_path / "yosys.log")
    assert cells["DSP"] == 4
    assert cells["FF"] > 0 and cells["LUT"] > 0


def test_grouping_weights_and_leftovers():
    cells = group_cells({"RAMB18E2": 3, "RAMB36E2": 1, "LUT6": 2, "LUT2": 1, "MUXF7": 5}, "xcup")
    assert cells["BRAM"] == 2.5 and cells["LUT"] == 3 and cells["other"] == {"MUXF7": 5}


def test_unknown_target_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"target must be one of {', '.join(TARGETS)}, not 'gw1n'"):
        synthesize(tmp_path / "top.v", "gw1n")


def test_dsp_packing_halves_ultrascale_dsps(tmp_path):
    """Two int8 MACs sharing the row operand fit one DSP48E2 (27 x 18), bit-exact in pysim."""
    counts = {}
    for packing in (False, True):
        array = SystolicArray(2, 4, k_lanes=2, row_broadcast=True, dsp_packing=packing)
        vfile = emit_verilog(array, tmp_path / f"packing_{packing}.v")
        counts[packing] = synthesize(vfile, "xcup")["DSP"]
    assert counts == {False: 16, True: 8}
