"""Board platforms: ZCU102 and Alveo U280 (Vivado), ULX3S 85F and OrangeCrab 85F (open ECP5 flow).

amaranth-boards has neither the ZCU102 nor the U280; the classes below subclass
Amaranth's ``XilinxPlatform`` with the clock, reset and user I/O of the boards'
constraint files. AMD's master XDC files are not in this repository; each pin
below was checked against the copies named in the class docstring, and the
pins those copies disagree on are marked. No pin has been tried on a board by
this project.
"""

from amaranth.build import Attrs, Clock, DiffPairs, Pins, PinsN, Resource, Subsignal
from amaranth.vendor import XilinxPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
from amaranth_boards.resources import ButtonResources, LEDResources
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .devices import DEVICES

__all__ = ["ZCU102Platform", "U280Platform", "OrangeCrab85FPlatform", "BOARDS", "board"]


class ZCU102Platform(XilinxPlatform):
    """AMD ZCU102 evaluation board (xczu9eg-ffvb1156-2-e), programmable logic only.

    Pins and I/O standards are those of the ZCU102 board XDC (net names in
    brackets), as reproduced with AMD's net names and bank comments in
    third-party constraint files and in alexforencich/verilog-ethernet
    ``example/ZCU102/fpga/fpga.xdc``:

    - ``clk125``: the fixed 125 MHz oscillator [CLK_125_P/N] G21/F21, LVDS_25 (bank 47);
    - ``rst``: the CPU RESET push button SW20 [CPU_RESET] AM13, active high;
    - ``led`` 0..7: [GPIO_LED_0..7] AG14 AF13 AE13 AJ14 AJ15 AH13 AH14 AL12;
    - ``button`` 0..4: [GPIO_SW_C, _N, _E, _S, _W] AG13 AG15 AE14 AE15 AF15.

    **Not verified:** the direction of the PL USB-UART (CP2108 channel 2). The
    XDC names the nets [UART2_TXD_O_FPGA_RXD] F13 and [UART2_RXD_I_FPGA_TXD] E13,
    and litex-boards uses E13 as the FPGA's transmitter, which is what ``uart``
    does here; verilog-ethernet's example uses F13 instead. The bank voltage
    (LVCMOS33 here, LVCMOS18 in litex-boards) is not confirmed either.
    """

    device = "xczu9eg"
    package = "ffvb1156"
    speed = "2-e"
    default_clk = "clk125"
    default_rst = "rst"
    resources = [
        Resource("clk125", 0, DiffPairs("G21", "F21", dir="i"), Clock(125e6),
                 Attrs(IOSTANDARD="LVDS_25")),
        Resource("rst", 0, Pins("AM13", dir="i"), Attrs(IOSTANDARD="LVCMOS33")),
        *LEDResources(pins="AG14 AF13 AE13 AJ14 AJ15 AH13 AH14 AL12",
                      attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *ButtonResources(pins="AG13 AG15 AE14 AE15 AF15", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        Resource("uart", 0, Subsignal("tx", Pins("E13", dir="o")),
                 Subsignal("rx", Pins("F13", dir="i")), Attrs(IOSTANDARD="LVCMOS33")),
    ]
    connectors = []


class U280Platform(XilinxPlatform):
    """AMD Alveo U280 card (xcu280-fsvh2892-2L-e), programmable logic only, loaded over JTAG.

    Pins from the U280 master XDC as posted by AMD on its forum (and matching
    alexforencich/verilog-ethernet ``example/AU280``):

    - ``sysclk0``: the 100 MHz [SYSCLK0_P/N] BJ43/BJ44, LVDS (bank 65);
    - ``rst``: [CPU_RESET_FPGA] L30, the SW1 push button and the satellite
      controller, active low;
    - ``hbm_cattrip``: [HBM_CATTRIP] D32. The card's satellite controller cuts
      power when this pin goes high (UG1314), so a design without HBM must drive
      it low; it also carries a pull-down.

    The card has no user LEDs, no user buttons and, in that XDC, no FPGA UART
    (verilog-ethernet lists a USB UART on A28/B33 but leaves it commented out,
    so it is not used here). A self-test on this card therefore reports only
    through its status registers, which carry ``MARK_DEBUG`` for Vivado's ILA.
    The configuration settings of the XDC (SPI x4 flash, 1.8 V) are added to the
    generated constraints.
    """

    device = "xcu280"
    package = "fsvh2892"
    speed = "2L-e"
    default_clk = "sysclk0"
    default_rst = "rst"
    resources = [
        Resource("sysclk0", 0, DiffPairs("BJ43", "BJ44", dir="i"), Clock(100e6),
                 Attrs(IOSTANDARD="LVDS")),
        Resource("rst", 0, PinsN("L30", dir="i"), Attrs(IOSTANDARD="LVCMOS18")),
        Resource("hbm_cattrip", 0, Pins("D32", dir="o"),
                 Attrs(IOSTANDARD="LVCMOS18", PULLTYPE="PULLDOWN")),
    ]
    connectors = []

    #: Bitstream settings from the U280 master XDC.
    CONFIG_CONSTRAINTS = "\n".join(
        f"set_property {name} {value} [current_design]" for name, value in (
            ("CONFIG_VOLTAGE", "1.8"),
            ("BITSTREAM.CONFIG.CONFIGFALLBACK", "Enable"),
            ("BITSTREAM.GENERAL.COMPRESS", "TRUE"),
            ("CONFIG_MODE", "SPIx4"),
            ("BITSTREAM.CONFIG.SPI_BUSWIDTH", "4"),
            ("BITSTREAM.CONFIG.CONFIGRATE", "85.0"),
            ("BITSTREAM.CONFIG.EXTMASTERCCLK_EN", "disable"),
            ("BITSTREAM.CONFIG.SPI_FALL_EDGE", "YES"),
            ("BITSTREAM.CONFIG.UNUSEDPIN", "Pullup"),
            ("BITSTREAM.CONFIG.SPI_32BIT_ADDR", "Yes"),
        ))

    def toolchain_prepare(self, fragment, name, **kwargs):
        overrides = {"add_constraints": self.CONFIG_CONSTRAINTS}
        return super().toolchain_prepare(fragment, name, **overrides, **kwargs)


class OrangeCrab85FPlatform(OrangeCrabR0_2_85FPlatform):
    """OrangeCrab r0.2 85F (amaranth-boards) without the ``dfu-suffix`` step of its build script.

    amaranth-boards appends the DFU suffix for the board's USB bootloader with
    dfu-util's ``dfu-suffix``, which is not on PyPI. This platform stops at the
    plain ``.bit`` (loadable over JTAG); ``platforms.flows.bitstream`` then
    writes the ``.dfu`` image for ``dfu-util -D`` with :mod:`platforms.dfu`.
    """

    #: USB vendor and product id of the DFU bootloader (the ids amaranth-boards gives dfu-suffix).
    DFU_IDS = (0x1209, 0x5AF0)

    @property
    def required_tools(self):
        return [tool for tool in super().required_tools if tool != "dfu-suffix"]

    @property
    def command_templates(self):
        return [command for command in super().command_templates if "dfu-suffix" not in command]


#: board name -> (platform class, part key in devices.DEVICES, flow)
BOARDS = {
    "zcu102": (ZCU102Platform, "xczu9eg-ffvb1156-2-e", "vivado"),
    "u280": (U280Platform, "xcu280-fsvh2892-2L-e", "vivado"),
    "ulx3s": (ULX3S_85F_Platform, "LFE5U-85F", "trellis"),
    "orangecrab": (OrangeCrab85FPlatform, "LFE5U-85F", "trellis"),
}


def board(name):
    """``(platform instance, Device, flow)`` of a board; ``ValueError`` lists the valid names."""
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; valid: {', '.join(BOARDS)}")
    cls, part, flow = BOARDS[name]
    return cls(), DEVICES[part], flow
