"""Programs and DRAM images: the contract between the host and the accelerator.

:class:`Instruction` is one decoded instruction; :func:`encode` and :func:`decode`
go through the layouts of :mod:`rtl.control.isa` (the ones the RTL decodes).
:class:`Program` is three instruction streams (load, compute, store), stored as
the header word and the streams one after the other (:meth:`Program.to_bytes`).
:class:`DramImage` is the bytes the accelerator reads, with a memory map of named
:class:`Region`\\ s; :meth:`DramImage.validate` rejects misaligned or overlapping
regions. :func:`check_program` checks a program against a config: opcodes in
their queues, tokens that exist, loops, buffers, rows, columns and alignment.
"""

from dataclasses import dataclass, field

from amaranth.lib import enum

from rtl.control.isa import (ARGS, HEADER, INSTRUCTION, INSTRUCTION_BITS, MAGIC, QUEUE_OPS,
                             VERSION, Buffer, Opcode, Queue, Rows, Write)

from .packing import pack, unpack

__all__ = ["ProgramError", "Instruction", "encode", "decode", "Program", "program_dram_bytes",
           "Region", "DramImage", "check_program", "WORD_BYTES", "LOOP_MAX"]

#: Bytes per instruction word.
WORD_BYTES = INSTRUCTION_BITS // 8
_TOKEN_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")
#: Token flags each queue may set (load has no previous queue, store no next).
_QUEUE_FLAGS = {
    Queue.LOAD: {"pop_next", "push_next"},
    Queue.COMPUTE: set(_TOKEN_FLAGS),
    Queue.STORE: {"pop_prev", "push_prev"},
}
#: Longest loop body.
LOOP_MAX = (1 << ARGS[Opcode.LOOP]["body"].width) - 1


class ProgramError(ValueError):
    """A program, instruction word or DRAM image that the accelerator cannot run."""


def _enum_fields(layout):
    return {name: f.shape for name, f in layout
            if isinstance(f.shape, type) and issubclass(f.shape, enum.Enum)}


@dataclass(frozen=True)
class Instruction:
    """One instruction: its opcode, arguments (enum fields as enum members) and tokens.

    Construct with :meth:`make`, which fills unnamed argument fields with 0 and
    checks the names.
    """

    op: Opcode
    args: tuple = ()
    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    @classmethod
    def make(cls, op, flags=(), **args):
        """``Instruction.make(Opcode.LINEAR, {"pop_prev"}, src=Buffer.H, ...)``: ``flags`` are
        the token flags to set."""
        layout = ARGS[op]
        known = {name for name, _ in layout}
        for name in args:
            if name not in known:
                raise ProgramError(f"{op.name} has no field {name!r}; fields: "
                                   f"{', '.join(sorted(known)) or 'none'}")
        for flag in flags:
            if flag not in _TOKEN_FLAGS:
                raise ProgramError(f"unknown token flag {flag!r}; flags: {', '.join(_TOKEN_FLAGS)}")
        enums = _enum_fields(layout)
        full = {}
        for name, _ in layout:
            value = args.get(name, 0)
            if name in enums and not isinstance(value, enums[name]):
                value = enums[name](value)
            full[name] = value
        return cls(op, tuple(full.items()), **{flag: True for flag in flags})

    def __getitem__(self, name):
        for key, value in self.args:
            if key == name:
                return value
        raise KeyError(f"{self.op.name} has no field {name!r}")

    @property
    def arg_dict(self):
        return dict(self.args)

    @property
    def tokens(self):
        return frozenset(flag for flag in _TOKEN_FLAGS if getattr(self, flag))

    def with_tokens(self, *flags):
        """A copy with ``flags`` set as well."""
        return Instruction(self.op, self.args, **{f: getattr(self, f) or f in flags
                                                  for f in _TOKEN_FLAGS})

    def __str__(self):
        args = " ".join(f"{k}={v.name if isinstance(v, enum.Enum) else v}" for k, v in self.args)
        tokens = "".join(f" +{f}" for f in _TOKEN_FLAGS if getattr(self, f))
        return f"{self.op.name} {args}{tokens}".strip()


