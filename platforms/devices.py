"""Device capacity tables for the supported parts, with their sources.

Counts are the vendor data-sheet figures for the whole device. ``BRAM`` is in
the family's native block (UltraScale+: 36 Kb RAMB36, two RAMB18 per block;
ECP5: 18 Kb DP16KD); ``LUT`` is LUT6 on UltraScale+ and LUT4 on ECP5.
"""

from dataclasses import dataclass

__all__ = ["Device", "DEVICES", "RESOURCES"]

#: Resource classes compared against capacity (names as in platforms.yosys.group_cells).
RESOURCES = ("LUT", "FF", "DSP", "BRAM", "URAM")


@dataclass(frozen=True)
class Device:
    """One FPGA part: its synthesis family and capacities."""

    part: str
    family: str          # platforms.yosys target: "xcup" or "ecp5"
    LUT: int
    FF: int
    DSP: int
    BRAM: int
    URAM: int
    source: str

    def capacity(self, resource):
        return getattr(self, resource)


DEVICES = {
    # AMD DS891 "Zynq UltraScale+ MPSoC Data Sheet: Overview", ZU9EG column:
    # 274,080 system-logic LUTs, 548,160 flip-flops, 2,520 DSP slices, 912 x 36 Kb block RAM.
    "xczu9eg-ffvb1156-2-e": Device("xczu9eg-ffvb1156-2-e", "xcup", 274_080, 548_160, 2_520, 912, 0,
                                   "AMD DS891, ZU9EG"),
    # AMD DS963 "Alveo U280 Data Center Accelerator Card Data Sheet" (XCU280):
    # 1,304K LUTs, 2,607K registers, 9,024 DSP slices, 2,016 x 36 Kb BRAM, 960 UltraRAM.
    "xcu280-fsvh2892-2L-e": Device("xcu280-fsvh2892-2L-e", "xcup", 1_303_680, 2_607_360, 9_024,
                                   2_016, 960, "AMD DS963, XCU280"),
    # Lattice FPGA-DS-02012 "ECP5 and ECP5-5G Family Data Sheet", table 1.1, LFE5U-85:
    # 84K LUTs (one flip-flop per LUT), 208 x 18 Kb EBR blocks, 156 18x18 multipliers.
    "LFE5U-85F": Device("LFE5U-85F", "ecp5", 83_640, 83_640, 156, 208, 0,
                        "Lattice FPGA-DS-02012, LFE5U-85"),
}
