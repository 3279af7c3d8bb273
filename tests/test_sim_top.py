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
from golden.int_model import QuantParams, int_classify, pixels_from_image
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.program import WORD_BYTES, Instruction, Program
from moevit.schedule import schedule
from rtl.config import preset
from rtl.control.isa import Opcode, Queue
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


# The tests that run tiny_test on the ecp5_85f preset in Verilator (also the whole flow of
# tests/test_moevit_cli.py) share a pytest-xdist worker, and so one build. (The zcu102
# preset's tiny_test frames run in the Amaranth simulator, tests/test_rtl_top.py; its
# Verilator build took four minutes of the default suite.)
@pytest.mark.xdist_group("ecp5_tiny_test_verilator")
def test_tiny_test_both_tasks():
    qp, pixels = _seeded(tiny_test())
    compiled = compile_model(qp, preset("ecp5_85f").fitted(qp.config))
    _check(compiled, [(pixels, 0), (pixels, 1)])


@pytest.mark.xdist_group("ecp5_tiny_test_verilator")
def test_a_dropped_token_or_a_wrong_requant_constant_fails_the_frame_check():
    """The checks of a frame (output and cycles equal to the models) catch a broken
    variant: the store's token dropped (the output is stored before the frame ends), the
    load LOOP's (experts loaded before the routing), one requantizer multiplier off by one
    in the DRAM image. Each broken frame follows a frame of another image, so that no
    buffer or routing table left by an identical frame can hide it."""
    cfg = tiny_test()
    qp, pixels = _seeded(cfg)
    other = pixels_from_image(cfg, random_image(cfg, seed=1))
    config = preset("ecp5_85f").fitted(cfg)
    compiled = compile_model(qp, config)
    expected, run = execute(compiled, pixels, 0)
    model = schedule(config, run).cycles

    def dropped(queue, flag):
        stream = list(compiled.program.streams[queue])
        k = next(n for n, ins in enumerate(stream) if getattr(ins, flag))
        stream[k] = dataclasses.replace(stream[k], **{flag: False})
        return Program({**compiled.program.streams, queue: tuple(stream)},
                       compiled.program.input_bytes, compiled.program.output_bytes).to_bytes()

    mult = qp["blocks.0.attn.proj.mult"].copy()
    mult[0] += 1
    wrong = compile_model(QuantParams(cfg, {**qp.tensors, "blocks.0.attn.proj.mult": mult}),
                          config)
    results, _ = run_verilator(compiled, [(other, 0), (pixels, 0)] * 2, faults=[
        None, {"program": dropped(Queue.STORE, "pop_prev")},
        None, {"program": dropped(Queue.LOAD, "pop_next")}])
    (_, constant), _ = run_verilator(wrong, [(other, 0), (pixels, 0)])
    broken = {"store token": results[1], "loop token": results[3], "constant": constant}
    for name, result in broken.items():
        assert result.error == 0, name
        assert not (np.array_equal(result.output, expected) and result.cycles == model), name
    assert not np.array_equal(broken["store token"].output, expected)
    assert not np.array_equal(broken["constant"].output, expected)
    assert broken["constant"].cycles == model


#: Test images of the mnist5k frames: a dozen keeps the default suite within its time.
IMAGES = 12
#: The mnist5k frames and the fault runs share one build of the ecp5_85f top, and so a
#: pytest-xdist worker.
ECP5_MNIST5K = pytest.mark.xdist_group("ecp5_mnist5k_verilator")


@pytest.fixture(scope="session")
def mnist5k():
    """The trained study model on the ``ecp5_85f`` preset: its top builds in a fraction of
    the zcu102 top's time, and its frames run in seconds.
    The watchdog is 16,384 cycles (the preset's is 2**20), so that the fault test's
    watchdog run is short; no instruction of a frame comes near it."""
    data = dataset("mnist5k")
    cfg = data.config()
    images, _ = data.load_split("calibration")
    qp = calibrate(cfg, data.load_weights(), images[:-(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens)],
                   method="dual_stage")
    test, labels = data.load_split("test")
    config = dataclasses.replace(preset("ecp5_85f").fitted(cfg), watchdog=1 << 14)
    return qp, compile_model(qp, config), test[:IMAGES], labels[:IMAGES]


@ECP5_MNIST5K
def test_mnist5k_classifies_exactly_like_the_integer_model(mnist5k):
    qp, compiled, images, labels = mnist5k
    pixels = [pixels_from_image(qp.config, image) for image in images]
    results = _check(compiled, [(p, 0) for p in pixels])
    predicted = [int(np.argmax(r.output)) for r in results]
    assert predicted == [int(np.argmax(int_classify(qp, p, 0))) for p in pixels]
    assert np.mean(np.array(predicted) == labels) > 0.8