def encode(instruction):
    """The instruction word (an int of :data:`rtl.control.isa.INSTRUCTION_BITS` bits)."""
    layout = ARGS[instruction.op]
    args = {}
    for name, f in layout:
        value = instruction[name]
        value = value.value if isinstance(value, enum.Enum) else int(value)
        if not 0 <= value < (1 << f.width):
            raise ProgramError(f"{instruction.op.name} field {name} = {value} does not fit "
                               f"its {f.width} bits (0..{(1 << f.width) - 1})")
        args[name] = value
    return pack(INSTRUCTION, {"op": instruction.op.value,
                              "tokens": {flag: int(getattr(instruction, flag))
                                         for flag in _TOKEN_FLAGS},
                              "args": pack(layout, args) if args else 0})


def decode(word, where="instruction"):
    """Inverse of :func:`encode`.

    Raises
    ------
    ProgramError
        ``<where>: unknown opcode 12``, a value that is not a member of its field's
        enum, or bits set above the op's fields.
    """
    if not 0 <= word < (1 << INSTRUCTION_BITS):
        raise ProgramError(f"{where}: not a {INSTRUCTION_BITS}-bit word")
    raw = unpack(INSTRUCTION, word)
    try:
        op = Opcode(raw["op"])
    except ValueError:
        raise ProgramError(f"{where}: unknown opcode {raw['op']}; opcodes: "
                           f"{', '.join(f'{o.name}={o.value}' for o in Opcode)}") from None
    layout = ARGS[op]
    if raw["args"] >> layout.size:
        raise ProgramError(f"{where}: {op.name} has bits set above its {layout.size} "
                           f"argument bits")
    args = unpack(layout, raw["args"]) if layout.size else {}
    enums = _enum_fields(layout)
    for name, cls in enums.items():
        try:
            args[name] = cls(args[name])
        except ValueError:
            raise ProgramError(f"{where}: {op.name} field {name} = {args[name]} is not a "
                               f"{cls.__name__} ({', '.join(m.name for m in cls)})") from None
    return Instruction(op, tuple((name, args[name]) for name, _ in layout),
                       **{flag: bool(raw["tokens"][flag]) for flag in _TOKEN_FLAGS})


@dataclass(frozen=True)
class Program:
    """Three instruction streams, indexed by :class:`rtl.control.isa.Queue`.

    Members
    -------
    streams : dict {Queue: tuple of Instruction}
    input_bytes, output_bytes : int
        Sizes of one frame's input and output regions (the runtime's strides).
    """

    streams: dict
    input_bytes: int = 0
    output_bytes: int = 0

    def __len__(self):
        return sum(len(s) for s in self.streams.values())

    @property
    def words(self):
        """Instruction words including the header."""
        return 1 + len(self)

    def to_bytes(self):
        """Header word, then the load, compute and store streams, 16 bytes per word."""
        counts = {q: len(self.streams[q]) for q in Queue}
        header = pack(HEADER, {"magic": MAGIC, "version": VERSION, "load": counts[Queue.LOAD],
                               "compute": counts[Queue.COMPUTE], "store": counts[Queue.STORE],
                               "input_bytes": self.input_bytes,
                               "output_bytes": self.output_bytes})
        words = [header] + [encode(i) for q in Queue for i in self.streams[q]]
        return b"".join(w.to_bytes(WORD_BYTES, "little") for w in words)

    @classmethod
    def from_bytes(cls, raw):
        """Inverse of :meth:`to_bytes`; names the stream and index of a bad word."""
        raw = bytes(raw)
        if len(raw) < WORD_BYTES:
            raise ProgramError("program: shorter than its header")
        head = unpack(HEADER, int.from_bytes(raw[:WORD_BYTES], "little"))
        if head["magic"] != MAGIC:
            raise ProgramError(f"program: magic 0x{head['magic']:08X}, expected 0x{MAGIC:08X}")
        if head["version"] != VERSION:
            raise ProgramError(f"program: format version {head['version']}, expected {VERSION}")
        counts = [head["load"], head["compute"], head["store"]]
        if len(raw) < WORD_BYTES * (1 + sum(counts)):
            raise ProgramError(f"program: {len(raw)} bytes, the header lists "
                               f"{1 + sum(counts)} words")
        streams, pos = {}, WORD_BYTES
        for q, n in zip(Queue, counts):
            stream = []
            for k in range(n):
                word = int.from_bytes(raw[pos:pos + WORD_BYTES], "little")
                stream.append(decode(word, f"program {q.name.lower()}[{k}]"))
                pos += WORD_BYTES
            streams[q] = tuple(stream)
        return cls(streams, head["input_bytes"], head["output_bytes"])

    def dram_bytes(self, axi):
        """The program as the top fetches it: :func:`program_dram_bytes` of its encoding."""
        return program_dram_bytes(self.to_bytes(), axi)

    def listing(self):
        """A readable listing: ``load[3] LOAD_MATRIX base=MODEL offset=... +push_next``."""
        return "\n".join(f"{q.name.lower()}[{k}] {ins}"
                         for q in Queue for k, ins in enumerate(self.streams[q]))


