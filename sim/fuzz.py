"""``make fuzz``: random vectors through the stream units, against the golden model.

Each :class:`Campaign` draws vectors for one unit, small instances of each (the linear
kernel's jobs, attention head groups in both code forms, LayerNorm tokens, softmax rows,
GELU codes, gating frames, combined MoE layers, systolic GEMMs, reciprocal and square
root operands), edge values first in every fourth batch (-128 / 127 operands and the
largest sums, int16 extremes, all-equal rows and scores, ties, one expert taking every
token, experts left empty, saturating combines, every GELU code), and runs them in batches
through the unit in the Amaranth simulator with random input gaps and output
backpressure (a fresh flow probability per batch), checked bit for bit by the same
``sim.*_images`` checkers the unit tests use.

Every batch is reproducible from ``(seed, batch)`` alone. A failing batch is shrunk by
bisection to a minimal failing list of vectors, saved as
``build/fuzz/<unit>-seed<S>-batch<B>.json`` and rerun with ``--replay FILE``. The run
writes ``build/fuzz/summary.json``: ``{unit: {"vectors": N, "mismatches": M, ...}}``.

Usage: ``python -m sim.fuzz [--vectors N] [--seed S] [--only UNIT ...] [--replay FILE]``.
"""

import argparse
import dataclasses
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from golden.gemm import int8_matmul
from rtl.compute.attention import AttentionConfig, AttentionKernel
from rtl.compute.gelu import GeluUnit
from rtl.compute.layernorm import LayerNormUnit
from rtl.compute.linear import LinearConfig, LinearKernel
from rtl.compute.recip import ISqrt, Reciprocal
from rtl.compute.softmax import SoftmaxUnit
from rtl.compute.systolic import SystolicArray
from rtl.moe.combine import Combiner
from rtl.moe.gating import Gating

from .attention_images import (FixedScale, attention_streams, check_attention, golden_attention,
                               random_heads)
from .gemm_tiles import gemm_result, gemm_words
from .linear_images import check_outputs, job_streams, random_job
from .nonlinear_images import (check_combine, check_gating, check_gelu, check_isqrt,
                               check_layernorm, check_reciprocal, check_softmax, combine_streams,
                               edge_operands, gating_streams, gelu_streams, layernorm_batch,
                               layernorm_streams, routed_layer, softmax_words)
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
        values = edge_operands(rng, width, n, lo)       # the edges, then n random ones
        return values[:n] if edges else values[-n:]
    return draw


