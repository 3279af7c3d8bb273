"""A queue's sequencer: walks one instruction stream in order, expert loops included.

::

    begin --> pc = first --> imem read --> candidate (the next instruction) --go--> issued
                  ^                                                         |
                  +--- next pc: pc + 1, the loop's first body instruction, or past the body

The top decides when the candidate may go (its engine is idle, its tokens are
there, its unit bank is ready) and drives ``go``; the sequencer then presents
the next instruction one cycle later (the instruction memory is read in the
issue cycle). ``LOOP`` is handled here: it reads the routing table's active
expert count when it issues and runs the next ``body`` instructions once per
active expert (none: the body is skipped); ``iteration`` tells the top which
active expert the candidate belongs to. ``END`` finishes the stream.

Latency: the first candidate is there the cycle after ``begin``; after an issue
in cycle ``c`` the next candidate is there in ``c + 1`` (one instruction per cycle
at most). An opcode outside :class:`rtl.control.isa.Opcode` raises ``bad_opcode``
while it is the candidate (it never issues).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .isa import ARGS, INSTRUCTION, INSTRUCTION_BITS, Opcode

__all__ = ["Sequencer"]


class Sequencer(wiring.Component):
    """One queue's program counter and loop state (see the module docstring).

    Parameters
    ----------
    pc_bits : int
        Width of an instruction index (``capacity.instructions``).
    experts : int
        Most active experts (``capacity.experts``).

    Members
    -------
    begin : In(1)
        Pulse: start the stream at ``first``.
    first : In(pc_bits)
    imem_addr : Out(pc_bits)
    imem_en : Out(1)
    imem_data : In(INSTRUCTION_BITS)
        The instruction memory's read port (synchronous: data the cycle after ``en``).
    pending : Out(1)
        A candidate is there (``candidate`` is valid).
    candidate : Out(INSTRUCTION)
    iteration : Out(range(experts))
        The loop iteration of the candidate (0 outside loops).
    in_body : Out(1)
        The candidate is in a loop body.
    go : In(1)
        Issue the candidate this cycle (only while ``pending``).
    active : In(range(experts + 1))
        The routing table's active experts, read when a LOOP issues.
    finished : Out(1)
        The stream's END has issued.
    bad_opcode : Out(1)
    """

    def __init__(self, pc_bits, experts):
        self._pc_bits, self._experts = pc_bits, experts
        super().__init__({
            "begin": In(1), "first": In(pc_bits),
            "imem_addr": Out(pc_bits), "imem_en": Out(1), "imem_data": In(INSTRUCTION_BITS),
            "pending": Out(1), "candidate": Out(INSTRUCTION),
            "iteration": Out(range(experts)), "in_body": Out(1),
            "go": In(1), "active": In(range(experts + 1)),
            "finished": Out(1), "bad_opcode": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        pc_bits, experts = self._pc_bits, self._experts
        pc = Signal(pc_bits)
        pending = Signal()
        loop_first, loop_end = Signal(pc_bits), Signal(pc_bits)
        loop_iter, loop_count = Signal(range(experts)), Signal(range(experts + 1))
        in_loop = Signal()
        ins = INSTRUCTION(self.imem_data)
        m.d.comb += [self.candidate.eq(self.imem_data), self.pending.eq(pending),
                     self.iteration.eq(Mux(in_loop, loop_iter, 0)), self.in_body.eq(in_loop)]
        known = Signal()
        with m.Switch(ins.op):
            for op in Opcode:
                with m.Case(op):
                    m.d.comb += known.eq(1)
        m.d.comb += self.bad_opcode.eq(pending & ~known)

        issue = pending & self.go & known
        body = ARGS[Opcode.LOOP](ins.args[:ARGS[Opcode.LOOP].size]).body
        next_pc = Signal(pc_bits)
        m.d.comb += next_pc.eq(pc + 1)
        with m.If(issue):
            with m.If(ins.op == Opcode.LOOP):
                with m.If(self.active == 0):
                    m.d.comb += next_pc.eq(pc + 1 + body)
                with m.Else():
                    m.d.sync += [in_loop.eq(1), loop_first.eq(pc + 1),
                                 loop_end.eq(pc + 1 + body), loop_iter.eq(0),
                                 loop_count.eq(self.active)]
            with m.Elif(in_loop & (pc + 1 == loop_end)):
                with m.If(loop_iter + 1 < loop_count):
                    m.d.comb += next_pc.eq(loop_first)
                    m.d.sync += loop_iter.eq(loop_iter + 1)
                with m.Else():
                    m.d.sync += in_loop.eq(0)
            with m.If(ins.op == Opcode.END):
                m.d.sync += [pending.eq(0), self.finished.eq(1)]
            with m.Else():
                m.d.comb += [self.imem_addr.eq(next_pc), self.imem_en.eq(1)]
                m.d.sync += pc.eq(next_pc)
        with m.If(self.begin):
            m.d.comb += [self.imem_addr.eq(self.first), self.imem_en.eq(1)]
            m.d.sync += [pc.eq(self.first), pending.eq(1), in_loop.eq(0),
                         self.finished.eq(0)]
        return m
