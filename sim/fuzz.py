"""``make fuzz``: random vectors through the stream units, against the golden model.

Each :class:`Campaign` draws vectors for one unit (a LayerNorm token batch, a softmax
row, a gating frame, a GEMM, a reciprocal operand), edge values first in every batch
(-128 / 127 operands, int16 extremes, all-equal rows, ties, one expert taking every
token, experts left empty), and runs them in batches through the unit in the Amaranth
simulator with random input gaps and output backpressure (a fresh flow probability per
batch), checked bit for bit by the same ``sim.*_images`` checkers the unit tests use.

Every batch is reproducible from ``(seed, batch)`` alone. A failing batch is shrunk by
bisection to a minimal failing list of vectors, saved as
``build/fuzz/<unit>-seed<S>-batch<B>.json`` and rerun with ``--replay FILE``. The run
writes ``build/fuzz/summary.json``: ``{unit: {"vectors": N, "mismatches": M, ...}}``.

Usage: ``python -m sim.fuzz [--vectors N] [--seed S] [--only UNIT ...] [--replay FILE]``.
"""

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from golden.gemm import int8_matmul
from golden.softmax import normalized_reciprocal
from moevit.packing import unpack
from rtl.gating import Gating
from rtl.layernorm import LayerNormUnit
from rtl.recip import ISqrt, Reciprocal, recip_layout
from rtl.softmax import SoftmaxUnit
from rtl.systolic import SystolicArray

from .gemm_tiles import gemm_result, gemm_words
from .nonlinear_images import (check_gating, check_layernorm, check_softmax, gating_streams,
                               layernorm_batch, layernorm_streams, softmax_words)
from .pysim_stream import run_streams

__all__ = ["Campaign", "CAMPAIGNS", "draw_batch", "run_batch", "shrink", "fuzz", "replay"]


@dataclasses.dataclass(frozen=True)
class Campaign:
    """One unit's fuzzing: ``draw(rng, n, edges)`` -> ``n`` items (``edges``: begin with
    the edge cases), ``run(items, i_flow, o_flow, seed)`` raises ``AssertionError`` on a
    mismatch, ``size(item)`` counts the vectors an item holds (a LayerNorm batch holds
    tokens, a gating frame tokens; a softmax row, a GEMM or an operand is one)."""
    name: str
    draw: object
    run: object
    size: object = lambda item: 1
    batch: int = 200


# --- LayerNorm: batches of tokens with their parameters ---------------------------------

_LN = {"d": 8, "lanes": 2}


def _layernorm_draw(rng, n, edges):
    batches, tokens = [], 0
    while tokens < n:
        count = 3 if edges and not batches else int(rng.integers(1, 4))
        batches.append(layernorm_batch(rng, count, _LN["d"], extremes=edges and not batches))
        tokens += count
    return batches


def _layernorm_run(batches, i_flow, o_flow, seed):
    p, i, count = layernorm_streams(batches, _LN["d"], _LN["lanes"])
    res = run_streams(LayerNormUnit(_LN["d"], _LN["lanes"]), {"p": p, "i": i}, {"o": count},
                      name="fuzz_layernorm", i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_layernorm(res["o"][0], batches, _LN["d"], _LN["lanes"])


# --- softmax: rows of 1..16 scores --------------------------------------------------------

_SM = {"row_max": 16, "lanes": 2}


def _softmax_draw(rng, n, edges):
    rows = []
    if edges:
        rows += [np.full(16, 77), np.full(5, -32768), np.full(3, 32767),
                 np.array([32767, -32768] * 4), np.array([0]), np.array([-32768]),
                 np.arange(16) * 4096 - 32768]
    while len(rows) < n:
        length = int(rng.integers(1, _SM["row_max"] + 1))
        spread = int(rng.choice([4, 600, 8000, 32768]))
        rows.append(np.clip(rng.integers(-spread, spread, length), -32768, 32767))
    return rows[:n]


def _softmax(mode):
    def run(rows, i_flow, o_flow, seed):
        words = softmax_words(rows, _SM["lanes"])
        res = run_streams(SoftmaxUnit(_SM["row_max"], _SM["lanes"], mode), {"i": words},
                          {"o": len(words)}, name=f"fuzz_softmax_{mode}", i_flow=i_flow,
                          o_flow=o_flow, seed=seed)
        check_softmax(res["o"][0], rows, _SM["lanes"], mode)
    return run


# --- gating: frames of tokens x experts logits --------------------------------------------

_GATE = {"experts": 4, "k": 2, "max_tokens": 6}


def _gating_draw(rng, n, edges):
    e, tokens = _GATE["experts"], _GATE["max_tokens"]
    frames = []
    if edges:
        one = np.zeros((tokens, e), int)
        one[:, 2] = 500                                    # every token to expert 2 first
        empty = np.tile([300, 200, -300, -300], (tokens, 1))   # experts 2 and 3 stay empty
        frames += [one, empty, np.zeros((tokens, e), int),      # all equal: the tie rule
                   np.full((1, e), -32768), np.full((2, e), 32767)]
    while len(frames) < n:
        frames.append(rng.integers(int(rng.choice([-3, -300, -32768])),
                                   int(rng.choice([3, 300, 32767])),
                                   (int(rng.integers(1, tokens + 1)), e)))
    return frames[:n]


def _gating_run(frames, i_flow, o_flow, seed):
    words, expected = gating_streams(frames, _GATE["k"])
    res = run_streams(Gating(**_GATE), {"i": words}, {"o": len(expected)}, name="fuzz_gating",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_gating(res["o"][0], expected, _GATE["experts"])


# --- the systolic array: small GEMMs ------------------------------------------------------

_SYS = {"rows": 2, "cols": 2}


def _gemm_draw(rng, n, edges):
    gemms = []
    if edges:
        for x, y in ((-128, -128), (-128, 127), (127, 127), (0, -128)):
            gemms.append((np.full((3, 5), x), np.full((5, 3), y)))
    while len(gemms) < n:
        m, k, c = (int(v) for v in rng.integers(1, [5, 7, 5]))
        gemms.append((rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, c))))
    return gemms[:n]