def program_dram_bytes(code, axi):
    """Plain program bytes ``code`` (:meth:`Program.to_bytes`, or a corrupted copy of them
    in a fault test) as the top fetches them: the header word alone as one transfer (one
    load-path word), then the three streams as a second, each striped over ``axi``'s
    ports (:func:`moevit.images.stripe`)."""
    from .images import stripe
    return stripe(code[:WORD_BYTES], axi) + stripe(code[WORD_BYTES:], axi)


@dataclass(frozen=True)
class Region:
    """A named part of a DRAM image: ``[offset, offset + size)`` bytes."""
    name: str
    offset: int
    size: int

    @property
    def end(self):
        return self.offset + self.size


@dataclass
class DramImage:
    """The bytes the accelerator reads and writes, with their memory map.

    Members
    -------
    data : bytearray
    regions : dict {str: Region}
        ``program``, every matrix and LayerNorm image, ``pos_embed``, ``input``,
        ``output`` (see :mod:`moevit.compiler`).
    align : int
        Every region starts at a multiple of this (the load-path word).
    """

    data: bytearray
    regions: dict = field(default_factory=dict)
    align: int = 1

    def region(self, name):
        try:
            return self.regions[name]
        except KeyError:
            raise KeyError(f"DRAM image has no region {name!r}") from None

    def read(self, offset, size):
        if offset < 0 or offset + size > len(self.data):
            raise ProgramError(f"DRAM read of {size} bytes at {offset} is outside the "
                               f"{len(self.data)}-byte image")
        return bytes(self.data[offset:offset + size])

    def write(self, offset, raw):
        if offset < 0 or offset + len(raw) > len(self.data):
            raise ProgramError(f"DRAM write of {len(raw)} bytes at {offset} is outside the "
                               f"{len(self.data)}-byte image")
        self.data[offset:offset + len(raw)] = raw

    def validate(self):
        """Check that regions are aligned, inside the image and disjoint.

        Raises
        ------
        ProgramError
            ``DRAM image: regions 'a' [0, 64) and 'b' [32, 96) overlap`` and the like.
        """
        ordered = sorted(self.regions.values(), key=lambda r: (r.offset, r.end))
        for r in ordered:
            if r.offset % self.align or r.size <= 0:
                raise ProgramError(f"DRAM image: region {r.name!r} at {r.offset} must start at a "
                                   f"multiple of {self.align} bytes and not be empty")
            if r.end > len(self.data):
                raise ProgramError(f"DRAM image: region {r.name!r} [{r.offset}, {r.end}) runs "
                                   f"past the image's {len(self.data)} bytes")
        for a, b in zip(ordered, ordered[1:]):
            if b.offset < a.end:
                raise ProgramError(f"DRAM image: regions {a.name!r} [{a.offset}, {a.end}) and "
                                   f"{b.name!r} [{b.offset}, {b.end}) overlap")
        return self

    def copy(self):
        return DramImage(bytearray(self.data), dict(self.regions), self.align)


# ------------------------------------------------------------------------- static checks

def _where(queue, k):
    return f"{queue.name.lower()}[{k}]"


def _check_range(where, ins, name, lo, hi):
    value = ins[name]
    if not lo <= value <= hi:
        raise ProgramError(f"{where}: {ins.op.name} {name} = {value} must be in [{lo}, {hi}]")


def _check_rows(config, where, ins, buffer, row, rows, cols, col=0):
    if buffer.name not in config.buffers:
        raise ProgramError(f"{where}: {ins.op.name} buffer {buffer.name} does not exist in "
                           f"this config (buffers: {', '.join(config.buffers)})")
    n_rows, n_cols = config.buffer_shape(buffer.name)
    if rows < 1 or row + rows > n_rows:
        raise ProgramError(f"{where}: {ins.op.name} rows {row} .. {row + rows - 1} must lie in "
                           f"buffer {buffer.name}'s {n_rows} rows")
    if cols < 1 or col + cols > n_cols:
        raise ProgramError(f"{where}: {ins.op.name} columns {col} .. {col + cols - 1} must lie "
                           f"in buffer {buffer.name}'s {n_cols} columns")


