"""Reference executor: runs a program on a DRAM image with the golden ops only.

This is the program-level golden model (VTA's fsim): every RTL test of the
accelerator top compares against it, and it equals
:func:`golden.int_model.int_forward` (and ``int_classify``) bit for bit when the
compiler is right. It reads every parameter from the DRAM image through the
units' formats (:mod:`moevit.images`), never from the parameter set, so the image
is checked as well.

**Machine.** Three queues, each running its stream in order, and the attention
unit, which an ``ATTENTION`` of the compute queue starts (once the unit is idle)
and which runs beside that queue until a ``SYNC`` with ``attention`` waits for it;
the on-chip
buffers (:data:`rtl.config.BUFFERS`, shared memories as the config says; they
start with seeded random contents, as a real memory's are undefined); the linear
kernel's and the LayerNorm unit's two parameter banks (the n-th image pairs with
the n-th LINEAR / NORM; an image waits for a free bank); the routing table that a
``LINEAR`` ROUTE fills and every ``LOOP`` reads; the combiner's accumulators; the
token FIFOs between neighbouring queues.

**Order.** An instruction runs, atomically, once its tokens, its image and (for a
load) a free bank are there. Which runnable queue goes next is round-robin, or
seeded random (``seed``): a program whose result depends on that order is a
race, and :class:`Execution` proves there is none by vector clocks (every pair
of accesses to one buffer, the routing table or the combiner from two queues or
a queue and the attention unit, one of them a write, touching common columns, must
be ordered by tokens, a unit's banks or a ``SYNC``). A program
that cannot go on raises :class:`DeadlockError` naming what each queue waits
for; a race raises :class:`RaceError`.

The record of what ran (:attr:`Execution.steps`, loops unrolled) is the input of
the schedule model (:mod:`moevit.schedule`).
"""

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from golden.gelu import gelu_int
from golden.gemm import int8_matmul
from golden.layernorm import int_layernorm
from golden.moe import combine, dispatch, topk
from golden.quant import linear, requantize, residual_add
from golden.softmax import attention_from_scores, softmax_u8
from rtl.config import BUFFERS
from rtl.control.isa import Base, Index, Opcode, Queue, Rows, Write

from .images import (bytes_to_beats, decode_matrix_image, decode_norm_image, stripe,
                     tensor_bytes, tensor_from_bytes, tensor_size, unstripe)
from .program import ProgramError

__all__ = ["ExecutionError", "DeadlockError", "RaceError", "Step", "Execution", "execute"]

_PREV = {Queue.COMPUTE: Queue.LOAD, Queue.STORE: Queue.COMPUTE}
_NEXT = {Queue.LOAD: Queue.COMPUTE, Queue.COMPUTE: Queue.STORE}
_DTYPE_RANGE = {"int8": (-128, 127), "int16": (-32768, 32767)}
#: The attention unit: an actor of the race check beside the three queues.
UNIT = "attention unit"
_ACTORS = (*Queue, UNIT)
_ALL = (0, 1 << 30)     # every column


class ExecutionError(ProgramError):
    """A program that fails while it runs (a bad image, a loop with no routing, ...)."""


class DeadlockError(ExecutionError):
    """No queue can go on and not every queue has ended."""


class RaceError(ExecutionError):
    """Two queues access one resource, one of them writing, with nothing ordering them."""


@dataclass
class Step:
    """One executed instruction (loops unrolled).

    Members
    -------
    queue : Queue
    k : int
        Position among the instructions this queue executed.
    pc : int
        Index of the instruction in its stream.
    ins : moevit.program.Instruction
    expert : int or None
        The loop's current expert.
    waits : list of int
        Global step numbers this one must follow (tokens popped, the image it uses,
        the instruction that freed its bank).
    info : dict
        What the timing depends on: DMA ``address`` and ``beats``; for LINEAR the
        image's ``kb``, ``nb``, ``gelu`` and the ``tokens`` it ran; ROUTE ``experts``,
        ``k``; NORM ``tokens`` and ``d``.
    """

    queue: Queue
    k: int
    pc: int
    ins: object
    expert: int = None
    waits: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


