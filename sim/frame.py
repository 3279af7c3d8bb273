"""Whole frames through the RTL top: the accelerator and a simulation DRAM in one design.

:class:`FrameHarness` is :class:`rtl.top.accelerator.Accelerator` with an
:class:`sim.axi_memory.AxiMemory` on its AXI ports, holding a compiled DRAM image
(:class:`moevit.compiler.CompiledModel`); only the control port is left for the
testbench. Both runners drive it the way a host driver does (arguments, ap_start,
wait for ap_done, read the status) and return the output tensor, the cycle count
and the error code: :func:`run_pysim` in the Amaranth simulator (small models),
:func:`run_verilator` in Verilator under cocotb with the image loaded through the
memory's backdoor and no per-cycle Python while a frame runs (whole M3ViT-tiny
frames; several runs share one build and one simulation).
"""

from dataclasses import dataclass

import hashlib
import json
import time

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from moevit.driver import DriverTimeout, execute_async, run_sequence
from moevit.images import bytes_to_beats
from moevit.program import program_dram_bytes
from rtl.bus.axi import lite_signature
from rtl.top.accelerator import Accelerator

from .axi_lite import lite_read, lite_write
from .axi_memory import RAM_SOURCE, AxiMemory
from .runner import run_cocotb
from .verilog import design_dir

__all__ = ["FrameHarness", "FrameResult", "PysimHost", "CHANNELS", "stall", "slverr", "arguments",
           "simulate", "run_pysim", "run_verilator", "run_with_stalls"]


class FrameHarness(wiring.Component):
    """The top and its DRAM (see the module docstring).

    Members
    -------
    s_axi_control : In(lite_signature())
    interrupt : Out(1)
    dump : In(1)
        With the backdoor memory (``words`` None): dump the output slots.

    The domain's reset resets the top and the memory's AXI side (as a kernel's ap_rst_n
    reaches the kernel and its interconnect); the memory keeps its contents.
    """

    def __init__(self, config, depth, words=None):
        self.config = config
        self.top = Accelerator(config)
        backdoor = words is None
        self.memory = AxiMemory(config.axi, depth, () if backdoor else words, backdoor=backdoor)
        super().__init__({"s_axi_control": In(lite_signature()), "interrupt": Out(1),
                          **({"dump": In(1)} if backdoor else {})})

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = self.top
        m.submodules.memory = self.memory
        wiring.connect(m, wiring.flipped(self.s_axi_control), self.top.s_axi_control)
        m.d.comb += self.interrupt.eq(self.top.interrupt)
        for p in range(self.config.axi.ports):
            wiring.connect(m, getattr(self.top, f"m_axi{p}"), getattr(self.memory, f"s{p}"))
        if "dump" in self.signature.members:
            m.d.comb += self.memory.dump.eq(self.dump)
        return m


def arguments(image, task, frames=1):
    """The kernel arguments of a compiled image at address 0: ``{name: value}``."""
    return {"program": image.region("program").offset, "model": 0,
            "input": image.region("input").offset, "output": image.region("output").offset,
            "task": task, "frames": frames}


@dataclass
class FrameResult:
    """What the host reads back after a run."""
    output: np.ndarray
    cycles: int
    error: int
    busy: dict
    ignored_starts: int


