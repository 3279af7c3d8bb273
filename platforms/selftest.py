"""On-board self-test: golden-model vectors in ROM run through the systolic MAC array.

::

    operand ROM --> SystolicArray --> compare with expected ROM --> done, passed, cycles
                                                                     |
    BoardTop: start at power-up and on a button; LEDs show pass / fail / busy and the
              high bits of the cycle count; the UART prints "PASS <cycles>" or "FAIL <cycles>"

The vectors are ``golden.gemm.int8_matmul`` of seeded random int8 matrices, tiled
as the host would (``sim.gemm_tiles``); a test can corrupt one expected word to
see the FAIL path.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import io, memory, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from golden.gemm import int8_matmul
from rtl.systolic import SystolicArray, exp_cycles, operand_layout, result_layout
from sim.gemm_tiles import gemm_beats
from sim.packing import pack

from .uart import UartTx

__all__ = ["Vectors", "make_vectors", "SelfTest", "BoardTop"]

CYCLE_BITS = 32


@dataclass(frozen=True)
class Vectors:
    """ROM contents of a self-test: array shape, operand words and expected result words."""

    rows: int
    cols: int
    m: int
    k: int
    n: int
    operands: tuple
    expected: tuple

    @property
    def cycles(self):
        """Cycles of the run at full rate (``rtl.systolic.exp_cycles``)."""
        return exp_cycles(self.m, self.k, self.n, rows=self.rows, cols=self.cols)

    def corrupted(self, index):
        """The same vectors with expected word ``index`` flipped in its lowest bit."""
        expected = list(self.expected)
        expected[index] ^= 1 << 1          # bit 0 is `last`; bit 1 is acc[0] bit 0
        return Vectors(self.rows, self.cols, self.m, self.k, self.n, self.operands, tuple(expected))


def make_vectors(rows=4, cols=4, m=8, k=24, n=8, seed=0):
    """Seeded ``a (m x k) @ b (k x n)`` tiled for a ``rows x cols`` array, with golden results."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k))
    b = rng.integers(-128, 128, (k, n))
    a[0, :] = -128                       # the extreme product, 2**14 per term
    b[:, 0] = -128
    c = int8_matmul(a, b).astype(np.int64)
    operands = tuple(pack(operand_layout(rows, cols), beat) for beat in gemm_beats(a, b, rows, cols))
    pm, pn = -(-m // rows) * rows, -(-n // cols) * cols
    padded = np.zeros((pm, pn), np.int64)
    padded[:m, :n] = c
    layout = result_layout(cols)
    expected = tuple(pack(layout, {"acc": padded[i + r, j:j + cols], "last": int(r == rows - 1)})
                     for i in range(0, pm, rows) for j in range(0, pn, cols) for r in range(rows))
    return Vectors(rows, cols, m, k, n, operands, expected)


class SelfTest(wiring.Component):
    """Run the vectors through a ``SystolicArray`` and compare every result word.

    Members
    -------
    start : In(1)
        A one-cycle pulse starts a run (ignored while busy).
    busy, done, passed : Out(1)
        ``done`` and ``passed`` hold from the end of a run until the next start.
    cycles : Out(32)
        Cycles from the first operand beat to the last result word of the last run.

    A run takes :attr:`Vectors.cycles` cycles plus one; a run that has not finished
    after ``4 * cycles + 64`` cycles fails (a hung datapath never shows PASS).
    """

    start: In(1)
    busy: Out(1)
    done: Out(1)
    passed: Out(1)
    cycles: Out(CYCLE_BITS)

    def __init__(self, vectors):
        self._vectors = vectors
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        v = self._vectors
        m.submodules.array = array = SystolicArray(v.rows, v.cols)
        m.submodules.operands = ops = memory.Memory(
            shape=operand_layout(v.rows, v.cols).size, depth=len(v.operands), init=v.operands)
        m.submodules.expected = exp = memory.Memory(
            shape=result_layout(v.cols).size, depth=len(v.expected), init=v.expected)
        op_rd = ops.read_port(domain="comb")
        exp_rd = exp.read_port(domain="comb")
        n_in, n_out = len(v.operands), len(v.expected)
        in_idx = Signal(range(n_in + 1))
        out_idx = Signal(range(n_out + 1))
        mismatch = Signal()
        limit = 4 * v.cycles + 64
        m.d.comb += [op_rd.addr.eq(in_idx), exp_rd.addr.eq(out_idx),
                     array.i.payload.eq(op_rd.data)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [in_idx.eq(0), out_idx.eq(0), mismatch.eq(0), self.cycles.eq(0),
                                 self.done.eq(0), self.passed.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), array.i.valid.eq(in_idx < n_in), array.o.ready.eq(1)]
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(array.i.valid & array.i.ready):
                    m.d.sync += in_idx.eq(in_idx + 1)
                with m.If(array.o.valid):
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(array.o.payload.as_value() != exp_rd.data):
                        m.d.sync += mismatch.eq(1)
                finished = array.o.valid & (out_idx == n_out - 1)
                with m.If(finished | (self.cycles == limit)):
                    m.d.sync += [self.done.eq(1),
                                 self.passed.eq(finished & ~mismatch &
                                                (array.o.payload.as_value() == exp_rd.data))]
                    m.next = "IDLE"
        return m


class BoardTop(wiring.Component):
    """The self-test on a board: start at power-up and on a button, report on LEDs and UART.

    Uses whatever the platform has: ``led`` 0..n (0 pass, 1 fail, 2 busy, the rest
    the high bits of the cycle count), ``button`` 0 (restart), ``uart`` 0 (one line
    per run, 115200 baud), and drives ``hbm_cattrip`` low where it exists (U280).
    """

    def __init__(self, vectors=None):
        self._vectors = vectors or make_vectors()
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.selftest = st = SelfTest(self._vectors)
        names = {name for name, _ in platform.resources} if platform else set()

        # Start once after reset, then on every rising edge of button 0.
        started = Signal()
        press = Signal()
        def buffer(direction, port, name):
            m.submodules[name] = buf = io.Buffer(direction, port)
            return buf

        if "button" in names:
            button = buffer("i", platform.request("button", 0, dir="-"), "button_buffer")
            sync = Signal()
            last = Signal()
            m.submodules.button_sync = FFSynchronizer(button.i, sync)
            m.d.sync += last.eq(sync)
            m.d.comb += press.eq(sync & ~last)
        m.d.sync += started.eq(1)
        m.d.comb += st.start.eq(~started | press)

        passed, failed = st.done & st.passed, st.done & ~st.passed
        if "led" in names:
            count = sum(1 for name, _ in platform.resources if name == "led")
            # The most significant cycle-count bits of a run fill the LEDs after the status.
            shown = max(0, count - 3)
            low = max(0, self._vectors.cycles.bit_length() - shown)
            bits = Cat(passed, failed, st.busy, st.cycles[low:low + shown])
            for n in range(count):
                led = buffer("o", platform.request("led", n, dir="-"), f"led_buffer_{n}")
                m.d.comb += led.o.eq(bits[n])
        if "rgb_led" in names:
            rgb = platform.request("rgb_led", 0, dir="-")
            for color, value in (("g", passed), ("r", failed), ("b", st.busy)):
                m.d.comb += buffer("o", getattr(rgb, color), f"rgb_{color}_buffer").o.eq(value)
        if "hbm_cattrip" in names:
            m.d.comb += buffer("o", platform.request("hbm_cattrip", 0, dir="-"), "cattrip_buffer").o.eq(0)
        if "uart" in names:
            uart_tx = buffer("o", platform.request("uart", 0, dir="-").tx, "uart_tx_buffer")
            clk = platform.default_clk_frequency
            m.submodules.uart_tx = tx = UartTx(max(1, int(clk // 115200)))
            m.d.comb += uart_tx.o.eq(tx.tx)
            # "PASS xxxxxxxx\r\n": the word, then 8 hex digits of the cycle count.
            text = Signal(range(16))
            sending = Signal()
            was_done = Signal()
            m.d.sync += was_done.eq(st.done)
            with m.If(st.done & ~was_done):
                m.d.sync += [sending.eq(1), text.eq(0)]
            word = Mux(st.passed, Const(int.from_bytes(b"PASS", "little"), 32),
                       Const(int.from_bytes(b"FAIL", "little"), 32))
            char = Signal(8)
            with m.Switch(text):
                for i in range(4):
                    with m.Case(i):
                        m.d.comb += char.eq(word.word_select(i, 8))
                with m.Case(4):
                    m.d.comb += char.eq(ord(" "))
                for i in range(8):
                    with m.Case(5 + i):
                        nibble = st.cycles.word_select(7 - i, 4)
                        m.d.comb += char.eq(Mux(nibble < 10, ord("0") + nibble, ord("a") - 10 + nibble))
                with m.Case(13):
                    m.d.comb += char.eq(ord("\r"))
                with m.Case(14):
                    m.d.comb += char.eq(ord("\n"))
            m.d.comb += [tx.i.valid.eq(sending), tx.i.payload.eq(char)]
            with m.If(tx.i.valid & tx.i.ready):
                m.d.sync += text.eq(text + 1)
                with m.If(text == 14):
                    m.d.sync += sending.eq(0)
        return m
