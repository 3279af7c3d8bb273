"""Schedule model: the cycles of one program run on one config, as the top executes it.

An executable description of the hardware's timing rules, not a fitted curve:
the RTL top (:class:`rtl.top.accelerator.Accelerator`) must reproduce it cycle for
cycle. It walks the record of a reference execution
(:attr:`moevit.executor.Execution.steps`: loops unrolled, every token, image pairing
and bank reuse as an edge) in an order that respects every edge, and gives each
step a start and an end cycle.

**Rules.** Cycle 0 is the cycle ``ap_start`` is taken.

* Fetch: the program header (one instruction word: one load-path word, two on a
  64-bit path) is read by a DMA taken in cycle 1,
  the streams by a second DMA taken the cycle after the first ends; the queues
  start the cycle after that.
* A step starts at ``max(end of the previous step of its queue, end of every step
  it waits for) + 1``: a token pushed, an image loaded or a bank freed in cycle
  ``c`` is usable from ``c + 1``. Its tokens are pushed in its end cycle.
* DMA read (LOAD_*, the fetch), per port (each port moves ``beats`` bus words of
  its striped sub-region; the ports split alike): bursts of at most
  ``axi.burst_beats`` words that do not cross 4 KB; burst 0's AR goes out the cycle
  after the DMA is taken, burst ``i``'s one cycle after burst ``i - 1``'s and once
  burst ``i - outstanding`` has delivered its last beat; its first R beat comes
  ``read_latency`` cycles after its AR and after the previous burst's last beat;
  one beat per cycle; the last word leaves the port FIFOs the cycle after it came
  (:func:`dma_read`). A LOAD's DMA is taken :data:`rtl.config.LOAD_COMMAND_LATENCY`
  cycles after the step starts and the step ends with its last word (the destination
  takes it in that cycle).
* DMA write (STORE_TENSOR, :func:`dma_write`): taken the cycle after the start;
  AW ``i`` one cycle after AW ``i - 1`` (the first after the DMA is taken) and once
  burst ``i - outstanding``'s B is in; W beats from the cycle after their burst's AW
  and from the first word, :data:`SOURCE_LATENCY` cycles after the start; a burst's
  B comes ``write_latency`` cycles after its last W beat; the step ends with the last B.
* Units: their first input beat leaves the buffers :data:`SOURCE_LATENCY` cycles
  after the start (a two-stage row generator, then the buffer reader), the unit
  model gives the last output (``rtl.compute.linear.batch_cycles``,
  ``rtl.compute.layernorm.exp_cycles``, ``rtl.compute.attention.exp_cycles``), and the step ends
  with that output's write (a residual add or an accumulation into the combiner
  one cycle later). A ROUTE then reads the logits back into the gating unit
  (``rtl.moe.gating.exp_cycles``, from :data:`SOURCE_LATENCY` cycles after the last
  logit) and ends with its last queue entry. COMBINE flushes the combiner
  (:data:`FLUSH_LATENCY` plus one beat per token and fold, then the residual add).
* Resident weights (``config.weight_store``): in a warm frame (every frame after the
  first since the program was loaded) a LOAD_MATRIX / LOAD_NORM reads the on-chip
  store: its end is ``start + STORE_LATENCY + beats`` and it reads no DRAM; a cold
  frame reads DRAM as above (and fills the store).
* ATTENTION: the attention unit takes it once its previous ATTENTION has ended
  (that step is among its waits); it ends with the unit's last output, but its
  queue goes on from the cycle after its start. A SYNC with ``attention`` waits
  for the unit's last ATTENTION to end.
* LOOP, SYNC and END end in their start cycle. ``ap_done`` rises the cycle after
  the last END.
"""

from dataclasses import dataclass, field

from rtl.compute import layernorm
from rtl.compute.attention import exp_cycles as attention_cycles
from rtl.compute.linear import batch_cycles
from rtl.config import BOUNDARY, LOAD_COMMAND_LATENCY, STORE_LATENCY
from rtl.control.isa import Opcode, Queue, Write
from rtl.moe import gating

from .program import WORD_BYTES

__all__ = ["SOURCE_LATENCY", "FLUSH_LATENCY", "ENGINES", "dma_read", "dma_write", "fetch_cycles",
           "Schedule", "schedule"]