def _gemm_run(gemms, i_flow, o_flow, seed):
    r, c = _SYS["rows"], _SYS["cols"]
    parts = [gemm_words(a, b, r, c) for a, b in gemms]
    words = [w for part, _ in parts for w in part]
    res = run_streams(SystolicArray(r, c), {"i": words}, {"o": sum(n for _, n in parts)},
                      name="fuzz_systolic", i_flow=i_flow, o_flow=o_flow, seed=seed)
    out, pos = res["o"][0], 0
    for n, ((a, b), (_, count)) in enumerate(zip(gemms, parts)):
        got = gemm_result(out[pos:pos + count], a.shape[0], b.shape[1], r, c)
        if not np.array_equal(got, int8_matmul(a, b)):
            raise AssertionError(f"systolic gemm {n} ({a.shape} @ {b.shape}) differs from golden")
        pos += count


# --- reciprocal and square root: operands -------------------------------------------------

def _operands(width, lo):
    def draw(rng, n, edges):
        top = 1 << width
        values = ([lo, lo + 1, 2, 3, top - 1, top >> 1, (top >> 1) - 1, (top >> 1) + 1]
                  if edges else [])
        values += rng.integers(lo, top, max(0, n - len(values)), dtype=np.uint64).tolist()
        return [int(v) for v in values[:n]]
    return draw


