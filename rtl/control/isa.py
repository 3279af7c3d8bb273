"""The accelerator's instruction set: opcodes, fields and their ``lib.data`` layouts.

A program is three instruction streams, one per queue (decoupled access-execute,
as VTA): **load** (DMA from DRAM into the units and buffers), **compute** (the
units) and **store** (DMA from buffers to DRAM). Every instruction is
:data:`INSTRUCTION_BITS` wide::

    bits 0..3    op       (:class:`Opcode`)
    bits 4..7    tokens   (:data:`TOKENS`: pop_prev, pop_next, push_prev, push_next)
    bits 8..     args     (:data:`ARGS` [op], zero above the op's fields)

Dependency tokens run between neighbouring queues, as VTA's: the load queue's
*next* is compute, compute's *prev* is load and its *next* is store, store's
*prev* is compute. An instruction waits until every token it pops is there,
runs, and pushes its tokens when it completes. The compiler places them
(``docs/isa.md`` has the rules); unit-internal double buffers (the linear
kernel's weight banks, LayerNorm's parameter banks) are flow controlled in
hardware and need none. An ATTENTION completes once the attention unit takes it:
the unit runs beside the compute queue's next instructions (the qkv of the next
head group, say) until a ``SYNC`` with ``attention`` waits for it.

These layouts are the one definition of the encoding: the RTL decoder casts
instruction words to them, the host packs through them
(:mod:`moevit.program`), and ``docs/isa.md`` is generated from them
(:func:`markdown`). No bit offset is written anywhere else.
"""

from amaranth.lib import data, enum

from golden.softmax import ATTENTION_CODES

__all__ = ["INSTRUCTION_BITS", "Opcode", "Queue", "QUEUE_OPS", "Base", "Index", "Buffer",
           "Rows", "Write", "Codes", "TOKENS", "ARGS", "INSTRUCTION", "HEADER", "MAGIC",
           "VERSION", "FIELD_DOCS", "OP_DOCS", "markdown"]

#: Width of one instruction word.
INSTRUCTION_BITS = 128
#: Program header magic ("MVIT" little endian) and format version.
MAGIC = 0x5449564D
VERSION = 3


class Opcode(enum.Enum, shape=4):
    """What an instruction does; :data:`QUEUE_OPS` says which queue may hold it."""
    END = 0
    SYNC = 1
    LOOP = 2
    LOAD_MATRIX = 3
    LOAD_NORM = 4
    LOAD_TENSOR = 5
    STORE_TENSOR = 6
    NORM = 7
    LINEAR = 8
    ATTENTION = 9
    COMBINE = 10


class Queue(enum.Enum, shape=2):
    """The three queues (the stream an instruction sits in)."""
    LOAD = 0
    COMPUTE = 1
    STORE = 2


#: Opcodes each queue may hold.
QUEUE_OPS = {
    Queue.LOAD: frozenset({Opcode.END, Opcode.SYNC, Opcode.LOOP, Opcode.LOAD_MATRIX,
                           Opcode.LOAD_NORM, Opcode.LOAD_TENSOR}),
    Queue.COMPUTE: frozenset({Opcode.END, Opcode.SYNC, Opcode.LOOP, Opcode.NORM, Opcode.LINEAR,
                              Opcode.ATTENTION, Opcode.COMBINE}),
    Queue.STORE: frozenset({Opcode.END, Opcode.SYNC, Opcode.STORE_TENSOR}),
}


class Base(enum.Enum, shape=2):
    """Which base address register a DRAM offset is relative to (kernel arguments)."""
    MODEL = 0       # the compiled image: program, weights, constants
    INPUT = 1       # the frame's input pixels
    OUTPUT = 2      # the frame's output


class Index(enum.Enum, shape=2):
    """Image indexing: the address advances by the image's size times the index."""
    NONE = 0
    TASK = 1        # the task argument: one gate image per task, back to back
    EXPERT = 2      # the loop's current expert: one image per expert, back to back


class Buffer(enum.Enum, shape=3):
    """On-chip activation buffers (:data:`rtl.config.BUFFERS`)."""
    X = 0
    H = 1
    QKV = 2
    A = 3
    G = 4
    LOGITS = 5


class Rows(enum.Enum, shape=1):
    """Which token rows a linear instruction reads."""
    RANGE = 0       # rows row .. row + rows - 1
    EXPERT = 1      # the loop's current expert's queue (ascending token indices)


class Write(enum.Enum, shape=2):
    """Where a linear instruction's outputs go."""
    STORE = 0       # written into the destination buffer
    ADD = 1         # sat16-added into the destination (the residual stream)
    COMBINE = 2     # score-weighted into the combiner's accumulators (MoE fc2)
    ROUTE = 3       # gate logits: softmax, top-k, dispatch into the routing table