#: Cycles from a step's start to its first buffer beat at a unit (or the DMA writer).
SOURCE_LATENCY = 5
#: Cycles from a COMBINE's start to the combiner's first output beat.
FLUSH_LATENCY = 4
#: Units whose busy cycles the schedule reports.
ENGINES = ("fetch", "load", "compute", "store", "linear", "gating", "layernorm", "attention",
           "combine")


def _bursts(axi, address, words):
    """Burst lengths of ``words`` bus words from byte ``address`` on one port."""
    out = []
    while words:
        room = (BOUNDARY - address % BOUNDARY) // axi.data_bytes
        n = min(words, axi.burst_beats, room)
        out.append(n)
        words -= n
        address += n * axi.data_bytes
    return out


def _ports(axi, address, beats):
    """Per port, the bursts of a striped transfer of ``beats`` load-path words."""
    return [_bursts(axi, address + p * axi.sub_region(beats), beats) for p in range(axi.ports)]


def dma_read(axi, start, address, beats):
    """End cycle of a striped read taken at ``start``: the cycle its last load-path word
    leaves the port FIFOs (:class:`rtl.memory.dma.DmaReader`)."""
    end = start
    for bursts in _ports(axi, address, beats):
        ar, last = [], []
        for i, n in enumerate(bursts):
            a = start + 1 if i == 0 else ar[-1] + 1
            if i >= axi.outstanding:
                a = max(a, last[i - axi.outstanding] + 1)
            first = a + axi.read_latency if i == 0 else max(a + axi.read_latency, last[-1] + 1)
            ar.append(a)
            last.append(first + n - 1)
        end = max(end, last[-1] + 1)
    return end


def fetch_cycles(axi, address, words):
    """End cycle of the fetch of a program of ``words`` instruction words (header included)
    at ``address``: the header's DMA, then the streams'."""
    words_ = axi.words(WORD_BYTES)
    header = dma_read(axi, 1, address, words_)
    return dma_read(axi, header + 1, address + axi.footprint(words_),
                    axi.words((words - 1) * WORD_BYTES))


def dma_write(axi, start, address, beats, first_word):
    """End cycle of a striped write taken at ``start`` whose words arrive one per cycle from
    ``first_word``: the cycle of its last B response (:class:`rtl.memory.dma.DmaWriter`)."""
    end = start
    for bursts in _ports(axi, address, beats):
        aw, b = [], []
        w = first_word - 1          # the last W beat so far
        k = 0                       # words written so far
        for i, n in enumerate(bursts):
            a = start + 1 if i == 0 else aw[-1] + 1
            if i >= axi.outstanding:
                a = max(a, b[i - axi.outstanding] + 1)
            aw.append(a)
            w = max(w + 1, a + 1, first_word + k) + n - 1
            k += n
            b.append(w + axi.write_latency)
        end = max(end, b[-1])
    return end


@dataclass
class Schedule:
    """Cycles of one run.

    Members
    -------
    cycles : int
        ``ap_start`` to ``ap_done``: the frame.
    serial_cycles : int
        The same steps one after the other (no overlap between queues).
    start, end : list of int
        Per step of the execution.
    busy : dict {unit: int}
        Cycles each unit (and the DMA engines) worked; they overlap.
    dram_read_bytes, dram_write_bytes : int
    macs : int
        Useful multiply-accumulates of the linear kernel (tokens x d_in x d_out).
    attention_macs : int
        Multiplies of the attention kernel's score pass (tokens x tokens x head_dim per
        head; P.V runs on shift-and-add lanes, not DSP multipliers).
    """

    cycles: int
    serial_cycles: int
    start: list = field(repr=False)
    end: list = field(repr=False)
    busy: dict
    dram_read_bytes: int
    dram_write_bytes: int
    macs: int
    attention_macs: int

    def to_dict(self):
        return {"cycles": self.cycles, "serial_cycles": self.serial_cycles,
                "unit_busy": dict(self.busy),
                "unit_share": {u: round(b / self.cycles, 4) for u, b in self.busy.items()},
                "dram_read_bytes": self.dram_read_bytes,
                "dram_write_bytes": self.dram_write_bytes, "linear_macs": self.macs,
                "attention_macs": self.attention_macs}


def _from_store(config, step, warm):
    return warm and config.resident and step.ins.op in (Opcode.LOAD_MATRIX, Opcode.LOAD_NORM)


