"""Moderation scores as probabilities: a calibration per language and category.

A category's raw score mixes experts trained on different label definitions (Davidson's "offensive" is any
profanity, OLID's only targeted offense), so a raw 0.9 means different things per language and source.
Platt scaling, a logistic fit on the raw score's logit, maps it to the share of labelled texts that carry
the label among those scoring alike on sources the model never saw (the out-of-distribution folds,
models/text/ood.py). It is strictly increasing: every ranking (AUC) is kept, so thresholds chosen on the
calibrated scale select the same texts a raw threshold would. Two numbers per language and category,
fitted with scipy (already a dependency), applied with numpy at serving time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from models.text.config import CATEGORIES

EPS = 1e-6  # raw scores are clipped to [EPS, 1 - EPS] before the logit: fp16 heads do reach 0 and 1


@dataclass(frozen=True)
class Platt:
    """p = sigmoid(a * logit(raw) + b), a > 0."""

    a: float
    b: float

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        z = logit(np.clip(np.asarray(raw, dtype=np.float64), EPS, 1 - EPS))
        return expit(self.a * z + self.b)


def fit_platt(y: np.ndarray, raw: np.ndarray) -> Platt | None:
    """Maximum likelihood with Platt's smoothed targets ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)), which keep
    a fit on a few rows from claiming certainty. None when one class is absent or the fit is not increasing
    (the score would rank backwards: no calibration is better than that)."""
    from scipy.optimize import minimize  # fitting only: serving needs just the map

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = logit(np.clip(np.asarray(raw, dtype=np.float64), EPS, 1 - EPS))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        t = ab[0] * z + ab[1]
        p = expit(t)
        # cross-entropy against the smoothed targets, in a form that does not overflow for large |t|
        value = float(np.sum(np.logaddexp(0.0, t) - target * t))
        g = p - target
        return value, np.array([float(g @ z), float(g.sum())])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    a, b = (float(v) for v in res.x)
    return Platt(a, b) if res.success and a > 0 else None


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |share of positives - mean probability| over equal-width probability bins, weighted by rows."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        rows = which == k
        if rows.any():
            total += rows.sum() * abs(y[rows].mean() - p[rows].mean())
    return float(total / len(y))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


@dataclass(frozen=True)
class Calibration:
    """Per language, per category: the map from raw to calibrated score; absent pairs stay raw."""

    maps: Mapping[str, Mapping[str, Platt]]

    def apply(self, scores: np.ndarray, langs: Sequence[str]) -> np.ndarray:
        """`scores` [n, len(CATEGORIES)] in CATEGORIES order for texts in `langs`, calibrated (a new array)."""
        out = np.array(scores, dtype=np.float32, copy=True)
        langs_arr = np.asarray(langs)
        for lang, per_category in self.maps.items():
            rows = langs_arr == lang
            if not rows.any():
                continue
            for category, platt in per_category.items():
                col = CATEGORIES.index(category)
                out[rows, col] = platt(out[rows, col])
        return out

    def to_json(self) -> dict[str, dict[str, dict[str, float]]]:
        return {lang: {c: {"a": m.a, "b": m.b} for c, m in cats.items()} for lang, cats in self.maps.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Calibration:
        """Raises ValueError on an unknown category or a map that is not increasing and finite."""
        maps: dict[str, dict[str, Platt]] = {}
        for lang, cats in data.items():
            maps[lang] = {}
            for c, ab in cats.items():
                a, b = float(ab["a"]), float(ab["b"])
                if c not in CATEGORIES or not (np.isfinite(a) and np.isfinite(b) and a > 0):
                    raise ValueError(f"calibration {lang}/{c}: unknown category or not an increasing map ({a}, {b})")
                maps[lang][c] = Platt(a, b)
        return cls(maps)