class PysimHost:
    """The host's side of an Amaranth-simulator testbench of a :class:`FrameHarness` holding
    ``image`` (a :class:`moevit.program.DramImage`): register access for
    :func:`moevit.driver.execute_async` (``read``, ``write``, ``wait``), the simulated DRAM's
    output (``output``) and :meth:`run`, the driver sequence of one frame."""

    def __init__(self, ctx, dut, compiled, image):
        self.ctx, self.dut, self.compiled, self.image = ctx, dut, compiled, image
        self.bus = dut.s_axi_control

    async def read(self, offset):
        return await lite_read(self.ctx, self.bus, offset)

    async def write(self, offset, word):
        await lite_write(self.ctx, self.bus, offset, word)

    async def wait(self, timeout):
        """Until the interrupt (ap_done); it stays set until ISR is written."""
        for _ in range(-(-timeout // 100)):
            await self.ctx.tick().repeat(100)
            if self.ctx.get(self.dut.interrupt):
                return
        raise DriverTimeout(f"no ap_done within {timeout} cycles")

    def output(self, offset):
        """The output tensor, read from the simulated DRAM at ``offset``."""
        region = self.image.region("output")
        size = self.compiled.config.axi.data_bytes
        storage = self.dut.memory.storage_data
        raw = b"".join(self.ctx.get(storage[offset // size + n]).to_bytes(size, "little")
                       for n in range(region.size // size))
        out = self.image.copy()
        out.write(region.offset, raw)
        return self.compiled.read_output(out)

    async def run(self, values, timeout):
        """The driver sequence (:func:`moevit.driver.run_sequence`): the
        :class:`FrameResult`, its output read at the ``output`` argument."""
        status = await execute_async(run_sequence(values, timeout), self)
        return FrameResult(self.output(values["output"]), status.cycles, status.code, status.busy,
                           status.ignored_starts)


def simulate(compiled, image, bench):
    """Simulate a :class:`FrameHarness` of ``image`` running ``await bench(host)``."""
    axi = compiled.config.axi
    dut = FrameHarness(compiled.config, len(image.data) // axi.data_bytes,
                       bytes_to_beats(bytes(image.data), axi.data_bits))

    async def testbench(ctx):
        await bench(PysimHost(ctx, dut, compiled, image))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def run_pysim(compiled, pixels, task, timeout=2_000_000):
    """One frame of ``compiled`` on ``pixels`` for ``task`` in the Amaranth simulator."""
    image = compiled.with_input(pixels)
    result = []

    async def bench(host):
        result.append(await host.run(arguments(image, task), timeout))

    simulate(compiled, image, bench)
    return result[0]


def _hex(raw, data_bytes):
    words = np.frombuffer(bytes(raw), np.uint8).reshape(-1, data_bytes)[:, ::-1]
    return "\n".join(row.tobytes().hex() for row in words) + "\n"


def _unhex(text, data_bytes):
    rows = [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith(("//", "@"))]
    return b"".join(bytes.fromhex(r.zfill(2 * data_bytes))[::-1] for r in rows)


def _run_image(compiled, runs, timeout):
    """The DRAM image of ``runs`` (:meth:`moevit.compiler.CompiledModel.batch`): its bytes,
    the output slots' offsets and size, and each run's arguments and timeout."""
    if not runs:
        raise ValueError("runs must hold at least one (pixels, task)")
    image, arguments = compiled.batch(runs)
    out_size = compiled.image.region("output").size
    specs = [{"arguments": a, "timeout": timeout} for a in arguments]
    return image.data, [a["output"] for a in arguments], out_size, specs


def _design_key(config):
    return f"{config.name}-{hashlib.sha256(config.to_json().encode()).hexdigest()[:10]}"


#: The least depth (words) of the simulated DRAM of :func:`run_verilator`. The depth is a
#: build parameter: with this floor, the batches a small model runs (one frame, two, a
#: dozen) share one Verilator build of a config.
MIN_DEPTH = 1 << 17

#: The keys of a fault of :func:`run_verilator`.
FAULT_KEYS = frozenset({"program", "arguments", "busy_start", "reset"})


def run_verilator(compiled, runs, timeout=None, log_dir=None, faults=None):
    """Runs of ``compiled`` in Verilator: ``runs`` is a list of ``(pixels, task)``.

    The DRAM image gets one input and one output slot per run after the compiled
    image; the runs go one after the other in one simulation. Returns a list of
    :class:`FrameResult` (their ``busy`` includes ``wall_s``, the simulation time of
    the frame) and the build + simulation wall time. ``log_dir``: where the Verilator
    build and simulation logs go instead of the terminal. The simulated memory has a
    power-of-two depth of at least :data:`MIN_DEPTH` words, so batches of other sizes
    reuse the build.

    ``faults``: one dict or None per run, for the fault tests. Its keys, all optional:
    ``"program"``, plain program bytes (:meth:`moevit.program.Program.to_bytes`, or a
    corrupted copy) the run executes instead, placed after the slots; ``"arguments"``,
    kernel arguments that replace the run's; ``"busy_start"``, a cycle count: a second
    ap_start is written that many cycles after the run's; ``"reset"``, a cycle count: the
    design's reset is pulsed that many cycles after the start and the run ends there (its
    status is read after the reset).
    """
    config, axi = compiled.config, compiled.config.axi
    base = compiled.image
    data, outputs, out_size, specs = _run_image(compiled, runs, timeout or 50_000_000)
    data = bytearray(data)
    for spec, fault in zip(specs, faults or []):
        fault = dict(fault or {})
        if set(fault) - FAULT_KEYS:
            raise ValueError(f"faults: unknown keys {sorted(set(fault) - FAULT_KEYS)}; "
                             f"allowed: {', '.join(sorted(FAULT_KEYS))}")
        if "program" in fault:
            data += bytes(-len(data) % base.align)
            spec["arguments"]["program"] = len(data)
            data += program_dram_bytes(fault.pop("program"), axi)
        spec["arguments"].update(fault.pop("arguments", {}))
        spec["actions"] = fault
    depth = max(1 << (len(data) // axi.data_bytes - 1).bit_length(), MIN_DEPTH)
    data = bytes(data).ljust(depth * axi.data_bytes, b"\0")
    params = {"config": _design_key(config), "words": depth}
    folder = design_dir("frame", params)
    (folder / "image.hex").write_text(_hex(data, axi.data_bytes))
    dump, result = folder / "outputs.hex", folder / "result.json"
    spec = {"result": str(result), "runs": specs}
    first = outputs[0] // axi.data_bytes
    last = (outputs[-1] + out_size) // axi.data_bytes - 1
    start = time.perf_counter()
    run_cocotb("frame", params, FrameHarness(config, depth), "sim.tb_frame",
               env={"TB_SPEC": json.dumps(spec)}, sources=[RAM_SOURCE],
               plusargs=[f"+image={folder / 'image.hex'}", f"+dump={dump}",
                         f"+dump_first={first}", f"+dump_last={last}"], log_dir=log_dir)
    wall = time.perf_counter() - start
    raw = _unhex(dump.read_text(), axi.data_bytes)
    out = []
    for k, status in enumerate(json.loads(result.read_text())):
        if "timeout" in status:
            raise DriverTimeout(f"frame {k}: {status['timeout']}")
        image = base.copy()
        at = outputs[k] - outputs[0]
        image.write(image.region("output").offset, raw[at:at + out_size])
        s = status["status"]
        busy = dict(s["busy"], wall_s=status["wall_s"])
        out.append(FrameResult(compiled.read_output(image), s["cycles"], s["code"], busy,
                               s["ignored_starts"]))
    return out, wall


#: Channels of an AXI4 master port, as :func:`run_with_stalls` names them in faults.
CHANNELS = ("aw", "w", "b", "ar", "r")


def stall(channel, after, cycles, port=0):
    """A fault for :func:`run_with_stalls`: ``channel`` of ``port`` stalls (the memory's
    side holds READY or VALID low) for ``cycles`` cycles from cycle ``after`` of the run."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, not {channel!r}")
    return {"kind": "stall", "channel": channel, "port": port, "after": after, "cycles": cycles}


def slverr(channel, after, port=0):
    """A fault for :func:`run_with_stalls`: the R beat number ``after`` (``channel="r"``) or
    the B response of the burst holding write beat number ``after`` (``"b"``) of ``port``
    answers SLVERR."""
    if channel not in ("r", "b"):
        raise ValueError(f"channel must be 'r' or 'b' (the response channels), not {channel!r}")
    return {"kind": "slverr", "channel": channel, "port": port, "after": after}


def run_with_stalls(compiled, runs, pause=0.3, seed=1, timeout=None, faults=None):
    """Runs of ``compiled`` on the bare top in Verilator against cocotbext-axi's AXI RAMs with
    random pauses (a share ``pause`` of the cycles) on every channel: the protocol test.
    ``faults``: one :func:`stall`, :func:`slverr` or None per run.
    Returns the :class:`FrameResult` of each run."""
    config, axi = compiled.config, compiled.config.axi
    base = compiled.image
    data, _, out_size, specs = _run_image(compiled, runs, timeout or 5_000_000)
    for spec, fault in zip(specs, faults or []):
        spec["fault"] = fault
    key = _design_key(config)
    folder = design_dir("stalls", {"config": key})
    (folder / "image.bin").write_bytes(bytes(data))
    result = folder / "result.json"
    spec = {"image": str(folder / "image.bin"), "size": 1 << (len(data) - 1).bit_length(),
            "ports": axi.ports, "pause": pause, "seed": seed, "result": str(result),
            "output_bytes": out_size, "runs": specs}
    run_cocotb("stalls", {"config": key}, Accelerator(config),
               "sim.tb_axi_stalls", env={"TB_SPEC": json.dumps(spec)}, log_dir=folder / "logs")
    out = []
    for k, entry in enumerate(json.loads(result.read_text())):
        image = base.copy()
        sub = out_size // axi.ports              # one port's sub-region of the output
        raw = bytearray(out_size)
        for p, part in enumerate(entry["outputs"]):
            chunk = bytes.fromhex(part)
            raw[p * sub:(p + 1) * sub] = chunk[p * sub:(p + 1) * sub]
        image.write(image.region("output").offset, bytes(raw))
        s = entry["status"]
        out.append(FrameResult(compiled.read_output(image), s["cycles"], s["code"], s["busy"],
                               s["ignored_starts"]))
    return out
