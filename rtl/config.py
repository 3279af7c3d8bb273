"""The accelerator's configuration: one frozen dataclass, the single source of truth.

:class:`AcceleratorConfig` composes small per-part configs (as Gemmini's config
does, without its ninety flat parameters):

==================  ==============================================================
part                what it fixes
==================  ==============================================================
``linear``          the linear kernel: PI x PO x T, DSP packing, weight-bank size
``attention``       the attention kernel: R x Dp x H and the code forms it runs
``norm_lanes``      LayerNorm channels per beat
``axi``             the AXI4 master ports: data width, count, burst length,
                    outstanding reads/writes, and the memory latency assumed by
                    the schedule model (and implemented by the simulation memory)
``capacity``        the largest model it runs: tokens, dims, hidden width, head
                    dim, experts, top-k, classes, instructions
``share_buffers``   whether the attention output shares the LayerNorm output's
                    memory and the hidden buffer shares q/k/v's (small devices)
``weight_store``    bytes of on-chip weight store: 0 streams every weight from
                    DRAM each frame; otherwise the weights are resident (the
                    first frame fills the store, later frames read it)
==================  ==============================================================

Every field is checked on construction; a bad value raises ``ValueError`` naming
the field (``linear.pi``, ``axi.ports``) and its allowed range. The unit configs
(:class:`rtl.compute.linear.LinearConfig`, :class:`rtl.compute.attention.AttentionConfig`), the
on-chip buffers and the compiler's limits are derived here and nowhere else.
:data:`PRESETS` holds configs sized for the supported devices; the design-space
search tunes them.
"""

import json
import math
from dataclasses import asdict, dataclass, fields, replace

from golden.config import load_json_file, parse_json
from golden.moe import TOPK_MAX
from golden.softmax import ATTENTION_CODES

from .compute.attention import AttentionConfig
from .compute.linear import DIM_BITS, LinearConfig
from .moe.combine import ACC_BITS
from .params import check_int

__all__ = ["LinearArray", "AttentionArray", "AxiPorts", "Capacity", "AcceleratorConfig",
           "BUFFERS", "STORE_LATENCY", "LOAD_COMMAND_LATENCY", "BOUNDARY", "PRESETS", "preset"]

#: On-chip activation buffers: name -> (element dtype, what it holds).
BUFFERS = {
    "X": ("int16", "residual stream (patch embedding, residual adds, MoE combine)"),
    "H": ("int8", "LayerNorm output (the input of qkv, fc1, the gate, the experts, the head)"),
    "QKV": ("int8", "q, k, v of every head, head major: [q0 k0 v0 | q1 k1 v1 | ...] per row"),
    "A": ("int8", "attention output (the input of proj)"),
    "G": ("int8", "hidden rows: pixels for the patch embedding, fc1 / GELU outputs"),
    "LOGITS": ("int16", "class logits (classifier models)"),
}


#: Cycles from a resident image load's start to the store's first word.
STORE_LATENCY = 2
#: Cycles from a DRAM load's start to its DMA command taken: the instruction's beats are
#: registered, then its address (two multiplies in series), then the command is offered.
LOAD_COMMAND_LATENCY = 2
#: AXI bursts never cross this boundary (bytes).
BOUNDARY = 4096


_ELEMENT_BYTES = {"int8": 1, "int16": 2}


