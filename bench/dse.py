"""``make dse BOARD=zcu102|u280|ulx3s``: the two-stage design-space search for a board.

M3ViT-tiny with seeded weights and dual-stage W8A8 (the model of ``make program``);
cycles from the schedule model (equal to the RTL), resources from
:mod:`platforms.resources` (DSP and block RAM counted, LUT and FF not modelled). With
``--exhaustive`` the stage-1 fields are also searched completely (stage-2 fields at the
heuristic's values) to state how far the heuristic is from the optimum.

Writes ``build/dse/<board>.json`` and ``build/dse/<board>.png`` (cycles vs DSPs,
coloured by block RAM). Frame rates assume a 300 MHz clock.

Usage: ``python -m bench.dse --board zcu102 [--seed 0] [--exhaustive]``
"""

import argparse
import dataclasses
import json
import sys

from rich.console import Console
from rich.table import Table

from bench.program import quantized_model
from moevit.dse import BOARD_MEMORY, Space, exhaustive, plot, report, search
from sim.waves import BUILD_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description="Design-space search for a board.")
    parser.add_argument("--board", required=True, choices=sorted(BOARD_MEMORY))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exhaustive", action="store_true",
                        help="also search the stage-1 space completely (slow)")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    out_dir = BUILD_DIR / "dse"
    out_dir.mkdir(parents=True, exist_ok=True)
    with console.status("M3ViT-tiny: seeded weights, dual-stage PTQ"):
        qp, pixels = quantized_model(args.seed)
    with console.status(f"{args.board}: two-stage search") as status:
        result = search(args.board, qp, pixels, seed=args.seed,
                        progress=lambda text: status.update(f"{args.board}: {text}"))
    full = None
    if args.exhaustive:
        g = result["best"].genes
        space = dataclasses.replace(Space(), norm_lanes=(g["norm_lanes"],),
                                    bank_words=(g["bank_words"],),
                                    burst_beats=(g["burst_beats"],),
                                    outstanding=(g["outstanding"],))
        with console.status(f"{args.board}: exhaustive stage 1"):
            full = exhaustive(args.board, qp, pixels, space)
    if not result["best"].ok:
        console.print(f"no evaluated config fits {args.board}: {result['best'].reason}")
        raise SystemExit(2)
    data = report(result, args.board, full)
    path = out_dir / f"{args.board}.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out_dir / f"{args.board}.config.json").write_text(
        json.dumps(data["config"], indent=1, sort_keys=True) + "\n")
    png = plot(result, args.board, out_dir / f"{args.board}.png")
    table = Table(title=f"design-space search, M3ViT-tiny on {args.board} "
                        f"({data['evaluated']} configs in {data['search_s']} s)")
    for col in ("", "PI=PO=dp", "t", "r", "norm lanes", "bank words", "burst", "outstanding",
                "cycles", "DSP", "BRAM"):
        table.add_column(col, justify="right")
    best = result["best"]
    for name, cand in (("stage 1", result["stage1"]), ("chosen", best)) + \
            ((("exhaustive", full["best"]),) if full else ()):
        g = cand.genes
        table.add_row(name, str(g["p"]), str(g["t"]), str(g["r"]), str(g["norm_lanes"]),
                      str(g["bank_words"]), str(g["burst_beats"]), str(g["outstanding"]),
                      f"{cand.cycles:,}", f"{cand.resources['dsp']:,}",
                      f"{cand.resources['bram']:,}")
    console.print(table)
    if full:
        console.print(f"exhaustive stage 1: {full['evaluated']} configs, the heuristic is "
                      f"{data['exhaustive']['gap']:+.2%} from its optimum")
    console.print(f"{data['predicted_fps_at_300mhz']:,} frames/s at an assumed 300 MHz; wrote "
                  f"{path} and {png}")


if __name__ == "__main__":
    main()