class _Cursor:
    """A queue's program counter with loop expansion."""

    def __init__(self, stream):
        self.stream, self.pc, self.done = stream, 0, False
        self.loop = None        # [first body pc, end pc, experts, iteration]
        self.executed = 0

    @property
    def instruction(self):
        return self.stream[self.pc]

    @property
    def expert(self):
        return self.loop[2][self.loop[3]] if self.loop else None

    def advance(self, experts=None):
        ins = self.stream[self.pc]
        if ins.op == Opcode.END:
            self.done = True
            return
        if ins.op == Opcode.LOOP:
            first, end = self.pc + 1, self.pc + 1 + ins["body"]
            if experts:
                self.loop = [first, end, list(experts), 0]
                self.pc = first
            else:
                self.pc = end
            return
        self.pc += 1
        if self.loop and self.pc == self.loop[1]:
            self.loop[3] += 1
            if self.loop[3] < len(self.loop[2]):
                self.pc = self.loop[0]
            else:
                self.loop = None


class Execution:
    """One run of a program (see the module docstring).

    Parameters
    ----------
    config : rtl.config.AcceleratorConfig
    program : moevit.program.Program
    image : moevit.program.DramImage
        Not modified; :attr:`image` is the copy the run wrote into.
    task : int
        The ``task`` kernel argument (selects the gate images).
    bases : dict {Base: int}, optional
        Base addresses; default the image's ``input`` / ``output`` regions and 0.
    seed : int, optional
        Random order among runnable queues, and the buffers' initial contents
        (default 0; ``None``: round-robin order).

    Members
    -------
    image : DramImage
    steps : list of Step
    """

    def __init__(self, config, program, image, task=0, bases=None, seed=None):
        self.config, self.program, self.task = config, program, task
        if not isinstance(task, int) or task < 0:
            raise ExecutionError(f"task must be a non-negative integer, not {task!r}")
        self.image = image.copy()
        self.bases = {Base.MODEL: 0, Base.INPUT: self.image.region("input").offset,
                      Base.OUTPUT: self.image.region("output").offset}
        self.bases.update(bases or {})
        self.lc = config.linear_config()
        self.path = config.axi.path_bytes
        rng = np.random.default_rng(0 if seed is None else seed)
        self._order = None if seed is None else np.random.default_rng(seed + 1)
        # Physical memories (flat int64) and each logical buffer's 2-D view into its memory.
        sizes = {}
        for b in config.buffers:
            rows, cols = config.buffer_shape(b)
            mem = config.buffer_memory(b)
            sizes[mem] = max(sizes.get(mem, 0), rows * cols)
        flat = {}
        for mem, size in sizes.items():
            lo, hi = _DTYPE_RANGE[BUFFERS[mem][0]]
            flat[mem] = rng.integers(lo, hi + 1, size)
        self.buffers = {}
        for b in config.buffers:
            rows, cols = config.buffer_shape(b)
            self.buffers[b] = flat[config.buffer_memory(b)][:rows * cols].reshape(rows, cols)
        self.kernel_images, self.norm_images = deque(), deque()
        self.kernel_users, self.norm_users = [], []     # step of LINEAR n / NORM n
        self.kernel_loads, self.norm_loads = 0, 0
        self.routing = None
        self.expert_out, self.expert_cols = {}, {}
        self.tokens = {(p, q): deque() for p, q in
                       [(Queue.LOAD, Queue.COMPUTE), (Queue.COMPUTE, Queue.LOAD),
                        (Queue.COMPUTE, Queue.STORE), (Queue.STORE, Queue.COMPUTE)]}
        self.cursors = {q: _Cursor(program.streams[q]) for q in Queue}
        self.clocks = {a: {b: 0 for b in _ACTORS} for a in _ACTORS}
        self.unit_runs, self.unit_step = 0, None  # ATTENTIONs started, the last one's step
        self.step_clocks = []
        self.accesses = {}
        self.steps = []
        self._run()

    # ---- scheduling -----------------------------------------------------------------

    def _run(self):
        while not all(c.done for c in self.cursors.values()):
            runnable = [q for q in Queue if not self.cursors[q].done and self._blocked(q) is None]
            if not runnable:
                waits = "; ".join(
                    f"{q.name.lower()}[{c.pc}] {c.instruction.op.name} waits for {self._blocked(q)}"
                    for q, c in self.cursors.items() if not c.done)
                raise DeadlockError(f"deadlock: {waits}")
            if self._order is None:
                for q in runnable:
                    while not self.cursors[q].done and self._blocked(q) is None:
                        self._execute(q)
            else:
                self._execute(runnable[int(self._order.integers(len(runnable)))])

    def _pops(self, q, ins):
        out = []
        if ins.pop_prev:
            out.append((_PREV[q], q))
        if ins.pop_next:
            out.append((_NEXT[q], q))
        return out

    def _blocked(self, q):
        """What queue ``q``'s next instruction waits for, or None if it can run."""
        ins = self.cursors[q].instruction
        for channel in self._pops(q, ins):
            if not self.tokens[channel]:
                return f"a token from the {channel[0].name.lower()} queue"
        if ins.op == Opcode.LINEAR and not self.kernel_images:
            return "its matrix image (LOAD_MATRIX)"
        if ins.op == Opcode.NORM and not self.norm_images:
            return "its parameter image (LOAD_NORM)"
        if ins.op == Opcode.LOAD_MATRIX and self.kernel_loads - len(self.kernel_users) >= 2:
            return "a free weight bank (LINEAR of the image two before)"
        if ins.op == Opcode.LOAD_NORM and self.norm_loads - len(self.norm_users) >= 2:
            return "a free LayerNorm bank (NORM of the image two before)"
        return None

    def _execute(self, q):
        cursor = self.cursors[q]
        ins = cursor.instruction
        where = f"{q.name.lower()}[{cursor.pc}] {ins.op.name}"
        step = Step(q, cursor.executed, cursor.pc, ins, cursor.expert)
        number = len(self.steps)
        clock = dict(self.clocks[q])
        for channel in self._pops(q, ins):
            producer = self.tokens[channel].popleft()
            step.waits.append(producer)
            clock = _merge(clock, self.step_clocks[producer])
        self._current = (q, where, step)
        handler = getattr(self, f"_op_{ins.op.name.lower()}")
        extra = handler(ins, step) or []
        for producer in extra:
            step.waits.append(producer)
            clock = _merge(clock, self.step_clocks[producer])
        accesses = step.info.pop("_access", ())
        unit = ins.op == Opcode.ATTENTION or (ins.op == Opcode.SYNC and ins["attention"])
        if unit and self.unit_step is not None:
            # The unit finished its last ATTENTION before this one starts or the SYNC ends.
            step.waits.append(self.unit_step)
            clock = _merge(clock, self.clocks[UNIT])
        cursor.executed += 1
        clock[q] = cursor.executed
        self.clocks[q] = clock
        self.step_clocks.append(clock)
        if ins.op == Opcode.ATTENTION:
            # The queue goes on at once; the unit's accesses are the unit's own.
            self.unit_runs += 1
            self.unit_step = number
            self.clocks[UNIT] = dict(clock, **{UNIT: self.unit_runs})
            self._check_races(UNIT, where, self.clocks[UNIT], accesses)
        else:
            self._check_races(q, where, clock, accesses)
        self.steps.append(step)
        if ins.push_prev:
            self.tokens[(q, _PREV[q])].append(number)
        if ins.push_next:
            self.tokens[(q, _NEXT[q])].append(number)
        experts = None
        if ins.op == Opcode.LOOP:
            if self.routing is None:
                raise ExecutionError(f"{where}: no routing table yet (a LINEAR ROUTE must come "
                                     f"first)")
            experts = self.routing.active
        cursor.advance(experts)

    # ---- race check -----------------------------------------------------------------

    def _check_races(self, q, where, clock, accesses):
        """Check actor ``q``'s ``accesses`` ``(resource, writes[, (first, end) column])``
        against the earlier ones of other actors, then record them. An access covered by a
        later write of the same columns (or a read by a later read of the same actor) is
        dropped: whatever is ordered after the later one is ordered after it too."""
        for resource, writes, *span in accesses:
            lo, hi = span[0] if span else _ALL
            record = self.accesses.setdefault(resource, [])
            for p, count, what, w, a, b in record:
                if p != q and (writes or w) and a < hi and lo < b and clock[p] < count:
                    raise RaceError(f"race on {resource}: {where} "
                                    f"{'writes' if writes else 'reads'} it while {what} may "
                                    f"still access it (no token orders them)")
            record[:] = [r for r in record if not (lo <= r[4] and r[5] <= hi
                                                   and (writes or (r[0] == q and not r[3])))]
            record.append((q, clock[q], where, writes, lo, hi))

    def _access(self, step, *items):
        step.info["_access"] = items

    def _memory(self, name):
        return f"buffer {self.config.buffer_memory(name)}"

    def _columns(self, name, first, end):
        """A column span of buffer ``name`` for the race check: exact where the buffer has
        its memory to itself, every column where another buffer shares it."""
        memory = self.config.buffer_memory(name)
        shared = any(self.config.buffer_memory(b) == memory for b in self.config.buffers
                     if b != name)
        return _ALL if shared else (first, end)

    # ---- DRAM -----------------------------------------------------------------------

    def _address(self, ins, size):
        base = self.bases[ins["base"]]
        index = {Index.NONE: 0, Index.TASK: self.task}
        where = self._current[1]
        if ins.op == Opcode.LOAD_MATRIX:
            if ins["index"] == Index.EXPERT:
                if self._current[2].expert is None:
                    raise ExecutionError(f"{where}: index EXPERT outside a loop")
                index[Index.EXPERT] = self._current[2].expert
            offset = ins["offset"] + index[ins["index"]] * size
        else:
            offset = ins["offset"]
        return base + offset

    def _read(self, ins, beats):
        size = self.config.axi.footprint(beats)
        address = self._address(ins, size)
        step = self._current[2]
        step.info.update(address=address, beats=beats)
        try:
            raw = self.image.read(address, size)
        except ProgramError as e:
            raise ExecutionError(f"{self._current[1]}: {e}") from None
        return unstripe(raw, self.config.axi, beats)

    def _tensor_beats(self, ins):
        dtype = BUFFERS[ins["buffer"].name][0]
        size = tensor_size(ins["rows"], ins["cols"], dtype, self.config.row_align(dtype))
        return -(-size // self.path)

    # ---- load queue -----------------------------------------------------------------

    def _op_load_matrix(self, ins, step):
        raw = self._read(ins, ins["beats"])
        beats = bytes_to_beats(raw, self.lc.bus_width)
        try:
            image = decode_matrix_image(self.lc, beats, self._current[1])
        except ValueError as e:
            raise ExecutionError(str(e)) from None
        if image["beats"] != ins["beats"]:
            raise ExecutionError(f"{self._current[1]}: beats = {ins['beats']} but the image "
                                 f"holds {image['beats']}")
        n = self.kernel_loads
        self.kernel_loads += 1
        self.kernel_images.append((image, len(self.steps)))
        step.info.update(image=n, gelu=image["gelu_table"] is not None)
        return [self.kernel_users[n - 2]] if n >= 2 else []

    def _op_load_norm(self, ins, step):
        raw = self._read(ins, ins["beats"])
        beats = bytes_to_beats(raw, self.lc.bus_width)
        self.norm_images.append((beats, len(self.steps)))
        n = self.norm_loads
        self.norm_loads += 1
        step.info.update(image=n)
        return [self.norm_users[n - 2]] if n >= 2 else []

    def _op_load_tensor(self, ins, step):
        raw = self._read(ins, self._tensor_beats(ins))
        if ins["flip_sign"]:
            raw = bytes(b ^ 0x80 for b in raw)
        name = ins["buffer"].name
        # Whole memory words: each row's padding is loaded too (it is zero in DRAM).
        dtype = BUFFERS[name][0]
        align = self.config.row_align(dtype)
        cols = -(-ins["cols"] // align) * align
        values = tensor_from_bytes(raw, dtype, ins["rows"], cols, align)
        self.buffers[name][ins["row"]:ins["row"] + ins["rows"], :cols] = values
        self._access(step, (self._memory(name), True))

    def _op_store_tensor(self, ins, step):
        beats = self._tensor_beats(ins)
        name = ins["buffer"].name
        values = self.buffers[name][ins["row"]:ins["row"] + ins["rows"], :ins["cols"]]
        dtype = BUFFERS[name][0]
        raw = stripe(tensor_bytes(values, dtype, self.config.row_align(dtype)), self.config.axi)
        address = self._address(ins, len(raw))
        step.info.update(address=address, beats=beats)
        try:
            self.image.write(address, raw)
        except ProgramError as e:
            raise ExecutionError(f"{self._current[1]}: {e}") from None
        self._access(step, (self._memory(name), False))

    # ---- control --------------------------------------------------------------------

    def _op_end(self, ins, step):
        pass

    _op_sync = _op_end

    def _op_loop(self, ins, step):
        self._access(step, ("the routing table", False))

    # ---- compute queue --------------------------------------------------------------

    def _op_norm(self, ins, step):
        beats, producer = self.norm_images.popleft()
        self.norm_users.append(len(self.steps))
        d = ins["cols"]
        try:
            p = decode_norm_image(self.config.norm_lanes, self.lc.bus_width, d, beats,
                                  self._current[1])
        except ValueError as e:
            raise ExecutionError(str(e)) from None
        rows = slice(ins["row"], ins["row"] + ins["rows"])
        self.buffers["H"][rows, :d] = int_layernorm(self.buffers["X"][rows, :d], p["gain"],
                                                    p["bias"], p["shift"], p["eps"], bits=8)
        step.info.update(image=len(self.norm_users) - 1, tokens=ins["rows"], d=d)
        self._access(step, (self._memory("X"), False), (self._memory("H"), True))
        return [producer]

    def _op_linear(self, ins, step):
        image, producer = self.kernel_images.popleft()
        self.kernel_users.append(len(self.steps))
        where = self._current[1]
        src, dst, write = ins["src"].name, ins["dst"].name, ins["write"]
        access = []
        if ins["rows_from"] == Rows.EXPERT:
            e = step.expert
            if e is None:
                raise ExecutionError(f"{where}: rows_from EXPERT outside a loop")
            rows = np.asarray(self.routing.tokens[e], np.int64)
            access.append(("the routing table", False))
        else:
            rows = np.arange(ins["row"], ins["row"] + ins["rows"])
        if ins["kb"] != image["kb"]:
            raise ExecutionError(f"{where}: kb = {ins['kb']} but the matrix image has "
                                 f"{image['kb']} input folds")
        kb_cols = image["kb"] * self.lc.pi
        if kb_cols > self.buffers[src].shape[1]:
            raise ExecutionError(f"{where}: the image's {image['kb']} input folds read "
                                 f"{kb_cols} columns, buffer {src} has "
                                 f"{self.buffers[src].shape[1]}")
        cols, col = ins["cols"], ins["col"]
        if cols > image["nb"] * self.lc.po:
            raise ExecutionError(f"{where}: cols = {cols} but the image has "
                                 f"{image['nb'] * self.lc.po} outputs")
        access.append((self._memory(src), False, self._columns(src, 0, kb_cols)))
        x = self.buffers[src][rows, :kb_cols]
        acc = linear(x, image["weight"], image["bias"])
        y = requantize(acc, image["mult"], image["shift"], image["zero_point"], image["bits"])
        if image["gelu_table"] is not None:
            y = gelu_int(y, image["gelu_table"])
        y = y[:, :cols].astype(np.int64)
        step.info.update(image=len(self.kernel_users) - 1, kb=image["kb"], nb=image["nb"],
                         gelu=image["gelu_table"] is not None, tokens=len(rows))
        if write == Write.ROUTE:
            idx = topk(y, ins["top_k"])
            probs = softmax_u8(y)
            self.routing = dispatch(idx, probs, cols)
            self.route_rows = len(rows)
            self.expert_out, self.expert_cols = {}, {}
            step.info.update(experts=cols, k=ins["top_k"], lengths=self.routing.lengths)
            access.append(("the routing table", True))
        elif write == Write.COMBINE:
            out = self.expert_out.setdefault(e, np.zeros((len(rows), self.config.capacity.dim),
                                                         np.int64))
            if col + cols > out.shape[1] or image["bits"] != 16:
                raise ExecutionError(f"{where}: COMBINE takes int16 outputs of columns within "
                                     f"capacity.dim")
            out[:, col:col + cols] = y
            self.expert_cols.setdefault(e, set()).update(range(col, col + cols))
            access.append(("the combiner", True))
        else:
            dtype = BUFFERS[dst][0]
            if (dtype == "int8") != (image["bits"] == 8):
                raise ExecutionError(f"{where}: a {image['bits']}-bit output into {dtype} "
                                     f"buffer {dst}")
            target = rows + ins["row_offset"]
            if target.size and target.max() >= self.buffers[dst].shape[0]:
                raise ExecutionError(f"{where}: row {int(target.max())} is outside buffer {dst}")
            view = self.buffers[dst]
            if write == Write.ADD:
                view[target, col:col + cols] = residual_add(view[target, col:col + cols], y)
            else:
                view[target, col:col + cols] = y
            access.append((self._memory(dst), True, self._columns(dst, col, col + cols)))
        self._access(step, *access)
        return [producer]

    def _op_attention(self, ins, step):
        qkv, out = self.buffers["QKV"], self.buffers["A"]
        n, hd = ins["tokens"], ins["head_dim"]
        first, end = ins["head"] * hd, (ins["head"] + ins["heads"]) * hd
        codes = ins["codes"].form
        mult, shift = np.int64(ins["mult"]), np.int64(ins["shift"])
        for j in range(ins["head"], ins["head"] + ins["heads"]):
            q, k, v = (qkv[:n, (3 * j + s) * hd:(3 * j + s + 1) * hd] for s in range(3))
            u = requantize(int8_matmul(q, k.T), mult, shift, bits=16)
            _, o = attention_from_scores(u, v, codes)
            out[:n, j * hd:(j + 1) * hd] = o
        step.info.update(tokens=n, heads=ins["heads"], head_dim=hd, codes=codes)
        self._access(step, (self._memory("QKV"), False, self._columns("QKV", 3 * first, 3 * end)),
                     (self._memory("A"), True, self._columns("A", first, end)))

    def _op_combine(self, ins, step):
        where = self._current[1]
        if self.routing is None:
            raise ExecutionError(f"{where}: no routing table")
        rows, cols = ins["rows"], ins["cols"]
        if rows != self.route_rows:
            raise ExecutionError(f"{where}: rows = {rows}, the routing table holds "
                                 f"{self.route_rows} tokens")
        for e in self.routing.active:
            if not set(range(cols)) <= self.expert_cols.get(e, set()):
                raise ExecutionError(f"{where}: expert {e}'s output columns 0 .. {cols - 1} "
                                     f"were not all computed")
        outputs = {e: self.expert_out[e][:, :cols] for e in self.routing.active}
        y = combine(self.routing, outputs, rows, cols)
        x = self.buffers["X"]
        x[:rows, :cols] = residual_add(x[:rows, :cols], y)
        self.expert_out, self.expert_cols = {}, {}
        step.info.update(tokens=rows, cols=cols)
        self._access(step, ("the combiner", True), ("the routing table", False),
                     (self._memory("X"), True))


def _merge(a, b):
    return {q: max(a[q], b[q]) for q in a}


def execute(compiled, pixels, task=0, seed=None):
    """Run a :class:`moevit.compiler.CompiledModel` on uint8 ``pixels`` for ``task``.

    Returns
    -------
    (numpy.ndarray, Execution)
        The output (int16 ``(N, D)`` backbone tokens or ``(C,)`` logits) and the run.
    """
    if not 0 <= task < compiled.model.num_tasks:
        raise ExecutionError(f"task must be in [0, {compiled.model.num_tasks - 1}], got {task}")
    run = Execution(compiled.config, compiled.program, compiled.with_input(pixels), task,
                    seed=seed)
    return compiled.read_output(run.image), run

