"""k-means clustering of (low-dimensional) coordinates into microstates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class KMeans:
    """Cluster centres ``(k, d)``; :meth:`assign` labels frames by the nearest centre."""

    centers: np.ndarray

    def assign(self, x: np.ndarray) -> np.ndarray:
        """Index of the nearest centre for each row of ``x`` ``(n, d)``, in chunks."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        c = self.centers
        c2 = (c * c).sum(1)
        out = np.empty(len(x), dtype=np.int64)
        for start in range(0, len(x), 65536):
            xs = x[start : start + 65536]
            out[start : start + len(xs)] = np.argmin(c2[None, :] - 2.0 * xs @ c.T, axis=1)
        return out


def kmeans(trajs: np.ndarray | Sequence[np.ndarray], n_clusters: int, *, seed: int = 0,
           max_iter: int = 100, max_samples: int = 100_000, tol: float = 1e-8) -> KMeans:
    r"""Lloyd's k-means with k-means++ seeding (deterministic for a seed).

    Minimises :math:`\sum_i \min_j \lVert x_i - c_j\rVert^2` over a random
    subsample of at most ``max_samples`` frames pooled from all trajectories;
    the result labels any frames with :meth:`KMeans.assign`.
    """
    data = np.concatenate([np.asarray(t, dtype=np.float64).reshape(len(t), -1)
                           for t in ([trajs] if isinstance(trajs, np.ndarray) else trajs)])
    rng = np.random.default_rng(seed)
    if len(data) > max_samples:
        data = data[rng.choice(len(data), max_samples, replace=False)]
    k = int(min(n_clusters, len(data)))
    centers = [data[rng.integers(len(data))]]
    d2 = ((data - centers[0]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: next centre with probability ∝ squared distance
        total = d2.sum()
        nxt = data[rng.choice(len(data), p=d2 / total)] if total > 0 else data[rng.integers(len(data))]
        centers.append(nxt)
        d2 = np.minimum(d2, ((data - nxt) ** 2).sum(1))
    model = KMeans(np.array(centers))
    for _ in range(max_iter):
        labels = model.assign(data)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(model.centers)
        np.add.at(sums, labels, data)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], model.centers)
        shift = np.abs(new - model.centers).max()
        model = KMeans(new)
        if shift < tol:
            break
    return model
