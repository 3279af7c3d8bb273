"""Device capacity tables for the supported parts, with their sources.

Counts are the vendor data-sheet figures for the whole device, in the
resource classes of :func:`platforms.yosys.group_cells`. ``BRAM`` counts the
family's native block (UltraScale+: 36 Kb RAMB36E2, two RAMB18E2 each; ECP5:
18 Kb DP16KD); ``LUT`` is LUT6 on UltraScale+ and LUT4 on ECP5; ``DSP`` is one
DSP48E2 slice (UltraScale+) or one 18x18 multiplier (ECP5).
"""

from dataclasses import dataclass, field

__all__ = ["Device", "DEVICES", "RESOURCES"]

#: Resource classes compared against capacity (names as in platforms.yosys.group_cells).
RESOURCES = ("LUT", "FF", "DSP", "BRAM", "URAM")


@dataclass(frozen=True)
class Device:
    """One FPGA part: its synthesis family, capacities and where they come from.

    Members
    -------
    part : str
        Full part name.
    family : str
        ``platforms.yosys`` target: ``"xcup"`` or ``"ecp5"``.
    LUT, FF, DSP, BRAM, URAM : int
        Capacity per resource class.
    primitives : dict
        Resource class -> the family's primitive it counts (for reports).
    source : str
        The data sheet the numbers come from.
    """

    part: str
    family: str
    LUT: int
    FF: int
    DSP: int
    BRAM: int
    URAM: int
    primitives: dict = field(compare=False)
    source: str = ""

    def capacity(self, resource):
        """Capacity of ``resource`` (one of :data:`RESOURCES`)."""
        return getattr(self, resource)


_ULTRASCALE = {"LUT": "LUT6", "FF": "FDRE/FDSE/FDCE/FDPE", "DSP": "DSP48E2",
               "BRAM": "RAMB36E2", "URAM": "URAM288"}
_ECP5 = {"LUT": "LUT4", "FF": "TRELLIS_FF", "DSP": "MULT18X18D", "BRAM": "DP16KD (18 Kb)",
         "URAM": "-"}

DEVICES = {
    # AMD DS891 "Zynq UltraScale+ MPSoC Data Sheet: Overview", ZU9EG column:
    # 274,080 system-logic LUTs, 548,160 flip-flops, 2,520 DSP slices, 912 x 36 Kb block RAM
    # (32.1 Mb), no UltraRAM.
    "xczu9eg-ffvb1156-2-e": Device("xczu9eg-ffvb1156-2-e", "xcup", 274_080, 548_160, 2_520, 912, 0,
                                   _ULTRASCALE, "AMD DS891, ZU9EG"),
    # AMD DS963 "Alveo U280 Data Center Accelerator Card Data Sheet" (XCU280):
    # 1,304K LUTs (1,303,680), 2,607K registers (2,607,360), 9,024 DSP slices,
    # 2,016 x 36 Kb block RAM (70.9 Mb), 960 x 288 Kb UltraRAM (270 Mb).
    "xcu280-fsvh2892-2L-e": Device("xcu280-fsvh2892-2L-e", "xcup", 1_303_680, 2_607_360, 9_024,
                                   2_016, 960, _ULTRASCALE, "AMD DS963, XCU280"),
    # Lattice FPGA-DS-02012 "ECP5 and ECP5-5G Family Data Sheet", table 1.1, LFE5U-85:
    # 84K LUTs (83,640: 41,820 slices of two LUT4 and two flip-flops, the count nextpnr-ecp5
    # reports), 208 x 18 Kb sysMEM EBR (3,744 Kb), 156 18x18 multipliers.
    "LFE5U-85F": Device("LFE5U-85F", "ecp5", 83_640, 83_640, 156, 208, 0, _ECP5,
                        "Lattice FPGA-DS-02012, LFE5U-85"),
}
