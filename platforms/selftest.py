"""On-board self-test: golden-model vectors in ROM run through the systolic MAC array.

::

    operand ROM --> SystolicArray --> compare with expected ROM --> done, passed, cycles
                                                                       |
    BoardTop: start at power-up and on a button; LEDs show pass / fail / busy and the
              high bits of the cycle count; StatusLine + UartTx print "PASS 0000006a\\r\\n"

The vectors are ``golden.gemm.int8_matmul`` of seeded random int8 matrices, tiled
as the host would (``sim.gemm_tiles``) and packed through the array's payload
layouts; they are a constructor parameter, so a test can corrupt one expected word
and see the FAIL path.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import io, memory, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from golden.gemm import int8_matmul
from moevit.packing import pack, unpack
from rtl.compute.systolic import SystolicArray, exp_cycles, result_layout
from sim.gemm_tiles import gemm_words

from .uart import UartTx

__all__ = ["Vectors", "make_vectors", "SelfTest", "StatusLine", "BoardTop"]

CYCLE_BITS = 32
BAUD = 115200
#: Button sampling period: longer than contact bounce, shorter than a press.
DEBOUNCE_S = 5e-3


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
        """Cycles of a run: ``rtl.compute.systolic.exp_cycles`` (first operand beat to last result word)."""
        return exp_cycles(self.m, self.k, self.n, rows=self.rows, cols=self.cols)

    def corrupted(self, index):
        """The same vectors with element 0 of expected result word ``index`` off by one."""
        layout = result_layout(self.cols)
        row = unpack(layout, self.expected[index])
        row["acc"][0] += 1
        expected = list(self.expected)
        expected[index] = pack(layout, row)
        return Vectors(self.rows, self.cols, self.m, self.k, self.n, self.operands, tuple(expected))


def make_vectors(rows=4, cols=4, m=8, k=24, n=8, seed=0):
    """Seeded ``a (m x k) @ b (k x n)`` tiled for a ``rows x cols`` array, with golden results.

    Row 0 of ``a`` and column 0 of ``b`` are all -128, so the largest product
    (2**14 per term) is among the checked results.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k))
    b = rng.integers(-128, 128, (k, n))
    a[0, :] = -128
    b[:, 0] = -128
    c = int8_matmul(a, b).astype(np.int64)
    operands, _ = gemm_words(a, b, rows, cols)
    pm, pn = -(-m // rows) * rows, -(-n // cols) * cols
    padded = np.zeros((pm, pn), np.int64)
    padded[:m, :n] = c
    layout = result_layout(cols)
    expected = [pack(layout, {"acc": padded[i + r, j:j + cols], "last": int(r == rows - 1)})
                for i in range(0, pm, rows) for j in range(0, pn, cols) for r in range(rows)]
    return Vectors(rows, cols, m, k, n, tuple(operands), tuple(expected))


class SelfTest(wiring.Component):
    """Run the vectors through a ``SystolicArray`` and compare every result word.

    Parameters
    ----------
    vectors : Vectors
        ROM contents (operand and expected words, array shape).

    Members
    -------
    start : In(1)
        A one-cycle pulse starts a run (ignored while busy).
    busy : Out(1)
        High during a run.
    done, passed : Out(1)
        Set at the end of a run, held until the next start.
    cycles : Out(32)
        Cycles of the last run, from the first operand beat to the last result
        word inclusive: :attr:`Vectors.cycles` (``rtl.compute.systolic.exp_cycles``) when
        the array runs at full rate, which it does here (the source never pauses,
        the sink is always ready). The start pulse adds one idle cycle before.

    A run that has not finished after ``4 * cycles + 64`` cycles fails, so a
    hung datapath never shows PASS.
    """

    start: In(1)
    busy: Out(1)
    done: Out(1)
    passed: Out(1)
    cycles: Out(CYCLE_BITS)

    def __init__(self, vectors):
        self._vectors = vectors
        super().__init__()

    @property
    def vectors(self):
        return self._vectors

    def elaborate(self, platform):
        m = Module()
        v = self._vectors
        m.submodules.array = array = SystolicArray(v.rows, v.cols)
        m.submodules.operands = ops = memory.Memory(
            shape=len(array.i.payload.as_value()), depth=len(v.operands), init=v.operands)
        m.submodules.expected = exp = memory.Memory(
            shape=len(array.o.payload.as_value()), depth=len(v.expected), init=v.expected)
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
                word_ok = array.o.payload.as_value() == exp_rd.data
                with m.If(array.o.valid):
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(~word_ok):
                        m.d.sync += mismatch.eq(1)
                finished = array.o.valid & (out_idx == n_out - 1)
                with m.If(finished | (self.cycles == limit)):
                    m.d.sync += [self.done.eq(1), self.passed.eq(finished & ~mismatch & word_ok)]
                    m.next = "IDLE"
        return m


class StatusLine(wiring.Component):
    """Format each finished run as a text line for a UART: ``PASS 0000006a\\r\\n`` / ``FAIL ...``.

    Members
    -------
    done, passed : In(1)
        The self-test's status; a line starts on each rising edge of ``done``.
    cycles : In(32)
        Printed as 8 lower-case hex digits.
    o : Out(stream.Signature(8))
        The 15 bytes of the line. ``passed`` and ``cycles`` are captured at the
        edge; an edge that comes while a line is being sent is ignored.
    """

    done: In(1)
    passed: In(1)
    cycles: In(CYCLE_BITS)
    o: Out(stream.Signature(8))

    LENGTH = 15

    def elaborate(self, platform):
        m = Module()
        was_done = Signal()
        sending = Signal()
        passed = Signal()
        cycles = Signal(CYCLE_BITS)
        index = Signal(range(self.LENGTH))
        m.d.sync += was_done.eq(self.done)
        with m.If(self.done & ~was_done & ~sending):
            m.d.sync += [sending.eq(1), index.eq(0), passed.eq(self.passed),
                         cycles.eq(self.cycles)]

        word = Mux(passed, Const(int.from_bytes(b"PASS", "little"), 32),
                   Const(int.from_bytes(b"FAIL", "little"), 32))
        with m.Switch(index):
            for i in range(4):
                with m.Case(i):
                    m.d.comb += self.o.payload.eq(word.word_select(i, 8))
            with m.Case(4):
                m.d.comb += self.o.payload.eq(ord(" "))
            for i in range(8):
                with m.Case(5 + i):
                    nibble = cycles.word_select(7 - i, 4)
                    m.d.comb += self.o.payload.eq(
                        Mux(nibble < 10, ord("0") + nibble, ord("a") - 10 + nibble))
            with m.Case(13):
                m.d.comb += self.o.payload.eq(ord("\r"))
            with m.Case(14):
                m.d.comb += self.o.payload.eq(ord("\n"))
        m.d.comb += self.o.valid.eq(sending)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += index.eq(index + 1)
            with m.If(index == self.LENGTH - 1):
                m.d.sync += sending.eq(0)
        return m


class BoardTop(wiring.Component):
    """The self-test on a board: start at power-up and on a button, report on LEDs and UART.

    Uses whatever the platform has:

    - ``led`` 0..n: 0 pass, 1 fail, 2 busy, the rest the most significant bits
      of the cycle count (``rgb_led`` 0: green pass, red fail, blue busy);
    - ``button`` 0: restart, synchronized and sampled every ~5 ms (debounced);
    - ``uart`` 0: one :class:`StatusLine` per run at 115200 baud, 8N1;
    - ``hbm_cattrip`` 0 (U280): driven low.

    The self-test's status nets ``selftest_busy``, ``_done``, ``_passed`` and
    ``_cycles`` carry ``keep`` and ``MARK_DEBUG``, so synthesis keeps them (and
    the self-test behind them) and Vivado can attach an ILA; on a board without
    LEDs or UART (U280) that is how the result is read.

    Parameters
    ----------
    vectors : Vectors, optional
        ROM contents; :func:`make_vectors` () by default.
    """

    def __init__(self, vectors=None):
        self._vectors = vectors or make_vectors()
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.selftest = st = SelfTest(self._vectors)
        names = {name for name, _ in platform.resources}
        clk_frequency = platform.default_clk_frequency

        def buffer(direction, port, name):
            m.submodules[name] = buf = io.Buffer(direction, port)
            return buf

        # Kept and marked for an ILA: on a board with no LED or UART (U280) nothing else
        # observes the self-test, and synthesis would remove it.
        for name in ("busy", "done", "passed", "cycles"):
            probe = Signal.like(getattr(st, name), name=f"selftest_{name}",
                                attrs={"keep": "TRUE", "MARK_DEBUG": "TRUE"})
            m.d.comb += probe.eq(getattr(st, name))

        # Start once after reset, then on every debounced press of button 0.
        started = Signal()
        press = Signal()
        if "button" in names:
            button = buffer("i", platform.request("button", 0, dir="-"), "button_buffer")
            synced = Signal()
            m.submodules.button_sync = FFSynchronizer(button.i, synced)
            timer = Signal(max(1, int(clk_frequency * DEBOUNCE_S).bit_length()))
            sample, last = Signal(), Signal()
            m.d.sync += timer.eq(timer + 1)
            with m.If(timer == 0):
                m.d.sync += [sample.eq(synced), last.eq(sample)]
            m.d.comb += press.eq((timer == 0) & sample & ~last)
        m.d.sync += started.eq(1)
        m.d.comb += st.start.eq(~started | press)

        passed, failed = st.done & st.passed, st.done & ~st.passed
        if "led" in names:
            count = sum(1 for name, _ in platform.resources if name == "led")
            shown = max(0, count - 3)
            low = max(0, self._vectors.cycles.bit_length() - shown)
            bits = [passed, failed, st.busy, *st.cycles[low:low + shown]]
            for n in range(count):
                led = buffer("o", platform.request("led", n, dir="-"), f"led_buffer_{n}")
                m.d.comb += led.o.eq(bits[n])
        if "rgb_led" in names:
            rgb = platform.request("rgb_led", 0, dir="-")
            for color, value in (("g", passed), ("r", failed), ("b", st.busy)):
                m.d.comb += buffer("o", getattr(rgb, color), f"rgb_{color}_buffer").o.eq(value)
        if "hbm_cattrip" in names:
            cattrip = platform.request("hbm_cattrip", 0, dir="-")
            m.d.comb += buffer("o", cattrip, "cattrip_buffer").o.eq(0)
        if "uart" in names:
            uart_tx = buffer("o", platform.request("uart", 0, dir="-").tx, "uart_tx_buffer")
            m.submodules.status_line = line = StatusLine()
            m.submodules.uart_tx = tx = UartTx(max(1, round(clk_frequency / BAUD)))
            m.d.comb += [line.done.eq(st.done), line.passed.eq(st.passed),
                         line.cycles.eq(st.cycles), uart_tx.o.eq(tx.tx)]
            wiring.connect(m, line.o, tx.i)
        return m
