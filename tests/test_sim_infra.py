"""The simulation infrastructure itself: Verilog emission, flow patterns, the pysim harness."""

import os

import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.compute.systolic import SystolicArray
from sim.flow import FlowPattern
from sim.pysim_stream import run_stream_test
from sim.verilog import emit_verilog, write_if_changed
from sim.waves import BUILD_DIR


def test_verilog_is_reproducible_and_rewritten_only_on_change(tmp_path):
    path = tmp_path / "top.v"
    emit_verilog(SystolicArray(2, 2), path)
    text, mtime = path.read_text(), path.stat().st_mtime_ns
    assert "src =" not in text          # no absolute source paths in the output
    os.utime(path, ns=(mtime - 10**9, mtime - 10**9))
    emit_verilog(SystolicArray(2, 2), path)
    assert path.stat().st_mtime_ns == mtime - 10**9
    assert path.read_text() == text
    assert write_if_changed(path, text + "// changed\n")


def test_flow_pattern_is_seeded():
    a, b = FlowPattern(0.5, seed=3), FlowPattern(0.5, seed=3)
    assert [a.active() for _ in range(50)] == [b.active() for _ in range(50)]
    assert all(FlowPattern(1.0).active() for _ in range(10))
    with pytest.raises(ValueError, match=r"probability must be in \(0, 1\], not 0"):
        FlowPattern(0)


class _Sink(wiring.Component):
    """Accepts input but never produces output: the harness must time out, naming the test."""

    i: In(stream.Signature(unsigned(8)))
    o: Out(stream.Signature(unsigned(8)))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.i.valid):
            m.d.sync += self.o.payload.eq(self.i.payload)
        return m


def test_pysim_harness_times_out_with_a_waveform():
    with pytest.raises(AssertionError, match=r"never_answers: simulation did not finish within 40 "
                                             r"cycles \(streams still open: \['o'\]\) "
                                             r"\(waveform: .*pysim.vcd\)"):
        run_stream_test(_Sink(), [1, 2, 3], 1, name="never_answers", deadline=40)
    assert (BUILD_DIR / "waves" / "never_answers" / "pysim.vcd").stat().st_size > 0
