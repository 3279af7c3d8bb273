"""The formal checks of every unit with stream or bus ports: what ``make formal`` proves.

Each :class:`Check` names a small instance of a unit (formal cost grows with the
datapath; the control logic under test is the same at every size), the transfers its
outputs owe as a function of its inputs (its framing, from its docstring), the latency
it promises, and the environment's side of the protocol. Two runs per check:

* ``rules``: every output channel holds ``valid`` and its payload until ``ready``
  (k-induction; bounded where induction does not close);
* ``framing``: no output transfer runs ahead of what the inputs owe (nothing
  duplicated or invented), an owed output is offered within ``bound`` cycles (nothing
  lost, no hang), and the bus rules of ``check`` (AXI burst fields, WLAST).

The stream units get free legal sources and free sinks; the AXI ports get an
environment that answers only what was asked, in order, with RLAST on the burst's
last beat (:func:`axi_read_environment`, :func:`axi_write_environment`).
"""

import dataclasses

from amaranth.hdl import Mux, Signal
from amaranth.lib import fifo
from amaranth.utils import exact_log2

from rtl.bus.axi import INCR
from rtl.compute.attention import AttentionConfig, AttentionKernel
from rtl.compute.gelu import GeluUnit
from rtl.compute.layernorm import LayerNormUnit
from rtl.compute.linear import LinearConfig, LinearKernel
from rtl.compute.recip import ISqrt, Reciprocal
from rtl.compute.softmax import SoftmaxUnit
from rtl.compute.systolic import SystolicArray
from rtl.config import BOUNDARY, AxiPorts
from rtl.control.registers import ControlRegisters
from rtl.memory.dma import DmaReader, DmaWriter
from rtl.moe.combine import Combiner
from rtl.moe.gating import Gating

from .formal import StreamHarness, frames, prove

__all__ = ["Check", "CHECKS", "axi_read_environment", "axi_write_environment", "dma_environment",
           "harness", "run", "verify", "verdicts"]


@dataclasses.dataclass(frozen=True)
class Check:
    """One unit's formal check (the arguments of :class:`sim.formal.StreamHarness`)."""
    name: str
    build: object                   # () -> the unit
    owed: object = None             # (m, counts, inputs, dut) -> {channel: Value}
    bound: object = None            # (dut) -> cycles, or None
    environment: object = None      # (m, inputs, dut) -> ([assumed], [asserted])
    free: tuple = ()
    rules_depth: int = 20
    framing_depth: int = 30
    reach: int = 20                 # depth by which an output is offered and stalled
    note: str = ""


def _ends(m, valid, ready, last, name):
    """Transfers with ``last`` so far (frames completed)."""
    ends = Signal(8, name=f"{name}_ends")
    with m.If(valid & ready & last):
        m.d.sync += ends.eq(ends + 1)
    return ends


def _sum_of(m, valid, ready, value, name, bits=16):
    """The sum of ``value`` over the transfers so far."""
    total = Signal(bits, name=name)
    with m.If(valid & ready):
        m.d.sync += total.eq(total + value)
    return total


# --- AXI environments -----------------------------------------------------------------

