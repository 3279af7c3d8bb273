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
from moevit.images import stripe
from moevit.program import Instruction, Program
from moevit.schedule import schedule
from rtl.config import AttentionArray, preset
from rtl.control.isa import Opcode, Queue
from rtl.control.registers import CONTROL, ERRORS, ISR
from rtl.top.accelerator import Accelerator
from sim.axi_lite import lite_write
from sim.frame import arguments, run_pysim, simulate


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


def _compiled(qp, **change):
    config = dataclasses.replace(preset("zcu102").fitted(qp.config), **change)
    return compile_model(qp, config)


def _with_program(compiled, host, program_bytes):
    """Replace the simulated program with ``program_bytes`` (plain encoding)."""
    axi = compiled.config.axi
    raw = stripe(program_bytes[:16], axi) + stripe(program_bytes[16:], axi)
    host.write_dram(host.image.region("program").offset, raw)


def _faulty(tiny, faults):
    """Run each of ``faults`` then a good frame, one after the other on one simulated
    accelerator; return ``{fault: {"fault": ..., "after": ...}}``."""
    qp, pixels = tiny
    compiled = _compiled(qp, watchdog=512)
    image = compiled.with_input(pixels)
    expected, run = execute(compiled, pixels, 0)
    model = schedule(compiled.config, run).cycles
    good = arguments(image, 0)
    outcomes = {}

    async def bench(host):
        for fault in faults:
            outcomes[fault] = results = {}
            await _inject(fault, results, host)
            results["after"] = await host.run(good, 10 * model)

    async def _inject(fault, results, host):
        if fault == "opcode":                  # the compute stream's 3rd word gets opcode 15
            code = bytearray(compiled.program.to_bytes())
            word = 1 + len(compiled.program.streams[Queue.LOAD]) + 2
            code[16 * word] = (code[16 * word] & 0xF0) | 0xF
            _with_program(compiled, host, bytes(code))
            results["fault"] = await host.run(good, 10 * model)
            _with_program(compiled, host, compiled.program.to_bytes())
        elif fault == "read_decerr":           # the 2nd matrix load reads beyond the memory
            streams = dict(compiled.program.streams)
            stream = list(streams[Queue.LOAD])
            k = [n for n, ins in enumerate(stream) if ins.op == Opcode.LOAD_MATRIX][1]
            args = dict(stream[k].args, offset=1 << 31)
            stream[k] = dataclasses.replace(stream[k], args=tuple(args.items()))
            streams[Queue.LOAD] = tuple(stream)
            _with_program(compiled, host, Program(
                streams, compiled.program.input_bytes, compiled.program.output_bytes).to_bytes())
            results["fault"] = await host.run(good, 10 * model)
            _with_program(compiled, host, compiled.program.to_bytes())
        elif fault == "tokens":                # 256 tokens pushed that compute never pops
            sync = Instruction.make(Opcode.SYNC, {"push_next"})
            end = Instruction.make(Opcode.END)
            streams = {Queue.LOAD: (sync,) * 256 + (end,), Queue.COMPUTE: (end,),
                       Queue.STORE: (end,)}
            _with_program(compiled, host, Program(
                streams, compiled.program.input_bytes, compiled.program.output_bytes).to_bytes())
            results["fault"] = await host.run(good, 10 * model)
            _with_program(compiled, host, compiled.program.to_bytes())
        elif fault == "header":                # the program's magic word is wrong
            code = bytearray(compiled.program.to_bytes())
            code[0] ^= 0xFF
            _with_program(compiled, host, bytes(code))
            results["fault"] = await host.run(good, 10 * model)
            _with_program(compiled, host, compiled.program.to_bytes())
        elif fault == "overlap":               # the output slot overlaps the program
            bad = dict(good, output=good["program"] + 64)
            results["fault"] = await host.run(bad, 10 * model, read_output=False)
        elif fault == "decerr":                # the output lies beyond the memory
            bad = dict(good, output=len(image.data) + 4096)
            results["fault"] = await host.run(bad, 10 * model, read_output=False)
        elif fault == "watchdog":              # compute's END waits for a token never pushed
            streams = dict(compiled.program.streams)
            stream = list(streams[Queue.COMPUTE])
            stream[-1] = dataclasses.replace(stream[-1], pop_prev=True)
            streams[Queue.COMPUTE] = tuple(stream)
            _with_program(compiled, host, Program(
                streams, compiled.program.input_bytes, compiled.program.output_bytes).to_bytes())
            results["fault"] = await host.run(good, 10 * model)
            _with_program(compiled, host, compiled.program.to_bytes())
        elif fault == "busy_start":            # a start written while a frame runs
            await host.write_arguments(good)
            await host.start()
            await host.ctx.tick().repeat(200)
            await lite_write(host.ctx, host.bus, CONTROL, 1)
            await host.wait(10 * model)
            await host.write(ISR, 1)
            results["ignored"] = await host.status("ignored_starts")
        elif fault == "reset":                 # the reset in the middle of a frame
            await host.write_arguments(good)
            await host.start()
            await host.ctx.tick().repeat(model // 2)
            host.ctx.set(host.dut.reset, 1)
            await host.ctx.tick().repeat(2)
            host.ctx.set(host.dut.reset, 0)

    simulate(compiled, image, bench, resettable="reset" in faults)
    for fault, results in outcomes.items():
        assert np.array_equal(results["after"].output, expected), fault
        assert results["after"].error == 0 and results["after"].cycles == model, fault
    return outcomes


#: Faults that end a frame in a named error code.
NAMED_FAULTS = {"opcode": "opcode", "decerr": "write_response", "watchdog": "watchdog",
                "overlap": "overlap", "read_decerr": "read_response", "tokens": "token",
                "header": "header"}


@pytest.fixture(scope="session")
def outcomes():
    """One simulation for the tests below: each fault, then a good frame (exact output and
    cycles, checked by :func:`_faulty`). Session-scoped: a pytest-xdist worker may run
    other modules' tests between these, which would tear a module fixture down."""
    return _faulty(_tiny(), [*NAMED_FAULTS, "busy_start", "reset"])


# The tests of one simulation share a pytest-xdist worker (the fixture runs once).
FAULTS = pytest.mark.xdist_group("pysim_faults")


@FAULTS
def test_faults_end_in_a_named_error_then_the_next_frame_is_right(outcomes):
    assert {f: outcomes[f]["fault"].error for f in NAMED_FAULTS} == {
        f: ERRORS[code] for f, code in NAMED_FAULTS.items()}


@FAULTS
def test_a_start_while_busy_is_ignored_and_counted(outcomes):
    assert outcomes["busy_start"]["ignored"] == 1


@FAULTS
def test_a_reset_mid_frame_returns_to_idle(outcomes):
    assert outcomes["reset"]["after"].error == 0       # and its output and cycles (_faulty)
