"""The driver sequence (polling form) and the runtime's targets and errors."""

import sys

import numpy as np
import pytest

from golden.config import tiny_test
from golden.float_model import random_image
from golden.int_model import pixels_from_image
from golden.ptq import calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.driver import AP_DONE, AP_IDLE, AP_START, DriverBusy, DriverTimeout, decode_status
from moevit.driver import execute as drive
from moevit.driver import run_sequence
from moevit.executor import Execution, execute
from moevit.program import DramImage
from moevit.runtime import Session, TargetError, _Board, as_pixels, open_target
from moevit.schedule import schedule
from rtl.config import BOUNDARY, preset
from rtl.control.isa import Base
from rtl.control.registers import (ARGUMENTS, CONTROL, ERRORS, GIE, IER, ISR, STATUS,
                                   argument_words)

ARGS = {"program": 0x1_0000_0040, "model": 0, "input": 0x2000, "output": 0x3000, "task": 1,
        "frames": 1}


class FakeKernel:
    """Registers of an idle kernel that finishes a run ``polls`` reads of CONTROL after
    ap_start; ``isr`` interrupt bits are pending at the start."""

    def __init__(self, polls, status=None, isr=0, idle=True):
        self.polls, self.isr, self.idle, self.log = polls, isr, idle, []
        self.status = status or {name: 0 for name in STATUS}

    def write(self, offset, word):
        self.log.append(("w", offset, word))
        if offset == ISR:
            self.isr ^= word
        if offset == CONTROL and word & 1:
            self.idle = False

    def read(self, offset):
        self.log.append(("r", offset))
        if offset == CONTROL:
            if self.idle:
                return AP_IDLE
            self.polls -= 1
            if self.polls > 0:
                return 0
            self.idle, self.isr = True, self.isr | 1
            return AP_DONE | AP_IDLE
        if offset == ISR:
            return self.isr
        return next(v for name, v in self.status.items() if STATUS[name] == offset)