def _check_built(where, ins, name, built, field):
    if ins[name] != built:
        raise ProgramError(f"{where}: {ins.op.name} {name} = {ins[name]}, the units are built "
                           f"for {field} = {built}")


def _check_dram(config, where, ins):
    align = config.axi.path_bytes
    if ins["offset"] % align:
        raise ProgramError(f"{where}: {ins.op.name} offset {ins['offset']} must be a multiple of "
                           f"the {align}-byte load-path word")


def _check_args(config, where, ins):
    op, cap = ins.op, config.capacity
    if op in (Opcode.LOAD_MATRIX, Opcode.LOAD_NORM, Opcode.LOAD_TENSOR, Opcode.STORE_TENSOR):
        _check_dram(config, where, ins)
    if op in (Opcode.LOAD_MATRIX, Opcode.LOAD_NORM) and ins["beats"] < 1:
        raise ProgramError(f"{where}: {op.name} beats must be at least 1")
    if op in (Opcode.LOAD_TENSOR, Opcode.STORE_TENSOR):
        _check_rows(config, where, ins, ins["buffer"], ins["row"], ins["rows"], ins["cols"])
        if op == Opcode.LOAD_TENSOR and ins["flip_sign"] and ins["buffer"] in (Buffer.X,
                                                                               Buffer.LOGITS):
            raise ProgramError(f"{where}: LOAD_TENSOR flip_sign needs an int8 buffer, not "
                               f"{ins['buffer'].name}")
        movable = (Buffer.X, Buffer.G) if op == Opcode.LOAD_TENSOR else (Buffer.X, Buffer.LOGITS)
        if ins["buffer"] not in movable:
            raise ProgramError(f"{where}: {op.name} moves {' or '.join(b.name for b in movable)}, "
                               f"not {ins['buffer'].name}")
    elif op == Opcode.NORM:
        _check_rows(config, where, ins, Buffer.X, ins["row"], ins["rows"], ins["cols"])
        _check_built(where, ins, "cols", cap.dim, "capacity.dim")
    elif op == Opcode.LINEAR:
        if ins["src"] not in (Buffer.H, Buffer.A, Buffer.G):
            raise ProgramError(f"{where}: LINEAR src must be an int8 buffer (H, A, G), not "
                               f"{ins['src'].name}")
        write = ins["write"]
        allowed = {Write.STORE: (Buffer.H, Buffer.QKV, Buffer.A, Buffer.G, Buffer.LOGITS),
                   Write.ADD: (Buffer.X,), Write.COMBINE: (Buffer.X,), Write.ROUTE: (Buffer.X,)}
        if ins["dst"] not in allowed[write]:
            names = ", ".join(b.name for b in allowed[write])
            raise ProgramError(f"{where}: LINEAR write {write.name} needs dst in {names}, "
                               f"not {ins['dst'].name}")
        _check_range(where, ins, "kb", 1, (1 << 16) - 1)
        _check_rows(config, where, ins, ins["src"], 0, 1, ins["kb"] * config.linear.pi)
        if ins["rows_from"] == Rows.RANGE:
            _check_rows(config, where, ins, ins["src"], ins["row"], ins["rows"], 1)
            if write != Write.ROUTE:
                _check_rows(config, where, ins, ins["dst"], ins["row"] + ins["row_offset"],
                            ins["rows"], ins["cols"], ins["col"])
        elif write in (Write.ROUTE,):
            raise ProgramError(f"{where}: LINEAR ROUTE reads a RANGE of rows, not an expert queue")
        else:
            _check_rows(config, where, ins, ins["dst"], 0, 1, ins["cols"], ins["col"])
        if write == Write.COMBINE and ins["rows_from"] != Rows.EXPERT:
            raise ProgramError(f"{where}: LINEAR COMBINE reads an expert queue (rows_from EXPERT)")
        if write == Write.ROUTE:
            if ins["row"] != 0:
                raise ProgramError(f"{where}: LINEAR ROUTE must start at row 0 (token 0)")
            _check_built(where, ins, "cols", cap.experts, "capacity.experts")
            _check_built(where, ins, "top_k", cap.top_k, "capacity.top_k")
    elif op == Opcode.ATTENTION:
        _check_range(where, ins, "tokens", 1, cap.tokens)
        _check_built(where, ins, "head_dim", cap.head_dim, "capacity.head_dim")
        _check_built(where, ins, "dim", cap.dim, "capacity.dim")
        _check_range(where, ins, "heads", 1, 255)
        top = ins["head"] + ins["heads"]
        if top * ins["head_dim"] > ins["dim"] or 3 * ins["dim"] > config.buffer_shape("QKV")[1]:
            raise ProgramError(f"{where}: ATTENTION heads {ins['head']} .. {top - 1} of "
                               f"{ins['head_dim']} channels must lie in dim {ins['dim']}, and "
                               f"3 * dim in QKV's {config.buffer_shape('QKV')[1]} columns")
        codes = ins["codes"].form
        if codes not in config.attention.codes:
            raise ProgramError(f"{where}: ATTENTION codes {codes} are not built in this config "
                               f"(attention.codes = {config.attention.codes})")
        _check_range(where, ins, "mult", 0, (1 << 15) - 1)
        _check_range(where, ins, "shift", 0, 47)
    elif op == Opcode.COMBINE:
        _check_rows(config, where, ins, Buffer.X, 0, ins["rows"], ins["cols"])
        _check_built(where, ins, "cols", cap.dim, "capacity.dim")
    elif op == Opcode.LOOP:
        _check_range(where, ins, "body", 1, LOOP_MAX)


