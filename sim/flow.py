"""Seeded flow-control patterns: random input gaps and output backpressure.

One pattern object per stream end. The Amaranth-simulator helpers
(:mod:`sim.pysim_stream`) and the cocotb driver and monitor
(:mod:`sim.cocotb_stream`) draw from the same patterns, so a seed means the
same traffic in both simulators.
"""

import random

__all__ = ["FlowPattern", "ALWAYS"]


class FlowPattern:
    """Decides, cycle by cycle, whether a source offers data (or a sink is ready).

    Parameters
    ----------
    probability : float in (0, 1]
        Chance that a cycle is active. 1.0 means never pause.
    seed : int
        Seed of the private random generator; the same seed gives the same
        sequence of decisions.
    """

    def __init__(self, probability=1.0, seed=0):
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1], not {probability}")
        self.probability = probability
        self._rng = random.Random(seed)

    def active(self):
        """Whether this cycle is active (consumes one random draw unless probability is 1)."""
        return self.probability >= 1.0 or self._rng.random() < self.probability

    def __repr__(self):
        return f"FlowPattern({self.probability})"


#: Never pause: full-rate source, always-ready sink.
ALWAYS = 1.0
