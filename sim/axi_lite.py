"""An AXI4-Lite manager for Amaranth-simulator testbenches (cocotb tests use cocotbext-axi).

``await lite_write(ctx, bus, offset, value)`` and ``await lite_read(ctx, bus, offset)``
drive a :func:`rtl.bus.axi.lite_signature` port one transaction at a time, holding
every VALID until its READY as the protocol requires.
"""

__all__ = ["lite_write", "lite_read"]


async def _handshake(ctx, valid, ready):
    ctx.set(valid, 1)
    while True:
        _, _, done = await ctx.tick().sample(ready)
        if done:
            break
    ctx.set(valid, 0)


async def lite_write(ctx, bus, offset, value, strobe=0xF):
    """Write ``value`` at ``offset`` (AW and W offered together); returns the B response."""
    ctx.set(bus.awaddr, offset)
    ctx.set(bus.wdata, value)
    ctx.set(bus.wstrb, strobe)
    aw = w = False
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    while not (aw and w):
        _, _, aw_ready, w_ready = await ctx.tick().sample(bus.awready, bus.wready)
        if not aw and aw_ready:
            aw = True
            ctx.set(bus.awvalid, 0)
        if not w and w_ready:
            w = True
            ctx.set(bus.wvalid, 0)
    ctx.set(bus.bready, 1)
    while True:
        _, _, valid, resp = await ctx.tick().sample(bus.bvalid, bus.bresp)
        if valid:
            break
    ctx.set(bus.bready, 0)
    return resp


async def lite_read(ctx, bus, offset):
    """Read the word at ``offset``."""
    ctx.set(bus.araddr, offset)
    await _handshake(ctx, bus.arvalid, bus.arready)
    ctx.set(bus.rready, 1)
    while True:
        _, _, valid, value = await ctx.tick().sample(bus.rvalid, bus.rdata)
        if valid:
            break
    ctx.set(bus.rready, 0)
    return value