def _duration(config, step, start, warm):
    """``(end, {unit: busy cycles})`` of a step starting at ``start``. A unit is busy from the
    cycle after the start to the end (what the top's busy counters count); a ROUTE keeps
    the linear kernel busy to its last logit, then the gating unit."""
    ins, info, axi = step.ins, step.info, config.axi
    op = ins.op
    if _from_store(config, step, warm):
        end = start + STORE_LATENCY + info["beats"]
        return end, {"load": end - start}
    if op in (Opcode.LOAD_MATRIX, Opcode.LOAD_NORM, Opcode.LOAD_TENSOR):
        end = dma_read(axi, start + LOAD_COMMAND_LATENCY, info["address"], info["beats"])
        return end, {"load": end - start}
    if op == Opcode.STORE_TENSOR:
        end = dma_write(axi, start + 1, info["address"], info["beats"], start + SOURCE_LATENCY)
        return end, {"store": end - start}
    first = start + SOURCE_LATENCY
    if op == Opcode.LINEAR:
        lc = config.linear_config()
        last = first + batch_cycles(lc, info["kb"], info["nb"], info["tokens"]) - 1
        if ins["write"] == Write.ROUTE:
            routing = gating.exp_cycles(info["experts"], info["k"], list(info["lengths"]))
            end = last + SOURCE_LATENCY + routing
            return end, {"compute": end - start, "linear": last + 1 - start,
                         "gating": end - last - 1}
        end = last + (ins["write"] in (Write.ADD, Write.COMBINE))
        return end, {"compute": end - start, "linear": end - start}
    if op == Opcode.NORM:
        end = first + layernorm.exp_cycles(info["d"], config.norm_lanes, info["tokens"]) - 1
        return end, {"compute": end - start, "layernorm": end - start}
    if op == Opcode.ATTENTION:
        att = config.attention_config(info["head_dim"],
                                      ins["codes"].form)
        end = first + attention_cycles(att, info["tokens"], -(-info["heads"] // att.h)) - 1
        return end, {"attention": end - start}
    if op == Opcode.COMBINE:
        beats = info["tokens"] * -(-config.capacity.dim // config.linear.po)
        end = start + FLUSH_LATENCY + beats
        return end, {"compute": end - start, "combine": end - start}
    return start, {}


def schedule(config, execution, warm=True):
    """The :class:`Schedule` of a :class:`moevit.executor.Execution`; ``warm=False``: the first
    frame after a program load (resident weights come from DRAM)."""
    steps = execution.steps
    fetch_end = fetch_cycles(config.axi, execution.image.region("program").offset,
                             execution.program.words)
    busy = {u: 0 for u in ENGINES}
    busy["fetch"] = fetch_end
    results = {}
    for serial in (False, True):
        start, end = [0] * len(steps), [0] * len(steps)
        last = {q: fetch_end for q in Queue}
        previous = fetch_end
        for n, step in enumerate(steps):
            s = max([last[step.queue]] + [end[w] for w in step.waits]) + 1
            if serial:
                s = max(s, previous + 1)
            start[n] = s
            end[n], cycles = _duration(config, step, s, warm)
            if not serial:
                for unit, count in cycles.items():
                    busy[unit] += count
            # An ATTENTION completes for its queue when the unit takes it.
            last[step.queue] = start[n] if step.ins.op == Opcode.ATTENTION else end[n]
            previous = end[n]
        results[serial] = (max(end) + 1, start, end)
    cycles, start, end = results[False]
    read = (config.axi.words(WORD_BYTES)
            + config.axi.words((execution.program.words - 1) * WORD_BYTES)) * config.axi.path_bytes
    write = macs = attention_macs = 0
    for step in steps:
        if step.ins.op in (Opcode.LOAD_MATRIX, Opcode.LOAD_NORM, Opcode.LOAD_TENSOR):
            if not _from_store(config, step, warm):
                read += step.info["beats"] * config.axi.path_bytes
        elif step.ins.op == Opcode.STORE_TENSOR:
            write += step.info["beats"] * config.axi.path_bytes
        elif step.ins.op == Opcode.LINEAR:
            macs += step.info["tokens"] * step.info["kb"] * step.info["nb"] \
                * config.linear.pi * config.linear.po
        elif step.ins.op == Opcode.ATTENTION:
            attention_macs += step.info["tokens"] ** 2 * step.info["head_dim"] * step.info["heads"]
    return Schedule(cycles, results[True][0], start, end, busy, read, write, macs, attention_macs)