def _named(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, not {value!r}")


def _round_up(n, m):
    return -(-n // m) * m


class _Part:
    """JSON round trip of a frozen dataclass of plain fields (tuples as lists)."""

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d, prefix=""):
        if not isinstance(d, dict):
            raise ValueError(f"{prefix or cls.__name__} must be an object, not {d!r}")
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown {cls.__name__} field {_named(prefix, key)!r}")
        return cls(**d)


@dataclass(frozen=True)
class LinearArray(_Part):
    """The linear kernel (:class:`rtl.compute.linear.LinearKernel`).

    Parameters
    ----------
    pi, po : int, 1..64
        Input features per beat and output channels per tile.
    t : int, 1..16
        Token lanes sharing each weight word.
    dsp_packing : bool
        Two int8 MACs per DSP48E2 (UltraScale+ only).
    bank_words : int, 1..65535
        Weight words (``PO x PI`` int8) per weight bank; a matrix with more
        ``ceil(d_in / PI) * ceil(d_out / PO)`` words runs in column chunks.
    """

    pi: int = 16
    po: int = 16
    t: int = 3
    dsp_packing: bool = False
    bank_words: int = 576

    def __post_init__(self):
        check_int("linear.pi", self.pi, 1, 64)
        check_int("linear.po", self.po, 1, 64)
        check_int("linear.t", self.t, 1, 16)
        _check_bool("linear.dsp_packing", self.dsp_packing)
        check_int("linear.bank_words", self.bank_words, 1, (1 << DIM_BITS) - 1)

    @property
    def macs(self):
        return self.pi * self.po * self.t


@dataclass(frozen=True)
class AttentionArray(_Part):
    """The attention kernel (:class:`rtl.compute.attention.AttentionKernel`).

    Parameters
    ----------
    r : int, 1..128
        Query rows in flight.
    dp : int, 1..64
        Head dims per cycle (divides every head dim the config runs); the buffer word.
    h : int, 1..16
        Heads side by side (1 in the accelerator top).
    codes : tuple of str
        Code forms the kernel runs, each one of ``golden.softmax.ATTENTION_CODES``.
    """

    r: int = 24
    dp: int = 16
    h: int = 1
    codes: tuple = ("log2",)

    def __post_init__(self):
        check_int("attention.r", self.r, 1, 128)
        check_int("attention.dp", self.dp, 1, 64)
        check_int("attention.h", self.h, 1, 16)
        codes = self.codes
        if isinstance(codes, str) or not isinstance(codes, (tuple, list)):
            raise ValueError(f"attention.codes must be a sequence of {', '.join(ATTENTION_CODES)}, "
                             f"not {codes!r}")
        codes = tuple(codes)
        if (not codes or len(set(codes)) != len(codes)
                or any(c not in ATTENTION_CODES for c in codes)):
            raise ValueError(f"attention.codes must be distinct entries of "
                             f"{', '.join(ATTENTION_CODES)}, not {codes!r}")
        object.__setattr__(self, "codes", codes)

    @property
    def macs(self):
        return self.r * self.dp * self.h


@dataclass(frozen=True)
class AxiPorts(_Part):
    """The AXI4 master ports and the memory behind them.

    Parameters
    ----------
    data_bits : int, 64..1024, a power of two
        Data width of each port.
    ports : int, 1, 2, 4 or 8
        Master ports. Every transfer is striped over all of them
        (:func:`moevit.images.stripe`): the load path is ``ports * data_bits`` wide; each
        port reads its own sub-region (:meth:`sub_region`).
    burst_beats : int, 1..256
        Longest burst (AxLEN + 1); bursts never cross a 4 KB boundary either.
    outstanding : int, 1..64
        Bursts in flight per port and direction.
    read_latency, write_latency : int, 1..4096
        Assumed cycles from an accepted AR to its first R beat, and from a burst's
        last W beat to its B response. The schedule model and the simulation
        memory both use them; on a board they are the memory's.
    """

    data_bits: int = 256
    ports: int = 1
    burst_beats: int = 64
    outstanding: int = 4
    read_latency: int = 64
    write_latency: int = 32

    def __post_init__(self):
        check_int("axi.data_bits", self.data_bits, 64, 1024)
        if self.data_bits & (self.data_bits - 1):
            raise ValueError(f"axi.data_bits must be a power of two in [64, 1024], "
                             f"not {self.data_bits}")
        if self.ports not in (1, 2, 4, 8):
            raise ValueError(f"axi.ports must be 1, 2, 4 or 8, not {self.ports!r}")
        check_int("axi.burst_beats", self.burst_beats, 1, 256)
        check_int("axi.outstanding", self.outstanding, 1, 64)
        check_int("axi.read_latency", self.read_latency, 1, 4096)
        check_int("axi.write_latency", self.write_latency, 1, 4096)
        if self.ports * self.data_bits > 4096:
            raise ValueError(f"axi.ports * axi.data_bits must be at most 4096 (the load path), "
                             f"not {self.ports * self.data_bits}")

    @property
    def data_bytes(self):
        return self.data_bits // 8

    @property
    def path_bits(self):
        """Width of the load path: one bus word from every port."""
        return self.ports * self.data_bits

    @property
    def path_bytes(self):
        return self.path_bits // 8

    def words(self, nbytes):
        """Load-path words that carry ``nbytes`` bytes."""
        return -(-nbytes // self.path_bytes)

    def sub_region(self, beats):
        """Bytes of one port's part of a ``beats``-word transfer: ``beats`` bus words, rounded
        up to 4 KB when there are several ports, so that every port's bursts split at the
        same places (the ports stay in step)."""
        size = beats * self.data_bytes
        return size if self.ports == 1 else -(-size // BOUNDARY) * BOUNDARY

    def footprint(self, beats):
        """DRAM bytes of a ``beats``-word transfer: the stride of TASK / EXPERT indexing."""
        return self.ports * self.sub_region(beats)


@dataclass(frozen=True)
class Capacity(_Part):
    """The model shape the accelerator is built for (the on-chip buffers are sized from it).

    As FINN and hls4ml build hardware per model, the units are built for the model's
    **width, head size, experts and top-k exactly** (``dim``, ``head_dim``, ``experts``,
    ``top_k``: the LayerNorm unit, the attention kernel and the gating datapath are
    elaborated for them); ``tokens``, ``hidden``, ``classes`` and ``instructions`` are
    maxima. :meth:`AcceleratorConfig.fitted` sizes a config for a model.

    Parameters
    ----------
    tokens : int, 1..1024
        Largest token count N (patches + class token).
    dim : int, 2..1024
        Model width D.
    hidden : int, 1..16384
        Width of the hidden buffer: at least the dense and expert FFN widths and the
        flattened patch (``C * p * p``, the patch embedding's input).
    head_dim : int, 1..256
    experts : int, 2..64
    top_k : int, 1..4
    classes : int, 0..4096
        Most classifier logits; 0: backbone models only.
    instructions : int, 16..65536
        Program size (all three streams and the header).
    """

    tokens: int = 129
    dim: int = 192
    hidden: int = 768
    head_dim: int = 64
    experts: int = 16
    top_k: int = 2
    classes: int = 0
    instructions: int = 1024

    def __post_init__(self):
        check_int("capacity.tokens", self.tokens, 1, 1024)
        check_int("capacity.dim", self.dim, 2, 1024)
        check_int("capacity.hidden", self.hidden, 1, 16384)
        check_int("capacity.head_dim", self.head_dim, 1, 256)
        check_int("capacity.experts", self.experts, 2, 64)
        check_int("capacity.top_k", self.top_k, 1, min(self.experts, TOPK_MAX))
        check_int("capacity.classes", self.classes, 0, 4096)
        check_int("capacity.instructions", self.instructions, 16, 1 << 16)

    @classmethod
    def of(cls, model, **fields_):
        """The capacity of ``model`` (a :class:`golden.config.ModelConfig`): its tokens,
        width, the widest hidden row (FFN, experts, flattened patch), head size, experts,
        top-k and classes; ``fields_`` override (``instructions=2048``)."""
        hidden = max(model.mlp_hidden, model.patch_dim,
                     model.expert_hidden if model.moe_blocks else 0)
        return cls(**({"tokens": model.num_tokens, "dim": model.embed_dim, "hidden": hidden,
                       "head_dim": model.head_dim, "experts": max(model.num_experts, 2),
                       "top_k": model.top_k, "classes": model.num_classes} | fields_))


_PARTS = {"linear": LinearArray, "attention": AttentionArray, "axi": AxiPorts,
          "capacity": Capacity}


@dataclass(frozen=True)
class AcceleratorConfig:
    """The whole accelerator (see the module docstring).

    Parameters
    ----------
    name : str
        Non-empty label.
    linear : LinearArray
    attention : AttentionArray
    norm_lanes : int, 1..32
        LayerNorm channels per beat; divides every model width the config runs and the
        ``X`` buffer's memory word (the unit reads one part of a word per beat).
    axi : AxiPorts
    capacity : Capacity
    share_buffers : bool
        ``A`` lives in ``H``'s memory and ``G`` in ``QKV``'s (:meth:`buffer_memory`):
        about a third less activation memory; the compiler's schedule already keeps
        their lifetimes apart.
    weight_store : int, 0..2**32
        Bytes of on-chip weight store (UltraRAM). 0: every matrix and LayerNorm image
        streams from DRAM in every frame. Otherwise the images are **resident**: the
        store mirrors the image's weight regions by address, the first frame after a
        program load fills it from DRAM as it reads them, and later frames' image loads
        read the store, one load-path word per cycle after :data:`STORE_LATENCY`
        (:mod:`moevit.schedule`); the compiler checks that the model's images fit.
    watchdog : int, 16..2**31-1
        Cycles a run may go without any instruction issuing or completing before the
        top ends it with the ``watchdog`` error code (a deadlocked program, a bus that
        never answers).
    """

    name: str = "default"
    linear: LinearArray = LinearArray()
    attention: AttentionArray = AttentionArray()
    norm_lanes: int = 4
    axi: AxiPorts = AxiPorts()
    capacity: Capacity = Capacity()
    share_buffers: bool = False
    weight_store: int = 0
    watchdog: int = 1 << 20

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, not {self.name!r}")
        for part, cls in _PARTS.items():
            value = getattr(self, part)
            if not isinstance(value, cls):
                raise ValueError(f"{part} must be a {cls.__name__}, not {value!r}")
        check_int("norm_lanes", self.norm_lanes, 1, 32)
        _check_bool("share_buffers", self.share_buffers)
        check_int("weight_store", self.weight_store, 0, 1 << 32)
        check_int("watchdog", self.watchdog, 16, (1 << 31) - 1)
        c = self.capacity
        lin, att = self.linear, self.attention
        if not lin.pi == lin.po == att.dp or lin.pi & (lin.pi - 1):
            raise ValueError(f"linear.pi, linear.po and attention.dp must be one power of two, "
                             f"the buffer word (the top moves whole words), not {lin.pi}, "
                             f"{lin.po} and {att.dp}")
        if att.h != 1:
            raise ValueError(f"attention.h must be 1: the top reads one head per buffer word, "
                             f"not {att.h}")
        if self.row_align("int16") % self.norm_lanes:
            raise ValueError(f"norm_lanes ({self.norm_lanes}) must divide the X buffer's memory "
                             f"word ({self.row_align('int16')} elements)")
        if c.head_dim % self.attention.dp:
            raise ValueError(f"attention.dp ({self.attention.dp}) must divide capacity.head_dim "
                             f"({c.head_dim})")
        if c.dim % self.norm_lanes:
            raise ValueError(f"norm_lanes ({self.norm_lanes}) must divide capacity.dim ({c.dim})")
        need = self.linear_config().kb_max
        if need > self.linear.bank_words:
            raise ValueError(f"linear.bank_words must hold one output fold of the widest input "
                             f"(ceil({self.linear_config().max_in} / {self.linear.pi}) = {need} "
                             f"words), not {self.linear.bank_words}")
        if self.axi.path_bits < 64:
            raise ValueError("the load path must be at least 64 bits wide")

    # ---- derived unit configs ---------------------------------------------------------

    @property
    def word(self):
        """Elements per unit word: the linear kernel's PI = PO = the attention kernel's Dp.
        Every unit reads and writes the buffers a word at a time."""
        return self.linear.pi

    def memory_word_bytes(self, dtype):
        """Bytes of a buffer memory word for elements of ``dtype`` (``int8`` or ``int16``): the
        wider of a unit word and a load-path word, so that a DMA moves one memory word (or
        a part) per cycle and a unit one word (a part of one)."""
        return max(self.axi.path_bytes, self.word * _ELEMENT_BYTES[dtype])

    def row_align(self, dtype):
        """Elements every buffer row and every DRAM tensor row is padded to: one memory word."""
        return self.memory_word_bytes(dtype) // _ELEMENT_BYTES[dtype]

    def linear_config(self):
        """The :class:`rtl.compute.linear.LinearConfig` of the kernel (int16 outputs, GELU stage,
        the load path as its weight bus)."""
        c, lin = self.capacity, self.linear
        max_in = max(c.dim, c.hidden)
        max_out = max(3 * c.dim, c.hidden, c.experts, c.classes)
        full = -(-max_in // lin.pi) * -(-max_out // lin.po)
        return LinearConfig(pi=lin.pi, po=lin.po, t=lin.t, max_in=max_in, max_out=max_out,
                            max_weight_words=min(lin.bank_words, full),
                            bus_width=self.axi.path_bits, dsp_packing=lin.dsp_packing,
                            out_width=16, gelu=True)

    def attention_config(self, head_dim=None, codes=None):
        """The :class:`rtl.compute.attention.AttentionConfig` for heads of ``head_dim`` (default: the
        capacity's) with ``codes`` (default: the first the config runs)."""
        a = self.attention
        return AttentionConfig(r=a.r, dp=a.dp, h=a.h,
                               head_dim=self.capacity.head_dim if head_dim is None else head_dim,
                               max_tokens=self.capacity.tokens,
                               codes=a.codes[0] if codes is None else codes)

    # ---- on-chip buffers --------------------------------------------------------------

    def buffer_shape(self, name):
        """``(rows, cols)`` of activation buffer ``name`` (:data:`BUFFERS`).

        Columns are rounded up to whole memory words (:meth:`row_align`).
        """
        c = self.capacity
        cols = {"X": c.dim, "H": c.dim, "QKV": 3 * c.dim, "A": c.dim, "G": c.hidden,
                "LOGITS": max(c.classes, 1)}
        if name not in cols:
            raise ValueError(f"unknown buffer {name!r}; buffers: {', '.join(BUFFERS)}")
        return (1 if name == "LOGITS" else c.tokens), _round_up(cols[name],
                                                                self.row_align(BUFFERS[name][0]))

    def buffer_memory(self, name):
        """The physical memory buffer ``name`` lives in (itself unless ``share_buffers``)."""
        if self.share_buffers:
            return {"A": "H", "G": "QKV"}.get(name, name)
        return name

    @property
    def resident(self):
        """Whether the weights are resident on chip (``weight_store > 0``)."""
        return self.weight_store > 0

    @property
    def buffers(self):
        """Names of the buffers this config has (``LOGITS`` only with ``capacity.classes``)."""
        return tuple(b for b in BUFFERS if b != "LOGITS" or self.capacity.classes)

    def memory_bytes(self):
        """On-chip memory by part, in bytes (activation buffers, the kernels' banks and
        buffers, the combiner, the routing queues, the instruction memory)."""
        c, lin = self.capacity, self.linear
        phys = {}
        for b in self.buffers:
            rows, cols = self.buffer_shape(b)
            size = rows * cols * (2 if BUFFERS[b][0] == "int16" else 1)
            m = self.buffer_memory(b)
            phys[m] = max(phys.get(m, 0), size)
        lc = self.linear_config()
        kernel = 2 * (lc.max_weight_words * lin.pi * lin.po
                      + lc.nb_max * lin.po * 53 // 8 + 256 * lin.po)
        kernel += 2 * lc.kb_max * lin.pi * lin.t
        att = self.attention
        attention = (3 * c.tokens * c.head_dim * att.h            # K and two V
                     + 2 * att.r * c.tokens * 2 * att.h           # two score buffers (int16)
                     + 2 * att.r * c.head_dim * att.h)            # two Q blocks
        norm = 2 * c.dim * 6 + 8 * c.dim * 2                      # two banks, ring of 8 tokens
        combine = c.tokens * _round_up(c.dim, lin.po) * ACC_BITS // 8
        routing = 2 * c.experts * c.tokens * 3                    # two banks of queue entries
        return {"buffers": sum(phys.values()), "linear": kernel, "attention": attention,
                "layernorm": norm, "combine": combine, "routing": routing,
                "instructions": c.instructions * 16, "weights": self.weight_store}

    def fitted(self, model, **capacity):
        """A copy whose capacity is exactly ``model``'s (:meth:`Capacity.of`; ``capacity``
        overrides fields, ``instructions=2048``; the program size stays this config's).

        Two fields narrow to what the model's shape allows:

        * ``norm_lanes`` drops to the largest of its divisors that divides the width and
          the X buffer's memory word (32 lanes run a 48-wide model on 16);
        * the buffer word (``linear.pi = linear.po = attention.dp``) drops to the largest
          power of two that divides it and the head size (the ``u280`` preset's 32-wide
          word runs 16-wide heads on a 16x16xT kernel), with ``linear.bank_words`` scaled
          by the same factor, as the widest input now takes that many more words per
          output fold; the token lanes stay.
        """
        cap = Capacity.of(model, **({"instructions": self.capacity.instructions} | capacity))
        word = math.gcd(self.word, cap.head_dim & -cap.head_dim)
        lin, att = self.linear, self.attention
        if word != self.word:
            lin = replace(lin, pi=word, po=word, bank_words=min(
                lin.bank_words * (self.word // word), (1 << DIM_BITS) - 1))
            att = replace(att, dp=word)
        shaped = replace(self, capacity=cap, linear=lin, attention=att, norm_lanes=1)
        return replace(shaped, norm_lanes=math.gcd(self.norm_lanes, cap.dim,
                                                   shaped.row_align("int16")))

    # ---- JSON -------------------------------------------------------------------------

    def to_dict(self):
        out = {"name": self.name, "norm_lanes": self.norm_lanes,
               "share_buffers": self.share_buffers, "weight_store": self.weight_store,
               "watchdog": self.watchdog}
        out.update({part: getattr(self, part).to_dict() for part in _PARTS})
        return out

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        """Build a config from :meth:`to_dict` output; missing fields take the defaults.

        Raises
        ------
        ValueError
            For an unknown field (``unknown AcceleratorConfig field 'lanes'``,
            ``unknown LinearArray field 'linear.p'``) or a value out of range.
        """
        if not isinstance(d, dict):
            raise ValueError(f"an accelerator config must be an object, not {d!r}")
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown AcceleratorConfig field {key!r}")
        args = dict(d)
        for part, part_cls in _PARTS.items():
            if part in args:
                args[part] = part_cls.from_dict(args[part], part)
        return cls(**args)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(parse_json(text))

    @classmethod
    def load(cls, path):
        """Read a :meth:`to_json` file; every error names the file."""
        return load_json_file(path, cls.from_json)


def ecp5_85f():
    """An LFE5U-85F (156 18x18 multipliers, 208 x 18 Kb block RAM): a 8x8x1 linear kernel,
    a 3x8x1 attention kernel (a fourth query row would take 161 multipliers, the multiplier
    census says), one 64-bit port, shared activation buffers (M3ViT-tiny fits in about
    2.9 Mb of the 3.7 Mb, counted in bytes; the block RAM census says 287 DP16KD)."""
    return AcceleratorConfig(
        name="ecp5_85f", linear=LinearArray(pi=8, po=8, t=1, bank_words=192),
        attention=AttentionArray(r=3, dp=8, h=1), norm_lanes=2,
        axi=AxiPorts(data_bits=64, ports=1, burst_beats=64, outstanding=2, read_latency=24,
                     write_latency=12),
        share_buffers=True)


def zcu102():
    """A ZCU102 (xczu9eg: 2,520 DSP48E2, 32.1 Mb block RAM): a packed 16x16x8 linear kernel
    (2,048 MACs on 1,024 DSPs), a 43x16x1 attention kernel (129 query rows in three blocks
    of 43), the four 128-bit S_AXI_HP ports to the PS DDR4 (a 512-bit load path). Eight
    token lanes: 129 tokens fill 17 groups (95 %); more lanes buy little while attention
    and LayerNorm run between the linear layers (``python -m bench.throughput``).

    Hand-picked, not the search's choice: ``make dse BOARD=zcu102`` picks a packed 32x32x2
    linear and a 19x32x1 attention kernel, 8 % fewer modelled cycles (``docs/dse.md``), but
    the LUT model, extrapolated that far beyond the kernel sizes it was fitted on, puts it
    at 109 % of the XCZU9EG's LUTs. This preset is at 100 % by the same model, which
    under-counts the largest tops it was checked on by about 10 %: it probably does not
    fit the part's LUTs either. Neither figure is checked by a synthesis of that size yet."""
    return AcceleratorConfig(
        name="zcu102", linear=LinearArray(pi=16, po=16, t=8, dsp_packing=True, bank_words=576),
        attention=AttentionArray(r=43, dp=16, h=1), norm_lanes=32,
        axi=AxiPorts(data_bits=128, ports=4, burst_beats=64, outstanding=8, read_latency=64,
                     write_latency=32))


def u280():
    """An Alveo U280 (xcu280: 9,024 DSP48E2, 70.9 Mb block RAM, 270 Mb UltraRAM, HBM2): the
    optimum of ``python -m bench.dse --board u280 --exhaustive`` over the stage-1 space
    (``docs/dse.md``). A packed 32x32x6 linear kernel (6,144 MACs on 3,072 DSPs; 129
    tokens fill 22 groups of 6, 98 %) on a 32-element buffer word, which M3ViT-tiny's
    64-wide heads allow (:meth:`AcceleratorConfig.fitted` narrows it to 16 for 16-wide
    heads), a 65x32x1 attention kernel (129 query rows in two blocks), four 256-bit HBM
    pseudo-channel ports (a 1024-bit load path), every weight streamed each frame
    (``weight_store`` would keep them in UltraRAM: M3ViT-tiny's images take 18.7 MB of
    its 33.75 MB; the top does not build the store yet)."""
    return AcceleratorConfig(
        name="u280", linear=LinearArray(pi=32, po=32, t=6, dsp_packing=True, bank_words=576),
        attention=AttentionArray(r=65, dp=32, h=1), norm_lanes=32,
        axi=AxiPorts(data_bits=256, ports=4, burst_beats=64, outstanding=8, read_latency=64,
                     write_latency=32))


#: Preset constructors by name.
PRESETS = {"ecp5_85f": ecp5_85f, "zcu102": zcu102, "u280": u280}


def preset(name):
    """A preset config by name; ``ValueError`` listing the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown accelerator preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]()
