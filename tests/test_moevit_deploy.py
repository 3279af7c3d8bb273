"""Deployment trees: complete, well formed, and the register offsets of kernel.xml are the RTL's."""

import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from amaranth.sim import Simulator

from moevit.deploy import BOARDS, CORE, KERNEL, deploy, pointer_ports
from rtl.config import preset
from rtl.control.registers import ARGUMENTS, ControlRegisters
from sim.axi_lite import lite_write

#: The smallest preset: the trees do not depend on the kernel sizes, the elaboration does.
CONFIG = preset("ecp5_85f")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    return {board: (root / board, deploy(board, CONFIG, root / board)) for board in BOARDS}


def test_every_listed_file_exists_and_every_referenced_file_is_listed(trees):
    for board, (tree, files) in trees.items():
        written = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}
        assert written == set(files), board
        for name in files:
            text = (tree / name).read_text()
            for ref in re.findall(r"\brtl/[\w.]+\.v\b", text):
                assert (tree / ref).is_file(), (board, name, ref)
            for ref in re.findall(r"\$root/(kernel\.xml|link\.cfg|package_xo\.tcl)", text):
                assert (tree / ref).is_file(), (board, name, ref)
        readme = (tree / "README.md").read_text()
        assert "No bitstream was built here" in readme


def test_kernel_xml_offsets_and_ports_are_the_rtl_register_map(trees):
    tree, _ = trees["u280"]
    kernel = ET.parse(tree / "kernel.xml").getroot().find("kernel")
    assert kernel.get("name") == KERNEL and kernel.get("hwControlProtocol") == "ap_ctrl_hs"
    args = {a.get("name"): a for a in kernel.find("args")}
    assert list(args) == list(ARGUMENTS)
    where = pointer_ports(CONFIG)
    wrapper = (tree / "rtl" / f"{KERNEL}.v").read_text()
    for name, (offset, bits) in ARGUMENTS.items():
        a = args[name]
        assert int(a.get("offset"), 16) == offset
        assert int(a.get("size"), 16) * 8 >= bits
        port = a.get("port")
        assert port == (f"m_axi_gmem{where[name]}" if name in where else "s_axi_control")
        assert re.search(rf"\b{port}_\w+", wrapper), port
    masters = [p for p in kernel.find("ports") if p.get("mode") == "master"]
    assert [int(p.get("dataWidth")) for p in masters] == [CONFIG.axi.data_bits] * CONFIG.axi.ports


def test_arguments_written_at_the_kernel_xml_offsets_reach_the_core(trees):
    """What XRT does with kernel.xml, against the RTL register file."""
    tree, _ = trees["u280"]
    args = {a.get("name"): int(a.get("offset"), 16)
            for a in ET.parse(tree / "kernel.xml").getroot().iter("arg")}
    values = {"program": 0x1_2345_6780, "model": 0x40, "input": 0x8_0000_0000, "output": 0x1000,
              "task": 3, "frames": 7}
    dut = ControlRegisters()
    got = {}

    async def bench(ctx):
        for name, value in values.items():
            for word in range(-(-ARGUMENTS[name][1] // 32)):
                await lite_write(ctx, dut.s_axi, args[name] + 4 * word,
                                 (value >> (32 * word)) & 0xFFFF_FFFF)
        got.update({name: ctx.get(getattr(dut.arguments, name)) for name in values})

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == values


def test_the_kernel_wrapper_elaborates_in_verilator(trees):
    from sim.runner import _setup_verilator
    _setup_verilator()
    tree, _ = trees["zcu102"]
    out = subprocess.run(["verilator", "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                          "--top-module", KERNEL, f"rtl/{KERNEL}.v", f"rtl/{CORE}.v"],
                         cwd=tree, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


def test_zcu102_block_design_connects_every_master_and_the_interrupt(trees):
    tree, _ = trees["zcu102"]
    tcl = (tree / "build.tcl").read_text()
    for p in range(CONFIG.axi.ports):
        assert f"Master {{/{KERNEL}_0/m_axi_gmem{p}}} Slave {{/zynq_ps/S_AXI_HP{p}_FPD}}" in tcl
        assert f"CONFIG.PSU__SAXIGP{2 + p}__DATA_WIDTH {{{CONFIG.axi.data_bits}}}" in tcl
    assert f"[get_bd_pins {KERNEL}_0/interrupt] [get_bd_pins zynq_ps/pl_ps_irq0]" in tcl
    assert "M_AXI_HPM0_FPD" in tcl and "-part xczu9eg-ffvb1156-2-e" in tcl


def test_u280_link_maps_every_master_to_hbm(trees):
    tree, _ = trees["u280"]
    cfg = (tree / "link.cfg").read_text()
    for p in range(CONFIG.axi.ports):
        assert f"sp={KERNEL}_1.m_axi_gmem{p}:HBM[0:3]" in cfg
    assert "freqHz=300000000" in cfg


def test_the_wrapper_connects_every_core_port_once(trees):
    tree, _ = trees["u280"]
    core = (tree / "rtl" / f"{CORE}.v").read_text()
    header = re.search(rf"^module {CORE}\((.*?)\);", core, re.M | re.S).group(1)
    core_ports = {p.strip() for p in header.split(",")}
    connected = re.findall(r"^\s+\.(\w+)\(", (tree / "rtl" / f"{KERNEL}.v").read_text(), re.M)
    assert sorted(connected) == sorted(core_ports)


@pytest.mark.parametrize("board, config, message", [
    ("zcu102", "u280", "axi.data_bits = 256, the zcu102's memory ports take at most 128"),
    ("vcu118", "zcu102", "board must be one of zcu102, u280, got 'vcu118'"),
])
def test_bad_requests_name_the_problem(tmp_path, board, config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        deploy(board, preset(config), tmp_path)
