"""AXI4 and AXI4-Lite signatures with the standard signal names (ARM IHI 0022).

Plain ``wiring.Signature``\\ s, so that an emitted port reads ``m_axi0__araddr``,
``s_axi_control__wdata`` and Vivado's interface inference sees the usual names.
Directions are the manager's (master's): a subordinate takes ``In(...)`` of them.

The accelerator uses a subset: INCR bursts (``axburst = 1``) of full-width beats
(``axsize = log2(data bytes)``), one ID (``awid`` / ``arid`` are a constant 0 of
:data:`ID_BITS` bits, there so that bus models and interconnects that require them
connect; the channels answer in order), all byte strobes set; responses other than
OKAY are errors (SLVERR ``0b10``, DECERR ``0b11``).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["ADDR_BITS", "ID_BITS", "LITE_ADDR_BITS", "INCR", "OKAY", "read_signature",
           "write_signature", "axi4_signature", "lite_signature", "forward"]

#: Address width of the AXI4 master ports.
ADDR_BITS = 64
#: Width of the (constant zero) transaction IDs of the AXI4 master ports.
ID_BITS = 1
#: Address width of the AXI4-Lite control port (the register map is below 4 KB).
LITE_ADDR_BITS = 12
#: ``axburst`` of an incrementing burst, and the OKAY response.
INCR = 1
OKAY = 0


def read_signature(data_bits):
    """The read address and read data channels (AR, R)."""
    return wiring.Signature({
        "arid": Out(ID_BITS), "araddr": Out(ADDR_BITS), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
        "rid": In(ID_BITS), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def write_signature(data_bits):
    """The write address, write data and write response channels (AW, W, B)."""
    return wiring.Signature({
        "awid": Out(ID_BITS), "awaddr": Out(ADDR_BITS), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(ID_BITS), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    })


def axi4_signature(data_bits):
    """A whole AXI4 manager port: the members of :func:`read_signature` and
    :func:`write_signature`."""
    return wiring.Signature({**read_signature(data_bits).members,
                             **write_signature(data_bits).members})


def lite_signature():
    """An AXI4-Lite manager port of 32-bit data (the host's view of the control registers)."""
    return wiring.Signature({
        "awaddr": Out(LITE_ADDR_BITS), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(LITE_ADDR_BITS), "arvalid": Out(1), "arready": In(1),
        "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def forward(m, inner, outer, signature):
    """Connect the members of ``signature`` of ``inner`` (a manager-side interface, e.g. a DMA
    engine's read port) to ``outer`` (a manager-side port of the enclosing component):
    outputs go out, inputs come in. Used to merge a reader's AR/R and a writer's AW/W/B
    into one AXI4 port."""
    for name, member in signature.members.items():
        a, b = getattr(inner, name), getattr(outer, name)
        m.d.comb += (b.eq(a) if member.flow == Out else a.eq(b))