def axi_read_environment(m, port, axi, name, page_bytes=BOUNDARY):
    """Assumptions: R beats only for accepted ARs, in order, RLAST on each burst's last
    beat. Assertions: AR bursts are INCR of full-width beats, at most ``burst_beats``
    long, aligned and inside one page of ``page_bytes`` (AXI's 4 KB)."""
    queue = fifo.SyncFIFO(width=8, depth=axi.outstanding + 1)
    m.submodules[f"{name}_bursts"] = queue
    beat = Signal(8, name=f"{name}_rbeat")
    m.d.comb += [queue.w_en.eq(port.arvalid & port.arready), queue.w_data.eq(port.arlen)]
    r_taken = port.rvalid & port.rready
    m.d.comb += queue.r_en.eq(r_taken & port.rlast)
    with m.If(r_taken):
        m.d.sync += beat.eq(Mux(port.rlast, 0, beat + 1))
    size = exact_log2(axi.data_bits // 8)
    page = port.araddr[:exact_log2(page_bytes)]
    assume = [~port.rvalid | queue.r_rdy,
              ~port.rvalid | (port.rlast == (beat == queue.r_data)),
              port.rid == 0, port.rresp == 0,
              ~port.arvalid | queue.w_rdy]           # the environment has room for the burst
    check = [~port.arvalid | (port.arburst == INCR),
             ~port.arvalid | (port.arsize == size),
             ~port.arvalid | (port.arlen < axi.burst_beats),
             ~port.arvalid | (port.araddr[:size] == 0),
             ~port.arvalid | (page + ((port.arlen + 1) << size) <= page_bytes)]
    return assume, check


def axi_write_environment(m, port, axi, name, page_bytes=BOUNDARY):
    """Assumptions: one OKAY B per burst, only once its AW and last W beat are in.
    Assertions: AW bursts as for reads (pages of ``page_bytes``); W beats only for an
    issued AW, WLAST exactly on each burst's last beat, every strobe set."""
    queue = fifo.SyncFIFO(width=8, depth=axi.outstanding + 1)
    m.submodules[f"{name}_bursts"] = queue
    beat = Signal(8, name=f"{name}_wbeat")
    w_taken = port.wvalid & port.wready
    m.d.comb += [queue.w_en.eq(port.awvalid & port.awready), queue.w_data.eq(port.awlen),
                 queue.r_en.eq(w_taken & port.wlast)]
    with m.If(w_taken):
        m.d.sync += beat.eq(Mux(port.wlast, 0, beat + 1))
    written = Signal(8, name=f"{name}_bursts_written")
    responded = Signal(8, name=f"{name}_bursts_answered")
    with m.If(w_taken & port.wlast):
        m.d.sync += written.eq(written + 1)
    with m.If(port.bvalid & port.bready):
        m.d.sync += responded.eq(responded + 1)
    size = exact_log2(axi.data_bits // 8)
    page = port.awaddr[:exact_log2(page_bytes)]
    assume = [~port.bvalid | (responded < written), port.bid == 0, port.bresp == 0,
              ~port.awvalid | queue.w_rdy]
    check = [~port.awvalid | (port.awburst == INCR),
             ~port.awvalid | (port.awsize == size),
             ~port.awvalid | (port.awlen < axi.burst_beats),
             ~port.awvalid | (port.awaddr[:size] == 0),
             ~port.awvalid | (page + ((port.awlen + 1) << size) <= page_bytes),
             ~port.wvalid | queue.r_rdy,
             ~port.wvalid | (port.wlast == (beat == queue.r_data)),
             ~port.wvalid | (port.wstrb == (1 << len(port.wstrb)) - 1)]
    return assume, check


#: The AXI ports of the DMA checks: 64-bit, bursts of up to 4, 2 outstanding.
_AXI = AxiPorts(data_bits=64, ports=1, burst_beats=4, outstanding=2, read_latency=1,
                write_latency=1)


def _dma_command(inputs, dut, beats=6):
    """Commands of 1..``beats`` words at any bus-word-aligned address (bursts meet 4 KB
    page boundaries at every offset), the DMA's documented input range."""
    cmd = dut.cmd.payload
    return [~dut.cmd.valid | ((cmd.beats >= 1) & (cmd.beats <= beats)),
            ~dut.cmd.valid | (cmd.address[:exact_log2(_AXI.data_bytes)] == 0)]


def _commanded(m, counts, inputs, dut):
    """The words the DMA's commands so far ask for: what its data side owes."""
    return _sum_of(m, dut.cmd.valid, dut.cmd.ready, dut.cmd.payload.beats, "cmd_beats")


def dma_environment(axi_environment, page_bytes=BOUNDARY):
    """The environment of a DMA check: ``axi_environment`` on port 0 and the command range."""
    def environment(m, inputs, dut):
        assume, check = axi_environment(m, dut.m0, _AXI, "m0", page_bytes)
        return assume + _dma_command(inputs, dut), check
    return environment


def _assumed(assumptions):
    """An environment of assumptions only."""
    return lambda m, inputs, dut: (assumptions(m, inputs, dut), [])


# --- AXI4-Lite registers ---------------------------------------------------------------

def _lite_owed(m, counts, inputs, dut):
    aw, w = counts["s_axi.aw"], counts["s_axi.w"]
    return {"s_axi.b": Mux(aw < w, aw, w), "s_axi.r": counts["s_axi.ar"]}


# --- the catalogue ---------------------------------------------------------------------

def _softmax_owed(m, counts, inputs, dut):
    return {"o": frames(m, dut.i.valid, dut.i.ready, dut.i.payload.last, "i",
                        max_beats=-(-dut.row_max // dut.lanes))}


#: The small gating and combine instances.
_GATING = {"experts": 4, "k": 2, "max_tokens": 4}
_COMBINE = {"max_tokens": 4, "dim": 4, "po": 2}


def _gating_frames(m, inputs, dut):
    """Frames of whole tokens (E logits each), at most ``max_tokens`` of them."""
    position = Signal(8, name="i_position")
    with m.If(dut.i.valid & dut.i.ready):
        m.d.sync += position.eq(Mux(dut.i.payload.last, 0, position + 1))
    e, tokens = _GATING["experts"], _GATING["max_tokens"]
    return [~dut.i.valid | ~dut.i.payload.last | (position % e == e - 1),
            ~dut.i.valid | (position != e * tokens - 1) | dut.i.payload.last]


def _combine_ranges(m, inputs, dut):
    """``token < max_tokens`` and ``fold < folds`` on ``i`` (the kernel guarantees them);
    flushes of 1..max_tokens rows after at most 3 batches."""
    i, flush, tokens = dut.i.payload, dut.flush.payload, _COMBINE["max_tokens"]
    return [~dut.i.valid | (i.token < tokens), ~dut.i.valid | (i.fold < dut.folds),
            ~dut.flush.valid | ((flush.tokens >= 1) & (flush.tokens <= tokens)),
            ~dut.flush.valid | (flush.batches <= 3)]


CHECKS = [
    Check("recip", lambda: Reciprocal(8),
          owed=lambda m, c, i, d: {"o": c["i"]}, bound=lambda d: d.latency),
    Check("isqrt", lambda: ISqrt(8),
          owed=lambda m, c, i, d: {"o": c["i"]}, bound=lambda d: d.latency),
    Check("gelu", lambda: GeluUnit(2, entries=64),
          owed=lambda m, c, i, d: {"o": c["i"]}, bound=lambda d: 0, framing_depth=12,
          note="the 2 x 256-entry tables make each step costly; the latency is 1 cycle"),
    Check("softmax_codes", lambda: SoftmaxUnit(4, 2, "codes"),
          owed=_softmax_owed, bound=lambda d: 2 + 3, framing_depth=16),
    Check("softmax_probs", lambda: SoftmaxUnit(4, 2, "probs"),
          owed=_softmax_owed, framing_depth=28, reach=28),
    Check("layernorm", lambda: LayerNormUnit(4, 2),
          owed=lambda m, c, i, d: {"o": c["i"] & ~1}, framing_depth=52, reach=52),
    Check("systolic", lambda: SystolicArray(2, 2),
          owed=lambda m, c, i, d: {"o": 2 * _ends(m, d.i.valid, d.i.ready,
                                                  d.i.payload.last, "i")},
          bound=lambda d: d.latency),
    Check("gating", lambda: Gating(**_GATING),
          owed=lambda m, c, i, d: {"o": frames(m, d.i.valid, d.i.ready, d.i.payload.last, "i")
                                   * _GATING["k"] // _GATING["experts"]},
          environment=_assumed(_gating_frames), framing_depth=48, reach=48),
    Check("combine", lambda: Combiner(**_COMBINE),
          owed=lambda m, c, i, d: {"o": _sum_of(m, d.flush.valid, d.flush.ready,
                                                d.flush.payload.tokens * d.folds, "owed")},
          environment=_assumed(_combine_ranges), framing_depth=20),
    Check("attention", lambda: AttentionKernel(AttentionConfig(
              r=1, dp=2, h=1, head_dim=2, max_tokens=2)),
          owed=lambda m, c, i, d: {"o": c["q"]}, framing_depth=40, reach=40),
    Check("linear", lambda: LinearKernel(LinearConfig(
              pi=1, po=1, t=1, max_in=2, max_out=2, bus_width=64)),
          framing_depth=12,
          note="framing not modelled (matrix images set the folds); stream rules only"),
    Check("registers", ControlRegisters, owed=_lite_owed, bound=lambda d: 2,
          free=("busy", "finished", "error", "cycles", "busy_cycles")),
    Check("dma_reader", lambda: DmaReader(_AXI),
          owed=lambda m, c, i, d: {"o": _commanded(m, c, i, d)},
          environment=dma_environment(axi_read_environment),
          rules_depth=12, framing_depth=12),
    Check("dma_writer", lambda: DmaWriter(_AXI),
          owed=lambda m, c, i, d: {"m0.w": _commanded(m, c, i, d)},
          environment=dma_environment(axi_write_environment),
          rules_depth=12, framing_depth=12),
]


def harness(check, kind, broken=None):
    """The :class:`StreamHarness` of ``check`` for a ``"rules"`` or ``"framing"`` run."""
    dut = check.build()
    environment = None if check.environment is None else _for_run(check.environment, dut, kind)
    if kind == "rules":
        return StreamHarness(dut, environment=environment, free=check.free, broken=broken)
    return StreamHarness(
        dut, owed=None if check.owed is None else (lambda m, c, i: check.owed(m, c, i, dut)),
        bound=None if check.bound is None else check.bound(dut), environment=environment,
        free=check.free, broken=broken)


def _for_run(environment, dut, kind):
    """A check's environment bound to its unit; a ``rules`` run keeps its assumptions only."""
    def bound(m, inputs, _):
        assumptions, assertions = environment(m, inputs, dut)
        return assumptions, (assertions if kind == "framing" else [])
    return bound


def run(check, kind, workdir, broken=None, timeout=1800):
    """Prove one check's ``rules`` or ``framing``: a :class:`sim.formal.Proof`."""
    depth = check.rules_depth if kind == "rules" else check.framing_depth
    if broken:
        depth = check.reach
    suffix = f"_{broken}" if broken else ""
    return prove(harness(check, kind, broken), f"{check.name}_{kind}{suffix}", workdir,
                 depth=depth, timeout=timeout)


def verify(check, workdir, timeout=1800):
    """Every run of one check: its ``rules`` and ``framing``, and the deliberately broken
    variants, each of which must fail (the properties can fail, and the outputs they
    watch are reached within the depth). Returns ``{run: Proof}``."""
    proofs = {kind: run(check, kind, workdir, timeout=timeout) for kind in ("rules", "framing")}
    for broken in StreamHarness.BROKEN:
        if broken == "owe_less" and check.owed is None:
            continue
        kind = "framing" if broken == "owe_less" else "rules"
        proofs[broken] = run(check, kind, workdir, broken=broken, timeout=timeout)
    return proofs


def verdicts(proofs):
    """Whether a :func:`verify` result is right: the real runs pass, the broken ones fail."""
    return all(p.passed == (name in ("rules", "framing")) for name, p in proofs.items())


def main(argv=None):
    import argparse
    import json
    import sys
    import time
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m sim.formal_units",
                                     description="make formal: prove every unit's protocols")
    parser.add_argument("--only", nargs="+", metavar="UNIT",
                        help=f"checks to run (default: all of {[c.name for c in CHECKS]})")
    parser.add_argument("--out", default="build/formal", help="work folder and summary.json")
    args = parser.parse_args(argv)
    names = {c.name for c in CHECKS}
    unknown = set(args.only or ()) - names
    if unknown:
        parser.exit(2, f"error: --only: no check named {sorted(unknown)}; "
                       f"checks: {sorted(names)}\n")
    out = Path(args.out)
    summary, start, ok = {}, time.monotonic(), True
    for check in CHECKS:
        if args.only and check.name not in args.only:
            continue
        proofs = verify(check, out)
        right = verdicts(proofs)
        ok &= right
        summary[check.name] = {
            "right": right, "note": check.note,
            **{name: {"verdict": p.verdict, "depth": p.depth, "seconds": round(p.seconds, 1)}
               for name, p in proofs.items()}}
        for name, p in proofs.items():
            expect = "" if name in ("rules", "framing") else " (broken on purpose: must fail)"
            print(f"{p.summary}{expect}", flush=True)
    total = time.monotonic() - start
    (out / "summary.json").write_text(json.dumps({"checks": summary, "seconds": round(total, 1)},
                                                 indent=2) + "\n")
    print(f"{len(summary)} checks, {'all right' if ok else 'WRONG VERDICTS'} in {total:.0f} s; "
          f"{out / 'summary.json'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
