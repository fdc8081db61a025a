r"""Long synthetic latent trajectories, streamed to stores chunk by chunk.

:func:`sample_to_stores` advances many walkers of a propagator (an
:class:`~lss_engine.models.MDNPropagator`, or anything with a compatible
``sampler()``) and writes each walker to its own observables-only trajectory
store::

    out_dir/walker_000.zarr   observables/latent/{value (F, D), step, time}
    out_dir/walker_001.zarr
    ...

Frame ``i`` of every store is the walkers' state after ``i`` propagator steps
(frame 0: the start), at time ``i * frame_interval_ps`` ps.  Steps are drawn
``chunk_steps`` at a time and every store is committed after each chunk, so
memory is bounded by the chunk whatever the length, and a reader (or a killed
run) sees whole chunks only.  A chunk continues from the last state with the
same random stream, so the stores hold exactly the trajectories of one long
``propagator.propagate(start, n_steps, n_walkers=..., seed=seed)``.  The stores
of a chunk are committed by a few threads while the next chunk is drawn.  Read
them back with ``lss_engine.store.open_stores(out_dir)``.
"""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import LssError
from .store import DEFAULT_CHUNK_BYTES, FeatureBlock, StoreWriter, open_store

__all__ = ["sample_to_stores", "OBSERVABLE"]

