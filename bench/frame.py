"""Frame-level cycle estimate for M3ViT-tiny from the units' cycle models.

Every unit's ``exp_cycles`` equals its RTL cycle count in the tests; this
composes them into one frame with the expert routing of the golden integer
model (seeded random weights, as ``bench.golden_frame``). Units run one after
the other (no overlap between the linear kernel, attention, LayerNorm, gating
and combine), except that the linear kernel loads the next matrix while it
computes the current one, as its model says. The result is an upper bound for a
design that chains these units; printed with frames per second at a clock and
compared with the anchors (Edge-MoE about 5.3 M cycles per frame for compute
alone, ``anchors.md`` section 4; CoQMoE about 155 frames per second).

Usage: ``python -m bench.frame [--linear 16x16x3] [--attention 16x16x3] [--mhz 300]``
Writes ``build/bench/frame.json``.
"""

import argparse
import json
import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from golden.config import m3vit_tiny
from golden.float_model import random_image
from golden.int_model import int_forward, pixels_from_image
from golden.ptq import calibrate_minmax
from golden.weights import init_weights
from rtl import combine, gating, layernorm
from rtl.attention import AttentionConfig
from rtl.attention import exp_cycles as attention_cycles
from rtl.linear import LinearConfig
from rtl.linear import exp_cycles as linear_cycles
from sim.waves import BUILD_DIR

EDGE_MOE_FRAME = 5_300_000


def routing(cfg, seed):
    """Per MoE block, the tokens each expert receives in one frame of the integer model."""
    weights = init_weights(cfg, seed=seed)
    images = [random_image(cfg, seed=seed + 1 + n) for n in range(3)]
    qp = calibrate_minmax(cfg, weights, images[:2])
    _, trace = int_forward(qp, pixels_from_image(cfg, images[2]), trace=True)
    return {b: np.bincount(trace[f"blocks.{b}.mlp.topk_idx"].ravel(), minlength=cfg.num_experts)
            for b in cfg.moe_blocks}


def frame_cycles(lin, att, ln_lanes, cfg, routes):
    """Cycles per unit kind for one frame."""
    n, d = cfg.num_tokens, cfg.embed_dim
    jobs = [(cfg.patch_dim, d, cfg.num_patches)]
    attention = norm = gate = comb = 0
    for b in range(cfg.depth):
        jobs += [(d, 3 * d, n), (d, d, n)]
        attention += attention_cycles(att, n, groups=cfg.num_heads // att.h)
        norm += 2 * layernorm.exp_cycles(d, ln_lanes, n)
        if cfg.is_moe(b):
            lengths = [int(x) for x in routes[b]]
            jobs.append((d, cfg.num_experts, n))
            gate += gating.exp_cycles(cfg.num_experts, cfg.top_k, lengths)
            for tokens in lengths:
                if tokens:
                    jobs += [(d, cfg.expert_hidden, tokens, True), (cfg.expert_hidden, d, tokens)]
            comb += combine.exp_cycles(sum(lengths) * -(-d // lin.po), n, -(-d // lin.po))
        else:
            jobs += [(d, cfg.mlp_hidden, n, True), (cfg.mlp_hidden, d, n)]
    macs = sum(j[0] * j[1] * j[2] for j in jobs)
    return {"linear": linear_cycles(lin, jobs), "attention": attention, "layernorm": norm,
            "gating": gate, "combine": comb}, macs


def main(argv=None):
    parser = argparse.ArgumentParser(description="M3ViT-tiny frame cycles from the unit models.")
    parser.add_argument("--linear", default="16x16x3", help="PIxPOxT of the linear kernel")
    parser.add_argument("--attention", default="16x16x3", help="RxDpxH of the attention kernel")
    parser.add_argument("--ln-lanes", type=int, default=4)
    parser.add_argument("--bus", type=int, default=256, help="weight bus width in bits")
    parser.add_argument("--mhz", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    cfg = m3vit_tiny()
    pi, po, t = (int(x) for x in args.linear.split("x"))
    r, dp, h = (int(x) for x in args.attention.split("x"))
    lin = LinearConfig(pi=pi, po=po, t=t, max_in=768, max_out=768, bus_width=args.bus)
    att = AttentionConfig(r=r, dp=dp, h=h, max_tokens=cfg.num_tokens)
    with console.status("routing one frame through the golden integer model"):
        routes = routing(cfg, args.seed)
    parts, macs = frame_cycles(lin, att, args.ln_lanes, cfg, routes)
    total = sum(parts.values())
    table = Table(title=f"M3ViT-tiny frame: linear {args.linear} ({pi * po * t} MACs), "
                        f"attention {args.attention} ({att.macs} MACs), {args.bus}-bit weight bus")
    table.add_column("unit")
    table.add_column("cycles", justify="right")
    table.add_column("share", justify="right")
    for name, cycles in parts.items():
        table.add_row(name, f"{cycles:,}", f"{100 * cycles / total:.1f} %")
    table.add_row("total", f"{total:,}", "")
    console.print(table)
    fps = args.mhz * 1e6 / total
    summary = {"linear": args.linear, "attention": args.attention, "bus": args.bus,
               "ln_lanes": args.ln_lanes, "mhz": args.mhz, "cycles": parts, "total": total,
               "linear_macs": macs, "linear_utilisation": round(macs / (pi * po * t) / parts["linear"], 3),
               "fps": round(fps, 1), "vs_edge_moe": round(EDGE_MOE_FRAME / total, 2),
               "expert_tokens": {b: v.tolist() for b, v in routes.items()}}
    console.print(f"{fps:,.0f} frames/s at {args.mhz:g} MHz; {EDGE_MOE_FRAME / total:.1f}x fewer "
                  f"cycles than Edge-MoE's ~5.3 M; linear kernel {summary['linear_utilisation']:.1%} busy")
    out = BUILD_DIR / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "frame.json").write_text(json.dumps(summary, indent=2))
    console.print(f"wrote {out / 'frame.json'}")


if __name__ == "__main__":
    main()