def _recip_run(dens, i_flow, o_flow, seed):
    res = run_streams(Reciprocal(12), {"i": dens}, {"o": len(dens)}, name="fuzz_recip",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    rec, k = normalized_reciprocal(np.array(dens, dtype=np.int64))
    for n, (word, r, b) in enumerate(zip(res["o"][0], rec.tolist(), k.tolist())):
        got = unpack(recip_layout(12), word)
        if (got["rec"], got["k"]) != (r, b):
            raise AssertionError(f"reciprocal of {dens[n]}: got {got}, expected {(r, b)}")


def _isqrt_run(values, i_flow, o_flow, seed):
    res = run_streams(ISqrt(16), {"i": values}, {"o": len(values)}, name="fuzz_isqrt",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    for v, got in zip(values, res["o"][0]):
        if got != math.isqrt(v):
            raise AssertionError(f"isqrt({v}): got {got}, expected {math.isqrt(v)}")


CAMPAIGNS = {c.name: c for c in [
    Campaign("layernorm", _layernorm_draw, _layernorm_run, size=lambda b: len(b["x"]),
             batch=100),
    Campaign("softmax_codes", _softmax_draw, _softmax("codes")),
    Campaign("softmax_probs", _softmax_draw, _softmax("probs")),
    Campaign("gating", _gating_draw, _gating_run, size=len, batch=50),
    Campaign("systolic", _gemm_draw, _gemm_run, batch=60),
    Campaign("recip", _operands(12, 1), _recip_run, batch=500),
    Campaign("isqrt", _operands(16, 0), _isqrt_run, batch=500),
]}


# --- running, shrinking, replaying --------------------------------------------------------

def draw_batch(campaign, seed, batch):
    """The vectors and flows of batch ``batch`` of a campaign with ``seed`` (reproducible
    from these two numbers alone)."""
    rng = np.random.default_rng([seed, sorted(CAMPAIGNS).index(campaign.name), batch])
    i_flow, o_flow = (float(v) for v in rng.choice([0.3, 0.6, 0.9, 1.0], 2))
    return campaign.draw(rng, campaign.batch, batch % 4 == 0), i_flow, o_flow


def run_batch(campaign, vectors, i_flow, o_flow, seed):
    """``None`` if the unit matches golden on ``vectors``, else the mismatch message."""
    try:
        campaign.run(vectors, i_flow, o_flow, seed)
    except AssertionError as exc:
        return str(exc) or "mismatch"
    return None


def shrink(campaign, vectors, i_flow, o_flow, seed):
    """Indices of a minimal failing sub-list of ``vectors``: bisection first (a half that
    fails alone replaces the list), then each remaining vector is dropped if the rest
    still fails (a timing bug may need the vectors before it: those stay)."""
    def fails(indices):
        return run_batch(campaign, [vectors[i] for i in indices], i_flow, o_flow, seed)

    indices = list(range(len(vectors)))
    while len(indices) > 1:
        half = len(indices) // 2
        for part in (indices[:half], indices[half:]):
            if fails(part):
                indices = part
                break
        else:
            break
    for i in reversed(list(indices)):
        if len(indices) > 1 and fails([j for j in indices if j != i]):
            indices = [j for j in indices if j != i]
    return indices


def fuzz(campaign, vectors, seed, out=None):
    """Run ``vectors`` (at least) through one campaign; return its summary entry. A failing
    batch is shrunk and saved under ``out`` (if given)."""
    done, mismatches, batches, failures = 0, 0, 0, []
    start = time.monotonic()
    while done < vectors:
        items, i_flow, o_flow = draw_batch(campaign, seed, batches)
        message = run_batch(campaign, items, i_flow, o_flow, seed + batches)
        if message:
            mismatches += 1
            keep = shrink(campaign, items, i_flow, o_flow, seed + batches)
            record = {"unit": campaign.name, "seed": seed, "batch": batches, "indices": keep,
                      "i_flow": i_flow, "o_flow": o_flow, "message": message}
            if out is not None:
                path = Path(out) / f"{campaign.name}-seed{seed}-batch{batches}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record, indent=1) + "\n")
                record["file"] = str(path)
            failures.append(record)
        done += sum(campaign.size(v) for v in items)
        batches += 1
    return {"vectors": done, "mismatches": mismatches, "batches": batches, "seed": seed,
            "seconds": round(time.monotonic() - start, 1), "failures": failures}


def replay(record):
    """Rerun a saved reproducer: the mismatch message, or None if it passes now."""
    campaign = CAMPAIGNS[record["unit"]]
    items, _, _ = draw_batch(campaign, record["seed"], record["batch"])
    return run_batch(campaign, [items[i] for i in record["indices"]], record["i_flow"],
                     record["o_flow"], record["seed"] + record["batch"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=10_000,
                        help="vectors per unit (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="campaign seed (default: time)")
    parser.add_argument("--only", nargs="+", metavar="UNIT", choices=sorted(CAMPAIGNS),
                        help="units to fuzz (default: all)")
    parser.add_argument("--out", default="build/fuzz", help="reproducers and summary.json")
    parser.add_argument("--replay", metavar="FILE", help="rerun a saved reproducer")
    args = parser.parse_args(argv)
    if args.replay:
        try:
            record = json.loads(Path(args.replay).read_text())
            message = replay(record)
        except (OSError, ValueError, KeyError) as exc:
            parser.exit(2, f"error: --replay {args.replay}: not a fuzz reproducer ({exc})\n")
        print(f"{args.replay}: {'FAILS: ' + message if message else 'passes now'}")
        return 1 if message else 0
    if args.vectors < 1:
        parser.exit(2, f"error: --vectors must be at least 1, not {args.vectors}\n")
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    print(f"fuzz seed {seed} (rerun with --seed {seed})", flush=True)
    summary = {}
    for name in args.only or sorted(CAMPAIGNS):
        entry = fuzz(CAMPAIGNS[name], args.vectors, seed, args.out)
        summary[name] = entry
        print(f"{name}: {entry['vectors']} vectors in {entry['batches']} batches, "
              f"{entry['mismatches']} mismatching batches ({entry['seconds']} s)", flush=True)
        for failure in entry["failures"]:
            print(f"  reproducer {failure['file']}: {failure['message']}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    bad = sum(e["mismatches"] for e in summary.values())
    print(f"{len(summary)} units, {bad} mismatching batches; {Path(args.out) / 'summary.json'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
