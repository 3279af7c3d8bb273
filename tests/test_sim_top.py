"""The accelerator top in Verilator: whole frames through the simulation DRAM's backdoor.

Every run is checked against the reference executor (bit for bit, which equals the
integer model) and the schedule model (cycle for cycle).
"""

import dataclasses

import numpy as np
import pytest

from golden.config import m3vit_tiny, tiny_test
from golden.datasets import dataset
from golden.float_model import random_image
from golden.int_model import int_classify, pixels_from_image
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.schedule import schedule
from rtl.config import preset
from rtl.control.registers import ERRORS
from sim.frame import CHANNELS, run_verilator, run_with_stalls, slverr, stall


def _check(compiled, runs):
    results, _ = run_verilator(compiled, runs)
    for (pixels, task), result in zip(runs, results):
        expected, run = execute(compiled, pixels, task)
        assert result.error == 0
        assert np.array_equal(result.output, expected), f"task {task}"
        assert result.cycles == schedule(compiled.config, run).cycles, f"task {task}"
    return results


def _seeded(cfg, seed=2):
    images = [random_image(cfg, seed=n) for n in range(3)]
    qp = calibrate(cfg, init_weights(cfg, seed=seed), images[:2])
    return qp, pixels_from_image(cfg, images[2])


# The tests that run tiny_test on the zcu102 preset in Verilator (also the whole flow of
# tests/test_moevit_cli.py) share a pytest-xdist worker, and so one build.
@pytest.mark.xdist_group("zcu102_tiny_test_verilator")
def test_tiny_test_both_tasks():
    qp, pixels = _seeded(tiny_test())
    compiled = compile_model(qp, preset("zcu102").fitted(qp.config))
    _check(compiled, [(pixels, 0), (pixels, 1)])


#: Test images of the mnist5k frames: a dozen keeps the default suite within its time.
IMAGES = 12


def test_mnist5k_classifies_exactly_like_the_integer_model():
    data = dataset("mnist5k")
    cfg = data.config()
    images, _ = data.load_split("calibration")
    qp = calibrate(cfg, data.load_weights(), images[:-(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens)],
                   method="dual_stage")
    test, labels = data.load_split("test")
    pixels = [pixels_from_image(cfg, image) for image in test[:IMAGES]]
    # On the ecp5_85f preset: its top builds in a fraction of the zcu102 top's time (the
    # test above builds that one), and the frames run in seconds either way.
    compiled = compile_model(qp, preset("ecp5_85f").fitted(cfg))
    results = _check(compiled, [(p, 0) for p in pixels])
    predicted = [int(np.argmax(r.output)) for r in results]
    assert predicted == [int(np.argmax(int_classify(qp, p, 0))) for p in pixels]
    assert np.mean(np.array(predicted) == labels[:IMAGES]) > 0.8


@pytest.mark.slow
def test_m3vit_tiny_both_tasks_at_zcu102():
    qp, pixels = _seeded(m3vit_tiny())
    compiled = compile_model(qp, preset("zcu102"))
    _check(compiled, [(pixels, 0), (pixels, 1)])


@pytest.mark.parametrize("ports", [1, 2])
def test_random_stalls_on_every_axi_channel(ports):
    # cocotbext-axi's AXI RAMs pause every channel of every port at random: the frames still
    # come out bit for bit (the cycles are longer than the model's, which assumes no stall).
    qp, pixels = _seeded(tiny_test())
    config = preset("ecp5_85f").fitted(qp.config)
    config = dataclasses.replace(config, axi=dataclasses.replace(config.axi, ports=ports))
    compiled = compile_model(qp, config)
    runs = [(pixels, 0), (pixels, 1)]
    for (px, task), result in zip(runs, run_with_stalls(compiled, runs, pause=0.3)):
        expected, run = execute(compiled, px, task)
        assert result.error == 0
        assert np.array_equal(result.output, expected)
        assert result.cycles > schedule(config, run).cycles


def test_long_stalls_and_error_responses_on_the_axi_channels():
    # cocotbext-axi's AXI RAM, no random pauses: first a clean frame, then a 10,000-cycle
    # stall of each channel from mid-frame (the frame comes out right, later), then SLVERR
    # on an R beat and on a B response (the named error code, then a right frame).
    qp, pixels = _seeded(tiny_test())
    compiled = compile_model(qp, preset("ecp5_85f").fitted(qp.config))
    expected, run = execute(compiled, pixels, 0)
    middle = schedule(compiled.config, run).cycles // 2
    faults = ([None] + [stall(channel, middle, 10_000) for channel in CHANNELS]
              + [slverr("r", 200), None, slverr("b", 5), None])
    results = run_with_stalls(compiled, [(pixels, 0)] * len(faults), pause=0.0, faults=faults)
    clean = results[0]
    assert clean.error == 0 and np.array_equal(clean.output, expected)
    for channel, result in zip(CHANNELS, results[1:]):
        assert result.error == 0, channel
        assert np.array_equal(result.output, expected), channel
        assert result.cycles > clean.cycles, channel          # the stall was felt
    # Reads run all through a frame: a stall of AR or R holds it up (by less than the stall:
    # the units go on with what is on chip).
    for channel in ("ar", "r"):
        assert results[1 + CHANNELS.index(channel)].cycles > clean.cycles + 5_000, channel
    errors = [r.error for r in results[1 + len(CHANNELS):]]
    assert errors == [ERRORS["read_response"], 0, ERRORS["write_response"], 0]
    for result in results[1 + len(CHANNELS):][1::2]:
        assert np.array_equal(result.output, expected)