def _recip_run(dens, i_flow, o_flow, seed):
    res = run_streams(Reciprocal(12), {"i": dens}, {"o": len(dens)}, name="fuzz_recip",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_reciprocal(res["o"][0], dens, 12)


def _isqrt_run(values, i_flow, o_flow, seed):
    res = run_streams(ISqrt(16), {"i": values}, {"o": len(values)}, name="fuzz_isqrt",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_isqrt(res["o"][0], values)


# --- GELU: batches of codes, a table each ------------------------------------------------

_GELU = {"lanes": 3, "entries": 8}


def _gelu_draw(rng, n, edges):
    items = []
    while len(items) < n:
        codes = rng.integers(-128, 128, int(rng.integers(1, 40)))
        if edges and not items:
            codes = np.arange(-128, 128)                 # every code
        items.append((rng.integers(-128, 128, 256), codes))
    return items


def _gelu_run(items, i_flow, o_flow, seed):
    tables, batches = [t for t, _ in items], [c for _, c in items]
    t_words, i_words = gelu_streams(tables, batches, _GELU["lanes"], _GELU["entries"])
    res = run_streams(GeluUnit(**_GELU), {"t": t_words, "i": i_words}, {"o": len(i_words)},
                      name="fuzz_gelu", i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_gelu(res["o"][0], tables, batches, _GELU["lanes"])


# --- MoE combine: routed layers -----------------------------------------------------------

_COMB = {"max_tokens": 6, "dim": 5, "po": 2, "experts": 4, "k": 2}


def _combine_draw(rng, n, edges):
    layers, tokens_max = [], _COMB["max_tokens"]
    while len(layers) < n:
        tokens = int(rng.integers(1, tokens_max + 1))
        u = None
        if edges and len(layers) == 0:                   # every token to experts 0 and 1
            u = np.tile([900, 800, -900, -900], (tokens, 1))
        extreme = edges and len(layers) == 1             # saturation at both ends
        routes, outputs, expected = routed_layer(
            rng, tokens, _COMB["experts"], _COMB["k"], _COMB["dim"], u=u,
            y_range=(32767, 32768) if extreme else (-32768, 32768))
        layers.append((routes, outputs, expected, tokens))
    return layers


def _combine_run(layers, i_flow, o_flow, seed):
    i_beats, flushes, count = combine_streams(layers, _COMB["po"], _COMB["dim"])
    res = run_streams(Combiner(_COMB["max_tokens"], _COMB["dim"], _COMB["po"]),
                      {"i": i_beats, "flush": flushes}, {"o": count}, name="fuzz_combine",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_combine(res["o"][0], layers, _COMB["po"], _COMB["dim"])


# --- the linear kernel: jobs (a matrix image and its gathered tokens) ---------------------

_LIN = LinearConfig(pi=2, po=3, t=2, max_in=8, max_out=7, bus_width=64, out_width=32)


def _linear_draw(rng, n, edges):
    items = []
    while len(items) < n:
        d_in, d_out = int(rng.integers(1, _LIN.max_in + 1)), int(rng.integers(1, _LIN.max_out + 1))
        rows = int(rng.integers(1, 6))
        bits = [None, 8, 16][int(rng.integers(0, 3))]
        job = random_job(rng, d_in, d_out, rng.permutation(rows).tolist(), bits=bits,
                         gelu=bits == 8 and bool(rng.integers(0, 2)))
        x = rng.integers(-128, 128, (rows, _LIN.max_in))
        if edges and len(items) < 3:                  # the largest sums, both signs
            fill = (-128, 127, -128)[len(items)]
            job["weight"][:] = -128
            x[:] = fill
        items.append({"job": job, "x": x})
    return items


def _linear_run(items, i_flow, o_flow, seed):
    x = np.concatenate([item["x"] for item in items])
    offsets = np.cumsum([0] + [len(item["x"]) for item in items])
    jobs = [dict(item["job"], tokens=[t + int(off) for t in item["job"]["tokens"]])
            for item, off in zip(items, offsets)]
    w, xb, count = job_streams(_LIN, jobs, x)
    res = run_streams(LinearKernel(_LIN), {"w": w, "x": xb}, {"y": count}, name="fuzz_linear",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_outputs(_LIN, jobs, x, res["y"][0])


# --- the attention kernel: head groups of 1..8 tokens -------------------------------------

def _attention_config(codes):
    return AttentionConfig(r=2, dp=4, h=1, head_dim=8, max_tokens=8, codes=codes)


def _attention_draw(rng, n, edges):
    groups, rows = [], 0
    while rows < n:
        tokens = int(rng.integers(1, 9))
        q, k, v, _, _ = random_heads(rng, 1, tokens, 8)
        if edges and len(groups) == 0:
            q[:], k[:] = 0, 0                             # all scores equal
        elif edges and len(groups) == 1:
            q[:], k[:], v[:] = -128, 127, -128            # the largest scores and values
        groups.append((q, k, v))
        rows += tokens
    return groups


def _attention(codes):
    config = _attention_config(codes)
    _, _, _, mult, shift = random_heads(np.random.default_rng(0), 1, 1, config.head_dim)

    def run(groups, i_flow, o_flow, seed):
        streams = [attention_streams(config, q, k, v) for q, k, v in groups]
        res = run_streams(FixedScale(AttentionKernel(config), mult, shift),
                          {name: [w for s in streams for w in s[n]]
                           for n, name in enumerate(("k", "v", "q"))},
                          {"o": sum(s[3] for s in streams)}, name=f"fuzz_attention_{codes}",
                          i_flow=i_flow, o_flow=o_flow, seed=seed)
        pos = 0
        for (q, k, v), s in zip(groups, streams):
            check_attention(config, res["o"][0][pos:pos + s[3]],
                            golden_attention(q, k, v, mult, shift, codes))
            pos += s[3]
    return run


CAMPAIGNS = {c.name: c for c in [
    Campaign("layernorm", _layernorm_draw, _layernorm_run, size=lambda b: len(b["x"]),
             batch=100),
    Campaign("softmax_codes", _softmax_draw, _softmax("codes")),
    Campaign("softmax_probs", _softmax_draw, _softmax("probs")),
    Campaign("gating", _gating_draw, _gating_run, size=len, batch=50),
    Campaign("systolic", _gemm_draw, _gemm_run, batch=60),
    Campaign("linear", _linear_draw, _linear_run, size=lambda item: len(item["x"]), batch=30),
    Campaign("attention_log2", _attention_draw, _attention("log2"),
             size=lambda group: group[0].shape[1], batch=60),
    Campaign("attention_sqrt2", _attention_draw, _attention("sqrt2"),
             size=lambda group: group[0].shape[1], batch=60),
    Campaign("attention_mant4", _attention_draw, _attention("mant4"),
             size=lambda group: group[0].shape[1], batch=60),
    Campaign("gelu", _gelu_draw, _gelu_run, size=lambda item: len(item[1]), batch=40),
    Campaign("combine", _combine_draw, _combine_run, size=lambda layer: layer[3], batch=40),
    Campaign("recip", _operands(12, 1), _recip_run, batch=500),
    Campaign("isqrt", _operands(16, 0), _isqrt_run, batch=500),
]}


# --- running, shrinking, replaying --------------------------------------------------------

def draw_batch(campaign, seed, batch):
    """The vectors and flows of batch ``batch`` of a campaign with ``seed`` (reproducible
    from these two numbers alone; the campaign's stream is keyed by its name, so adding
    a campaign leaves the others' vectors as they were)."""
    rng = np.random.default_rng([seed, zlib.crc32(campaign.name.encode()), batch])
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
