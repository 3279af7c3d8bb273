"""Design-space search: the fastest accelerator config that fits a board, in two stages.

As UbiMoE sizes its hardware per FPGA, the search takes a board's budget and a
quantized model and returns an :class:`~rtl.config.AcceleratorConfig`:

* **cycles** come from the schedule model (:mod:`moevit.schedule`) of the compiled
  program run by the reference executor on one frame: the same figure the RTL top
  takes, cycle for cycle (no separate formula);
* **resources** from :mod:`platforms.resources` (DSPs and block RAM counted from the
  elaborated top; LUT and FF by the fitted model, checked against the ceiling where it
  was fitted);
* the **space** (:class:`Space`) is every field's allowed values; :meth:`Space.restrict`
  narrows or pins fields (``moevit dse --space t=4,8``);
* **stage 1** (compute parallelism: the linear kernel's ``PI = PO`` (= the attention
  kernel's ``dp``, the buffer word), its token lanes ``t`` and the attention rows
  ``r``) is a seeded genetic algorithm under the DSP and block-RAM ceilings:
  tournament selection, uniform crossover, one-gene mutation, elitism;
* **stage 2** refines the rest from the stage-1 winner by coordinate descent (local
  moves until none helps): LayerNorm lanes, the weight bank size, bursts and
  outstanding reads of the board's fixed memory ports, and the neighbouring values of
  the stage-1 fields (they interact with the stage-2 ones).

Evaluations run in parallel processes and are memoised by config, so a repeated
candidate costs nothing; :func:`exhaustive` searches a (small) space completely, to
measure how far the heuristic is from the optimum and what each evaluated.
"""

import dataclasses
import json
import math
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from platforms.boards import board as board_files
from platforms.resources import CEILING, estimate
from rtl.config import AcceleratorConfig, AttentionArray, AxiPorts, Capacity, LinearArray

__all__ = ["BOARD_MEMORY", "Space", "Candidate", "Search", "search", "exhaustive", "pareto"]

#: Config fields fixed by the board (not searched): the ECP5 shares its activation
#: buffers, as the ``ecp5_85f`` preset does, to fit its 3.7 Mb of block RAM.
BOARD_FIXED = {"ulx3s": {"share_buffers": True}}
#: Each board's memory ports (fixed by the board): AxiPorts fields.
BOARD_MEMORY = {
    "zcu102": {"data_bits": 128, "ports": 4, "read_latency": 64, "write_latency": 32},
    "u280": {"data_bits": 256, "ports": 4, "read_latency": 64, "write_latency": 32},
    "ulx3s": {"data_bits": 64, "ports": 1, "read_latency": 24, "write_latency": 12},
}