def test_polling_driver_writes_arguments_starts_waits_reads_and_acknowledges():
    status = {name: 0 for name in STATUS} | {"cycles": 1234, "error": ERRORS["watchdog"],
                                              "busy_linear": 99}
    kernel = FakeKernel(polls=3, status=status, isr=2)        # a stale ap_ready interrupt
    result = drive(run_sequence(ARGS, timeout=1000), kernel, poll_seconds=0)
    writes = [op[1:] for op in kernel.log if op[0] == "w"]
    assert writes == [(ISR, 2)] + argument_words(ARGS) + [(GIE, 1), (IER, 1), (CONTROL, 1),
                                                           (ISR, 1)]
    reads = [op[1] for op in kernel.log if op[0] == "r"]
    assert reads == [CONTROL, ISR] + [CONTROL] * 3 + list(STATUS.values()) + [ISR]
    assert kernel.isr == 0                                     # nothing left pending
    assert (result.error, result.code, result.cycles, result.ok) == ("watchdog", 4, 1234, False)
    assert result.busy["linear"] == 99
    assert len(argument_words(ARGS)) == sum(-(-b // 32) for _, b in ARGUMENTS.values())


def test_a_busy_kernel_is_not_started_again():
    kernel = FakeKernel(polls=10**9, idle=False)
    with pytest.raises(DriverBusy, match="ap_idle is 0"):
        drive(run_sequence(ARGS, timeout=1000), kernel, poll_seconds=0)
    assert [op for op in kernel.log if op[0] == "w"] == []


def test_polling_driver_times_out_with_a_named_error():
    kernel = FakeKernel(polls=10**9)
    with pytest.raises(DriverTimeout, match="no ap_done within 30 cycles"):
        drive(run_sequence(ARGS, timeout=30), kernel, poll_seconds=0, clock_hz=1e9)


def test_an_unknown_error_code_is_named_as_such():
    values = {name: 0 for name in STATUS} | {"error": 77}
    assert decode_status(values).error == "unknown(77)"


@pytest.fixture(scope="module")
def compiled():
    cfg = tiny_test()
    qp = calibrate(cfg, init_weights(cfg, seed=5), [random_image(cfg, seed=0)])
    return qp, compile_model(qp, preset("zcu102").fitted(cfg))


def test_board_targets_fail_with_one_clear_line_without_their_libraries(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynq", None)
    monkeypatch.setitem(sys.modules, "pyxrt", None)
    with pytest.raises(TargetError, match="target 'zcu102' needs PYNQ"):
        open_target("zcu102")
    with pytest.raises(TargetError, match="target 'u280' needs XRT's Python binding pyxrt"):
        open_target("u280")
    with pytest.raises(TargetError, match="target must be one of sim, zcu102, u280"):
        open_target("vck190")


def test_session_errors(compiled):
    qp, model = compiled
    session = open_target("sim", model.config)
    image = random_image(qp.config, seed=1)
    with pytest.raises(TargetError, match="no model loaded"):
        session.run(image)
    assert session.load(qp).program == model.program          # compiled for the session
    assert session.load(qp) is session.load(qp)               # cached by content hash
    with pytest.raises(ValueError, match=r"task must be in \[0, 1\], got 2"):
        session.run(image, task=2)
    with pytest.raises(TargetError, match="compiled for config 'zcu102', this sim target runs "
                                          "'u280'"):
        open_target("sim", preset("u280").fitted(qp.config)).load(model)


def test_compilation_cache_on_disk(compiled, tmp_path):
    qp, model = compiled
    first = open_target("sim", model.config, cache_dir=tmp_path).load(qp)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and (folders[0] / "manifest.json").is_file()
    again = open_target("sim", model.config, cache_dir=tmp_path).load(qp)
    assert again.image.data == first.image.data and again.program == first.program


def test_images_as_floats_or_codes():
    cfg = tiny_test()
    image = random_image(cfg, seed=2)
    codes = pixels_from_image(cfg, image)
    assert np.array_equal(as_pixels(cfg, image), codes)
    assert np.array_equal(as_pixels(cfg, codes.astype(np.int32)), codes)
    with pytest.raises(ValueError, match=r"pixel codes in \[0, 255\]"):
        as_pixels(cfg, codes.astype(np.int32) + 200)


class ExecutorBoard(_Board):
    """A board whose accelerator is the reference executor behind the register map, and
    whose DRAM buffer sits at a device address far from 0: checks the board glue (the
    arguments offset by the buffer's address, the upload, the output slots)."""

    ADDRESS = 0x8_0000_0000

    def __init__(self, compiled):
        self.compiled, self.registers, self.clock_hz = compiled, self, 1e9
        self.regs, self.done, self.isr, self.released = {}, False, 0, False

    def _upload(self, data):
        self.mem = bytearray(data)
        return self.ADDRESS

    def _download(self, offset, size):
        return bytes(self.mem[offset:offset + size])

    def _release(self):
        self.released = True

    def write(self, offset, word):
        self.regs[offset] = word
        if offset == ISR:
            self.isr ^= word
        if offset == CONTROL and word & AP_START:
            args = {name: sum(self.regs[o + 4 * w] << (32 * w) for w in range(-(-bits // 32)))
                    for name, (o, bits) in ARGUMENTS.items()}
            c = self.compiled
            assert args["program"] - self.ADDRESS == c.image.region("program").offset
            image = DramImage(self.mem, c.image.regions, c.image.align)
            bases = {Base.MODEL: args["model"] - self.ADDRESS,
                     Base.INPUT: args["input"] - self.ADDRESS,
                     Base.OUTPUT: args["output"] - self.ADDRESS}
            run = Execution(c.config, c.program, image, args["task"], bases=bases)
            self.mem[:] = run.image.data
            self.cycles = schedule(c.config, run).cycles
            self.done, self.isr = True, self.isr | 1

    def read(self, offset):
        if offset == CONTROL:
            done, self.done = self.done, False
            return AP_IDLE | (AP_DONE if done else 0)
        if offset == ISR:
            return self.isr
        return self.cycles if offset == STATUS["cycles"] else 0


def test_board_runtime_glue_against_the_reference_executor(compiled):
    qp, model = compiled
    images = [random_image(qp.config, seed=n) for n in range(3)]
    board = ExecutorBoard(model)
    session = Session("zcu102", model.config, board)
    session.load(model)
    frames = session.run(images, task=[0, 1, 1])
    for image, task, frame in zip(images, [0, 1, 1], frames):
        expected, run = execute(model, pixels_from_image(qp.config, image), task)
        assert np.array_equal(frame.output, expected)
        assert frame.cycles == schedule(model.config, run).cycles and frame.error == "none"
    assert board.released and board.isr == 0
    with pytest.raises(ValueError, match="task has 2 entries for 3 images"):
        session.run(images, task=[0, 1])


def test_npy_inputs_land_on_the_hardware_pixel_grid(tmp_path):
    """Off-grid floats go to the codes the hardware sees (round half up), not below them."""
    from moevit.image_files import load_inputs
    cfg = tiny_test()
    batch = np.full((2, cfg.in_chans, *cfg.image_size), 128.75 / 256)
    np.save(tmp_path / "x.npy", batch)
    images = load_inputs(tmp_path / "x.npy", cfg)
    for image, raw in zip(images, batch, strict=True):
        assert np.array_equal(as_pixels(cfg, image), pixels_from_image(cfg, raw))
        assert np.array_equal(image * 256, pixels_from_image(cfg, raw))


def test_batch_slots_keep_the_image_regions_4kb_phase():
    # A slot at another offset within a 4 KB page splits its transfers into other bursts
    # and takes other cycles than the schedule model of the image (found as +16 cycles on
    # the 18th frame of a batch in Verilator). With one port the slots' sizes are not 4 KB
    # multiples (several ports pad each transfer to them).
    cfg = tiny_test()
    qp = calibrate(cfg, init_weights(cfg, seed=5), [random_image(cfg, seed=0)])
    model = compile_model(qp, preset("ecp5_85f").fitted(cfg))
    assert model.image.region("input").size % BOUNDARY
    pixels = pixels_from_image(qp.config, random_image(qp.config, seed=1))
    image, slots = model.batch([(pixels, 0)] * 40)
    image.validate()
    for name in ("input", "output"):
        phase = model.image.region(name).offset % BOUNDARY
        assert {s[name] % BOUNDARY for s in slots} == {phase}
        assert len({s[name] for s in slots}) == 40
    assert image.read(slots[39]["input"], len(model.input_bytes(pixels))) == \
        model.input_bytes(pixels)