def _fault_programs(program):
    """Broken programs (plain bytes) by the fault they raise."""
    code = program.to_bytes()

    def rebuilt(queue, stream):
        return Program({**program.streams, queue: tuple(stream)}, program.input_bytes,
                       program.output_bytes).to_bytes()

    opcode = bytearray(code)                   # the compute stream's 3rd word gets opcode 15
    at = WORD_BYTES * (1 + len(program.streams[Queue.LOAD]) + 2)
    opcode[at] = (opcode[at] & 0xF0) | 0xF
    header = bytearray(code)                   # the magic word is wrong
    header[0] ^= 0xFF
    loads = list(program.streams[Queue.LOAD])  # the 2nd matrix load reads beyond the memory
    k = [n for n, ins in enumerate(loads) if ins.op == Opcode.LOAD_MATRIX][1]
    loads[k] = dataclasses.replace(loads[k], args=tuple(dict(loads[k].args, offset=1 << 31).items()))
    computes = list(program.streams[Queue.COMPUTE])   # END waits for a token never pushed
    computes[-1] = dataclasses.replace(computes[-1], pop_prev=True)
    sync = Instruction.make(Opcode.SYNC, {"push_next"})   # 256 tokens compute never pops
    end = Instruction.make(Opcode.END)
    tokens = Program({Queue.LOAD: (sync,) * 256 + (end,), Queue.COMPUTE: (end,),
                      Queue.STORE: (end,)}, program.input_bytes, program.output_bytes)
    return {"opcode": bytes(opcode), "header": bytes(header),
            "read_decerr": rebuilt(Queue.LOAD, loads), "watchdog": rebuilt(Queue.COMPUTE, computes),
            "tokens": tokens.to_bytes()}


#: The faults that end a run in a named error code: {fault: ERRORS name}.
NAMED_FAULTS = {"opcode": "opcode", "decerr": "write_response", "watchdog": "watchdog",
                "overlap": "overlap", "read_decerr": "read_response", "tokens": "token",
                "header": "header"}


@pytest.fixture(scope="session")
def fault_outcomes(mnist5k):
    """One simulation: each fault, then a good frame that must be exact in output and
    cycles; returns ``{fault: (its FrameResult, the good frame's)}``."""
    qp, compiled, images, _ = mnist5k
    pixels = pixels_from_image(qp.config, images[0])
    expected, run = execute(compiled, pixels, 0)
    model = schedule(compiled.config, run).cycles
    programs = _fault_programs(compiled.program)
    program_at = compiled.image.region("program").offset
    faults = {**{name: {"program": code} for name, code in programs.items()},
              "overlap": {"arguments": {"output": program_at + 64}},   # output over the program
              "decerr": {"arguments": {"output": 1 << 36}},            # beyond the memory
              "busy_start": {"busy_start": 200},                       # ap_start while running
              "reset": {"reset": model // 2}}                          # reset mid-frame
    names = [*NAMED_FAULTS, "busy_start", "reset"]
    plan = [f for name in names for f in (faults[name], None)]
    results, _ = run_verilator(compiled, [(pixels, 0)] * len(plan), timeout=10 * model,
                               faults=plan)
    for name, good in zip(names, results[1::2]):
        assert good.error == 0, name
        assert np.array_equal(good.output, expected), name
        assert good.cycles == model, name
    return dict(zip(names, zip(results[0::2], results[1::2])))


def test_an_unknown_fault_is_named():
    qp, pixels = _seeded(tiny_test())
    compiled = compile_model(qp, preset("ecp5_85f").fitted(qp.config))
    with pytest.raises(ValueError, match=r"faults: unknown keys \['stall'\]; allowed: "
                                         r"arguments, busy_start, program, reset"):
        run_verilator(compiled, [(pixels, 0)], faults=[{"stall": 5}])


@ECP5_MNIST5K
def test_faults_end_in_a_named_error_then_the_next_frame_is_right(fault_outcomes):
    assert {f: fault_outcomes[f][0].error for f in NAMED_FAULTS} == {
        f: ERRORS[code] for f, code in NAMED_FAULTS.items()}


@ECP5_MNIST5K
def test_a_start_while_busy_is_ignored_and_counted(fault_outcomes):
    fault, _ = fault_outcomes["busy_start"]
    assert fault.error == 0 and fault.ignored_starts == 1


@ECP5_MNIST5K
def test_a_reset_mid_frame_returns_to_idle(fault_outcomes):
    # The next run's driver finds the accelerator idle (it raises DriverBusy otherwise), and
    # that frame is exact (fault_outcomes); the reset cleared the status registers.
    fault, _ = fault_outcomes["reset"]
    assert (fault.error, fault.cycles, fault.ignored_starts) == (0, 0, 0)


@pytest.mark.slow
@ECP5_MNIST5K
def test_resets_at_random_points_of_a_frame(mnist5k):
    # 30 resets at seeded random cycles of a frame, each followed by a frame that must be
    # exact in output and cycles: state a reset leaves behind (the combiner's partial sums
    # were such state) shows up at some point of the frame.
    qp, compiled, images, _ = mnist5k
    pixels = pixels_from_image(qp.config, images[0])
    expected, run = execute(compiled, pixels, 0)
    model = schedule(compiled.config, run).cycles
    points = sorted(int(a) for a in np.random.default_rng(11).integers(10, model, 30))
    plan = [f for a in points for f in ({"reset": a}, None)]
    results, _ = run_verilator(compiled, [(pixels, 0)] * len(plan), timeout=10 * model,
                               faults=plan)
    wrong = [a for a, r in zip(points, results[1::2])
             if r.error or r.cycles != model or not np.array_equal(r.output, expected)]
    assert not wrong, f"frames after a reset at these cycles differ: {wrong}"


@pytest.mark.slow
def test_m3vit_tiny_both_tasks_at_zcu102():
    qp, pixels = _seeded(m3vit_tiny())
    compiled = compile_model(qp, preset("zcu102"))
    _check(compiled, [(pixels, 0), (pixels, 1)])


#: The stall tests of the one-port ecp5_85f top share its build, and so a pytest-xdist worker.
ECP5_STALLS = pytest.mark.xdist_group("ecp5_tiny_test_stalls")


@pytest.mark.parametrize("ports", [pytest.param(1, marks=ECP5_STALLS), 2])
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


@ECP5_STALLS
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
