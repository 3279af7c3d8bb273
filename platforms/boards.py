"""Board platforms: ZCU102 and Alveo U280 (Vivado), ULX3S 85F and OrangeCrab 85F (open ECP5 flow).

amaranth-boards has neither the ZCU102 nor the U280; the classes below subclass
Amaranth's ``XilinxPlatform`` with the clock, reset, LED, button and UART pins
of the boards' constraint files. Pins taken from third-party copies of the
constraint files (named per resource) are marked; none has been checked on a
board by this project.
"""

from amaranth.build import Attrs, Clock, DiffPairs, Pins, Resource, Subsignal
from amaranth.vendor import XilinxPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
from amaranth_boards.resources import ButtonResources, LEDResources
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .devices import DEVICES

__all__ = ["ZCU102Platform", "U280Platform", "BOARDS", "board"]


class ZCU102Platform(XilinxPlatform):
    """Xilinx ZCU102 (xczu9eg-ffvb1156-2-e), programmable logic only.

    Pins follow the ZCU102 board XDC as reproduced in a GRLIB ZCU102 constraint
    file (LEDs, CPU_RESET, pushbuttons, the 300 MHz USER_SI570 clock and the PL
    USB-UART): GPIO_LED_0..7 AG14 AF13 AE13 AJ14 AJ15 AH13 AH14 AL12 (LVCMOS33),
    CPU_RESET AM13, GPIO_SW_W/N/C/E/S AG13 AE14 AG15 AE15 AF15. The UART direction
    (F13 FPGA->host, E13 host->FPGA) is not verified on hardware.
    """

    device = "xczu9eg"
    package = "ffvb1156"
    speed = "2-e"
    default_clk = "clk300"
    default_rst = "rst"
    resources = [
        Resource("clk300", 0, DiffPairs("AL8", "AL7", dir="i"), Clock(300e6),
                 Attrs(IOSTANDARD="DIFF_SSTL12")),
        Resource("rst", 0, Pins("AM13", dir="i"), Attrs(IOSTANDARD="LVCMOS33")),
        *LEDResources(pins="AG14 AF13 AE13 AJ14 AJ15 AH13 AH14 AL12",
                      attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *ButtonResources(pins="AG15 AE14 AG13 AE15 AF15", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        Resource("uart", 0, Subsignal("tx", Pins("F13", dir="o")), Subsignal("rx", Pins("E13", dir="i")),
                 Attrs(IOSTANDARD="LVCMOS33")),
    ]
    connectors = []


class U280Platform(XilinxPlatform):
    """Xilinx Alveo U280 (xcu280-fsvh2892-2L-e), programmable logic only.

    The card has no user LEDs or buttons: status goes out on the USB-UART. Pins
    from the U280 XDC as reproduced in alexforencich/verilog-ethernet
    (example/AU280): SYSCLK0 100 MHz BJ43/BJ44 (LVDS), the reset input L30, the
    UART A28 (FPGA->host) / B33, and HBM_CATTRIP D32, which a design must drive
    low or the card's controller powers it down.
    """

    device = "xcu280"
    package = "fsvh2892"
    speed = "2L-e"
    default_clk = "sysclk0"
    default_rst = "rst"
    resources = [
        Resource("sysclk0", 0, DiffPairs("BJ43", "BJ44", dir="i"), Clock(100e6),
                 Attrs(IOSTANDARD="LVDS")),
        Resource("rst", 0, Pins("L30", dir="i"), Attrs(IOSTANDARD="LVCMOS18")),
        Resource("uart", 0, Subsignal("tx", Pins("A28", dir="o")), Subsignal("rx", Pins("B33", dir="i")),
                 Attrs(IOSTANDARD="LVCMOS18")),
        Resource("hbm_cattrip", 0, Pins("D32", dir="o"), Attrs(IOSTANDARD="LVCMOS18")),
    ]
    connectors = []


#: board name -> (platform class, part key in devices.DEVICES, flow)
BOARDS = {
    "zcu102": (ZCU102Platform, "xczu9eg-ffvb1156-2-e", "vivado"),
    "u280": (U280Platform, "xcu280-fsvh2892-2L-e", "vivado"),
    "ulx3s": (ULX3S_85F_Platform, "LFE5U-85F", "trellis"),
    "orangecrab": (OrangeCrabR0_2_85FPlatform, "LFE5U-85F", "trellis"),
}


def board(name):
    """``(platform instance, Device, flow)`` of a board; ``ValueError`` lists the valid names."""
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; valid: {', '.join(BOARDS)}")
    cls, part, flow = BOARDS[name]
    return cls(), DEVICES[part], flow
