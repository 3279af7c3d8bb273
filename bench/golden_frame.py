"""Golden-model benchmark: wall time of one frame (float and integer) and the integer model's fidelity.

Builds the model with seeded random weights (``golden.weights.init_weights``),
quantizes it by plain min/max PTQ on a few calibration images, runs a held-out
image through the float and the integer forward, and reports per-layer SQNR,
cosine similarity and expert-routing agreement (integer vs float). Prints a
table and writes ``build/bench/golden_frame.json``.

Usage: ``python -m bench.golden_frame [--config m3vit_tiny] [--calib 4] [--seed 0]``
"""

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from golden.config import PRESETS, preset
from golden.float_model import forward, random_image
from golden.int_model import int_forward, pixels_from_image
from golden.ptq import calibrate_minmax
from golden.metrics import compare_traces, cosine_similarity, sqnr_db
from golden.weights import init_weights
from sim.waves import BUILD_DIR


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description="Golden float / integer frame benchmark.")
    parser.add_argument("--config", default="m3vit_tiny", choices=sorted(PRESETS))
    parser.add_argument("--calib", type=int, default=4, help="calibration images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    cfg = preset(args.config)
    weights = init_weights(cfg, seed=args.seed)
    images = [random_image(cfg, seed=args.seed + 1 + n) for n in range(args.calib + 1)]

    with console.status("calibrating (min/max PTQ)"):
        qp, calib_s = _timed(calibrate_minmax, cfg, weights, images[:-1])
    (ref, ref_trace), float_s = _timed(forward, cfg, weights, images[-1], trace=True)
    pixels = pixels_from_image(cfg, images[-1])
    (out, trace), int_s = _timed(int_forward, qp, pixels, trace=True)
    real = out * qp.scalar("residual.scale")
    rows = compare_traces(ref_trace, trace.dequantized())

    table = Table(title=f"{cfg.name}: integer vs float, per traced tensor")
    for column in ("tensor", "SQNR dB", "cosine", "routing"):
        table.add_column(column, justify="left" if column == "tensor" else "right")
    for row in rows:
        if row["name"].endswith(("norm1", "attn.out", "x_attn", "norm2", ".out", "gate_logits",
                                 "topk_idx")) or row["name"] == "embed":
            table.add_row(row["name"],
                          f"{row['sqnr_db']:.1f}" if row.get("sqnr_db") is not None else "",
                          f"{row['cosine']:.4f}" if row.get("cosine") is not None else "",
                          f"{row['routing_agreement']:.3f}" if row.get("routing_agreement") is not None else "")
    console.print(table)
    routing = [r["routing_agreement"] for r in rows if r.get("routing_agreement") is not None]
    summary = {
        "config": cfg.name, "seed": args.seed, "calibration_images": args.calib,
        "float_frame_s": round(float_s, 3), "int_frame_s": round(int_s, 3),
        "calibration_s": round(calib_s, 3),
        "output_sqnr_db": round(sqnr_db(ref, real), 2),
        "output_cosine": round(cosine_similarity(ref, real), 5),
        "routing_agreement_mean": round(sum(routing) / len(routing), 4) if routing else None,
        "routing_agreement_min": round(min(routing), 4) if routing else None,
        "layers": rows,
    }
    for key in ("float_frame_s", "int_frame_s", "calibration_s", "output_sqnr_db",
                "output_cosine", "routing_agreement_mean", "routing_agreement_min"):
        console.print(f"{key:24s} {summary[key]}")
    out_dir = BUILD_DIR / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "golden_frame.json").write_text(json.dumps(summary, indent=2, default=float))
    console.print(f"wrote {out_dir / 'golden_frame.json'}")


if __name__ == "__main__":
    main()
