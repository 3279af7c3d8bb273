"""The schedule model: DMA rules, a hand-timed program, and the rules on a compiled frame."""

import dataclasses

import numpy as np
import pytest

from golden.config import tiny_test
from golden.float_model import random_image
from golden.int_model import pixels_from_image
from golden.ptq import calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import Execution, execute
from moevit.images import tensor_bytes
from moevit.program import DramImage, Instruction, Program, ProgramError, Region
from moevit.schedule import dma_read, dma_write, schedule
from rtl.compute.linear import LinearConfig, batch_cycles, exp_cycles, image_beats
from rtl.config import LOAD_COMMAND_LATENCY, AcceleratorConfig, AxiPorts, preset
from rtl.control.isa import Base, Buffer, Opcode, Queue

AXI = AxiPorts(data_bits=256, ports=1, burst_beats=16, outstanding=2, read_latency=20,
               write_latency=7)


def test_dma_read_bursts_latency_and_outstanding_limit():
    # One burst: the AR the cycle after the start, data read_latency later, one beat per
    # cycle, the last word out of the port FIFO one cycle after it arrived.
    assert dma_read(AXI, 100, 0, 10) == 100 + 1 + 20 + 10
    # Two bursts in flight: the second streams right behind the first.
    assert dma_read(AXI, 0, 0, 32) == 1 + 20 + 32
    # A third burst waits for the first to finish before its AR.
    assert dma_read(AXI, 0, 0, 48) == max(1 + 20 + 32, (1 + 20 + 16) + 20 + 16)
    one = AxiPorts(data_bits=256, burst_beats=16, outstanding=1, read_latency=20)
    assert dma_read(one, 0, 0, 48) == 1 + 3 * (20 + 16) - 1 + 1


def test_dma_bursts_do_not_cross_4k_and_ports_stripe():
    # 4 beats before a 4 KB boundary: bursts of 4 then 12 instead of one of 16.
    near = 4096 - 4 * 32
    assert dma_read(AXI, 0, near, 16) == dma_read(AXI, 0, 0, 16)     # still streaming
    serial = AxiPorts(data_bits=256, burst_beats=16, outstanding=1, read_latency=20)
    assert dma_read(serial, 0, near, 16) == 1 + (20 + 4) + (20 + 12)
    # Two ports: each moves `beats` words of its own sub-region at the same time.
    two = AxiPorts(data_bits=128, ports=2, burst_beats=16, outstanding=2, read_latency=20)
    assert dma_read(two, 0, 0, 16) == 1 + 20 + 16


def test_dma_write_responses_limit_outstanding_bursts():
    # AW the cycle after the start, W beats from the cycle after the AW (and the first
    # word), each burst's B write_latency after its last W beat.
    assert dma_write(AXI, 0, 0, 10, 0) == 2 + 10 - 1 + 7
    assert dma_write(AXI, 0, 0, 10, 5) == 5 + 10 - 1 + 7
    # Burst 2 (of 16 beats) waits for burst 0's B before its AW, then one cycle for W.
    b0 = 2 + 15 + 7
    assert dma_write(AXI, 0, 0, 48, 0) == max(2 + 47, b0 + 2 + 15) + 7


def test_hand_timed_program():
    config = AcceleratorConfig(axi=AxiPorts(data_bits=256, read_latency=64, write_latency=32))
    end = Instruction.make(Opcode.END)
    program = Program({
        Queue.LOAD: (Instruction.make(Opcode.LOAD_TENSOR, {"push_next"}, base=Base.MODEL,
                                      offset=0, buffer=Buffer.X, row=0, rows=1, cols=16), end),
        Queue.COMPUTE: (Instruction.make(Opcode.SYNC, {"pop_prev", "push_next"}), end),
        Queue.STORE: (Instruction.make(Opcode.STORE_TENSOR, {"pop_prev"}, base=Base.OUTPUT,
                                       offset=0, buffer=Buffer.X, row=0, rows=1, cols=16), end),
    }, input_bytes=32, output_bytes=32)
    code = program.dram_bytes(config.axi)          # the header beat, then 6 words: 3 beats
    data = bytearray(tensor_bytes(np.arange(16)[None], "int16") + code + bytes(16 + 64))
    image = DramImage(data, {"x": Region("x", 0, 32), "program": Region("program", 32, 128),
                             "input": Region("input", 160, 32),
                             "output": Region("output", 192, 32)}, 32).validate()
    run = Execution(config, program, image)
    assert run.image.read(192, 32) == bytes(data[:32])
    sched = schedule(config, run)
    header = 1 + 1 + 64 + 1                        # DMA at 1, AR at 2, the beat, out of the FIFO
    fetch = header + 1 + 1 + 64 + 3                # the streams: 3 beats
    # The DMA takes the command LOAD_COMMAND_LATENCY after the start, AR the cycle after,
    # one beat.
    load = (fetch + 1) + LOAD_COMMAND_LATENCY + 1 + 64 + 1
    sync = load + 1
    store = (sync + 1) + 5 + 32                    # the word 5 cycles after the start, then B
    assert sched.start[:2] == [fetch + 1, load + 1]
    assert sched.end[0] == load
    assert sched.cycles == store + 1 + 1           # store END, then ap_done
    assert sched.busy["fetch"] == fetch
    assert sched.serial_cycles == sched.cycles + 2  # load END and compute END in series
    assert (sched.dram_read_bytes, sched.dram_write_bytes) == (128 + 32, 32)


