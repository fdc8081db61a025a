"""Throughput of ``TimeLaggedDataset.batches`` against a per-item DataLoader.

Times one shuffled epoch of time-lagged pairs gathered by tensor indexing,
then a plain ``torch.utils.data.DataLoader`` over a ``Dataset`` whose
``__getitem__`` returns one pair (default collate), on the same frames::

    python benchmarks/data_throughput.py --frames 1000000 --features 30 --batch 1000

The per-item loader is slow, so by default it is timed on its first
``--naive-pairs`` pairs only and reported as pairs/s.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lss_engine.data import Normalizer, TimeLaggedDataset


class PerItemPairs(torch.utils.data.Dataset):
    """The naive way: one pair per ``__getitem__``."""

    def __init__(self, frames: torch.Tensor, starts: torch.Tensor, lag: int):
        self.frames, self.starts, self.lag = frames, starts, lag

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = int(self.starts[i])
        return self.frames[s], self.frames[s + self.lag]


def time_batches(data: TimeLaggedDataset, batch: int, seed: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for x0, xt in data.batches(batch, seed=seed):
        n += len(x0)
    return time.perf_counter() - t0, n


def time_per_item(data: TimeLaggedDataset, batch: int, limit: int, seed: int) -> tuple[float, int]:
    naive = PerItemPairs(data.frames, data.pair_indices, data.lag)
    loader = torch.utils.data.DataLoader(
        naive, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    t0 = time.perf_counter()
    n = 0
    for x0, xt in loader:
        n += len(x0)
        if n >= limit:
            break
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames in all")
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--trajectories", type=int, default=4, help="the frames are split into this many")
    parser.add_argument("--lag", type=int, default=10, help="in frames")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--naive-pairs", type=int, default=200_000,
                        help="pairs to time the per-item DataLoader on (0: a whole epoch)")
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed; the median is shown")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    frames = rng.standard_normal((args.frames, args.features), dtype=np.float32)
    trajectories = np.array_split(frames, args.trajectories)

    t0 = time.perf_counter()
    data = TimeLaggedDataset(trajectories, args.lag)
    t_load = time.perf_counter() - t0
    print(f"{data}; torch threads {torch.get_num_threads()}")
    print(f"load:                   {t_load:8.3f} s")

    time_batches(data, args.batch, args.seed)  # warm-up
    runs = [time_batches(data, args.batch, args.seed + 1 + r) for r in range(args.repeats)]
    t_fast, n_fast = sorted(runs)[len(runs) // 2]
    fast = n_fast / t_fast
    print(f"batches():              {t_fast:8.3f} s for {n_fast} pairs = {fast:12,.0f} pairs/s "
          f"(median of {args.repeats} epochs)")

    norm = Normalizer().fit(data)
    normed = data.with_normalizer(norm)
    runs = [time_batches(normed, args.batch, args.seed + 1 + r) for r in range(args.repeats)]
    t_norm, n_norm = sorted(runs)[len(runs) // 2]
    print(f"batches(), normalised:  {t_norm:8.3f} s for {n_norm} pairs = {n_norm / t_norm:12,.0f} pairs/s")

    limit = args.naive_pairs or len(data)
    t_slow, n_slow = time_per_item(data, args.batch, limit, args.seed)
    slow = n_slow / t_slow
    print(f"per-item DataLoader:    {t_slow:8.3f} s for {n_slow} pairs = {slow:12,.0f} pairs/s")
    print(f"speed-up:               {fast / slow:8.1f} x")


if __name__ == "__main__":
    main()
