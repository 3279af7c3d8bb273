"""Quantization report: top-1 of the trained digits MoE-ViT, float vs min/max vs dual-stage PTQ.

For each bit width (W8A8, W6A6, W4A8, W8A6 by default) both post-training
quantizers of :mod:`golden.ptq` calibrate on the calibration split (training
images) and the integer forward (4-bit log2 attention, the hardware's arithmetic)
runs the held-out test split. Printed and written to ``build/quant/``:

* ``report.json``: float top-1; per method and width top-1, the change against float
  in percentage points, agreement with the float predictions, pooled per-layer SQNR
  and expert-routing agreement per MoE block;
* ``report.png``: top-1 per width and method, and per-layer SQNR at W8A8;
* ``digits_moevit_dual_stage_w8a8.npz``: the exported integer parameter set
  (:class:`golden.int_model.QuantParams`) that the hardware consumes.

Usage: ``python -m bench.quant_report [--widths 8:8,6:6,4:8,8:6] [--test N]``
"""

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from golden import digits
from golden.accuracy import evaluate, float_reference
from golden.ptq import METHODS, calibrate
from sim.waves import BUILD_DIR

OUT_DIR = BUILD_DIR / "quant"
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
    labels = sorted({r["width"] for r in rows}, key=lambda w: [-int(v) for v in w[1:].split("A")])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, method in enumerate(METHODS):
        acc = [next(r["accuracy"] for r in rows if r["width"] == w and r["method"] == method) * 100
               for w in labels]
        ax1.bar([x + (i - 0.5) * 0.38 for x in range(len(labels))], acc, 0.38, label=method)
    ax1.axhline(report["float_accuracy"] * 100, color="k", ls="--", lw=1, label="float")
    ax1.set_xticks(range(len(labels)), labels)
    ax1.set_ylabel("top-1 on the test split (%)")
    ax1.set_ylim(max(0, min(r["accuracy"] for r in rows) * 100 - 5), 100)
    ax1.legend(loc="lower left")
    ax1.set_title(f"{report['model']}: {report['test_images']} test images")
    for method in METHODS:
        row = next((r for r in rows if r["width"] == "W8A8" and r["method"] == method), None)
        if row:
            names = list(row["sqnr_db"])
            ax2.plot(range(len(names)), [row["sqnr_db"][n] for n in names], marker=".", label=method)
    if any(r["width"] == "W8A8" for r in rows):
        ax2.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax2.set_ylabel("SQNR vs float (dB), W8A8")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=_widths, default=_widths(DEFAULT_WIDTHS),
                    help=f"comma-separated weight:activation bit widths (default {DEFAULT_WIDTHS})")
    ap.add_argument("--test", type=int, default=digits.TEST_SIZE,
                    help="evaluate on the first N test images (default: all)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)

    def progress(iterable, description):
        return track(iterable, description=description, console=console, transient=True)

    cfg, weights = digits.config(), digits.load_weights()
    calib, _ = digits.load_split("calibration")
    test_x, test_y = digits.load_split("test")
    test_x, test_y = test_x[:args.test], test_y[:args.test]
    ref = float_reference(cfg, weights, test_x, test_y, progress=progress)
    report = {"model": cfg.name, "config": cfg.to_dict(), "test_images": len(test_y),
              "calibration_images": len(calib), "float_accuracy": ref.accuracy, "results": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for w_bits, a_bits in args.widths:
        for method in METHODS:
            t0 = time.perf_counter()
            label = f"{method} W{w_bits}A{a_bits}"
            qp = calibrate(cfg, weights, calib, method, w_bits, a_bits,
                           progress=lambda it, d, label=label: progress(it, f"{d} {label}"))
            res = evaluate(qp, test_x, ref, progress=progress)
            if (method, w_bits, a_bits) == ("dual_stage", 8, 8):
                qp.save(args.out / "digits_moevit_dual_stage_w8a8.npz")
            report["results"].append({
                "method": method, "width": f"W{w_bits}A{a_bits}", "weight_bits": w_bits,
                "act_bits": a_bits, **res, "delta_pp": (res["accuracy"] - ref.accuracy) * 100,
                "seconds": round(time.perf_counter() - t0, 1)})

    table = Table(title=f"{cfg.name}: top-1 on {len(test_y)} held-out images "
                        f"(float {ref.accuracy:.2%}), 4-bit log2 attention")
    for col in ("width", "method", "top-1", "vs float pp", "= float pred", "routing", "min SQNR dB",
                "logits SQNR dB"):
        table.add_column(col, justify="left" if col in ("width", "method") else "right")
    for r in report["results"]:
        table.add_row(r["width"], r["method"], f"{r['accuracy']:.2%}", f"{r['delta_pp']:+.2f}",
                      f"{r['float_agreement']:.2%}",
                      f"{min(r['routing'].values()):.3f}",
                      f"{min(r['sqnr_db'].values()):.1f}", f"{r['sqnr_db']['logits']:.1f}")
    console.print(table)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    _plot(report, args.out / "report.png")
    console.print(f"wrote {args.out / 'report.json'}, {args.out / 'report.png'} and "
                  f"{args.out / 'digits_moevit_dual_stage_w8a8.npz'}")
    return report


if __name__ == "__main__":
    main()
