"""The accelerator top in the Amaranth simulator: whole tiny frames against the reference
executor (bit for bit) and the schedule model (cycle for cycle), and its construction errors.
The fault runs (named error codes, a start while busy, a reset mid-frame) are in Verilator:
tests/test_sim_top.py."""

import dataclasses

import numpy as np
import pytest

from golden.config import tiny_test
from golden.float_model import random_image
from golden.int_model import pixels_from_image
from golden.ptq import calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.schedule import schedule
from rtl.config import AttentionArray, preset
from rtl.top.accelerator import Accelerator
from sim.frame import run_pysim


def _tiny(attention="log2"):
    cfg = tiny_test()
    images = [random_image(cfg, seed=n) for n in range(3)]
    return (calibrate(cfg, init_weights(cfg, seed=2), images[:2], attention=attention),
            pixels_from_image(cfg, images[2]))


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


@pytest.mark.parametrize("name, task, codes", [("zcu102", 0, "log2"), ("zcu102", 1, "log2"),
                                               ("ecp5_85f", 1, "log2"), ("ecp5_85f", 0, "mant4")])
def test_tiny_frame_bit_and_cycle_exact(tiny, name, task, codes):
    qp, pixels = tiny if codes == "log2" else _tiny(codes)
    config = preset(name).fitted(qp.config)
    config = dataclasses.replace(config, attention=dataclasses.replace(config.attention,
                                                                       codes=(codes,)))
    compiled = compile_model(qp, config)
    expected, run = execute(compiled, pixels, task)
    model = schedule(config, run)
    result = run_pysim(compiled, pixels, task, timeout=2 * model.cycles + 1000)
    assert result.error == 0
    assert np.array_equal(result.output, expected)
    assert result.cycles == model.cycles
    # The busy counters count what the schedule model says each engine does.
    assert {k: v for k, v in result.busy.items()} == {k: model.busy[k] for k in result.busy}


@pytest.mark.parametrize("change, message", [
    (dict(weight_store=1 << 20), r"the top streams every weight from DRAM: weight_store must be 0"),
    (dict(attention=AttentionArray(codes=("log2", "sqrt2"))),
     r"the top builds one attention code form, not attention.codes = \('log2', 'sqrt2'\)"),
])
def test_configs_the_top_cannot_build_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        Accelerator(dataclasses.replace(preset("zcu102"), **change))