def _balanced_rows(tokens, limit=128):
    """Attention rows that split ``tokens`` into equal blocks (``ceil(N / b)``)."""
    return sorted({-(-tokens // b) for b in range(1, tokens + 1) if -(-tokens // b) <= limit})


@dataclass(frozen=True)
class Space:
    """The values each searched field may take.

    Stage 1: ``p`` (linear PI = PO = attention dp), ``t``, ``r``; stage 2: ``norm_lanes``,
    ``bank_words``, ``burst_beats``, ``outstanding``.
    """

    p: tuple = (4, 8, 16, 32)
    t: tuple = tuple(range(1, 17))
    r: tuple = None
    norm_lanes: tuple = (4, 8, 16, 32)
    bank_words: tuple = (288, 576, 1152)
    burst_beats: tuple = (16, 32, 64)
    outstanding: tuple = (4, 8, 16)

    def for_model(self, model):
        """The space with ``r`` defaulting to the balanced row counts of ``model``."""
        r = self.r or tuple(v for v in _balanced_rows(model.num_tokens) if v >= 4)
        return dataclasses.replace(self, r=r)

    def restrict(self, specs):
        """The space with the fields named in ``specs`` narrowed to the listed values:
        each spec is ``FIELD=V1,V2,...`` (positive integers; one value pins the field),
        e.g. ``["p=16", "t=4,8"]``. A bad spec raises ``ValueError`` naming it and what
        is allowed. Values the config cannot take make invalid candidates, as in the
        full space."""
        names = [f.name for f in dataclasses.fields(self)]
        changes = {}
        for spec in specs:
            name, sep, values = spec.partition("=")
            if not sep or name not in names:
                raise ValueError(f"{spec!r}: expected FIELD=V1,V2,... with FIELD one of "
                                 f"{', '.join(names)}")
            try:
                parsed = tuple(sorted({int(v) for v in values.split(",")}))
            except ValueError:
                parsed = ()
            if not parsed or parsed[0] < 1:
                raise ValueError(f"{spec!r}: the values of {name} must be positive integers")
            changes[name] = parsed
        return dataclasses.replace(self, **changes)

    @property
    def size(self):
        return math.prod(len(getattr(self, f.name)) for f in dataclasses.fields(self))


@dataclass
class Candidate:
    """One evaluated config: ``cycles`` (None if it cannot run the model), the resource
    estimate and whether it fits the board."""

    genes: dict
    config: dict
    cycles: int = None
    resources: dict = field(default_factory=dict)
    fits: bool = False
    reason: str = ""

    @property
    def ok(self):
        return self.fits and self.cycles is not None

    @property
    def score(self):
        """Fewer cycles first, then fewer DSPs; ``(inf, inf)`` when it does not fit."""
        return (self.cycles, self.resources["dsp"]) if self.ok else (math.inf, math.inf)


def make_config(board, model, genes, packing, codes="log2"):
    """The :class:`~rtl.config.AcceleratorConfig` of ``genes`` on ``board`` with the model's
    capacity (:meth:`rtl.config.Capacity.of`), its attention kernel built for the model's
    code form ``codes``; the LayerNorm lanes drop to the largest divisor of theirs that
    divides the X buffer's word and the model's width (what the unit needs). Unlike
    ``fitted()``, the word is not narrowed: a word the heads cannot take is invalid."""
    memory = BOARD_MEMORY[board]
    p = genes["p"]
    config = AcceleratorConfig(
        name=f"dse_{board}",
        linear=LinearArray(pi=p, po=p, t=genes["t"], dsp_packing=packing,
                           bank_words=genes.get("bank_words", 576)),
        attention=AttentionArray(r=genes["r"], dp=p, h=1, codes=(codes,)),
        norm_lanes=1,
        axi=AxiPorts(burst_beats=genes.get("burst_beats", 64),
                     outstanding=genes.get("outstanding", 8), **memory),
        **BOARD_FIXED.get(board, {}))
    # Narrow kernels cut matrices into more chunks: room for the longer program. Not
    # fitted(): a word the heads cannot take is an invalid candidate, not a narrower one.
    capacity = Capacity.of(model, instructions=1024 if p >= 16 else 4096)
    lanes = math.gcd(genes.get("norm_lanes", 32), config.row_align("int16"), capacity.dim)
    return dataclasses.replace(config, norm_lanes=lanes, capacity=capacity)


# The worker's model and image (set once per process).
_WORK = {}


def _init_worker(qp, pixels):
    _WORK["qp"], _WORK["pixels"] = qp, pixels


def _evaluate(args):
    board, genes, packing = args
    from moevit.compiler import compile_model
    from moevit.executor import execute
    from moevit.schedule import schedule
    qp, pixels = _WORK["qp"], _WORK["pixels"]
    device = board_files(board)[1]
    try:
        config = make_config(board, qp.config, genes, packing, qp.attention_codes)
    except ValueError as exc:
        return Candidate(genes, {}, reason=str(exc))
    resources = estimate(config, device)
    cand = Candidate(genes, config.to_dict(), resources=resources, fits=resources["fits"],
                     reason="" if resources["fits"] else resources["over"])
    if not cand.fits:
        return cand
    try:
        compiled = compile_model(qp, config)
        cand.cycles = schedule(config, execute(compiled, pixels, 0)[1]).cycles
    except ValueError as exc:               # the compiler's checks (ProgramError)
        cand.fits, cand.reason = False, str(exc).splitlines()[0]
    return cand


class Search:
    """Memoised, parallel evaluation of candidates for one board and model."""

    def __init__(self, board, qp, pixels, workers=2):
        if board not in BOARD_MEMORY:
            raise ValueError(f"board must be one of {', '.join(BOARD_MEMORY)}, got {board!r}")
        self.board, self.qp, self.pixels = board, qp, pixels
        self.packing = board_files(board)[1].family == "xcup"
        self.memo = {}
        self.pool = (ProcessPoolExecutor(workers, initializer=_init_worker,
                                         initargs=(qp, pixels)) if workers > 1 else None)
        if self.pool is None:
            _init_worker(qp, pixels)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()

    def evaluate(self, genomes):
        """Candidates of ``genomes`` (dicts), evaluating only the new ones."""
        keys = [json.dumps(g, sort_keys=True) for g in genomes]
        new = [(k, g) for k, g in zip(keys, genomes) if k not in self.memo]
        new = list(dict(new).items())
        jobs = [(self.board, g, self.packing) for _, g in new]
        results = self.pool.map(_evaluate, jobs) if self.pool else map(_evaluate, jobs)
        for (k, _), cand in zip(new, results):
            self.memo[k] = cand
        return [self.memo[k] for k in keys]

    @property
    def evaluated(self):
        return len(self.memo)

    def fits(self, genes):
        """Whether ``genes`` fit the board by the resource estimate alone (no schedule)."""
        try:
            config = make_config(self.board, self.qp.config, genes, self.packing,
                                 self.qp.attention_codes)
        except ValueError:
            return False
        return estimate(config, board_files(self.board)[1])["fits"]


def _genetic(search, space, rng, population, generations, fixed):
    genes = ("p", "t", "r")

    def random_genome():
        return {g: rng.choice(getattr(space, g)) for g in genes} | fixed

    # Resource-aware seeds: the smallest genome (a small device has a fitting start) and,
    # for each word width, the most token lanes that fit at a middle row count (counted,
    # not simulated); random genomes fill the rest.
    pop = [{g: getattr(space, g)[0] for g in genes} | fixed]
    r = space.r[len(space.r) // 2]
    for p in space.p:
        fitting = [t for t in space.t if search.fits({"p": p, "t": t, "r": r} | fixed)]
        if fitting:
            pop.append({"p": p, "t": fitting[-1], "r": r} | fixed)
    pop += [random_genome() for _ in range(max(population - len(pop), 0))]
    best = None
    for _ in range(generations):
        scored = sorted(zip(search.evaluate(pop), pop), key=lambda x: x[0].score)
        if best is None or scored[0][0].score < best.score:
            best = scored[0][0]
        elite = [g for _, g in scored[:2]]

        def pick():
            a, b = rng.sample(scored, 2)
            return (a if a[0].score <= b[0].score else b)[1]

        children = []
        while len(children) < population - len(elite):
            x, y = pick(), pick()
            child = {g: (x if rng.random() < 0.5 else y)[g] for g in genes} | fixed
            gene = rng.choice(genes)
            values = getattr(space, gene)
            i = values.index(child[gene]) + rng.choice((-1, 1))
            child[gene] = values[min(max(i, 0), len(values) - 1)]
            children.append(child)
        pop = elite + children
    return best


def _refine(search, space, start):
    """Coordinate descent from ``start``: every value of each stage-2 field, and the
    neighbouring values of each stage-1 field (the fields interact: fewer token lanes can
    win with shorter bursts), until no move helps."""
    current = search.evaluate([start])[0]
    improved = True
    while improved:
        improved = False
        for name in ("norm_lanes", "bank_words", "burst_beats", "outstanding", "p", "t", "r"):
            values = getattr(space, name)
            if name in ("p", "t", "r"):
                i = values.index(current.genes[name])
                values = values[max(i - 1, 0):i + 2]
            trials = [current.genes | {name: v} for v in values]
            best = min(search.evaluate(trials), key=lambda c: c.score)
            if best.score < current.score:
                current, improved = best, True
    return current


def search(board, qp, pixels, space=Space(), seed=0, population=12, generations=6,
           workers=2, progress=None):
    """The two-stage search (module docstring). Returns a dict: ``best`` (a
    :class:`Candidate`), ``stage1`` (its winner), ``evaluated``, ``search_s``, ``all``
    (every evaluated candidate)."""
    space = space.for_model(qp.config)
    rng = random.Random(seed)
    start = time.perf_counter()
    s = Search(board, qp, pixels, workers)
    try:
        # Stage 1 holds the stage-2 fields at the space's most LayerNorm lanes and at
        # the preferred values of the others (their last where those are not in it).
        defaults = {"norm_lanes": space.norm_lanes[-1]} | {
            name: value if value in getattr(space, name) else getattr(space, name)[-1]
            for name, value in (("bank_words", 576), ("burst_beats", 64), ("outstanding", 8))}
        stage1 = _genetic(s, space, rng, population, generations, defaults)
        if progress:
            progress(f"stage 1: {stage1.cycles} cycles after {s.evaluated} evaluations")
        best = _refine(s, space, stage1.genes) if stage1.ok else stage1
        return {"best": best, "stage1": stage1, "evaluated": s.evaluated,
                "search_s": time.perf_counter() - start, "all": list(s.memo.values())}
    finally:
        s.close()


def exhaustive(board, qp, pixels, space, workers=2):
    """Every point of ``space`` (stage-2 fields at their values too): the optimum and the
    number of evaluations."""
    space = space.for_model(qp.config)
    names = [f.name for f in dataclasses.fields(space)]
    genomes = [{}]
    for name in names:
        genomes = [g | {name: v} for g in genomes for v in getattr(space, name)]
    start = time.perf_counter()
    s = Search(board, qp, pixels, workers)
    try:
        cands = s.evaluate(genomes)
    finally:
        s.close()
    return {"best": min(cands, key=lambda c: c.score), "evaluated": len(cands),
            "search_s": time.perf_counter() - start, "all": cands}


def pareto(candidates):
    """The candidates no other fitting one beats in both cycles and DSPs."""
    ok = sorted((c for c in candidates if c.ok),
                key=lambda c: (c.resources["dsp"], c.cycles))
    front, best = [], math.inf
    for c in ok:
        if c.cycles < best:
            front.append(c)
            best = c.cycles
    return front


def budget(board):
    """The board's capacities and the ceilings the search keeps under."""
    device = board_files(board)[1]
    return {"part": device.part, "dsp": device.DSP, "bram": device.BRAM, "uram": device.URAM,
            "ceiling": CEILING}


def report(result, board, exhaustive_result=None):
    """The JSON-able report of a :func:`search` result."""
    best = result["best"]
    out = {"board": board, "config": best.config, "genes": best.genes,
           "predicted_cycles": best.cycles,
           "predicted_fps_at_300mhz": round(300e6 / best.cycles, 1) if best.cycles else None,
           "resources": best.resources, "budget": budget(board), "fits": best.fits,
           "evaluated": result["evaluated"], "search_s": round(result["search_s"], 1),
           "stage1": {"genes": result["stage1"].genes, "cycles": result["stage1"].cycles},
           "pareto": [{"genes": c.genes, "cycles": c.cycles, "dsp": c.resources["dsp"],
                       "bram": c.resources["bram"]} for c in pareto(result["all"])]}
    if exhaustive_result is not None:
        opt = exhaustive_result["best"]
        out["exhaustive"] = {"cycles": opt.cycles, "genes": opt.genes,
                             "evaluated": exhaustive_result["evaluated"],
                             "gap": (best.cycles - opt.cycles) / opt.cycles if opt.ok else None}
    return out


def plot(result, board, path):
    """Cycles against DSPs of every fitting candidate, coloured by block RAM, the Pareto
    front and the chosen config marked; PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [c for c in result["all"] if c.ok]
    fig, ax = plt.subplots(figsize=(8, 5))
    points = ax.scatter([c.resources["dsp"] for c in ok], [c.cycles for c in ok],
                        c=[c.resources["bram"] for c in ok], cmap="viridis", s=18)
    fig.colorbar(points, label="block RAM (estimate)")
    front = pareto(result["all"])
    ax.plot([c.resources["dsp"] for c in front], [c.cycles for c in front], "k--", lw=1,
            label="Pareto front")
    best = result["best"]
    ax.scatter([best.resources["dsp"]], [best.cycles], marker="*", s=200, c="red",
               label=f"chosen: {best.cycles:,} cycles")
    ax.axvline(budget(board)["dsp"] * CEILING["DSP"], color="grey", lw=1, ls=":",
               label="DSP ceiling")
    ax.set_xlabel("DSPs (estimate)")
    ax.set_ylabel("cycles per frame (schedule model)")
    ax.set_title(f"design-space search on {board}: {result['evaluated']} configs evaluated")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