def check_program(program, config):
    """Check every static rule of ``program`` for ``config``; returns the program.

    Raises
    ------
    ProgramError
        Naming the stream and index: an opcode in the wrong queue, a token flag the
        queue does not have, a loop that runs past its stream, nests or holds END,
        a stream without a final END, a buffer, row or column outside the config,
        a misaligned DRAM offset, a SYNC ``attention`` outside the compute queue, an
        ATTENTION that pushes tokens or that no SYNC ``attention`` follows before END,
        or more words than ``capacity.instructions``.
    """
    if program.words > config.capacity.instructions:
        raise ProgramError(f"program has {program.words} instruction words, the config holds "
                           f"capacity.instructions = {config.capacity.instructions}")
    for q in Queue:
        stream = program.streams.get(q)
        if not stream or stream[-1].op != Opcode.END:
            raise ProgramError(f"program {q.name.lower()} stream must end with END")
        loop_end = -1
        unsynced = None         # an ATTENTION no SYNC attention waited for yet
        for k, ins in enumerate(stream):
            where = f"program {_where(q, k)}"
            if ins.op not in QUEUE_OPS[q]:
                raise ProgramError(f"{where}: {ins.op.name} cannot run in the {q.name.lower()} "
                                   f"queue")
            bad = ins.tokens - _QUEUE_FLAGS[q]
            if bad:
                raise ProgramError(f"{where}: the {q.name.lower()} queue has no token flag "
                                   f"{', '.join(sorted(bad))}")
            if ins.op == Opcode.END and k != len(stream) - 1:
                raise ProgramError(f"{where}: END before the end of the stream")
            if ins.op == Opcode.LOOP:
                if k <= loop_end:
                    raise ProgramError(f"{where}: loops do not nest")
                loop_end = k + ins["body"]
                if loop_end >= len(stream) - 1:
                    raise ProgramError(f"{where}: LOOP body of {ins['body']} runs past the stream")
            elif k <= loop_end and ins.tokens:
                raise ProgramError(f"{where}: instructions in a loop body carry no tokens")
            if ins.op == Opcode.SYNC and ins["attention"]:
                if q != Queue.COMPUTE:
                    raise ProgramError(f"{where}: SYNC attention waits for the compute queue's "
                                       f"attention unit; only the compute queue has it")
                unsynced = None
            if ins.op == Opcode.ATTENTION:
                if ins.tokens & {"push_prev", "push_next"}:
                    raise ProgramError(f"{where}: ATTENTION completes when the unit takes it, "
                                       f"so it pushes no tokens (a SYNC attention after it may)")
                unsynced = where
            if ins.op == Opcode.END and unsynced:
                raise ProgramError(f"{unsynced}: no SYNC attention waits for it before END")
            _check_args(config, where, ins)
    if not program.input_bytes or not program.output_bytes:
        raise ProgramError("program must state its input and output region sizes")
    return program