def test_the_batch_model_is_the_kernel_model_minus_the_image():
    config = LinearConfig(pi=16, po=16, t=3, max_in=768, max_out=768, bus_width=512)
    for kb, nb, tokens in [(12, 36, 129), (48, 12, 5), (1, 1, 1), (12, 24, 40)]:
        jobs = [(kb * 16, nb * 16, tokens)]
        assert batch_cycles(config, kb, nb, tokens) + image_beats(config, kb, nb) == \
            exp_cycles(config, jobs)


@pytest.fixture(scope="module")
def frame():
    cfg = tiny_test()
    images = [random_image(cfg, seed=n) for n in range(3)]
    qp = calibrate(cfg, init_weights(cfg, seed=2), images[:2])
    config = preset("zcu102").fitted(cfg)
    _, run = execute(compile_model(qp, config), pixels_from_image(cfg, images[2]), 1)
    return config, run, schedule(config, run)


def test_the_rules_hold_on_a_compiled_frame(frame):
    config, run, sched = frame
    last = {}
    attentions = [n for n, s in enumerate(run.steps) if s.ins.op == Opcode.ATTENTION]
    for n, step in enumerate(run.steps):
        before = [sched.end[w] for w in step.waits]
        if step.queue in last:
            before.append(last[step.queue])
        assert sched.start[n] == max(before + [sched.busy["fetch"]]) + 1
        assert sched.end[n] >= sched.start[n]
        # An ATTENTION completes for its queue at its start; the unit runs on.
        last[step.queue] = sched.start[n] if n in attentions else sched.end[n]
    # The unit runs one ATTENTION at a time, and they overlap the compute queue's work.
    for a, b in zip(attentions, attentions[1:]):
        assert a in run.steps[b].waits and sched.start[b] > sched.end[a]
    assert any(sched.start[n + 1] < sched.end[n] for n in attentions)
    # Loads overlap compute (weight prefetch), so overlapping beats the serial order.
    assert sched.cycles < sched.serial_cycles
    assert all(0 < sched.busy[u] < sched.cycles for u in ("load", "linear", "attention"))
    # Engines are busy from the cycle after a step's start to its end.
    for queue, engine in ((Queue.LOAD, "load"), (Queue.COMPUTE, "compute"),
                          (Queue.STORE, "store")):
        assert sched.busy[engine] == sum(sched.end[n] - sched.start[n]
                                         for n, s in enumerate(run.steps)
                                         if s.queue == queue and n not in attentions)
    assert sched.busy["linear"] + sched.busy["gating"] + sched.busy["layernorm"] \
        + sched.busy["combine"] == sched.busy["compute"]
    assert sched.busy["attention"] == sum(sched.end[n] - sched.start[n] for n in attentions)
    loaded = sum(s.info["beats"] for s in run.steps if s.queue == Queue.LOAD and "beats" in s.info)
    fetched = config.axi.words(16) + config.axi.words((run.program.words - 1) * 16)
    assert sched.dram_read_bytes == (loaded + fetched) * config.axi.path_bytes
    # The score pass's multiplies: every block's heads, N x N x head_dim each.
    cfg = tiny_test()
    assert sched.attention_macs == (cfg.depth * cfg.num_heads * cfg.num_tokens ** 2
                                    * cfg.head_dim)


def test_resident_weights_come_from_the_store_in_warm_frames():
    cfg = tiny_test()
    images = [random_image(cfg, seed=n) for n in range(3)]
    qp = calibrate(cfg, init_weights(cfg, seed=2), images[:2])
    streaming = preset("zcu102").fitted(cfg)
    config = dataclasses.replace(streaming, weight_store=1 << 20)
    compiled = compile_model(qp, config)
    _, run = execute(compiled, pixels_from_image(cfg, images[2]), 0)
    warm, cold = schedule(config, run), schedule(config, run, warm=False)
    streamed = schedule(streaming, run)
    assert (cold.cycles, cold.dram_read_bytes) == (streamed.cycles, streamed.dram_read_bytes)
    images_read = sum(s.info["beats"] for s in run.steps
                      if s.ins.op in (Opcode.LOAD_MATRIX, Opcode.LOAD_NORM)) * 64
    assert warm.dram_read_bytes == cold.dram_read_bytes - images_read
    assert warm.cycles < cold.cycles
    small = dataclasses.replace(config, weight_store=compiled.weight_bytes - 1)
    with pytest.raises(ProgramError, match=rf"the resident images take {compiled.weight_bytes} "
                                           rf"bytes, weight_store = {compiled.weight_bytes - 1}"):
        compile_model(qp, small)
