"""Compiler: a quantized model and an accelerator config to a program and its DRAM image.

``compile_model(qp, config)`` checks that the config can run the model
(:func:`check_model`), lays out the DRAM image and emits the three instruction
streams of one frame:

* **image** (every region aligned to the load-path word): the position embedding
  (int16, the residual stream's first contents), then per layer in execution
  order its LayerNorm images and matrix images in the kernels' own formats
  (:mod:`moevit.images`; a matrix larger than a weight bank is cut into column
  chunks, each its own image; the gate's images are one per task and the
  experts' one per expert, back to back, so that ``index`` TASK / EXPERT selects
  them at run time), then the ``program`` (its address is a kernel argument),
  the ``input`` region (uint8 pixel codes, patch major) and the ``output`` region.
* **program**: the patch embedding on the linear kernel (pixels in ``G``, added
  into ``X`` which holds the position embedding); per block LayerNorm, then per
  head group (:func:`head_groups`) the group's q, k and v columns on the linear
  kernel (QKV is head major, :func:`qkv_order`) and its ATTENTION, which the
  attention unit runs while the kernel computes the next group's, a SYNC for the
  unit, proj with the residual add, LayerNorm, then the dense FFN (fc1 with
  the fused GELU table, fc2 with the residual add) or the MoE FFN (the task's gate
  into the routing table, a LOOP over the active experts running each one's fc1
  and fc2 into the combiner, the combine flush with the residual add); the
  classifier's LayerNorm and head on the class token; the store of ``X`` (or of
  the logits).

The load stream issues the matrix and LayerNorm images in the order their
instructions use them (the units pair the n-th image with the n-th instruction)
and loops over the same active experts. Cross-queue dependencies are recorded
as edges and turned into tokens by :func:`place_tokens`. The task is not
compiled in: the gate image is indexed by the ``task`` kernel argument.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden.config import ModelConfig
from golden.float_model import patchify
from golden.int_model import QuantParams
from rtl.config import BOUNDARY, AcceleratorConfig
from rtl.control.isa import Base, Buffer, Codes, Index, Opcode, Queue, Rows, Write

from .images import (beats_to_bytes, matrix_image, norm_image, stripe, tensor_bytes,
                     tensor_from_bytes, tensor_size, unstripe)
from .program import (DramImage, Instruction, Program, ProgramError, Region, WORD_BYTES,
                      check_program)

__all__ = ["CompiledModel", "BUNDLE_FORMAT", "model_hash", "check_model", "compile_model",
           "place_tokens", "matrix_chunks", "qkv_order", "head_groups"]

#: Token flags (producer, consumer) for an edge between two neighbouring queues.
_EDGE_FLAGS = {
    (Queue.LOAD, Queue.COMPUTE): ("push_next", "pop_prev"),
    (Queue.COMPUTE, Queue.LOAD): ("push_prev", "pop_next"),
    (Queue.COMPUTE, Queue.STORE): ("push_next", "pop_prev"),
    (Queue.STORE, Queue.COMPUTE): ("push_prev", "pop_next"),
}


def check_model(qp, config):
    """Raise :class:`moevit.program.ProgramError` naming the first limit of ``config`` that
    the model of ``qp`` exceeds (or a quantization the hardware does not implement)."""
    if not isinstance(qp, QuantParams):
        raise TypeError(f"qp must be a QuantParams, not {type(qp).__name__}")
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
    m, cap = qp.config, config.capacity
    where = f"model {m.name!r} on config {config.name!r}"

    def limit(what, value, field, bound):
        if value > bound:
            raise ProgramError(f"{where}: {what} {value} exceeds {field} = {bound}")

    def exact(what, value, field, built):
        if value != built:
            raise ProgramError(f"{where}: {what} {value} differs from {field} = {built}, the "
                               f"size the units are built for (AcceleratorConfig.fitted)")

    limit("tokens", m.num_tokens, "capacity.tokens", cap.tokens)
    exact("embed_dim", m.embed_dim, "capacity.dim", cap.dim)
    limit("mlp hidden width", m.mlp_hidden, "capacity.hidden", cap.hidden)
    if m.moe_blocks:
        limit("expert_hidden", m.expert_hidden, "capacity.hidden", cap.hidden)
        exact("num_experts", m.num_experts, "capacity.experts", cap.experts)
        exact("top_k", m.top_k, "capacity.top_k", cap.top_k)
        if m.num_experts < 2:
            raise ProgramError(f"{where}: num_experts must be at least 2 for the gating datapath")
    limit("flattened patch (in_chans * patch_size**2)", m.patch_dim, "capacity.hidden",
          cap.hidden)
    exact("head_dim", m.head_dim, "capacity.head_dim", cap.head_dim)
    limit("num_heads", m.num_heads, "the ATTENTION heads field's", 255)
    limit("num_classes", m.num_classes, "capacity.classes", cap.classes)
    if m.head_dim % config.attention.dp:
        raise ProgramError(f"{where}: head_dim {m.head_dim} must be a multiple of attention.dp "
                           f"{config.attention.dp}")
    if m.embed_dim % config.norm_lanes:
        raise ProgramError(f"{where}: embed_dim {m.embed_dim} must be a multiple of norm_lanes "
                           f"{config.norm_lanes}")
    if int(qp.scalar("quant.act_bits")) != 8:
        raise ProgramError(f"{where}: the accelerator runs 8-bit activations, the parameter set "
                           f"has quant.act_bits = {int(qp.scalar('quant.act_bits'))}")
    codes = qp.attention_codes
    if codes not in config.attention.codes:
        raise ProgramError(f"{where}: the model uses {codes} attention codes, the config builds "
                           f"attention.codes = {config.attention.codes}")
    if m.moe_blocks:
        kb = -(-m.embed_dim // config.linear.pi)
        nb = -(-m.num_experts // config.linear.po)
        if kb * nb > config.linear_config().max_weight_words:
            raise ProgramError(f"{where}: the gate ({m.embed_dim} -> {m.num_experts}) needs "
                               f"{kb * nb} weight words in one bank, linear.bank_words = "
                               f"{config.linear.bank_words}")


def matrix_chunks(config, d_in, d_out):
    """Column chunks ``[(c0, c1), ...]`` of a ``d_in -> d_out`` matrix that each fit a weight
    bank: as few as possible, of equal fold counts but the last."""
    lc = config.linear_config()
    kb, nb = -(-d_in // lc.pi), -(-d_out // lc.po)
    per = lc.max_weight_words // kb
    if per < 1:
        raise ProgramError(f"a {d_in} -> {d_out} matrix needs {kb} weight words per output fold, "
                           f"linear.bank_words = {config.linear.bank_words}")
    n = -(-nb // per)
    per = -(-nb // n)
    return [(j * per * lc.po, min(d_out, (j + 1) * per * lc.po)) for j in range(n)]


def place_tokens(streams, edges):
    """Set the token flags that enforce ``edges`` and return the new streams.

    ``edges`` are ``((producer queue, index), (consumer queue, index))``: the
    consumer may not start before the producer completed. Per direction, an edge
    whose producer is already ordered before the consumer by an earlier edge (in
    program order of both queues) is dropped; the rest have strictly increasing
    producers and consumers, so the k-th token pushed is the k-th popped. Loop
    bodies hold no tokens: an edge into or out of one is an error.
    """
    streams = {q: list(s) for q, s in streams.items()}
    in_body = {q: set() for q in streams}
    for q, s in streams.items():
        for k, ins in enumerate(s):
            if ins.op == Opcode.LOOP:
                in_body[q].update(range(k + 1, k + 1 + ins["body"]))
    by_direction = {}
    for (pq, pk), (cq, ck) in edges:
        if (pq, cq) not in _EDGE_FLAGS:
            raise ProgramError(f"no tokens run from the {pq.name.lower()} to the "
                               f"{cq.name.lower()} queue")
        if pk in in_body[pq] or ck in in_body[cq]:
            raise ProgramError("a dependency edge may not start or end inside a loop body")
        need = by_direction.setdefault((pq, cq), {})
        need[ck] = max(need.get(ck, -1), pk)
    for (pq, cq), need in by_direction.items():
        push, pop = _EDGE_FLAGS[pq, cq]
        ordered = -1
        for ck in sorted(need):
            pk = need[ck]
            if pk <= ordered:
                continue
            ordered = pk
            streams[pq][pk] = streams[pq][pk].with_tokens(push)
            streams[cq][ck] = streams[cq][ck].with_tokens(pop)
    return {q: tuple(s) for q, s in streams.items()}


class _Builder:
    """Accumulates regions and the three streams."""

    def __init__(self, config):
        self.config = config
        self.lc = config.linear_config()
        self.align = config.axi.path_bytes
        self.regions = {}
        self.data = bytearray()
        self.weights = []                  # regions of matrix and LayerNorm images
        self.streams = {q: [] for q in Queue}
        self.edges = []

    # ---- image ----
    def region(self, name, size, raw=b""):
        """Append a region of ``size`` bytes (padded to the load-path word) holding ``raw``."""
        offset = len(self.data)
        padded = -(-max(size, 1) // self.align) * self.align
        self.regions[name] = Region(name, offset, padded)
        self.data += bytes(raw) + bytes(padded - len(raw))
        return offset

    def transfer(self, raw):
        """A DRAM transfer's bytes in the striped layout and its load-path word count."""
        return stripe(raw, self.config.axi), self.config.axi.words(len(raw))

    # ---- streams ----
    def emit(self, queue, op, **args):
        self.streams[queue].append(Instruction.make(op, **args))
        return queue, len(self.streams[queue]) - 1

    def matrices(self, name, images, index):
        """Lay out a group of same-sized matrix images; emit the LOAD_MATRIX of the group."""
        data = [self.transfer(beats_to_bytes(beats, self.lc.bus_width)) for beats in images]
        if len({n for _, n in data}) != 1:
            raise ProgramError(f"{name}: the images of one group must have equal sizes")
        offset = self.region(name, sum(len(raw) for raw, _ in data),
                             b"".join(raw for raw, _ in data))
        self.weights.append(name)
        return self.emit(Queue.LOAD, Opcode.LOAD_MATRIX, base=Base.MODEL, offset=offset,
                         index=index, beats=data[0][1])

    def norm(self, name, qp, rows, row=0):
        """A LayerNorm: its image, its LOAD_NORM and its NORM (X rows into H)."""
        c = self.config
        beats = norm_image(c.norm_lanes, self.lc.bus_width, name, qp[f"{name}.gain"],
                           qp[f"{name}.bias"], qp.scalar(f"{name}.shift"), qp.scalar(f"{name}.eps"))
        raw, n = self.transfer(beats_to_bytes(beats, self.lc.bus_width))
        offset = self.region(name, len(raw), raw)
        self.weights.append(name)
        self.emit(Queue.LOAD, Opcode.LOAD_NORM, base=Base.MODEL, offset=offset, beats=n)
        d = qp.config.embed_dim
        return self.emit(Queue.COMPUTE, Opcode.NORM, row=row, rows=rows, cols=d)

    def linear(self, name, groups, d_out, *, src, dst, write, rows_from=Rows.RANGE, row=0,
               rows=0, row_offset=0, index=Index.NONE, top_k=0, first=0):
        """One LINEAR per column chunk (:func:`matrix_chunks`) of output columns ``first ..
        d_out - 1``; ``groups(c0, c1)`` gives the chunk's image group."""
        d_in = groups.d_in
        last = None
        for n, (c0, c1) in enumerate((first + c0, first + c1) for c0, c1
                                     in matrix_chunks(self.config, d_in, d_out - first)):
            self.matrices(f"{name}.{n}", groups(c0, c1), index)
            last = self.emit(Queue.COMPUTE, Opcode.LINEAR, src=src, dst=dst, rows_from=rows_from,
                             write=write, row=row, rows=rows, row_offset=row_offset, col=c0,
                             cols=c1 - c0, kb=-(-d_in // self.lc.pi), top_k=top_k)
        return last


class _Images:
    """The matrix images of one layer (or one image per task / expert), chunk by chunk."""

    def __init__(self, lc, name, weights, biases, mults, shifts, zero_points, bits, tables=None):
        self.lc, self.name, self.bits = lc, name, bits
        self.weights, self.biases, self.mults, self.shifts = weights, biases, mults, shifts
        self.zero_points, self.tables = zero_points, tables
        self.d_in = weights[0].shape[1]

    def __call__(self, c0, c1):
        out = []
        for k, w in enumerate(self.weights):
            out.append(matrix_image(
                self.lc, f"{self.name}[{k}]" if len(self.weights) > 1 else self.name, w[c0:c1],
                self.biases[k][c0:c1], mult=self.mults[k][c0:c1], shift=self.shifts[k][c0:c1],
                zero_point=int(self.zero_points[k]), bits=self.bits,
                gelu_table=None if self.tables is None else self.tables[k]))
        return out


def _layer(lc, qp, name, bits, zero_point=0, table=None, order=slice(None)):
    """One layer's images; ``order`` permutes its output channels."""
    return _Images(lc, name, [qp[f"{name}.weight"][order]], [qp[f"{name}.bias"][order]],
                   [qp[f"{name}.mult"][order]], [qp[f"{name}.shift"][order]], [zero_point], bits,
                   None if table is None else [table])


def qkv_order(num_heads, head_dim):
    """The qkv output channels in QKV's head-major layout: head ``j``'s q, k and v at columns
    ``3 j head_dim + (0, 1, 2) head_dim`` (a head group's columns are one range)."""
    d = num_heads * head_dim
    return np.array([s * d + j * head_dim + i for j in range(num_heads) for s in range(3)
                     for i in range(head_dim)])


def head_groups(config, model, overlap=True):
    """Heads per qkv LINEAR and ATTENTION: every head at once without ``overlap`` or where
    ``A`` shares ``H``'s memory (the qkv of the next group reads ``H`` while the unit writes
    ``A``); otherwise the fewest heads whose ``3 head_dim`` columns per head keep the linear
    kernel busy (at least ``t`` output folds: fewer re-read the input rows more often than
    they use them), and at most half of the heads, so that two groups overlap."""
    h = model.num_heads
    if not overlap or config.share_buffers or h < 2:
        return h
    folds = 3 * model.head_dim // config.linear.po
    return min(-(-config.linear.t // folds), -(-h // 2))


def _stack(lc, qp, name, bits, zero_points=None, tables=None):
    w = qp[f"{name}.weight"]
    return _Images(lc, name, list(w), list(qp[f"{name}.bias"]), list(qp[f"{name}.mult"]),
                   list(qp[f"{name}.shift"]),
                   [0] * len(w) if zero_points is None else list(zero_points), bits,
                   None if tables is None else list(tables))


#: Version of the folder that :meth:`CompiledModel.save` writes.
BUNDLE_FORMAT = 1


def model_hash(qp, config):
    """The content hash of a compilation: every tensor of ``qp`` (name, dtype, shape, bytes),
    its model config and the accelerator config (hex SHA-256)."""
    h = hashlib.sha256()
    h.update(qp.config.to_json().encode())
    h.update(config.to_json().encode())
    for name in sorted(qp.tensors):
        value = np.ascontiguousarray(qp.tensors[name])
        h.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


@dataclass
class CompiledModel:
    """A compiled model: the program, its DRAM image and how to fill and read it.

    Members
    -------
    config : AcceleratorConfig
    model : ModelConfig
    program : Program
    image : DramImage
        With an empty ``input`` and ``output`` region (see :meth:`with_input`).
    weight_bytes : int
        The span of the matrix and LayerNorm images (what a resident store holds).
    source_hash : str or None
        :func:`model_hash` of the quantized set and config it was compiled from (kept by
        :meth:`save` and :meth:`load`).
    """

    config: AcceleratorConfig
    model: ModelConfig
    program: Program
    image: DramImage
    weight_bytes: int
    source_hash: str = None

    @property
    def output_shape(self):
        m = self.model
        return (m.num_classes,) if m.num_classes else (m.num_tokens, m.embed_dim)

    def input_bytes(self, pixels):
        """The ``input`` region's bytes for uint8 pixel codes of shape (C, H, W): the patches
        row-major (patch-major, features in (c, y, x) order), striped over the ports."""
        m = self.model
        pixels = np.asarray(pixels)
        if pixels.shape != (m.in_chans, *m.image_size):
            raise ValueError(f"pixels must have shape {(m.in_chans, *m.image_size)}, "
                             f"got {pixels.shape}")
        if not np.issubdtype(pixels.dtype, np.integer) or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError("pixels must be integers in [0, 255]")
        raw = tensor_bytes(patchify(m, pixels), "uint8", self.config.row_align("int8"))
        return stripe(raw, self.config.axi)

    def with_input(self, pixels):
        """A copy of the image with ``pixels`` in its input region."""
        image = self.image.copy()
        image.write(image.region("input").offset, self.input_bytes(pixels))
        return image

    def read_output(self, image, offset=None):
        """The output tensor from a DRAM image: int16 ``(N, D)`` (backbone) or ``(C,)`` logits."""
        region = image.region("output")
        offset = region.offset if offset is None else offset
        rows, cols = (1, self.model.num_classes) if self.model.num_classes else self.output_shape
        align = self.config.row_align("int16")
        words = self.config.axi.words(tensor_size(rows, cols, "int16", align))
        raw = unstripe(image.read(offset, region.size), self.config.axi, words)
        out = tensor_from_bytes(raw, "int16", rows, cols, align).astype(np.int16)
        return out[0] if self.model.num_classes else out

    def batch(self, runs):
        """The image with one input and one output slot per run after the compiled image
        (the inputs, then the outputs), and each run's kernel arguments:
        ``runs`` is a list of ``(pixels, task)``. Returns ``(DramImage, [arguments])``;
        the slots are regions ``input<k>`` and ``output<k>``.

        Each slot lies at the same offset within a 4 KB page (:data:`rtl.config.BOUNDARY`)
        as the image's own ``input`` (``output``) region, so its transfers split into the
        same bursts and every run takes the schedule model's cycles of the image."""
        base = self.image
        in_region, out_region = base.region("input"), base.region("output")
        data, regions = bytearray(base.data), dict(base.regions)

        def slot(name, region, raw):
            data.extend(bytes((region.offset - len(data)) % BOUNDARY))
            regions[name] = Region(name, len(data), region.size)
            data.extend(raw.ljust(region.size, b"\0"))

        for k, (pixels, _) in enumerate(runs):
            slot(f"input{k}", in_region, self.input_bytes(pixels))
        for k in range(len(runs)):
            slot(f"output{k}", out_region, b"")
        arguments = [{"program": base.region("program").offset, "model": 0,
                      "input": regions[f"input{k}"].offset,
                      "output": regions[f"output{k}"].offset, "task": task, "frames": 1}
                     for k, (_, task) in enumerate(runs)]
        return DramImage(data, regions, base.align), arguments

    def memory_map(self):
        """``{region: {"offset", "size"}}`` of the image, in address order."""
        regions = sorted(self.image.regions.values(), key=lambda r: r.offset)
        return {r.name: {"offset": r.offset, "size": r.size} for r in regions}

    def save(self, folder):
        """Write the compilation to ``folder``: ``dram.bin`` (the image, empty input and
        output), ``program.bin`` (the plain encoding), ``program.txt`` (the listing) and
        ``manifest.json`` (format, configs, memory map, the image's SHA-256, the kernel
        arguments of a frame at address 0 for a driver written from scratch,
        :attr:`source_hash`). Returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = bytes(self.image.data)
        (folder / "dram.bin").write_bytes(data)
        (folder / "program.bin").write_bytes(self.program.to_bytes())
        (folder / "program.txt").write_text(self.program.listing() + "\n")
        manifest = {
            "format": BUNDLE_FORMAT, "source_hash": self.source_hash,
            "accelerator": self.config.to_dict(), "model": self.model.to_dict(),
            "dram_bytes": len(data), "dram_sha256": hashlib.sha256(data).hexdigest(),
            "align": self.image.align, "weight_bytes": self.weight_bytes,
            "regions": self.memory_map(),
            "arguments": {"program": self.image.region("program").offset, "model": 0,
                          "input": self.image.region("input").offset,
                          "output": self.image.region("output").offset},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder):
        """Read a :meth:`save` folder back; checks the format and the image's SHA-256.

        Raises
        ------
        ProgramError
            Naming the file: missing, another format, a changed image, a bad program.
        """
        folder = Path(folder)
        for name in ("manifest.json", "dram.bin", "program.bin"):
            if not (folder / name).is_file():
                raise ProgramError(f"{folder / name}: missing (not a compiled model folder)")
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except ValueError as exc:
            raise ProgramError(f"{folder / 'manifest.json'}: not JSON ({exc})") from None
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ProgramError(f"{folder / 'manifest.json'}: format {manifest.get('format')!r}, "
                               f"expected {BUNDLE_FORMAT}")
        try:
            data = (folder / "dram.bin").read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest["dram_sha256"]:
                raise ProgramError(f"{folder / 'dram.bin'}: SHA-256 differs from the manifest's "
                                   f"(the image was changed after compilation)")
            regions = {name: Region(name, r["offset"], r["size"])
                       for name, r in manifest["regions"].items()}
            image = DramImage(bytearray(data), regions, manifest["align"]).validate()
            config = AcceleratorConfig.from_dict(manifest["accelerator"])
            model = ModelConfig.from_dict(manifest["model"])
            weight_bytes, source = manifest["weight_bytes"], manifest["source_hash"]
        except (KeyError, TypeError) as exc:
            raise ProgramError(f"{folder / 'manifest.json'}: missing or malformed entry "
                               f"{exc}") from None
        program = Program.from_bytes((folder / "program.bin").read_bytes())
        code = program.dram_bytes(config.axi)
        if image.read(image.region("program").offset, len(code)) != code:
            raise ProgramError(f"{folder / 'program.bin'}: differs from the program in dram.bin")
        return cls(config, model, program, image, weight_bytes, source)


def compile_model(qp, config, *, overlap_attention=True):
    """Compile ``qp`` (a :class:`golden.int_model.QuantParams`) for ``config``;
    ``overlap_attention=False`` runs one qkv and one ATTENTION of all heads per block
    (no attention beside the linear kernel; the throughput ablation's baseline).

    Returns
    -------
    CompiledModel

    Raises
    ------
    ProgramError
        If the config cannot run the model (:func:`check_model`) or the program does
        not fit it (:func:`moevit.program.check_program`).
    """
    check_model(qp, config)
    m = qp.config
    b = _Builder(config)
    lc = b.lc
    n, d, hd = m.num_tokens, m.embed_dim, m.head_dim
    codes = Codes[qp.attention_codes.upper()]
    order, group = qkv_order(m.num_heads, hd), head_groups(config, m, overlap_attention)

    # Patch embedding: X = position embedding, G = pixels - 128, X[1:] += patches @ W.
    raw, beats = b.transfer(tensor_bytes(qp["pos_embed"], "int16", config.row_align("int16")))
    offset = b.region("pos_embed", len(raw), raw)
    b.emit(Queue.LOAD, Opcode.LOAD_TENSOR, base=Base.MODEL, offset=offset, buffer=Buffer.X,
           row=0, rows=n, cols=d)
    pixels = b.emit(Queue.LOAD, Opcode.LOAD_TENSOR, base=Base.INPUT, offset=0, buffer=Buffer.G,
                    row=0, rows=m.num_patches, cols=m.patch_dim, flip_sign=1)
    first = b.linear("patch_embed", _layer(lc, qp, "patch_embed", 16), d, src=Buffer.G,
                     dst=Buffer.X, write=Write.ADD, rows=m.num_patches, row_offset=1)
    b.edges.append((pixels, (Queue.COMPUTE, 0)))
    last = first
    for blk in range(m.depth):
        p = f"blocks.{blk}."
        b.norm(p + "norm1", qp, n)
        qkv = _layer(lc, qp, p + "attn.qkv", 8, order=order)
        attention = dict(tokens=n, head_dim=hd, dim=d, mult=int(qp.scalar(p + "attn.scores.mult")),
                         shift=int(qp.scalar(p + "attn.scores.shift")), codes=codes)
        # A head group's q, k and v columns, then its ATTENTION, which the attention unit
        # runs while the linear kernel computes the next group's.
        for j in range(0, m.num_heads, group):
            heads = min(group, m.num_heads - j)
            b.linear(p + "attn.qkv" + (f".h{j}" if heads < m.num_heads else ""), qkv,
                     3 * hd * (j + heads), src=Buffer.H, dst=Buffer.QKV, write=Write.STORE,
                     rows=n, first=3 * hd * j)
            b.emit(Queue.COMPUTE, Opcode.ATTENTION, head=j, heads=heads, **attention)
        b.emit(Queue.COMPUTE, Opcode.SYNC, attention=1)
        b.linear(p + "attn.proj", _layer(lc, qp, p + "attn.proj", 16), d, src=Buffer.A,
                 dst=Buffer.X, write=Write.ADD, rows=n)
        b.norm(p + "norm2", qp, n)
        if m.is_moe(blk):
            gates = _Images(lc, p + "mlp.gate",
                            *[[qp[f"{p}mlp.gate.{t}.{f}"] for t in range(m.num_tasks)]
                              for f in ("weight", "bias", "mult", "shift")],
                            [0] * m.num_tasks, 16)
            route = b.linear(p + "mlp.gate", gates, m.num_experts, src=Buffer.H, dst=Buffer.X,
                             write=Write.ROUTE, rows=n, index=Index.TASK, top_k=m.top_k)
            e = p + "mlp.experts."
            fc1 = _stack(lc, qp, e + "fc1", 8, qp[e + "fc1.zero_point"], qp[e + "gelu.table"])
            fc2 = _stack(lc, qp, e + "fc2", 16)
            chunks = (len(matrix_chunks(config, d, m.expert_hidden))
                      + len(matrix_chunks(config, m.expert_hidden, d)))
            loop = b.emit(Queue.LOAD, Opcode.LOOP, body=chunks)
            b.edges.append((route, loop))
            b.emit(Queue.COMPUTE, Opcode.LOOP, body=chunks)
            b.linear(e + "fc1", fc1, m.expert_hidden, src=Buffer.H, dst=Buffer.G,
                     write=Write.STORE, rows_from=Rows.EXPERT, index=Index.EXPERT)
            b.linear(e + "fc2", fc2, d, src=Buffer.G, dst=Buffer.X, write=Write.COMBINE,
                     rows_from=Rows.EXPERT, index=Index.EXPERT)
            last = b.emit(Queue.COMPUTE, Opcode.COMBINE, rows=n, cols=d)
        else:
            fc1 = _layer(lc, qp, p + "mlp.fc1", 8, int(qp.scalar(p + "mlp.fc1.zero_point")),
                         qp[p + "mlp.gelu.table"])
            b.linear(p + "mlp.fc1", fc1, m.mlp_hidden, src=Buffer.H, dst=Buffer.G,
                     write=Write.STORE, rows=n)
            last = b.linear(p + "mlp.fc2", _layer(lc, qp, p + "mlp.fc2", 16), d, src=Buffer.G,
                            dst=Buffer.X, write=Write.ADD, rows=n)
    if m.num_classes:
        b.norm("norm", qp, 1)
        last = b.linear("head", _layer(lc, qp, "head", 16), m.num_classes, src=Buffer.H,
                        dst=Buffer.LOGITS, write=Write.STORE, rows=1)
        out_buffer, out_rows, out_cols = Buffer.LOGITS, 1, m.num_classes
    else:
        out_buffer, out_rows, out_cols = Buffer.X, n, d
    store = b.emit(Queue.STORE, Opcode.STORE_TENSOR, base=Base.OUTPUT, offset=0,
                   buffer=out_buffer, row=0, rows=out_rows, cols=out_cols)
    b.edges.append((last, store))
    for q in Queue:
        b.emit(q, Opcode.END)

    weights = [b.regions[name] for name in b.weights]
    weight_bytes = weights[-1].end - weights[0].offset
    if config.resident and weight_bytes > config.weight_store:
        raise ProgramError(f"model {m.name!r} on config {config.name!r}: the resident images "
                           f"take {weight_bytes} bytes, weight_store = {config.weight_store}")
    streams = place_tokens(b.streams, b.edges)
    in_raw, _ = b.transfer(bytes(tensor_size(m.num_patches, m.patch_dim, "uint8",
                                             config.row_align("int8"))))
    out_raw, _ = b.transfer(bytes(tensor_size(out_rows, out_cols, "int16",
                                              config.row_align("int16"))))
    program = check_program(Program(streams, input_bytes=len(in_raw),
                                    output_bytes=len(out_raw)), config)
    _check_words(program, program.to_bytes())
    code = program.dram_bytes(config.axi)
    b.region("program", len(code), code)
    b.region("input", len(in_raw))
    b.region("output", len(out_raw))
    image = DramImage(bytearray(b.data), b.regions, b.align).validate()
    return CompiledModel(config, m, program, image, weight_bytes, model_hash(qp, config))


def _check_words(program, code):
    """The program read back from its bytes is the program (the encoding round-trips)."""
    if Program.from_bytes(code) != program or len(code) != program.words * WORD_BYTES:
        raise ProgramError("internal: the program does not survive its own encoding")

