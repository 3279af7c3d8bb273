"""The ap_ctrl_hs register file in the Amaranth simulator: arguments, start, done, interrupts."""

from amaranth.sim import Simulator

from rtl.control.registers import (ARGUMENTS, CONTROL, GIE, IER, ISR, STATUS, ControlRegisters,
                                   argument_words)
from sim.axi_lite import lite_read, lite_write


def _simulate(bench):
    dut = ControlRegisters()
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def run(ctx):
        await bench(ctx, dut)

    sim.add_testbench(run)
    sim.run()


def test_arguments_read_back_and_reach_the_core():
    async def bench(ctx, dut):
        assert await lite_write(ctx, dut.s_axi, ARGUMENTS["program"][0], 0x1234_5678) == 0
        await lite_write(ctx, dut.s_axi, ARGUMENTS["program"][0] + 4, 0x9)
        await lite_write(ctx, dut.s_axi, ARGUMENTS["task"][0], 0xFF)          # 4 bits kept
        await lite_write(ctx, dut.s_axi, ARGUMENTS["frames"][0], 0x0003_0007, strobe=0x1)
        assert await lite_read(ctx, dut.s_axi, ARGUMENTS["program"][0]) == 0x1234_5678
        assert await lite_read(ctx, dut.s_axi, ARGUMENTS["program"][0] + 4) == 0x9
        assert ctx.get(dut.arguments.program) == 0x9_1234_5678
        assert ctx.get(dut.arguments.task) == 0xF
        assert ctx.get(dut.arguments.frames) == 0x7          # only byte 0 was written
        assert await lite_read(ctx, dut.s_axi, 0xFFC) == 0   # unmapped
    _simulate(bench)


def test_start_done_idle_ready_and_the_interrupt():
    async def bench(ctx, dut):
        await lite_write(ctx, dut.s_axi, GIE, 1)
        await lite_write(ctx, dut.s_axi, IER, 1)
        assert await lite_read(ctx, dut.s_axi, CONTROL) == 0b0100          # idle
        await lite_write(ctx, dut.s_axi, CONTROL, 1)
        # The core is idle: the start is taken at once (run pulses, ap_ready reads 1).
        ctx.set(dut.busy, 1)
        assert await lite_read(ctx, dut.s_axi, CONTROL) == 0b1000          # ready, busy
        assert await lite_read(ctx, dut.s_axi, CONTROL) == 0b0000          # ready cleared
        # A start while busy is ignored and counted.
        await lite_write(ctx, dut.s_axi, CONTROL, 1)
        assert await lite_read(ctx, dut.s_axi, STATUS["ignored_starts"]) == 1
        assert not ctx.get(dut.interrupt)
        ctx.set(dut.finished, 1)
        await ctx.tick()
        ctx.set(dut.finished, 0)
        ctx.set(dut.busy, 0)
        await ctx.tick()
        assert ctx.get(dut.interrupt)
        assert await lite_read(ctx, dut.s_axi, ISR) == 1
        assert await lite_read(ctx, dut.s_axi, CONTROL) == 0b0110          # done, idle
        assert await lite_read(ctx, dut.s_axi, CONTROL) == 0b0100          # done cleared
        await lite_write(ctx, dut.s_axi, ISR, 1)                           # toggle clears
        assert await lite_read(ctx, dut.s_axi, ISR) == 0 and not ctx.get(dut.interrupt)
    _simulate(bench)


def test_auto_restart_starts_again_after_done():
    async def bench(ctx, dut):
        await lite_write(ctx, dut.s_axi, CONTROL, 0x81)
        runs = 0
        for _ in range(3):
            ctx.set(dut.busy, 1)
            ctx.set(dut.finished, 1)
            _, _, run = await ctx.tick().sample(dut.run)
            ctx.set(dut.finished, 0)
            ctx.set(dut.busy, 0)
            for _ in range(2):
                _, _, run = await ctx.tick().sample(dut.run)
                runs += run
        assert runs == 3
        assert await lite_read(ctx, dut.s_axi, CONTROL) & 0x80
    _simulate(bench)


def test_argument_words_follow_the_register_map():
    # 64-bit arguments are two registers, low word first; narrow ones are one.
    words = argument_words({"program": 0x9_1234_5678, "task": 1})
    assert words == [(ARGUMENTS["program"][0], 0x1234_5678), (ARGUMENTS["program"][0] + 4, 0x9),
                     (ARGUMENTS["task"][0], 1)]
