"""The accelerator top in the Amaranth simulator: whole tiny frames against the reference
executor (bit for bit) and the schedule model (cycle for cycle), and its construction errors."""

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


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_test()
    images = [random_image(cfg, seed=n) for n in range(3)]
    return calibrate(cfg, init_weights(cfg, seed=2), images[:2]), pixels_from_image(cfg, images[2])


@pytest.mark.parametrize("name, task", [("zcu102", 0), ("zcu102", 1), ("ecp5_85f", 1)])
def test_tiny_frame_bit_and_cycle_exact(tiny, name, task):
    qp, pixels = tiny
    config = preset(name).fitted(qp.config)
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
