"""Seeded synthetic streams with known drift, for the demo, tests and backtests.

The demo stream has four phases, in order, each a number of batches:

* ``stable``: x1, x2, x3 ~ N(0, 1), region in {a, b, c}; the label follows concept A,
  ``x1 + x2 + 0.5 * [region == a] > 0``, with a little label noise.
* ``covariate``: x1's mean moves to +1 and region's frequencies change; the labelling
  rule is untouched, so a model of concept A stays right (retraining cannot pay).
* ``abrupt``: the concept switches to B, ``x1 - x2 > 0``, and x3's spread doubles; a
  model of concept A is now wrong on about half the rows.
* ``gradual``: the concept turns step by step from B towards C, ``x1 - x2 + 1.5 x3 > 0``.

``offline_fault_from`` simulates a convention change in the offline feature pipeline:
from that batch on the warehouse writes x1 with the opposite sign, while serving keeps
the old convention. That is the kind of training-serving skew that offline gates cannot
see (the holdout carries the same fault) and a canary exists to catch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PHASES = ("stable", "covariate", "abrupt", "gradual")
FEATURES = ("x1", "x2", "x3", "region")
LABEL_NOISE = 0.05  # share of labels flipped, so no model is perfect


@dataclass(frozen=True)
class DemoStream:
    """Batches of the four-phase stream; ``batch(i)`` is deterministic for a seed."""

    seed: int = 7
    batch_size: int = 400
    stable: int = 8
    covariate: int = 8
    abrupt: int = 8
    gradual: int = 10
    offline_fault_from: int | None = None

    @property
    def n_batches(self) -> int:
        return self.stable + self.covariate + self.abrupt + self.gradual

    def phase(self, index: int) -> str:
        edges = np.cumsum([self.stable, self.covariate, self.abrupt, self.gradual])
        for name, edge in zip(PHASES, edges, strict=True):
            if index < edge:
                return name
        raise IndexError(f"batch {index} is past the end of the stream ({self.n_batches} batches)")

    def phase_start(self, name: str) -> int:
        return [0, self.stable, self.stable + self.covariate, self.stable + self.covariate + self.abrupt][
            PHASES.index(name)
        ]

    def batch(self, index: int) -> pd.DataFrame:
        """Features as served, and the true label (``label``)."""
        phase = self.phase(index)
        rng = np.random.default_rng([self.seed, index])
        n = self.batch_size
        shifted = phase != "stable"
        x1 = rng.normal(1.0 if shifted else 0.0, 1.0, n)
        x2 = rng.normal(0.0, 1.0, n)
        x3 = rng.normal(0.0, 2.0 if phase in ("abrupt", "gradual") else 1.0, n)
        probs = [0.2, 0.3, 0.5] if shifted else [0.4, 0.3, 0.3]
        region = rng.choice(np.array(["a", "b", "c"]), size=n, p=probs)
        if phase in ("stable", "covariate"):
            score = x1 + x2 + 0.5 * (region == "a")
        elif phase == "abrupt":
            score = x1 - x2
        else:
            turn = (index - self.phase_start("gradual") + 1) / self.gradual
            score = x1 - x2 + 1.5 * turn * x3
        label = (score > 0).astype(int)
        flip = rng.random(n) < LABEL_NOISE
        label = np.where(flip, 1 - label, label)
        return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "region": region, "label": label})

    def offline(self, index: int) -> pd.DataFrame:
        """The batch as the offline (warehouse) pipeline records it."""
        frame = self.batch(index)
        if self.offline_fault_from is not None and index >= self.offline_fault_from:
            frame = frame.assign(x1=-frame["x1"])
        return frame