class Codes(enum.Enum, shape=2):
    """Attention probability codes (``golden.softmax.ATTENTION_CODES``, in its order)."""
    LOG2 = 0
    SQRT2 = 1
    MANT4 = 2

    @property
    def form(self):
        """The form's name in ``golden.softmax.ATTENTION_CODES`` (``"log2"``, ...)."""
        return self.name.lower()


assert tuple(c.form for c in Codes) == ATTENTION_CODES


TOKENS = data.StructLayout({"pop_prev": 1, "pop_next": 1, "push_prev": 1, "push_next": 1})

_DRAM = {"base": Base, "offset": 32}

#: The argument layout of every opcode.
ARGS = {
    Opcode.END: data.StructLayout({}),
    Opcode.SYNC: data.StructLayout({"attention": 1}),
    Opcode.LOOP: data.StructLayout({"body": 5}),
    Opcode.LOAD_MATRIX: data.StructLayout({**_DRAM, "index": Index, "beats": 24}),
    Opcode.LOAD_NORM: data.StructLayout({**_DRAM, "beats": 16}),
    Opcode.LOAD_TENSOR: data.StructLayout({**_DRAM, "buffer": Buffer, "row": 16, "rows": 16,
                                           "cols": 16, "flip_sign": 1}),
    Opcode.STORE_TENSOR: data.StructLayout({**_DRAM, "buffer": Buffer, "row": 16, "rows": 16,
                                            "cols": 16}),
    Opcode.NORM: data.StructLayout({"row": 16, "rows": 16, "cols": 16}),
    Opcode.LINEAR: data.StructLayout({"src": Buffer, "dst": Buffer, "rows_from": Rows,
                                      "write": Write, "row": 16, "rows": 16, "row_offset": 4,
                                      "col": 16, "cols": 16, "kb": 16, "top_k": 3}),
    Opcode.ATTENTION: data.StructLayout({"tokens": 16, "head": 8, "heads": 8, "head_dim": 9,
                                         "dim": 16, "mult": 15, "shift": 6, "codes": Codes}),
    Opcode.COMBINE: data.StructLayout({"rows": 16, "cols": 16}),
}

_ARGS_BITS = INSTRUCTION_BITS - 8
INSTRUCTION = data.StructLayout({"op": Opcode, "tokens": TOKENS, "args": _ARGS_BITS})
assert INSTRUCTION.size == INSTRUCTION_BITS
assert all(layout.size <= _ARGS_BITS for layout in ARGS.values())

#: The program header: the first instruction word of a program.
HEADER = data.StructLayout({
    "magic": 32, "version": 8, "load": 16, "compute": 16, "store": 16,
    "input_bytes": 20, "output_bytes": 20,
})
assert HEADER.size <= INSTRUCTION_BITS

#: What each opcode does (docs/isa.md).
OP_DOCS = {
    Opcode.END: "End of this queue's stream. The accelerator is done when all three ended.",
    Opcode.SYNC: "Its tokens (a barrier between queues); with `attention` (compute queue) it "
                 "also waits until the attention unit has finished its last ATTENTION.",
    Opcode.LOOP: "Run the next `body` instructions once per active expert of the routing "
                 "table, ascending (the dispatcher's list; no host round trip). Its tokens "
                 "are popped and pushed once, before the first iteration.",
    Opcode.LOAD_MATRIX: "DMA a matrix image (`beats` load-path words) into the linear kernel's "
                        "free weight bank; the n-th image pairs with the n-th LINEAR.",
    Opcode.LOAD_NORM: "DMA a LayerNorm parameter image into the LayerNorm unit's free bank; "
                      "the n-th image pairs with the n-th NORM.",
    Opcode.LOAD_TENSOR: "DMA `rows` x `cols` elements (row-major, the buffer's element type; "
                        "`flip_sign`: uint8 codes become int8 `code - 128`) into a buffer "
                        "from row `row`.",
    Opcode.STORE_TENSOR: "DMA `rows` x `cols` elements of a buffer from row `row` to DRAM "
                         "(row-major, the buffer's element type).",
    Opcode.NORM: "LayerNorm of X rows `row ..` (`cols` channels, int16) into H (int8).",
    Opcode.LINEAR: "The next matrix on the linear kernel over `src` rows; outputs "
                   "`col .. col + cols - 1` go to `dst` row `r + row_offset` as `write` says.",
    Opcode.ATTENTION: "Start the attention unit (once it is idle) on heads `head .. head + "
                      "heads - 1` over `tokens` rows of QKV into A (QKV is head major: q, k "
                      "and v of head j at columns (3 j + 0, 1, 2) * head_dim; head j's output "
                      "at j * head_dim of A; scores requantized by `mult`, `shift`) and "
                      "complete: the queue goes on while the unit runs. A SYNC with "
                      "`attention` waits for the unit.",
    Opcode.COMBINE: "Flush the combiner: X[r, c] = sat16(X[r, c] + sat16(round_shift(acc, 8))) "
                    "for `rows` x `cols`, accumulators cleared.",
}

