"""Explanation shares recomputed from a micro-batch's solve inputs, to check what serving reports."""

from __future__ import annotations

import numpy as np

from models.recs.solve import contributions, stacked_systems


def shares_of(systems, n: int, targets: np.ndarray) -> np.ndarray:
    """Per target vector, its score split over placed user `n`'s known videos (solve.contributions), from
    the solve's inputs kept in `systems` (models/recs/als.py `_Systems`): their A, and v_j max(c_j, 0)."""
    a = stacked_systems(systems.v, systems.scaled, systems.bounds, systems.base)[0][n]
    lo, hi = systems.bounds[n], systems.bounds[n + 1]
    weighted = (systems.v[lo:hi] * np.maximum(systems.scaled[lo:hi], 0.0)[:, None]).astype(np.float32)
    return contributions(a, weighted, targets)
