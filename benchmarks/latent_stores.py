"""Synthetic latent trajectories into stores: ``sample_to_stores`` end to end vs the sampling alone.

One process, side by side, for a 2-D MDN (8 components, 100-100 hidden; random
weights with constant mean and width outputs so that the walk stays finite: the
cost does not depend on the weights), ``--walkers`` walkers x ``--steps`` steps
in chunks of ``--chunk-steps``, 1 torch thread:

* ``propagate`` alone (latent steps/s): the ceiling;
* ``sample_to_stores`` end to end (store creation and commits included), with the
  writing beside the sampling (the default) and between chunks (``overlap=False``);
* the parts of the store I/O alone: ``MultiStoreWriter`` creation and one commit
  of a chunk for all walkers, vs one ``StoreWriter`` per walker (the writer
  ``sample_to_stores`` used before; per store, measured on ``--per-store`` stores);
* with ``--baseline``: that per-store writer end to end (4 threads committing
  while the next chunk is drawn, as before), for the before/after ratio.

Stores go to fresh directories under ``--dir`` (default: the system temporary
directory), all removed at the end: deleting tens of thousands of files slows
the file system for seconds afterwards, which would be charged to the next timing.

    OMP_NUM_THREADS=1 python benchmarks/latent_stores.py [--walkers 1000] [--steps 20000] [--baseline]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _model(d: int = 2):
    import torch

    from lss_engine.models import MDNPropagator

    torch.manual_seed(d)
    model = MDNPropagator(d, 8, hidden=(100, 100)).fit_normalization(np.random.default_rng(0).standard_normal((1000, d)))
    with torch.no_grad():  # the components' means and widths: constant, small
        model.net[-1].weight[8:] = 0.0
        model.net[-1].bias[8:] *= 0.1
    return model.eval()


def per_store_baseline(model, n_steps: int, n_walkers: int, out_dir: Path, chunk_steps: int) -> None:
    """The writer ``sample_to_stores`` used before: one ``StoreWriter`` per walker, created and
    committed by 4 threads, each chunk written while the next one is drawn."""
    from lss_engine.store import DEFAULT_CHUNK_BYTES, FeatureBlock, StoreWriter

    chunk_bytes = int(min(DEFAULT_CHUNK_BYTES, max(16 * 1024, 256 * 1024**2 // (3 * n_walkers))))
    block = FeatureBlock("latent", ["psi1", "psi2"], ["1", "1"])
    paths = [out_dir / f"walker_{w:03d}.zarr" for w in range(n_walkers)]
    groups = [g.tolist() for g in np.array_split(np.arange(n_walkers), 4)]
    sampler = model.sampler(np.zeros(2), n_walkers=n_walkers, seed=0, threads=1)
    with ThreadPoolExecutor(4) as pool:
        writers = list(pool.map(lambda p: StoreWriter.create(p, timestep_ps=1.0, report_interval=1, temperature_K=None,
                                                             observables=[block], chunk_bytes=chunk_bytes), paths))

        def write(first, frames, walkers):
            steps = np.arange(first, first + len(frames))
            for w in walkers:
                writers[w].append(steps, steps * 1.0, features={"latent": frames[:, w]})
                writers[w].commit()

        write(0, sampler.state()[None], range(n_walkers))
        pending, done, k = [], 0, 0
        buffers = [np.empty((chunk_steps, n_walkers, 2), dtype=np.float32) for _ in range(2)]
        while done < n_steps:
            n = min(chunk_steps, n_steps - done)
            frames = sampler.run(n, out=buffers[k % 2][:n])
            for f in pending:
                f.result()
            pending = [pool.submit(write, done + 1, frames, g) for g in groups]
            done, k = done + n, k + 1
        for f in pending:
            f.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--chunk-steps", type=int, default=10_000)
    parser.add_argument("--per-store", type=int, default=100, help="stores for the per-store writer's parts")
    parser.add_argument("--repeats", type=int, default=2, help="end-to-end timings per mode (best kept)")
    parser.add_argument("--baseline", action="store_true", help="also time the per-store writer end to end")
    parser.add_argument("--dir", default=None, help="where the stores go (default: the system temporary directory)")
    args = parser.parse_args()

    import torch

    from lss_engine.latent_sampling import sample_to_stores
    from lss_engine.store import FeatureBlock, MultiStoreWriter, StoreWriter

    w, s = args.walkers, args.steps
    work = Path(tempfile.mkdtemp(prefix=".lss-bench-", dir=args.dir))
    model = _model()
    model.propagate(np.zeros(2), 50, n_walkers=w, seed=0, threads=1)  # warm-up

    def timed(name: str, fn, units: float, repeats: int = 1) -> float:
        best = float("inf")
        for r in range(repeats):
            target = work / f"{name.replace(' ', '_')}_{r}"
            t0 = time.perf_counter()
            fn(target)
            best = min(best, time.perf_counter() - t0)
        print(f"  {name:<52}{best:>8.2f} s{units / best:>14,.0f} /s   (load {os.getloadavg()[0]:.1f})", flush=True)
        return units / best

    try:
        print(f"torch {torch.__version__}, 1 torch thread, {os.cpu_count()} cores; {w} walkers x {s} steps, "
              f"chunks of {args.chunk_steps}; stores in {work}")
        print("store I/O alone, seconds for all walkers (per-store writer: scaled from --per-store stores):")
        block = FeatureBlock("latent", ["psi1", "psi2"], ["1", "1"])
        c = min(args.chunk_steps + 1, s + 1)
        frames = np.cumsum(np.random.default_rng(0).standard_normal((c, w, 2)).astype(np.float32), axis=0)
        steps = np.arange(c)
        for threads in (1, 2):
            target = work / f"multi{threads}"
            t0 = time.perf_counter()
            multi = MultiStoreWriter.create([target / f"walker_{i:03d}.zarr" for i in range(w)], timestep_ps=1.0,
                                            report_interval=1, temperature_K=None, observables=[block],
                                            chunk_frames=c, threads=threads)
            t_create = time.perf_counter() - t0
            multi.append(steps, steps * 1.0, features={"latent": frames})
            t0 = time.perf_counter()
            multi.commit()
            t_commit = time.perf_counter() - t0
            multi.close()
            print(f"  MultiStoreWriter, {threads} thread{'s' * (threads > 1)}: create {t_create:6.2f} s, "
                  f"commit of {c} frames {t_commit:6.2f} s")
        n = min(args.per_store, w)
        target = work / "single"
        t0 = time.perf_counter()
        singles = [StoreWriter.create(target / f"walker_{i:03d}.zarr", timestep_ps=1.0, report_interval=1,
                                      temperature_K=None, observables=[block]) for i in range(n)]
        t_create = (time.perf_counter() - t0) * w / n
        t0 = time.perf_counter()
        for i, writer in enumerate(singles):
            writer.append(steps, steps * 1.0, features={"latent": frames[:, i]})
            writer.commit()
        t_commit = (time.perf_counter() - t0) * w / n
        print(f"  StoreWriter per walker, 1 thread:  create {t_create:6.2f} s, commit of {c} frames {t_commit:6.2f} s")

        print("latent steps per second (walkers x steps):")
        alone = timed("propagate alone", lambda _: model.propagate(np.zeros(2), s, n_walkers=w, seed=1, threads=1),
                      s * w, args.repeats)
        ends = {}
        for overlap in (True, False):
            name = f"sample_to_stores, {'writing beside sampling' if overlap else 'writing between chunks'}"
            ends[overlap] = timed(name, lambda t, o=overlap: sample_to_stores(
                model, np.zeros(2), s, w, out_dir=t, frame_interval_ps=1.0, seed=0, chunk_steps=args.chunk_steps,
                progress=False, overlap=o), s * w, args.repeats)
        if args.baseline:
            before = timed("per-store StoreWriter (before)", lambda t: per_store_baseline(model, s, w, t, args.chunk_steps),
                           s * w)

        print(f"\nend to end / propagate alone: beside {ends[True] / alone:.2f}, between {ends[False] / alone:.2f}"
              + (f"; vs the per-store writer: x{ends[True] / before:.1f}" if args.baseline else ""))
        print(f"sample_to_stores (default: writing beside sampling) target >= 1e6 latent steps/s: "
              f"{'PASS' if ends[True] >= 1e6 else 'FAIL'} ({ends[True]:.3g})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
