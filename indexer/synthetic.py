"""Synthetic ALS-like factors for benchmarks and tests, where no trained model is at hand."""

from __future__ import annotations

import numpy as np


def als_like(n_items: int, n_users: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item and user factors sharing one latent space: clustered directions with a few popular clusters,
    per-dimension variance decaying like ALS's leading factors, and lognormal item norms (an item's norm grows
    with its popularity), the structure that breaks naive IVF under inner product."""
    rng = np.random.default_rng(seed)
    clusters = max(8, int(np.sqrt(n_items)))
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(dim))).astype(np.float32)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32) * spectrum
    weights = 1.0 / (np.arange(clusters) + 10.0)
    weights /= weights.sum()

    def draw(n: int, norm_sigma: float) -> np.ndarray:
        x = centers[rng.choice(clusters, size=n, p=weights)]
        x += 0.5 * rng.standard_normal((n, dim), dtype=np.float32) * spectrum
        x *= (rng.lognormal(0.0, norm_sigma, n) / np.linalg.norm(x, axis=1)).astype(np.float32)[:, None]
        return x

    return draw(n_items, 0.5), draw(n_users, 0.25)