#: Meaning of every field name (docs/isa.md).
FIELD_DOCS = {
    "op": "opcode (:class:`Opcode`)",
    "pop_prev": "wait for and take a token from the previous queue",
    "pop_next": "wait for and take a token from the next queue",
    "push_prev": "give a token to the previous queue on completion",
    "push_next": "give a token to the next queue on completion",
    "body": "instructions in the loop body (1..31)",
    "attention": "also wait until the attention unit is idle (compute queue)",
    "base": "base register of the DRAM address (MODEL, INPUT, OUTPUT)",
    "offset": "byte offset from the base, a multiple of the load-path word",
    "index": "address += index * the transfer's DRAM footprint (NONE, TASK, EXPERT)",
    "beats": "load-path words of the transfer",
    "buffer": "on-chip buffer (X, H, QKV, A, G, LOGITS)",
    "row": "first row",
    "rows": "row count",
    "cols": "columns (elements per row; for LINEAR the output columns)",
    "flip_sign": "invert bit 7 of every byte (uint8 pixel code -> int8 code - 128)",
    "src": "buffer the token rows are read from",
    "dst": "buffer the outputs are written to",
    "rows_from": "RANGE: rows `row ..`; EXPERT: the current expert's token queue",
    "write": "STORE, ADD (sat16 residual add), COMBINE (score-weighted), ROUTE (gating)",
    "row_offset": "destination row = source row + row_offset",
    "col": "first output column in the destination",
    "kb": "input folds: words of PI features read per token row (the image's KB)",
    "top_k": "experts per token (ROUTE)",
    "tokens": "tokens N",
    "head": "first head",
    "heads": "heads (the kernel runs them H at a time)",
    "head_dim": "channels per head",
    "dim": "model width D (column of k in QKV)",
    "mult": "score requantizer multiplier",
    "shift": "score requantizer shift",
    "codes": "LOG2, SQRT2 or MANT4 probability codes",
    "magic": f"0x{MAGIC:08X}",
    "version": f"format version ({VERSION})",
    "load": "instructions in the load stream",
    "compute": "instructions in the compute stream",
    "store": "instructions in the store stream",
    "input_bytes": "bytes of one frame's input region",
    "output_bytes": "bytes of one frame's output region",
}


def _rows(layout, base=0):
    out = []
    for name, f in layout:
        shape = f.shape
        if isinstance(shape, data.StructLayout):
            out += _rows(shape, base + f.offset)
            continue
        kind = shape.__name__ if isinstance(shape, type) and issubclass(shape, enum.Enum) else ""
        out.append((name, base + f.offset, f.width, kind))
    return out


def _table(rows):
    lines = ["| field | bits | width | meaning |", "|---|---|---|---|"]
    for name, offset, width, kind in rows:
        bits = f"{offset}" if width == 1 else f"{offset + width - 1}:{offset}"
        meaning = FIELD_DOCS[name] + (f" ({kind})" if kind and kind not in FIELD_DOCS[name] else "")
        lines.append(f"| `{name}` | {bits} | {width} | {meaning} |")
    return "\n".join(lines)


def markdown():
    """The encoding tables of ``docs/isa.md``, generated from the layouts."""
    args_at = INSTRUCTION["args"].offset
    parts = ["### Instruction word", "",
             f"{INSTRUCTION_BITS} bits; arguments from bit {args_at}, zero above an op's fields.",
             "", _table([r for r in _rows(INSTRUCTION) if r[0] != "args"]), "",
             "### Opcodes", "", "| op | value | queues | what it does |", "|---|---|---|---|"]
    for op in Opcode:
        queues = ", ".join(q.name.lower() for q in Queue if op in QUEUE_OPS[q])
        parts.append(f"| `{op.name}` | {op.value} | {queues} | {OP_DOCS[op]} |")
    for op in Opcode:
        rows = _rows(ARGS[op], args_at)
        if rows:
            parts += ["", f"### `{op.name}` arguments", "", _table(rows)]
    parts += ["", "### Program header", "",
              "The first instruction word of a program; the three streams follow in the order "
              "load, compute, store.", "", _table(_rows(HEADER))]
    for enum_cls in (Base, Index, Buffer, Rows, Write, Codes):
        parts += ["", f"### `{enum_cls.__name__}`", "",
                  " ".join(f"`{m.name}` = {m.value}" for m in enum_cls)]
    return "\n".join(parts) + "\n"
