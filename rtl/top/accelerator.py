"""The accelerator top: runs a compiled program from DRAM over AXI4.

::

    s_axi_control --> ControlRegisters --run--> fetch: header, then the streams --> imem
                                                                                   |
          +-----------------+-------------------+--------------------------------+
          v                 v                   v
      load queue       compute queue        store queue     (rtl.control.sequencer; tokens,
      (Sequencer)      (Sequencer)          (Sequencer)      bank counters: this module)
          |                 |                   |
    DmaReader --> linear.w / layernorm.p / X, G     NORM:   X -> LayerNorm -> H
      ^                                             LINEAR: H, A, G -> linear kernel -> Q K V,
      | m_axi0 ..                                           G, LOGITS, X (+), combiner, gating
    DmaWriter <-- X, LOGITS                         ATTENTION: Q, K, V -> attention -> A (the
                                                            unit runs beside the queue until
                                                            a SYNC with ``attention``)
                                                    COMBINE: combiner -> X (+)

Every instruction follows the timeline of :mod:`moevit.schedule` (which this top
must equal cycle for cycle): a queue issues its next instruction the cycle after
the previous one completed and once its tokens, its matrix / LayerNorm image or a
free bank are there; LOADs and the STORE take their DMA the cycle after they
start; units get their first buffer beat :data:`moevit.schedule.SOURCE_LATENCY`
cycles after the start (a :class:`rtl.memory.buffers.RowGenerator`, then a
:class:`rtl.memory.buffers.BufferReader`); outputs are written as they leave.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..bus.axi import axi4_signature, forward, lite_signature, read_signature, write_signature
from ..compute.attention import AttentionKernel
from ..compute.constmul import times
from ..compute.layernorm import LayerNormUnit, param_layout
from ..compute.linear import LinearKernel
from ..config import BOUNDARY, BUFFERS, AcceleratorConfig
from ..control.isa import (ARGS, HEADER, INSTRUCTION, INSTRUCTION_BITS, MAGIC, TOKENS, VERSION,
                           Base, Buffer, Index, Opcode, Queue, Rows, Write)
from ..control.registers import ENGINES, ERRORS, ControlRegisters
from ..control.sequencer import Sequencer
from ..memory.buffers import Buffer as BufferMemory
from ..memory.buffers import BufferReader, RowGenerator, entry_layout
from ..memory.dma import BEATS_BITS, DmaReader, DmaWriter, sub_region
from ..moe.combine import Combiner
from ..moe.gating import Gating
from ..params import validating

__all__ = ["Accelerator"]

_ELEM = {"int8": 8, "int16": 16}
_ROW_BITS = 11          # token rows (1024 at most)
_COL_BITS = 12          # sub-words in a row


class _Memory:
    """One physical buffer: geometry and its client ports (filled in by the engines)."""

    def __init__(self, name, config, dtype, rows, cols, granule_bits, readers, writers):
        self.name, self.dtype = name, dtype
        self.elem = _ELEM[dtype]
        self.word_bits = config.memory_word_bytes(dtype) * 8
        self.pitch = cols * self.elem // self.word_bits
        self.rows = rows
        self.granule_bits = granule_bits
        self.unit = BufferMemory(rows * self.pitch, self.word_bits // granule_bits, granule_bits,
                                 readers, writers)
        self._next_r = self._next_w = 0

    def reader(self):
        port = getattr(self.unit, f"r{self._next_r}")
        self._next_r += 1
        return port

    def writer(self):
        port = getattr(self.unit, f"w{self._next_w}")
        self._next_w += 1
        return port


class Accelerator(wiring.Component):
    """The whole accelerator for one :class:`rtl.config.AcceleratorConfig`.

    Members
    -------
    s_axi_control : In(rtl.bus.axi.lite_signature())
        The ``ap_ctrl_hs`` registers (:mod:`rtl.control.registers`).
    m_axi0 .. m_axi{ports-1} : Out(rtl.bus.axi.axi4_signature(axi.data_bits))
        Instructions, weights, activations; every transfer striped over all ports.
    interrupt : Out(1)
    """

    def __init__(self, config):
        with validating(self):
            if not isinstance(config, AcceleratorConfig):
                raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
            if len(config.attention.codes) != 1:
                raise ValueError(f"the top builds one attention code form, not "
                                 f"attention.codes = {config.attention.codes}")
            if config.resident:
                raise ValueError(f"the top streams every weight from DRAM: weight_store must be "
                                 f"0, not {config.weight_store} (the resident store exists in "
                                 f"the schedule model only)")
        self._config = config
        axi = config.axi
        super().__init__({
            "s_axi_control": In(lite_signature()),
            **{f"m_axi{p}": Out(axi4_signature(axi.data_bits)) for p in range(axi.ports)},
            "interrupt": Out(1),
        })

    @property
    def config(self):
        return self._config

    # ------------------------------------------------------------------------------------

    def elaborate(self, platform):
        # The register file stays up; everything else is the core, which is reset after an
        # error (once its DMA transfers have finished) so that the next run starts clean.
        top = Module()
        top.submodules.registers = regs = ControlRegisters()
        wiring.connect(top, wiring.flipped(self.s_axi_control), regs.s_axi)
        top.d.comb += self.interrupt.eq(regs.interrupt)
        m = Module()
        core_reset = Signal()
        top.submodules.core = ResetInserter(core_reset)(m)
        status = self._core(m, regs)
        error_hold, cycles_hold = Signal(8), Signal(32)
        with top.If(regs.run):
            top.d.sync += error_hold.eq(0)
        with top.Elif(status["error"] != 0):
            top.d.sync += error_hold.eq(status["error"])
        with top.If(regs.finished):
            top.d.sync += cycles_hold.eq(status["cycles"])
        top.d.comb += [regs.error.eq(error_hold), regs.cycles.eq(cycles_hold),
                       core_reset.eq(status["recover"])]
        return top

    def _core(self, m, regs):
        cfg = self._config
        cap, axi, w = cfg.capacity, cfg.axi, cfg.word
        lc = cfg.linear_config()
        path = axi.path_bits
        args = regs.arguments
        m.submodules.reader = reader = DmaReader(axi)
        m.submodules.writer = writer = DmaWriter(axi)
        for p in range(axi.ports):
            port = getattr(self, f"m_axi{p}")
            forward(m, getattr(reader, f"m{p}"), port, read_signature(axi.data_bits))
            forward(m, getattr(writer, f"m{p}"), port, write_signature(axi.data_bits))

        # ---- units ----------------------------------------------------------------------------
        m.submodules.linear = linear = LinearKernel(lc)
        m.submodules.attention = attention = AttentionKernel(cfg.attention_config())
        m.submodules.layernorm = norm = LayerNormUnit(cap.dim, cfg.norm_lanes)
        m.submodules.gating = gate = Gating(cap.experts, cap.top_k, cap.tokens)
        m.submodules.combiner = combiner = Combiner(cap.tokens, cap.dim, w)

        # ---- buffers ---------------------------------------------------------------------------
        def granule(dtype, *widths):
            return min(min(widths), cfg.memory_word_bytes(dtype) * 8)

        lanes = cfg.norm_lanes
        shape = cfg.buffer_shape
        mem = {
            "X": _Memory("X", cfg, "int16", *shape("X"), granule("int16", path, w * 16),
                         readers=4, writers=3),
            "H": _Memory("H", cfg, "int8", *shape("H"), granule("int8", lanes * 8, w * 8),
                         readers=1, writers=2),
            "G": _Memory("G", cfg, "int8", *shape("G"), granule("int8", path, w * 8),
                         readers=1, writers=2),
        }
        for name in ("Q", "K", "V"):
            mem[name] = _Memory(name, cfg, "int8", cap.tokens, shape("H")[1], w * 8,
                                readers=1, writers=1)
        if not cfg.share_buffers:
            mem["A"] = _Memory("A", cfg, "int8", *shape("A"), w * 8, readers=1, writers=1)
        if cap.classes:
            mem["LOGITS"] = _Memory("LOGITS", cfg, "int16", *shape("LOGITS"), w * 16,
                                    readers=1, writers=1)
        logits_cols = -(-cap.experts // w) * w
        mem["U"] = _Memory("U", cfg, "int16", cap.tokens,
                           max(logits_cols, cfg.row_align("int16")), w * 16,
                           readers=1, writers=1)
        for name, memory_ in mem.items():
            m.submodules[f"buffer_{name}"] = memory_.unit
        mem_a = mem["H"] if cfg.share_buffers else mem["A"]

        # ---- routing table: queue entries, per-expert start and count, the active list ----
        entries = cap.top_k * cap.tokens
        entry_bits = max(1, (entries - 1).bit_length())
        m.submodules.routing_entries = table = memory.Memory(
            shape=entry_layout(_ROW_BITS), depth=entries, init=[])
        table_wr = table.write_port()
        table_rd = table.read_port()
        m.d.comb += table_rd.en.eq(0)          # a read port's enable is high unless driven
        starts = Signal(data.ArrayLayout(entry_bits, cap.experts))
        counts = Signal(data.ArrayLayout(_ROW_BITS + 1, cap.experts))
        active_list = Signal(data.ArrayLayout(range(cap.experts), cap.experts))
        n_active = Signal(range(cap.experts + 1))

        # ---- instruction memory and the sequencers -------------------------------------------
        iw = max(path, INSTRUCTION_BITS)
        per = iw // INSTRUCTION_BITS
        pc_bits = max(1, (cap.instructions - 1).bit_length())
        m.submodules.imem = imem = memory.Memory(
            shape=data.ArrayLayout(path, max(1, INSTRUCTION_BITS // path)),
            depth=-(-cap.instructions // per), init=[])
        imem_wr = imem.write_port(granularity=1)
        seqs = {}
        for q in Queue:
            seq = Sequencer(pc_bits, cap.experts)
            m.submodules[f"sequencer_{q.name.lower()}"] = seqs[q] = seq
            # The last program word is written in the cycle the sequencers begin (the
            # reader's done pulses with its last word): a read of the row being written
            # takes the written parts from a bypass. A transparent read port would do the
            # same, but yosys then maps this three-reader memory to LUT RAM, not block RAM.
            rd = imem.read_port()
            name = q.name.lower()
            slot = Signal(range(per), name=f"slot_{name}")
            hit = Signal(len(imem_wr.en), name=f"bypass_{name}")
            fresh = Signal.like(imem_wr.data, name=f"fresh_{name}")
            m.d.comb += [rd.addr.eq(seq.imem_addr >> exact_log2(per)), rd.en.eq(seq.imem_en)]
            with m.If(seq.imem_en):
                m.d.sync += [slot.eq(seq.imem_addr[:exact_log2(per)] if per > 1 else 0),
                             hit.eq(Mux(imem_wr.addr == rd.addr, imem_wr.en, 0)),
                             fresh.eq(imem_wr.data)]
            word = Cat(*[Mux(hit[g], fresh[g], rd.data[g]) for g in range(len(imem_wr.en))])
            m.d.comb += [seq.imem_data.eq(word.word_select(slot, INSTRUCTION_BITS)),
                         seq.active.eq(n_active)]

        # ---- run control: fetch, frames, errors ------------------------------------------------
        header = Signal(HEADER)
        if path < INSTRUCTION_BITS:
            header_bits = Signal(INSTRUCTION_BITS)
            m.d.comb += header.eq(header_bits[:HEADER.size])
        error = Signal(8)
        running = Signal()            # the queues may issue
        busy_run = Signal()
        cycles = Signal(32)
        frame = Signal(16)
        in_base, out_base = Signal(64), Signal(64)
        total = Signal(pc_bits + 1)
        fetch_word = Signal(pc_bits + 1)
        owner_fetch = Signal()        # the fetch owns the DMA reader
        draining = Signal()           # after an error: drop the reads still arriving
        self._draining = draining
        header_done = Signal()        # the fetch reads the streams (into the imem)
        m.d.comb += regs.busy.eq(busy_run)
        recover = Signal()
        # No instruction issued or completed for cfg.watchdog cycles: the run ends.
        idle_cycles = Signal(range(cfg.watchdog + 1))
        progress = Signal()
        finished_all = Cat(seqs[q].finished for q in Queue).all()
        with m.If(busy_run & ~regs.finished):
            m.d.sync += cycles.eq(cycles + 1)
        stream_beats = Signal(BEATS_BITS)
        m.d.comb += stream_beats.eq(((total - 1) * 16 + axi.path_bytes - 1)
                                    >> exact_log2(axi.path_bytes))
        begin = Signal()
        fetch_cmd = Signal(reader.cmd.payload.shape())
        fetch_cmd_valid = Signal()
        with m.FSM(name="run"):
            with m.State("IDLE"):
                with m.If(regs.run):
                    m.d.sync += [busy_run.eq(1), cycles.eq(1), frame.eq(0), error.eq(0),
                                 in_base.eq(args.input), out_base.eq(args.output)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [owner_fetch.eq(1), fetch_cmd_valid.eq(1),
                             fetch_cmd.address.eq(args.program),
                             fetch_cmd.beats.eq(axi.words(INSTRUCTION_BITS // 8))]
                with m.If(reader.cmd.ready):
                    m.next = "HEADER_WAIT"
            with m.State("HEADER_WAIT"):
                m.d.comb += owner_fetch.eq(1)
                # The header arrives in one load-path word, or in halves on a 64-bit path.
                if path >= INSTRUCTION_BITS:
                    with m.If(reader.o.valid):
                        m.d.sync += header.eq(reader.o.payload[:HEADER.size])
                else:
                    with m.If(reader.o.valid):
                        m.d.sync += header_bits.eq(Cat(header_bits[path:], reader.o.payload))
                with m.If(reader.done):
                    m.next = "CHECK"
            with m.State("CHECK"):
                # The header's DMA ended last cycle; this is its end + 1: take the streams' DMA.
                count = header.load + header.compute + header.store
                # This frame's output slot must not overlap the program it runs (the
                # program would be overwritten in DRAM for the next frame).
                program_end = (args.program + axi.footprint(axi.words(INSTRUCTION_BITS // 8))
                               + self._footprint(axi, self._words(axi, count * 16)))
                output_end = out_base + self._footprint(
                    axi, self._words(axi, header.output_bytes))
                overlap = (out_base < program_end) & (args.program < output_end)
                well_formed = ((header.magic == MAGIC) & (header.version == VERSION)
                               & (count + 1 <= cap.instructions) & (header.load != 0)
                               & (header.compute != 0) & (header.store != 0))
                ok = well_formed & ~reader.error & ~overlap
                m.d.comb += [owner_fetch.eq(1)]
                with m.If(ok):
                    m.d.comb += [fetch_cmd_valid.eq(1),
                                 fetch_cmd.address.eq(
                                     args.program
                                     + axi.footprint(axi.words(INSTRUCTION_BITS // 8))),
                                 fetch_cmd.beats.eq(((count * 16) + axi.path_bytes - 1)
                                                    >> exact_log2(axi.path_bytes))]
                    m.d.sync += [total.eq(count + 1), fetch_word.eq(0)]
                    m.next = "STREAMS"
                with m.Else():
                    m.d.sync += error.eq(Mux(reader.error, ERRORS["read_response"],
                                             Mux(well_formed, ERRORS["overlap"],
                                                 ERRORS["header"])))
                    m.next = "FINISH"
            with m.State("STREAMS"):
                m.d.comb += [owner_fetch.eq(1), header_done.eq(1)]
                with m.If(reader.done):
                    with m.If(reader.error):
                        m.d.sync += error.eq(ERRORS["read_response"])
                        m.next = "FINISH"
                    with m.Else():
                        m.d.comb += begin.eq(1)
                        m.d.sync += running.eq(1)
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(idle_cycles == cfg.watchdog):
                    m.d.sync += error.eq(ERRORS["watchdog"])
                with m.If(error != 0):
                    m.d.sync += [running.eq(0), idle_cycles.eq(0)]
                    m.next = "DRAIN"
                with m.Elif(finished_all):
                    # The cycle after the last END: the frame is done.
                    m.d.sync += [running.eq(0), frame.eq(frame + 1),
                                 in_base.eq(in_base + header.input_bytes),
                                 out_base.eq(out_base + header.output_bytes)]
                    with m.If(frame + 1 < Mux(args.frames == 0, 1, args.frames)):
                        m.next = "HEADER"
                    with m.Else():
                        m.d.comb += regs.finished.eq(1)
                        m.d.sync += busy_run.eq(0)
                        m.next = "IDLE"
            with m.State("DRAIN"):
                # An error: let the DMA engines finish their transfers (reads are taken and
                # dropped), then stop; a bus that never answers ends it after the watchdog.
                m.d.comb += draining.eq(1)
                with m.If((reader.cmd.ready & writer.cmd.ready) | (idle_cycles == cfg.watchdog)):
                    m.next = "FINISH"
            with m.State("FINISH"):
                m.d.comb += [regs.finished.eq(1), recover.eq(error != 0)]
                m.d.sync += busy_run.eq(0)
                m.next = "IDLE"
        # The streams land in the instruction memory as they arrive (one load-path word per
        # cycle: whole memory words, or halves of one on a 64-bit path).
        fetching = Signal()
        m.d.comb += fetching.eq(owner_fetch & reader.o.valid)
        parts = max(1, INSTRUCTION_BITS // path)
        m.d.comb += [imem_wr.addr.eq(fetch_word >> exact_log2(parts)),
                     imem_wr.data.eq(Cat(*[reader.o.payload] * parts)),
                     imem_wr.en.eq(Mux(fetching & header_done,
                                       1 << (fetch_word[:exact_log2(parts)] if parts > 1 else 0),
                                       0))]
        with m.If(fetching & header_done):
            m.d.sync += fetch_word.eq(fetch_word + 1)
        for q, seq in seqs.items():
            first = {Queue.LOAD: 0, Queue.COMPUTE: header.load,
                     Queue.STORE: header.load + header.compute}[q]
            m.d.comb += [seq.begin.eq(begin), seq.first.eq(first)]
            with m.If(seq.bad_opcode & running):
                m.d.sync += error.eq(ERRORS["opcode"])

        # ---- tokens and unit banks ---------------------------------------------------------
        channels = {(Queue.LOAD, Queue.COMPUTE): Signal(8, name="tokens_l2c"),
                    (Queue.COMPUTE, Queue.LOAD): Signal(8, name="tokens_c2l"),
                    (Queue.COMPUTE, Queue.STORE): Signal(8, name="tokens_c2s"),
                    (Queue.STORE, Queue.COMPUTE): Signal(8, name="tokens_s2c")}
        prev = {Queue.COMPUTE: Queue.LOAD, Queue.STORE: Queue.COMPUTE}
        nxt = {Queue.LOAD: Queue.COMPUTE, Queue.COMPUTE: Queue.STORE}
        counters = {n: Signal(32, name=n) for n in (
            "matrix_issued", "matrix_loaded", "linear_issued", "linear_done",
            "normload_issued", "norm_loaded", "norm_issued", "norm_done")}
        busy = {q: Signal(name=f"busy_{q.name.lower()}") for q in Queue}
        done = {q: Signal(name=f"done_{q.name.lower()}") for q in Queue}
        issue = {q: Signal(name=f"issue_{q.name.lower()}") for q in Queue}
        current = {q: Signal(INSTRUCTION, name=f"current_{q.name.lower()}") for q in Queue}
        expert = {q: Signal(range(cap.experts), name=f"expert_{q.name.lower()}") for q in Queue}
        pops, pushes = {c: [] for c in channels}, {c: [] for c in channels}
        # The attention unit runs beside the compute queue: an ATTENTION completes when the
        # unit takes it (once idle), a SYNC with `attention` waits until it is idle again.
        a_active = Signal(name="attention_active")
        for q, seq in seqs.items():
            cand = seq.candidate
            op = cand.op
            ok = [seq.pending, ~busy[q], running]
            if q in prev:
                ok.append(~cand.tokens.pop_prev | (channels[prev[q], q] != 0))
                pops[prev[q], q].append(issue[q] & cand.tokens.pop_prev)
            if q in nxt:
                ok.append(~cand.tokens.pop_next | (channels[nxt[q], q] != 0))
                pops[nxt[q], q].append(issue[q] & cand.tokens.pop_next)
            if q == Queue.COMPUTE:
                ok.append((op != Opcode.LINEAR)
                          | (counters["matrix_loaded"] > counters["linear_issued"]))
                ok.append((op != Opcode.NORM)
                          | (counters["norm_loaded"] > counters["norm_issued"]))
                sync = ARGS[Opcode.SYNC](cand.args[:ARGS[Opcode.SYNC].size])
                ok.append(~a_active | ~((op == Opcode.ATTENTION)
                                        | ((op == Opcode.SYNC) & sync.attention)))
            if q == Queue.LOAD:
                ok.append((op != Opcode.LOAD_MATRIX)
                          | (counters["matrix_issued"] - counters["linear_done"] < 2))
                ok.append((op != Opcode.LOAD_NORM)
                          | (counters["normload_issued"] - counters["norm_done"] < 2))
            m.d.comb += [seq.go.eq(Cat(ok).all()), issue[q].eq(seq.go & seq.pending
                                                                & ~seq.bad_opcode)]
            control = (op == Opcode.END) | (op == Opcode.SYNC) | (op == Opcode.LOOP)
            if q == Queue.COMPUTE:
                control |= op == Opcode.ATTENTION
            completes = Signal(name=f"completes_{q.name.lower()}")
            m.d.comb += completes.eq((issue[q] & control) | done[q])
            with m.If(issue[q]):
                m.d.sync += [current[q].eq(cand),
                             expert[q].eq(active_list[seq.iteration])]
                with m.If(~control):
                    m.d.sync += busy[q].eq(1)
            with m.If(done[q]):
                m.d.sync += busy[q].eq(0)
            # Tokens are pushed when the instruction completes.
            flags = TOKENS(Mux(issue[q] & control, cand.tokens.as_value(),
                               current[q].tokens.as_value()))
            if q in prev:
                pushes[q, prev[q]].append(completes & flags.push_prev)
            if q in nxt:
                pushes[q, nxt[q]].append(completes & flags.push_next)
        for c, count in channels.items():
            push, pop = sum(pushes[c], Const(0, 8)), sum(pops[c], Const(0, 8))
            with m.If((count == (1 << len(count)) - 1) & (push > pop)):
                # A token more than the counter holds: the program is wrong; never wrap.
                m.d.sync += error.eq(ERRORS["token"])
            with m.Else():
                m.d.sync += count.eq(count + push - pop)
        cur_load, cur_comp = current[Queue.LOAD], current[Queue.COMPUTE]
        load_op, comp_op = seqs[Queue.LOAD].candidate.op, seqs[Queue.COMPUTE].candidate.op
        c = counters
        m.d.sync += [
            c["matrix_issued"].eq(c["matrix_issued"] + (issue[Queue.LOAD]
                                                        & (load_op == Opcode.LOAD_MATRIX))),
            c["normload_issued"].eq(c["normload_issued"] + (issue[Queue.LOAD]
                                                            & (load_op == Opcode.LOAD_NORM))),
            c["linear_issued"].eq(c["linear_issued"] + (issue[Queue.COMPUTE]
                                                        & (comp_op == Opcode.LINEAR))),
            c["norm_issued"].eq(c["norm_issued"] + (issue[Queue.COMPUTE]
                                                    & (comp_op == Opcode.NORM))),
            c["matrix_loaded"].eq(c["matrix_loaded"] + (done[Queue.LOAD]
                                                        & (cur_load.op == Opcode.LOAD_MATRIX))),
            c["norm_loaded"].eq(c["norm_loaded"] + (done[Queue.LOAD]
                                                    & (cur_load.op == Opcode.LOAD_NORM))),
            c["linear_done"].eq(c["linear_done"] + (done[Queue.COMPUTE]
                                                    & (cur_comp.op == Opcode.LINEAR))),
            c["norm_done"].eq(c["norm_done"] + (done[Queue.COMPUTE]
                                                & (cur_comp.op == Opcode.NORM))),
        ]
        with m.If(begin):
            for n in counters.values():
                m.d.sync += n.eq(0)
            for n in channels.values():
                m.d.sync += n.eq(0)

        # ---- engines -----------------------------------------------------------------------
        bases = {Base.MODEL: args.model, Base.INPUT: in_base, Base.OUTPUT: out_base}
        start_load = issue[Queue.LOAD] & ~((load_op == Opcode.END) | (load_op == Opcode.SYNC)
                                           | (load_op == Opcode.LOOP))
        self._load_engine(m, cfg, seqs[Queue.LOAD].candidate, start_load,
                          active_list[seqs[Queue.LOAD].iteration], args, bases, reader,
                          owner_fetch, fetch_cmd, fetch_cmd_valid, linear, norm, mem,
                          done[Queue.LOAD], error)
        store_op = seqs[Queue.STORE].candidate.op
        start_store = issue[Queue.STORE] & (store_op == Opcode.STORE_TENSOR)
        self._store_engine(m, cfg, seqs[Queue.STORE].candidate, start_store, bases, writer, mem,
                           done[Queue.STORE], error)
        start_comp = issue[Queue.COMPUTE] & ~((comp_op == Opcode.END) | (comp_op == Opcode.SYNC)
                                              | (comp_op == Opcode.LOOP))
        self._compute_engine(m, cfg, seqs[Queue.COMPUTE].candidate, start_comp,
                             active_list[seqs[Queue.COMPUTE].iteration], linear, attention,
                             norm, gate, combiner, mem, mem_a, table_wr, table_rd, starts,
                             counts, active_list, n_active, done[Queue.COMPUTE], a_active)

        m.d.comb += progress.eq(Cat(*(issue[q] | done[q] for q in Queue),
                                    self._attention_done).any())
        with m.If(running | draining):
            m.d.sync += idle_cycles.eq(Mux(progress | (idle_cycles == cfg.watchdog), 0,
                                           idle_cycles + 1))
        # ---- busy counters ----------------------------------------------------------------------
        engine_busy = {"load": busy[Queue.LOAD], "compute": busy[Queue.COMPUTE],
                       "store": busy[Queue.STORE]}
        for name in ENGINES:
            count = Signal(32, name=f"busy_cycles_{name}")
            flag = engine_busy.get(name, self._unit_busy.get(name, Const(0)))
            with m.If(regs.run):
                m.d.sync += count.eq(0)
            with m.Elif(flag & busy_run):
                m.d.sync += count.eq(count + 1)
            m.d.comb += regs.busy_cycles[ENGINES.index(name)].eq(count)
        return {"error": error, "cycles": cycles, "recover": recover}

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _words(axi, nbytes):
        """:meth:`rtl.config.AxiPorts.words` of a Value."""
        return (nbytes + axi.path_bytes - 1) >> exact_log2(axi.path_bytes)

    @staticmethod
    def _footprint(axi, beats):
        """:meth:`rtl.config.AxiPorts.footprint` of a Value."""
        size = beats << exact_log2(axi.data_bytes)
        if axi.ports > 1:
            size = ((size + BOUNDARY - 1) >> exact_log2(BOUNDARY)) << exact_log2(BOUNDARY)
        return size << exact_log2(axi.ports)

    @staticmethod
    def _dram_address(m, cfg, ins_args, bases, index, beats, name):
        """Base + offset + index * footprint(beats), as a signal (combinational)."""
        axi = cfg.axi
        sub = sub_region(m, axi, beats, f"{name}_sub")
        # The sub-region is a whole number of bus words (of 4 KB blocks with several ports):
        # multiply the count, not the bytes, so no multiplier input carries constant zeros.
        unit = exact_log2(axi.data_bytes if axi.ports == 1 else BOUNDARY)
        offset = (index * sub[unit:]) << (unit + exact_log2(axi.ports))
        base = Signal(64, name=f"{name}_base")
        with m.Switch(ins_args.base):
            for b, value in bases.items():
                with m.Case(b):
                    m.d.comb += base.eq(value)
        address = Signal(64, name=f"{name}_address")
        m.d.comb += address.eq(base + ins_args.offset + offset)
        return address

    @staticmethod
    def _tensor_beats(m, cfg, ins_args, name):
        """Load-path words of a LOAD / STORE_TENSOR, and memory words per DRAM row."""
        per_row = {}
        beats = Signal(BEATS_BITS, name=f"{name}_beats")
        words = Signal(_COL_BITS, name=f"{name}_row_words")
        scale = Signal(range(exact_log2(cfg.memory_word_bytes("int16") // cfg.axi.path_bytes) + 1),
                       name=f"{name}_row_scale")
        with m.Switch(ins_args.buffer):
            for buffer in (Buffer.X, Buffer.G, Buffer.LOGITS):
                dtype = BUFFERS[buffer.name][0]
                mbytes = cfg.memory_word_bytes(dtype)
                elem = _ELEM[dtype] // 8
                per_row[buffer] = mbytes // cfg.axi.path_bytes
                with m.Case(buffer):
                    m.d.comb += [words.eq((times(ins_args.cols, elem) + (mbytes - 1))
                                          >> exact_log2(mbytes)),
                                 scale.eq(exact_log2(per_row[buffer]))]
        # One multiplier for the three buffers (the words per row are selected first).
        m.d.comb += beats.eq((ins_args.rows * words) << scale)
        return beats, words, per_row

    # ---- the load queue's engine ----------------------------------------------------------

    def _load_engine(self, m, cfg, cand, start, expert, args, bases, reader, owner_fetch,
                     fetch_cmd, fetch_cmd_valid, linear, norm, mem, done, error):
        path = cfg.axi.path_bits
        op = Signal(Opcode, name="load_op")
        matrix = ARGS[Opcode.LOAD_MATRIX](cand.args[:ARGS[Opcode.LOAD_MATRIX].size])
        params = ARGS[Opcode.LOAD_NORM](cand.args[:ARGS[Opcode.LOAD_NORM].size])
        tensor = ARGS[Opcode.LOAD_TENSOR](cand.args[:ARGS[Opcode.LOAD_TENSOR].size])
        # The command in LOAD_COMMAND_LATENCY cycles: the candidate's beats and DRAM index
        # are registered as it starts, its address the cycle after.
        t_beats, t_words, _ = self._tensor_beats(m, cfg, tensor, "load_tensor")
        beats = Signal(BEATS_BITS, name="load_beats")
        index = Signal(max(len(args.task), len(expert)), name="load_index")
        located = Signal(matrix.shape(), name="load_located")   # its base and offset
        decoded = Signal(name="load_decoded")
        address = self._dram_address(m, cfg, located, bases, index, beats, "load")
        cmd_valid = Signal(name="load_cmd_valid")
        cmd = Signal(reader.cmd.payload.shape(), name="load_cmd")
        buffer = Signal(Buffer, name="load_buffer")
        flip = Signal(name="load_flip")
        row0 = Signal(_ROW_BITS, name="load_row")
        row_words = Signal(_COL_BITS, name="load_row_words")
        active = Signal(name="load_active")
        m.d.sync += decoded.eq(start)
        with m.If(start):
            m.d.sync += [op.eq(cand.op), buffer.eq(tensor.buffer), flip.eq(tensor.flip_sign),
                         row0.eq(tensor.row), row_words.eq(t_words), active.eq(1),
                         located.eq(matrix),
                         beats.eq(Mux(cand.op == Opcode.LOAD_TENSOR, t_beats,
                                      Mux(cand.op == Opcode.LOAD_NORM, params.beats,
                                          matrix.beats))),
                         index.eq(Mux(cand.op != Opcode.LOAD_MATRIX, 0,
                                      Mux(matrix.index == Index.TASK, args.task,
                                          Mux(matrix.index == Index.EXPERT, expert, 0))))]
        with m.If(decoded):
            m.d.sync += [cmd_valid.eq(1), cmd.address.eq(address), cmd.beats.eq(beats)]
        # After an error no new transfer starts: the DRAIN state waits for the ones in flight
        # (a transfer taken as the core is reset would answer into the next run).
        issue = cmd_valid & ~self._draining
        with m.If(issue & reader.cmd.ready & ~owner_fetch):
            m.d.sync += cmd_valid.eq(0)
        m.d.comb += [reader.cmd.valid.eq(Mux(owner_fetch, fetch_cmd_valid, issue)),
                     reader.cmd.payload.eq(Mux(owner_fetch, fetch_cmd, cmd))]
        out = reader.o
        mine = active & ~owner_fetch
        m.d.comb += done.eq(mine & reader.done)
        with m.If(done):
            m.d.sync += active.eq(0)
            with m.If(reader.error):
                m.d.sync += error.eq(ERRORS["read_response"])
        ready = Signal(name="load_ready")
        m.d.comb += out.ready.eq(Mux(owner_fetch | self._draining, 1, ready))
        # LOAD_MATRIX: straight into the linear kernel's weight bank.
        m.d.comb += [linear.w.valid.eq(mine & out.valid & (op == Opcode.LOAD_MATRIX)),
                     linear.w.payload.eq(out.payload)]
        # LOAD_NORM: load-path words assembled into LayerNorm parameter words.
        p_bits = param_layout(cfg.norm_lanes).size
        parts = -(-p_bits // path)
        part = Signal(range(parts), name="norm_part")
        saved = Signal(max(1, (parts - 1) * path), name="norm_saved")
        complete = part == parts - 1
        m.d.comb += [norm.p.valid.eq(mine & out.valid & (op == Opcode.LOAD_NORM) & complete),
                     norm.p.payload.eq(Cat(saved, out.payload)[-p_bits:] if parts > 1
                                       else out.payload[:p_bits])]
        if parts > 1:
            m.d.comb += norm.p.payload.eq(Cat(saved[:(parts - 1) * path], out.payload)[:p_bits])
            with m.If(mine & out.valid & out.ready & (op == Opcode.LOAD_NORM)):
                m.d.sync += part.eq(Mux(complete, 0, part + 1))
                for k in range(parts - 1):
                    with m.If(part == k):
                        m.d.sync += saved[k * path:(k + 1) * path].eq(out.payload)
        # LOAD_TENSOR: load-path words into buffer memory words, row by row.
        tensor_writers = {b: mem[b.name].writer() for b in (Buffer.X, Buffer.G)}
        r = Signal(_ROW_BITS, name="load_r")
        j = Signal(_COL_BITS, name="load_j")
        q_part = Signal(8, name="load_part")
        with m.Switch(op):
            with m.Case(Opcode.LOAD_MATRIX):
                m.d.comb += ready.eq(linear.w.ready)
            with m.Case(Opcode.LOAD_NORM):
                m.d.comb += ready.eq(norm.p.ready | ~complete)
            with m.Case(Opcode.LOAD_TENSOR):
                m.d.comb += ready.eq(1)
        word = out.payload
        flipped = Signal(path, name="load_flipped")
        m.d.comb += flipped.eq(Mux(flip, word ^ Const(int("80" * (path // 8), 16), path), word))
        take = mine & out.valid & out.ready & (op == Opcode.LOAD_TENSOR)
        for b, port in tensor_writers.items():
            unit = mem[b.name]
            per = unit.word_bits // path
            gpp = path // unit.granule_bits
            sel = Signal(name=f"load_to_{b.name}")
            m.d.comb += sel.eq(take & (buffer == b))
            m.d.comb += [port.addr.eq(Mux(sel, times(row0 + r, unit.pitch) + j, 0)),
                         port.data.eq(Mux(sel, Cat(*[flipped] * per), 0)),
                         port.en.eq(Mux(sel, ((1 << gpp) - 1) << (q_part * gpp), 0))]
        per_any = {b: mem[b.name].word_bits // path for b in tensor_writers}
        last_part = Signal(name="load_last_part")
        with m.Switch(buffer):
            for b, per in per_any.items():
                with m.Case(b):
                    m.d.comb += last_part.eq(q_part == per - 1)
        with m.If(take):
            with m.If(last_part):
                m.d.sync += q_part.eq(0)
                with m.If(j + 1 == row_words):
                    m.d.sync += [j.eq(0), r.eq(r + 1)]
                with m.Else():
                    m.d.sync += j.eq(j + 1)
            with m.Else():
                m.d.sync += q_part.eq(q_part + 1)
        with m.If(start):
            m.d.sync += [r.eq(0), j.eq(0), q_part.eq(0), part.eq(0)]

    # ---- the store queue's engine ---------------------------------------------------------

    def _store_engine(self, m, cfg, cand, start, bases, writer, mem, done, error):
        path = cfg.axi.path_bits
        tensor = ARGS[Opcode.STORE_TENSOR](cand.args[:ARGS[Opcode.STORE_TENSOR].size])
        beats, row_words, per_row = self._tensor_beats(m, cfg, tensor, "store_tensor")
        address = self._dram_address(m, cfg, tensor, bases, 0, beats, "store")
        cmd_valid = Signal(name="store_cmd_valid")
        cmd = Signal(writer.cmd.payload.shape(), name="store_cmd")
        buffer = Signal(Buffer, name="store_buffer")
        cols = Signal(16, name="store_cols")
        active = Signal(name="store_active")
        words = Signal(_COL_BITS, name="store_words")
        with m.If(start):
            m.d.sync += [cmd_valid.eq(1), cmd.address.eq(address), cmd.beats.eq(beats),
                         buffer.eq(tensor.buffer), cols.eq(tensor.cols), active.eq(1),
                         words.eq(row_words)]
        issue = cmd_valid & ~self._draining      # no new transfer after an error
        with m.If(issue & writer.cmd.ready):
            m.d.sync += cmd_valid.eq(0)
        m.d.comb += [writer.cmd.valid.eq(issue), writer.cmd.payload.eq(cmd)]
        m.d.comb += done.eq(active & writer.done)
        with m.If(done):
            m.d.sync += active.eq(0)
            with m.If(writer.error):
                m.d.sync += error.eq(ERRORS["write_response"])
        sources = [b for b in (Buffer.X, Buffer.LOGITS) if b.name in mem]
        outs = []
        for b in sources:
            gen, rd = self._reader(m, mem[b.name], path, f"store_{b.name}")
            m.d.comb += [gen.start.eq(start & (tensor.buffer == b)),
                         gen.command.row.eq(tensor.row), gen.command.rows.eq(tensor.rows),
                         gen.command.groups.eq(1),
                         rd.words.eq(words * per_row[b])]
            outs.append((b, rd))
        # The padding columns of each row go out as zeros.
        elem_bits = {Buffer.X: 16, Buffer.LOGITS: 16}
        column = Signal(16, name="store_column")
        valid = Signal()
        payload = Signal(path)
        for b, rd in outs:
            with m.If(buffer == b):
                m.d.comb += [valid.eq(rd.o.valid), payload.eq(rd.o.payload.data),
                             rd.o.ready.eq(writer.i.ready)]
        elems = path // elem_bits[Buffer.X]
        masked = Cat(*[Mux(column + e < cols, payload[e * 16:(e + 1) * 16], 0)
                       for e in range(elems)])
        m.d.comb += [writer.i.valid.eq(valid & active), writer.i.payload.eq(masked)]
        end_of_row = Signal()
        for b, rd in outs:
            with m.If(buffer == b):
                m.d.comb += end_of_row.eq(rd.o.payload.end)
        with m.If(writer.i.valid & writer.i.ready):
            m.d.sync += column.eq(Mux(end_of_row, 0, column + elems))
        with m.If(start):
            m.d.sync += column.eq(0)

    # ---- the compute queue's engine -------------------------------------------------------

    @staticmethod
    def _sub_write(m, port, unit, valid, row, bit_offset, value, bits, name):
        """Write ``bits`` of ``value`` at ``bit_offset`` of row ``row`` of ``unit`` when ``valid``
        (a whole number of granules, aligned)."""
        word_bits, g = unit.word_bits, unit.granule_bits
        offset = Signal(range(word_bits), name=f"{name}_offset")
        word = Signal(unit.unit.addr_bits + 1, name=f"{name}_word")
        m.d.comb += [offset.eq(bit_offset[:exact_log2(word_bits)]),
                     word.eq(times(row, unit.pitch) + (bit_offset >> exact_log2(word_bits)))]
        count = bits // g
        m.d.comb += [port.addr.eq(Mux(valid, word, 0)),
                     port.data.eq(Mux(valid, Cat(*[value] * (word_bits // bits)), 0)),
                     port.en.eq(Mux(valid, ((1 << count) - 1) << (offset >> exact_log2(g)), 0))]

    @staticmethod
    def _reader(m, unit, sub_bits, name, entry_bits=1):
        """A row generator and a buffer reader of ``sub_bits`` beats on ``unit``."""
        gen = RowGenerator(_ROW_BITS, _COL_BITS, entry_bits)
        rd = BufferReader(unit.unit.addr_bits, unit.word_bits, sub_bits, unit.pitch,
                          _ROW_BITS, _COL_BITS)
        m.submodules[f"{name}_rows"], m.submodules[f"{name}_reader"] = gen, rd
        wiring.connect(m, gen.o, rd.rows)
        wiring.connect(m, rd.bus, unit.reader())
        return gen, rd

    def _compute_engine(self, m, cfg, cand, start, expert, linear, attention, norm, gate,
                        combiner, mem, mem_a, table_wr, table_rd, starts, counts, active_list,
                        n_active, done, a_active):
        cap, w = cfg.capacity, cfg.word
        lanes = cfg.norm_lanes
        self._unit_busy = {}
        dones = []
        op = cand.op

        # ---- NORM: X -> LayerNorm -> H -------------------------------------------------------
        n_args = ARGS[Opcode.NORM](cand.args[:ARGS[Opcode.NORM].size])
        n_start = start & (op == Opcode.NORM)
        norm_active = Signal(name="norm_active")
        gen, rd = self._reader(m, mem["X"], lanes * 16, "norm")
        m.d.comb += [gen.start.eq(n_start), gen.command.row.eq(n_args.row),
                     gen.command.rows.eq(n_args.rows), gen.command.groups.eq(1),
                     rd.words.eq(cap.dim // lanes),
                     norm.i.valid.eq(rd.o.valid), norm.i.payload.data.eq(rd.o.payload.data),
                     norm.i.payload.last.eq(rd.o.payload.last), rd.o.ready.eq(norm.i.ready),
                     norm.o.ready.eq(1)]
        n_row = Signal(_ROW_BITS, name="norm_row")
        n_beat = Signal(range(cap.dim // lanes), name="norm_beat")
        out = norm.o.valid & norm_active
        self._sub_write(m, mem["H"].writer(), mem["H"], out, n_row, n_beat * (lanes * 8),
                        norm.o.payload.data, lanes * 8, "norm_out")
        with m.If(out):
            m.d.sync += n_beat.eq(Mux(n_beat == cap.dim // lanes - 1, 0, n_beat + 1))
            with m.If(n_beat == cap.dim // lanes - 1):
                m.d.sync += n_row.eq(n_row + 1)
        n_done = out & norm.o.payload.last
        with m.If(n_start):
            m.d.sync += [norm_active.eq(1), n_row.eq(n_args.row), n_beat.eq(0)]
        with m.If(n_done):
            m.d.sync += norm_active.eq(0)
        dones.append(n_done)
        self._unit_busy["layernorm"] = norm_active

        # ---- the residual adder: X[row, unit word] += values (LINEAR ADD, COMBINE) -------------
        x = mem["X"]
        add_valid = Signal(name="add_valid")
        add_row = Signal(_ROW_BITS, name="add_row")
        add_unit = Signal(_COL_BITS, name="add_unit")
        add_data = Signal(data.ArrayLayout(signed(16), w), name="add_data")
        add_read = x.reader()
        unit_bits = w * 16
        bit_offset = add_unit * unit_bits
        m.d.comb += [add_read.en.eq(add_valid),
                     add_read.addr.eq(Mux(add_valid, times(add_row, x.pitch)
                                          + (bit_offset >> exact_log2(x.word_bits)), 0))]
        s2_valid = Signal(name="add_s2_valid")
        s2_row, s2_unit = Signal.like(add_row), Signal.like(add_unit)
        s2_data = Signal.like(add_data)
        m.d.sync += [s2_valid.eq(add_valid), s2_row.eq(add_row), s2_unit.eq(add_unit),
                     s2_data.eq(add_data)]
        old = Signal(data.ArrayLayout(signed(16), w), name="add_old")
        m.d.comb += old.eq(Cat(add_read.data).word_select(
            (s2_unit * unit_bits)[:exact_log2(x.word_bits)] >> exact_log2(unit_bits), unit_bits)
            if x.word_bits > unit_bits else Cat(add_read.data))
        summed = []
        for lane in range(w):
            total = Signal(signed(18), name=f"add_sum_{lane}")
            m.d.comb += total.eq(old[lane] + s2_data[lane])
            summed.append(Mux(total > 32767, 32767, Mux(total < -32768, -32768, total))[:16])
        self._sub_write(m, x.writer(), x, s2_valid, s2_row, s2_unit * unit_bits, Cat(*summed),
                        unit_bits, "add_out")

        # ---- LINEAR ------------------------------------------------------------------------------
        l_args = ARGS[Opcode.LINEAR](cand.args[:ARGS[Opcode.LINEAR].size])
        l_start = start & (op == Opcode.LINEAR)
        l_active = Signal(name="linear_active")
        lin = Signal(ARGS[Opcode.LINEAR], name="linear_args")
        with m.If(l_start):
            m.d.sync += [lin.eq(l_args), l_active.eq(1)]
        sources = {Buffer.H: mem["H"], Buffer.A: mem_a, Buffer.G: mem["G"]}
        x_sources = []
        for b, unit in sources.items():
            name = f"linear_x_{b.name}"
            if cfg.share_buffers and b == Buffer.A:
                continue
            gen, rd = self._reader(m, unit, w * 8, name, table_rd.addr.shape().width)
            srcs = (b,) if not (cfg.share_buffers and b == Buffer.H) else (Buffer.H, Buffer.A)
            mine = Cat(l_args.src == s for s in srcs).any()
            from_table = l_args.rows_from == Rows.EXPERT
            m.d.comb += [gen.start.eq(l_start & mine), gen.command.row.eq(l_args.row),
                         gen.command.rows.eq(Mux(from_table, counts[expert], l_args.rows)),
                         gen.command.from_table.eq(from_table),
                         gen.command.entry.eq(starts[expert]), gen.command.groups.eq(1),
                         rd.words.eq(lin.kb)]
            with m.If(gen.table.en):
                m.d.comb += [table_rd.addr.eq(gen.table.addr), table_rd.en.eq(1)]
            m.d.comb += gen.table.data.eq(table_rd.data)
            x_sources.append((srcs, rd))
        for srcs, rd in x_sources:
            with m.If(Cat(lin.src == s for s in srcs).any()):
                m.d.comb += [linear.x.valid.eq(rd.o.valid & l_active),
                             linear.x.payload.data.eq(rd.o.payload.data),
                             linear.x.payload.token.eq(rd.o.payload.row),
                             linear.x.payload.score.eq(rd.o.payload.score),
                             linear.x.payload.last.eq(rd.o.payload.last),
                             rd.o.ready.eq(linear.x.ready)]
        y = linear.y
        y_take = y.valid & y.ready
        y_last = y_take & y.payload.last
        unit_index = (lin.col >> exact_log2(w)) + y.payload.fold
        target = y.payload.token + lin.row_offset
        m.d.comb += y.ready.eq(Mux(lin.write == Write.COMBINE, combiner.i.ready, 1))
        # STORE: into Q / K / V (QKV is head major: head j's q, k and v words at 3 j hw + 0,
        # hw, 2 hw; each goes to word j hw + i of its memory), G or LOGITS.
        dw, hw = cap.dim // w, cap.head_dim // w
        qkv_words = [divmod(u // hw, 3) for u in range(3 * dw)]          # (head, section)
        section = Array(Const(s, 2) for _, s in qkv_words)
        within = Array(Const(j * hw + u % hw, range(dw)) for u, (j, _) in enumerate(qkv_words))
        narrow = Cat(*[y.payload.data[lane][:8] for lane in range(w)])
        for name, dst, sec in (("Q", Buffer.QKV, 0), ("K", Buffer.QKV, 1), ("V", Buffer.QKV, 2),
                               ("G", Buffer.G, None), ("LOGITS", Buffer.LOGITS, None)):
            if name not in mem:
                continue
            unit = mem[name]
            if sec is None:
                sel = y_take & (lin.write == Write.STORE) & (lin.dst == dst)
                index = unit_index
            else:
                sel = (y_take & (lin.write == Write.STORE) & (lin.dst == dst)
                       & (unit_index < 3 * dw) & (section[unit_index] == sec))
                index = within[unit_index]
            value = narrow if unit.dtype == "int8" else Cat(*[y.payload.data[k] for k in range(w)])
            bits = w * unit.elem
            self._sub_write(m, unit.writer(), unit, sel, target, index * bits, value, bits,
                            f"linear_{name}")
        # ADD: the residual adder.
        add_from_linear = y_take & (lin.write == Write.ADD)
        # COMBINE: into the combiner; count the batches since the last flush.
        batches = Signal(8, name="combine_batches")
        m.d.comb += [combiner.i.valid.eq(y.valid & (lin.write == Write.COMBINE) & l_active),
                     combiner.i.payload.eq(y.payload)]
        with m.If(y_last & (lin.write == Write.COMBINE)):
            m.d.sync += batches.eq(batches + 1)
        # ROUTE: logits into U, then through the gating unit into the routing table.
        u = mem["U"]
        route_y = y_take & (lin.write == Write.ROUTE)
        self._sub_write(m, u.writer(), u, route_y, y.payload.token, y.payload.fold * (w * 16),
                        Cat(*[y.payload.data[k] for k in range(w)]), w * 16, "route_u")
        phase2 = Signal(name="route_phase2")
        m.d.sync += phase2.eq(y_last & (lin.write == Write.ROUTE))
        g_active = Signal(name="gating_active")
        gen_u, rd_u = self._reader(m, u, 16, "route")
        m.d.comb += [gen_u.start.eq(phase2), gen_u.command.rows.eq(lin.rows),
                     gen_u.command.groups.eq(1), rd_u.words.eq(cap.experts),
                     gate.i.valid.eq(rd_u.o.valid), gate.i.payload.u.eq(rd_u.o.payload.data),
                     gate.i.payload.last.eq(rd_u.o.payload.last), rd_u.o.ready.eq(gate.i.ready),
                     gate.o.ready.eq(1)]
        n_entry = Signal(table_wr.addr.shape(), name="route_entry")
        entry = gate.o.payload
        g_out = gate.o.valid & g_active
        m.d.comb += [table_wr.en.eq(g_out), table_wr.addr.eq(n_entry),
                     table_wr.data.token.eq(entry.token), table_wr.data.score.eq(entry.score)]
        with m.If(g_out):
            m.d.sync += n_entry.eq(n_entry + 1)
            with m.If(entry.first):
                m.d.sync += [starts[entry.expert].eq(n_entry), counts[entry.expert].eq(entry.count),
                             active_list[n_active].eq(entry.expert), n_active.eq(n_active + 1)]
        with m.If(phase2):
            m.d.sync += [g_active.eq(1), n_entry.eq(0), n_active.eq(0)]
        g_done = g_out & entry.last
        with m.If(g_done):
            m.d.sync += [g_active.eq(0), l_active.eq(0)]
        l_done = Signal(name="linear_done")
        l_done_late = Signal(name="linear_done_late")       # ADD / COMBINE: one cycle later
        m.d.sync += l_done_late.eq(y_last & ((lin.write == Write.ADD)
                                             | (lin.write == Write.COMBINE)))
        m.d.comb += l_done.eq((y_last & (lin.write == Write.STORE)) | l_done_late | g_done)
        with m.If(l_done & ~g_done):
            m.d.sync += l_active.eq(0)
        dones.append(l_done)
        self._unit_busy["linear"] = l_active & ~g_active
        self._unit_busy["gating"] = g_active

        # ---- ATTENTION: Q, K, V -> attention -> A ----------------------------------------
        a_args = ARGS[Opcode.ATTENTION](cand.args[:ARGS[Opcode.ATTENTION].size])
        a_start = start & (op == Opcode.ATTENTION)
        hw = cap.head_dim // w
        for name, port in (("K", attention.k), ("V", attention.v), ("Q", attention.q)):
            gen, rd = self._reader(m, mem[name], w * 8, f"attention_{name}")
            m.d.comb += [gen.start.eq(a_start), gen.command.rows.eq(a_args.tokens),
                         gen.command.col.eq(a_args.head * hw), gen.command.col_step.eq(hw),
                         gen.command.groups.eq(a_args.heads), rd.words.eq(hw),
                         port.valid.eq(rd.o.valid), port.payload.data.eq(rd.o.payload.data),
                         port.payload.last.eq(rd.o.payload.last), rd.o.ready.eq(port.ready)]
        mult, shift = Signal(15, name="attention_mult"), Signal(6, name="attention_shift")
        heads, head = Signal(8, name="attention_heads"), Signal(8, name="attention_head")
        with m.If(a_start):
            m.d.sync += [mult.eq(a_args.mult), shift.eq(a_args.shift), heads.eq(a_args.heads),
                         head.eq(a_args.head), a_active.eq(1)]
        m.d.comb += [attention.mult.eq(mult), attention.shift.eq(shift), attention.o.ready.eq(1)]
        o_row = Signal(_ROW_BITS, name="attention_row")
        o_slice = Signal(range(hw), name="attention_slice")
        o_head = Signal(8, name="attention_o_head")
        o_take = attention.o.valid & a_active
        self._sub_write(m, mem_a.writer(), mem_a, o_take, o_row,
                        ((head + o_head) * hw + o_slice) * (w * 8), attention.o.payload.data,
                        w * 8, "attention_out")
        with m.If(o_take):
            m.d.sync += o_slice.eq(Mux(o_slice == hw - 1, 0, o_slice + 1))
            with m.If(o_slice == hw - 1):
                m.d.sync += o_row.eq(o_row + 1)
            with m.If(attention.o.payload.last):
                m.d.sync += [o_row.eq(0), o_head.eq(o_head + 1)]
        a_done = o_take & attention.o.payload.last & (o_head + 1 == heads)
        with m.If(a_start):
            m.d.sync += [o_row.eq(0), o_slice.eq(0), o_head.eq(0)]
        with m.If(a_done):
            m.d.sync += a_active.eq(0)
        self._attention_done = a_done
        self._unit_busy["attention"] = a_active

        # ---- COMBINE: the combiner's rows into X ------------------------------------------------
        c_args = ARGS[Opcode.COMBINE](cand.args[:ARGS[Opcode.COMBINE].size])
        c_start = start & (op == Opcode.COMBINE)
        c_active = Signal(name="combine_active")
        flush_valid = Signal(name="flush_valid")
        with m.If(c_start):
            m.d.sync += [flush_valid.eq(1), combiner.flush.payload.tokens.eq(c_args.rows),
                         combiner.flush.payload.batches.eq(batches), batches.eq(0),
                         c_active.eq(1)]
        with m.If(combiner.flush.valid & combiner.flush.ready):
            m.d.sync += flush_valid.eq(0)
        m.d.comb += [combiner.flush.valid.eq(flush_valid), combiner.o.ready.eq(1)]
        c_take = combiner.o.valid & c_active
        add_from_combine = c_take
        c_done = Signal(name="combine_done")
        m.d.sync += c_done.eq(c_take & combiner.o.payload.last)
        with m.If(c_done):
            m.d.sync += c_active.eq(0)
        dones.append(c_done)
        self._unit_busy["combine"] = c_active
        m.d.comb += [add_valid.eq(add_from_linear | add_from_combine),
                     add_row.eq(Mux(add_from_combine, combiner.o.payload.token, target)),
                     add_unit.eq(Mux(add_from_combine, combiner.o.payload.fold, unit_index)),
                     add_data.eq(Mux(add_from_combine, combiner.o.payload.data, y.payload.data))]
        m.d.comb += done.eq(Cat(*dones).any())