#: name of the observable the latent coordinates are stored under
OBSERVABLE = "latent"
#: total bytes of the in-memory chunk buffers of all open stores (3 arrays per walker)
_WRITER_BUFFER_BUDGET = 256 * 1024**2
_MIN_CHUNK_BYTES = 16 * 1024
#: threads committing stores (zarr's I/O of different stores overlaps)
_WRITE_THREADS = 4


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LssError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sample_to_stores(
    propagator: Any,
    start: Any,
    n_steps: int,
    n_walkers: int,
    *,
    out_dir: str | os.PathLike,
    frame_interval_ps: float,
    names: Sequence[str] | None = None,
    seed: int | None = None,
    chunk_steps: int = 10_000,
    progress: bool = True,
    device: str | None = None,
    threads: int | None = 1,
    overwrite: bool = False,
) -> list[Path]:
    r"""Propagate ``n_walkers`` walkers for ``n_steps`` steps into one store per walker.

    Parameters
    ----------
    propagator
        A trained :class:`~lss_engine.models.MDNPropagator` (anything with
        ``n_dim`` and ``sampler(start, n_walkers=, seed=, device=)``).
    start
        ``(D,)`` start of every walker or ``(n_walkers, D)``.
    n_steps
        Propagator steps per walker; each store gets ``n_steps + 1`` frames.
    n_walkers
        Walkers (stores ``walker_000.zarr`` ...).
    out_dir
        Directory of the stores (created if needed).
    frame_interval_ps
        Time between frames, the propagator's lag :math:`\tau` in ps; stored as
        ``timestep_ps`` with ``report_interval`` 1.
    names
        Names of the D latent coordinates (default ``psi1``, ``psi2``, ...).
    seed
        Seed of the walkers' random stream (see
        :meth:`~lss_engine.models.MDNPropagator.propagate`).
    chunk_steps
        Steps drawn between commits.  Memory: three ``(chunk_steps, n_walkers, D)``
        arrays (the chunk being drawn, on the device and on the host, and the
        previous chunk being written) plus the stores' chunk buffers (at most
        256 MiB in all).
    progress
        A tqdm bar counting latent steps (walkers × steps) per second.
    device
        ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ...
    threads
        torch threads of the sampling loop on the CPU (see
        :meth:`~lss_engine.models.MDNPropagator.propagate`; the default 1 leaves
        the other cores to the threads that write the stores).
    overwrite
        Replace the walker stores of an earlier run in ``out_dir`` (all
        ``walker_*.zarr``, so that none is left over; only lss_engine stores
        are removed).

    Returns
    -------
    list of pathlib.Path
        The stores, in walker order.

    Raises
    ------
    LssError
        Bad arguments, or a walker store that exists already (without ``overwrite``).
    """
    n_steps = _positive_int(n_steps, "n_steps", minimum=0)
    n_walkers = _positive_int(n_walkers, "n_walkers")
    chunk_steps = _positive_int(chunk_steps, "chunk_steps")
    interval = float(frame_interval_ps)
    if not (np.isfinite(interval) and interval > 0):
        raise LssError(f"frame_interval_ps must be a positive number, got {frame_interval_ps!r}")
    n_dim = int(propagator.n_dim)
    names = [f"psi{i + 1}" for i in range(n_dim)] if names is None else [str(n) for n in names]
    if len(names) != n_dim:
        raise LssError(f"{len(names)} names for {n_dim} latent coordinates")
    sampler = propagator.sampler(start, n_walkers=n_walkers, seed=seed, device=device, threads=threads)
    if sampler.n_walkers != n_walkers:  # pragma: no cover - the sampler checks it
        raise LssError(f"start has {sampler.n_walkers} walkers, n_walkers={n_walkers}")
    out_dir = Path(out_dir)
    paths = [out_dir / f"walker_{w:03d}.zarr" for w in range(n_walkers)]
    # open_stores(out_dir) reads every store there: no walker of an earlier run may remain
    existing = sorted(set(out_dir.glob("walker_*.zarr")) | {p for p in paths if p.exists()})
    if existing and not overwrite:
        raise LssError(f"{existing[0]} exists already ({len(existing)} walker stores in {out_dir}); pass "
                       "overwrite=True or choose another out_dir")
    for path in existing:
        if path not in paths:
            open_store(path)  # raises unless it is an lss_engine store: never delete anything else
            shutil.rmtree(path)

    # each open writer buffers one chunk of each of its 3 arrays: bound the total
    chunk_bytes = int(min(DEFAULT_CHUNK_BYTES, max(_MIN_CHUNK_BYTES, _WRITER_BUFFER_BUDGET // (3 * n_walkers))))
    block = FeatureBlock(OBSERVABLE, names, ["1"] * n_dim)
    # stores are created and committed by a few threads (zarr's I/O of different stores
    # overlaps); a chunk is written while the next one is drawn
    n_threads = min(_WRITE_THREADS, n_walkers)
    groups = [g.tolist() for g in np.array_split(np.arange(n_walkers), n_threads)]
    pool = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="lss-store")

    def create(path: Path) -> StoreWriter:
        return StoreWriter.create(path, timestep_ps=interval, report_interval=1, temperature_K=None,
                                  observables=[block], chunk_bytes=chunk_bytes, overwrite=overwrite)

    try:
        writers = list(pool.map(create, paths))
    except BaseException:
        pool.shutdown(wait=True)
        raise

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps * n_walkers, unit="step", unit_scale=True, desc="latent sampling",
                   dynamic_ncols=True)

    def write(first_step: int, frames: np.ndarray, walkers: Sequence[int]) -> None:
        steps = np.arange(first_step, first_step + len(frames), dtype=np.int64)
        times = steps * interval
        for w in walkers:
            writers[w].append(steps, times, features={OBSERVABLE: frames[:, w, :]})
            writers[w].commit()

    pending: list[Future] = []

    def finish() -> None:
        try:
            for future in pending:
                future.result()
        finally:
            pending.clear()

    try:
        write(0, sampler.state()[None], range(n_walkers))
        done = 0
        size = min(chunk_steps, max(n_steps, 1))
        buffers = [np.empty((size, n_walkers, n_dim), dtype=sampler.numpy_dtype) for _ in range(2)]
        sample_seconds = 0.0
        chunk = 0
        while done < n_steps:
            n = min(chunk_steps, n_steps - done)
            t = time.perf_counter()
            frames = sampler.run(n, out=buffers[chunk % 2][:n])  # the other buffer may still be written
            sample_seconds += time.perf_counter() - t
            finish()  # the previous chunk is committed in every store
            if bar is not None and chunk:
                bar.update(previous * n_walkers)
            pending.extend(pool.submit(write, done + 1, frames, g) for g in groups)
            previous = n
            done += n
            chunk += 1
            if bar is not None:
                bar.set_postfix_str(f"sampling {done * n_walkers / max(sample_seconds, 1e-9):.3g} step/s",
                                    refresh=False)
        finish()
        if bar is not None and chunk:
            bar.update(previous * n_walkers)
    finally:
        try:
            finish()
        finally:
            pool.shutdown(wait=True)
            if bar is not None:
                bar.close()
    return paths
