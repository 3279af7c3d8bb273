"""Quantization report: top-1 of the trained MoE-ViTs, float vs min/max vs dual-stage PTQ.

For each study model (``golden.datasets``: mnist5k, 1,500 test images, and digits,
597) and each bit width (W8A8, W6A6, W4A8, W8A6 by default) three quantizations of
:mod:`golden.ptq` calibrate on the calibration split (training images) and the
integer forward runs the held-out test split:

* ``minmax/log2``: naive per-tensor min/max, 4-bit log2 attention;
* ``dual_stage/log2``: CoQMoE / RepQ-ViT dual-stage PTQ, 4-bit log2 attention;
* ``dual_stage/sqrt2``: dual-stage with the reference's 4-bit log-sqrt2 attention
  (odd codes through a second accumulator);
* ``dual_stage/mant4``: dual-stage with the exponentials with a 4-bit mantissa
  (``golden.softmax.attention_pv_mant4``).

The attention kernel runs each form (``rtl.compute.attention.AttentionConfig.codes``). Then the
same three dual-stage forms (and min/max log2) on M3ViT-tiny with seeded weights
(``golden.weights.init_weights``, seed 0), calibrated on seeded images and compared with
the float backbone on held-out seeded images, both tasks: routing agreement per MoE
block. For every W8A8 row, the routing loss is split by
``golden.accuracy.routing_sources`` (upstream / gate input / gate path).

Printed and written to ``build/quant/<dataset>/``:

* ``report.json``: float top-1; per configuration and width top-1, the change against
  float in percentage points, agreement with the float predictions, the paired count
  against min/max (test images only this one gets right / only min/max gets right),
  pooled per-layer SQNR, expert-routing agreement per MoE block and its sources;
* ``m3vit_tiny/report.json``: the seeded M3ViT-tiny routing per configuration and task;
* ``report.png``: top-1 per width and configuration, and per-layer SQNR at W8A8;
* ``<dataset>_moevit_dual_stage_<codes>_w8a8.npz``: the exported integer parameter
  sets (:class:`golden.int_model.QuantParams`, dual-stage W8A8, one per attention form)
  that the hardware consumes.

Usage: ``python -m bench.quant_report [--dataset mnist5k] [--widths 8:8,6:6,4:8,8:6] [--test N]
[--m3vit-images N | --no-m3vit]``
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from golden.accuracy import SOURCES, evaluate, float_reference
from golden.config import m3vit_tiny
from golden.datasets import DATASETS, dataset
from golden.float_model import random_image
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.weights import init_weights
from moevit.report import fidelity
from sim.waves import BUILD_DIR

OUT_DIR = BUILD_DIR / "quant"
#: (method, attention codes) of the compared quantizations; the first is the baseline.
CONFIGS = (("minmax", "log2"), ("dual_stage", "log2"), ("dual_stage", "sqrt2"),
           ("dual_stage", "mant4"))
#: (method, width) whose parameter sets are saved, one per attention code.
EXPORTED = ("dual_stage", 8, 8)
DEFAULT_WIDTHS = "8:8,6:6,4:8,8:6"


def _widths(text):
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",")]
    except ValueError:
        pairs = [()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"--widths must look like 8:8,6:6 (W:A pairs), got {text!r}")
    return pairs


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    labels = list(dict.fromkeys(r["width"] for r in rows))
    names = list(dict.fromkeys(r["name"] for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    bar = 0.8 / len(names)
    for i, name in enumerate(names):
        acc = [next(r["accuracy"] for r in rows if r["width"] == w and r["name"] == name) * 100
               for w in labels]
        ax1.bar([x + (i - (len(names) - 1) / 2) * bar for x in range(len(labels))], acc, bar,
                label=name)
    ax1.axhline(report["float_accuracy"] * 100, color="k", ls="--", lw=1, label="float")
    ax1.set_xticks(range(len(labels)), labels)
    ax1.set_ylabel("top-1 on the test split (%)")
    ax1.set_ylim(max(0, min(r["accuracy"] for r in rows) * 100 - 5), 100)
    ax1.legend(loc="lower left")
    ax1.set_title(f"{report['model']}: {report['test_images']} test images")
    width = labels[0]
    for name in names:
        row = next(r for r in rows if r["width"] == width and r["name"] == name)
        layers = list(row["sqnr_db"])
        ax2.plot(range(len(layers)), [row["sqnr_db"][n] for n in layers], marker=".", label=name)
    ax2.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
    ax2.set_ylabel(f"SQNR vs float (dB), {width}")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_dataset(data, widths, out_dir, test_limit, console):
    """Calibrate, evaluate and write the report of one study model; returns the report dict."""
    def progress(iterable, description):
        return track(iterable, description=description, console=console, transient=True)

    cfg, weights = data.config(), data.load_weights()
    calib, _ = data.load_split("calibration")
    test_x, test_y = data.load_split("test")
    test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    ref = float_reference(cfg, weights, test_x, test_y, progress=progress)
    report = {"model": cfg.name, "dataset": data.name, "config": cfg.to_dict(),
              "test_images": len(test_y), "calibration_images": len(calib),
              "float_accuracy": ref.accuracy, "results": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    exported = []
    for w_bits, a_bits in widths:
        baseline = None
        for method, attention in CONFIGS:
            t0 = time.perf_counter()
            name, width = f"{method}/{attention}", f"W{w_bits}A{a_bits}"
            qp = calibrate(cfg, weights, calib, method, w_bits, a_bits, attention=attention,
                           progress=lambda it, d, label=f"{name} {width}": progress(it, f"{d} {label}"))
            res = evaluate(qp, test_x, ref, progress=progress)
            if (method, w_bits, a_bits) == EXPORTED:
                exported.append(out_dir / f"{cfg.name}_{method}_{attention}_w{w_bits}a{a_bits}.npz")
                qp.save(exported[-1])
            right = np.array(res["predictions"]) == test_y
            baseline = right if baseline is None else baseline
            report["results"].append({
                "name": name, "method": method, "attention": attention, "width": width,
                "weight_bits": w_bits, "act_bits": a_bits, **res,
                "delta_pp": (res["accuracy"] - ref.accuracy) * 100,
                "only_this_right": int((right & ~baseline).sum()),
                "only_minmax_right": int((baseline & ~right).sum()),
                "seconds": round(time.perf_counter() - t0, 1)})

    table = Table(title=f"{cfg.name}: top-1 on {len(test_y)} held-out images (float "
                        f"{ref.accuracy:.2%}); one image = {100 / len(test_y):.3f} pp")
    name_width = max(len("/".join(c)) for c in CONFIGS)
    for col in ("width", "quantization", "top-1", "vs float pp", "vs min/max +/-", "= float pred",
                "routing", "min SQNR dB", "logits SQNR dB"):
        table.add_column(col, justify="left" if col in ("width", "quantization") else "right",
                         no_wrap=True, min_width=name_width if col == "quantization" else len(col))
    for r in report["results"]:
        paired = "" if r["name"] == "/".join(CONFIGS[0]) else \
            f"+{r['only_this_right']}/-{r['only_minmax_right']}"
        table.add_row(r["width"], r["name"], f"{r['accuracy']:.2%}", f"{r['delta_pp']:+.2f}", paired,
                      f"{r['float_agreement']:.2%}", f"{min(r['routing'].values()):.3f}",
                      f"{min(r['sqnr_db'].values()):.1f}", f"{r['sqnr_db']['logits']:.1f}")
    console.print(table)
    console.print(_sources_table(f"{cfg.name}: routing agreement per MoE block at W8A8 and its "
                                 f"sources", [(r["name"], r) for r in report["results"]
                                              if r["width"] == "W8A8"]))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    _plot(report, out_dir / "report.png")
    console.print(f"wrote {out_dir / 'report.json'}, {out_dir / 'report.png'}",
                  *(f"and {path}" for path in exported))
    return report


def _sources_table(title, rows, worst_only=False):
    """One line per (label, MoE block), or per label its worst block: the routing
    agreement and its three sources (``golden.accuracy.SOURCES``)."""
    table = Table(title=title, caption="; ".join(f"{s}: {d}" for s, d in SOURCES.items()))
    for col in ("quantization", "MoE block", "routing", *SOURCES):
        table.add_column(col, justify="left" if col in ("quantization", "MoE block") else "right")
    for label, r in rows:
        blocks = [min(r["routing"], key=r["routing"].get)] if worst_only else r["routing"]
        for block in blocks:
            table.add_row(label, block + (" (worst)" if worst_only else ""),
                          f"{r['routing'][block]:.4f}",
                          *(f"{r['routing_sources'][block][s]:.4f}" for s in SOURCES))
    return table


def report_m3vit(out_dir, eval_images, console):
    """Routing of seeded M3ViT-tiny under each configuration, both tasks; returns the report."""
    cfg = m3vit_tiny()
    weights = init_weights(cfg, seed=0)
    calib = -(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens)
    images = [random_image(cfg, seed=1 + n) for n in range(calib + eval_images)]
    report = {"model": cfg.name, "weights_seed": 0, "calibration_images": calib,
              "eval_images": eval_images, "results": []}
    for method, attention in CONFIGS:
        with console.status(f"{cfg.name}: {method}/{attention}"):
            t0 = time.perf_counter()
            qp = calibrate(cfg, weights, images[:calib], method, attention=attention)
            calibration_s = round(time.perf_counter() - t0, 1)
            for task in range(cfg.num_tasks):
                t0 = time.perf_counter()
                res = fidelity(qp, weights, images[calib:], task)
                report["results"].append({"name": f"{method}/{attention}", "task": task, **res,
                                          "calibration_s": calibration_s,
                                          "seconds": round(time.perf_counter() - t0, 1)})
    console.print(_sources_table(
        f"{cfg.name} (seeded weights): routing per MoE block on {eval_images} held-out seeded "
        f"images of {cfg.num_tokens} tokens, and its sources",
        [(f"{r['name']} task {r['task']}", r) for r in report["results"]], worst_only=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    console.print(f"wrote {out_dir / 'report.json'}")
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), action="append",
                    help="study model(s) to report (default: all)")
    ap.add_argument("--widths", type=_widths, default=_widths(DEFAULT_WIDTHS),
                    help=f"comma-separated weight:activation bit widths (default {DEFAULT_WIDTHS})")
    ap.add_argument("--test", type=int, help="evaluate on the first N test images (default: all)")
    ap.add_argument("--m3vit-images", type=int, default=6,
                    help="held-out seeded images for the M3ViT-tiny routing (default 6)")
    ap.add_argument("--no-m3vit", action="store_true", help="skip the M3ViT-tiny routing")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 132)
    reports = [report_dataset(dataset(name), args.widths, args.out / name, args.test, console)
               for name in args.dataset or DATASETS]
    if not args.no_m3vit:
        reports.append(report_m3vit(args.out / "m3vit_tiny", args.m3vit_images, console))
    return reports


if __name__ == "__main__":
    main()
