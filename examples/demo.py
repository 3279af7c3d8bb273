"""``make demo``: the first attention half of an M3ViT-tiny block on the accelerator's RTL.

1. The golden integer model (``golden.int_model``, seeded random weights, min/max
   PTQ) runs one 3x128x256 frame and keeps every intermediate tensor.
2. Block 0's qkv projection (129 tokens, 192 -> 576, per-channel requantization to
   int8) runs on the linear kernel's Verilog (PI x PO x T MAC array, 256-bit
   weight bus) under cocotb + Verilator.
3. The RTL's q, k, v go through the attention kernel's Verilog (3 heads x 64,
   4-bit log2-code probabilities, or log-sqrt2 with ``--codes sqrt2``; shift-and-add P.V).
Both outputs are compared bit for bit with the golden model's trace, and the
cycles with the units' cycle models. Writes ``build/demo/report.json``.
"""

import argparse
import json
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from golden.config import m3vit_tiny
from golden.float_model import random_image
from golden.int_model import int_forward, pixels_from_image
from golden.ptq import calibrate_minmax
from golden.softmax import ATTENTION_CODES
from golden.weights import init_weights
from rtl.attention import AttentionConfig, AttentionKernel
from rtl.linear import LinearConfig, LinearKernel
from sim.runner import run_cocotb
from sim.waves import BUILD_DIR


def _heads(cfg, x):
    return x.reshape(x.shape[0], cfg.num_heads, cfg.head_dim).transpose(1, 0, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--linear", default="16x16x3", help="PIxPOxT of the linear kernel")
    parser.add_argument("--attention", default="8x16x3", help="RxDpxH of the attention kernel")
    parser.add_argument("--codes", choices=ATTENTION_CODES, default="log2",
                        help="attention probability codes (golden.softmax.ATTENTION_CODES)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    console = Console()
    out_dir = BUILD_DIR / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = m3vit_tiny()
    start = time.monotonic()

    with console.status("golden integer model: calibrating and running one frame"):
        weights = init_weights(cfg, seed=args.seed)
        images = [random_image(cfg, seed=args.seed + 1 + n) for n in range(3)]
        qp = calibrate_minmax(cfg, weights, images[:2], attention=args.codes)
        _, trace = int_forward(qp, pixels_from_image(cfg, images[2]), trace=True)

    # -- qkv projection on the linear kernel ----------------------------------------------
    pi, po, t = (int(v) for v in args.linear.split("x"))
    lin = dict(pi=pi, po=po, t=t, max_in=cfg.embed_dim, max_out=3 * cfg.embed_dim, bus_width=256)
    job = out_dir / "qkv_job.npz"
    p = "blocks.0.attn.qkv."
    np.savez(job, x=trace["blocks.0.norm1"], weight=qp[p + "weight"], bias=qp[p + "bias"],
             mult=qp[p + "mult"], shift=qp[p + "shift"], zero_point=0, bits=8)
    console.print(f"[bold]qkv projection[/] on the linear kernel {args.linear} "
                  f"({pi * po * t} MACs): 129 x 192 -> 576, requantized to int8")
    with console.status("elaborating, compiling with Verilator (first run takes a few minutes), "
                        "simulating"):
        run_cocotb("linear", lin, LinearKernel(LinearConfig(**lin)), "sim.tb_linear",
                   testcase="job_from_file",
                   env={"TB_JOB": str(job), "TB_OUT": str(out_dir / "qkv_out.npz"),
                        "TB_REPORT": str(out_dir / "qkv_report.json")})
    qkv = np.load(out_dir / "qkv_out.npz")["y"]
    d = cfg.embed_dim
    q, k, v = (_heads(cfg, qkv[:, i * d:(i + 1) * d]) for i in range(3))
    qkv_exact = all(np.array_equal(a, trace[f"blocks.0.attn.{n}"]) for a, n in zip((q, k, v), "qkv"))

    # -- attention on the attention kernel ---------------------------------------------------
    r, dp, h = (int(x) for x in args.attention.split("x"))
    att = dict(r=r, dp=dp, h=h, head_dim=cfg.head_dim, max_tokens=cfg.num_tokens, codes=args.codes)
    data = out_dir / "attention_in.npz"
    np.savez(data, q=q, k=k, v=v, mult=qp.scalar("blocks.0.attn.scores.mult"),
             shift=qp.scalar("blocks.0.attn.scores.shift"))
    console.print(f"[bold]attention[/] on the attention kernel {args.attention} "
                  f"({r * dp * h} MACs for QK^T, {args.codes} codes, shift-and-add P.V): "
                  "3 heads x 129 x 64")
    with console.status("compiling and simulating the attention kernel"):
        run_cocotb("attention", att, AttentionKernel(AttentionConfig(**att)), "sim.tb_attention",
                   env={"TB_DATA": str(data), "TB_HEADS": str(cfg.num_heads),
                        "TB_TOKENS": str(cfg.num_tokens), "TB_GAPS": "0",
                        "TB_OUT": str(out_dir / "attention_out.npz"),
                        "TB_REPORT": str(out_dir / "attention_report.json")})
    out = np.load(out_dir / "attention_out.npz")["out"]
    att_exact = np.array_equal(out.transpose(1, 0, 2).reshape(cfg.num_tokens, d),
                               trace["blocks.0.attn.out"])

    rows = []
    for name, report, macs, lanes, exact in (
            ("qkv projection", "qkv_report.json", cfg.num_tokens * d * 3 * d, pi * po * t, qkv_exact),
            # The MAC array does QK^T; P.V runs on separate shift-add lanes.
            ("attention (QK^T on MACs, softmax, P.V by shifts)", "attention_report.json",
             cfg.num_heads * cfg.num_tokens ** 2 * cfg.head_dim, r * dp * h, att_exact)):
        rep = json.loads((out_dir / report).read_text())
        rows.append({"stage": name, "macs": macs, "lanes": lanes, "exact": bool(exact), **rep})
    table = Table(title="M3ViT-tiny block 0, attention half, in RTL simulation")
    for col in ("stage", "MACs", "RTL cycles", "model", "MACs/cycle", "bit-exact vs golden"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in rows:
        table.add_row(row["stage"], f"{row['macs']:,}", f"{row['cycles']:,}", f"{row['model']:,}",
                      f"{row['macs'] / row['cycles']:.0f} of {row['lanes']}",
                      "yes" if row["exact"] else "[red]NO")
    console.print(table)
    console.print(f"wall time {time.monotonic() - start:.0f} s; Verilog and builds in "
                  f"{BUILD_DIR / 'sim'}; report {out_dir / 'report.json'}")
    (out_dir / "report.json").write_text(json.dumps(rows, indent=2))
    if not all(row["exact"] and row["cycles"] == row["model"] for row in rows):
        raise SystemExit("RTL differs from the golden model or the cycle model")


if __name__ == "__main__":
    main()
