r"""Long synthetic latent trajectories, streamed to stores chunk by chunk.

:func:`sample_to_stores` advances many walkers of a propagator (an
:class:`~lss_engine.models.MDNPropagator`, or anything with a compatible
``sampler()``) and writes each walker to its own observables-only trajectory
store::

    out_dir/walker_000.zarr   observables/latent/{value (F, D), step, time}
    out_dir/walker_001.zarr
    ...

Frame ``i`` of every store is the walkers' state after ``i`` propagator steps
(frame 0: the start), at time ``i * frame_interval_ps`` ps.  The frames are
drawn in chunks of about ``chunk_steps`` steps and every store is committed
after each chunk, so memory is bounded by the chunk whatever the length, and a
reader (or a killed run) sees whole chunks only.  A chunk continues from the
last state with the same random stream, so the stores hold exactly the
trajectories of one long ``propagator.propagate(start, n_steps, n_walkers=...,
seed=seed)``.  Read them back with ``lss_engine.store.open_stores(out_dir)``.

The stores are written by :func:`lss_engine.outputs.write_walkers` (the one
writer of walker stores, on a :class:`~lss_engine.store.MultiStoreWriter`:
created once from one layout, each commit's chunks and ``frames_committed``
written directly by a few threads) while the next chunk is drawn.  A store
chunk is one commit's frames, so each chunk file is written once.
``benchmarks/latent_stores.py`` measures it against the sampling alone.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ._helpers import positive_int
from .errors import LssError
from .outputs import WalkerFrames, write_walkers
from .store import DEFAULT_CHUNK_BYTES, FeatureBlock

__all__ = ["sample_to_stores", "OBSERVABLE"]

#: name of the observable the latent coordinates are stored under
OBSERVABLE = "latent"
#: bound on the writer's buffer of the chunk being filled (all walkers) when a chunk spans several
#: commits (commits of less than _MIN_CHUNK_BYTES per array)
_WRITER_BUFFER_BUDGET = 256 * 1024**2
_MIN_CHUNK_BYTES = 16 * 1024


def _commit_plan(frames: int, chunk_steps: int, n_walkers: int, n_dim: int) -> tuple[int, int]:
    """``(frames per commit, frames per store chunk)`` for ``frames`` frames drawn about ``chunk_steps`` at a time.

    The frames are split evenly into ``ceil((frames - 1) / chunk_steps)`` commits
    so that no small remainder costs a commit of its own, and a store chunk is
    one commit's frames: every chunk file is written once, whole.  Chunks are
    kept to at most 1 MiB (a commit then spans several whole chunks) and to at
    least 16 KiB (a chunk then spans several commits and is rewritten whole at
    each, its pending part kept in memory within the writer's buffer budget).
    """
    n_commits = max(1, -(-(frames - 1) // chunk_steps))
    per_commit = -(-frames // n_commits)
    frame_bytes = max(4 * n_dim, 8)  # the widest array of a latent store: value (float32) or step/time (8 B)
    if per_commit * frame_bytes > DEFAULT_CHUNK_BYTES:
        parts = -(-per_commit * frame_bytes // DEFAULT_CHUNK_BYTES)
        chunk = -(-per_commit // parts)
        return chunk * parts, chunk
    grow = -(-_MIN_CHUNK_BYTES // (per_commit * frame_bytes))
    budget = _WRITER_BUFFER_BUDGET // (per_commit * frame_bytes * n_walkers)
    return per_commit, per_commit * max(1, min(grow, budget))


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
    overlap: bool = True,
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
        About the steps drawn between commits: the ``n_steps + 1`` frames are
        split evenly into ``ceil(n_steps / chunk_steps)`` commits (so no small
        remainder costs a commit of its own), and a store chunk holds one
        commit's frames (kept between 16 KiB and 1 MiB).  Memory: about three
        ``(chunk_steps, n_walkers, D)`` arrays (the chunk being drawn, on the
        device and on the host, and the previous chunk being written).
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
        are removed; see :func:`lss_engine.outputs.claim_outputs`).
    overlap
        Create the stores while the first chunk is drawn and write each chunk
        while the next one is drawn (default), or do the writing between chunks
        with every core.  Beside the sampling the writing is hidden when a core
        is free for it; when the cores are busy with other work, the writing
        threads and the sampling loop contend for the GIL and writing in
        between can be faster (``benchmarks/latent_stores.py`` times both).

    Returns
    -------
    list of pathlib.Path
        The stores, in walker order.

    Raises
    ------
    LssError
        Bad arguments.
    OutputExistsError
        A walker store exists already in ``out_dir`` (without ``overwrite``).
    """
    n_steps = positive_int(n_steps, "n_steps", minimum=0)
    n_walkers = positive_int(n_walkers, "n_walkers")
    chunk_steps = positive_int(chunk_steps, "chunk_steps")
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
    frames = n_steps + 1
    # commits split the frames evenly, one store chunk each (the last one possibly partial):
    # a chunk is written once, whole, and never read back or rewritten
    per_commit, chunk_frames = _commit_plan(frames, chunk_steps, n_walkers, n_dim)
    layout = dict(timestep_ps=interval, report_interval=1, temperature_K=None,
                  observables=[FeatureBlock(OBSERVABLE, names, ["1"] * n_dim)], chunk_frames=chunk_frames)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps * n_walkers, unit="step", unit_scale=True, desc="latent sampling",
                   dynamic_ncols=True)

    def draw() -> Iterator[WalkerFrames]:
        """The frames, ``per_commit`` at a time, into one reused buffer."""
        buffer = np.empty((min(per_commit, frames), n_walkers, n_dim), dtype=sampler.numpy_dtype)
        sample_seconds = 0.0
        first = 0  # first frame of the chunk
        while first < frames:
            n = min(per_commit, frames - first)
            out = buffer[:n]
            t = time.perf_counter()
            if first == 0:
                out[0] = sampler.state()
                sampler.run(n - 1, out=out[1:])
            else:
                sampler.run(n, out=out)
            sample_seconds += time.perf_counter() - t
            steps = np.arange(first, first + n, dtype=np.int64)
            yield WalkerFrames(steps, steps * interval, features={OBSERVABLE: out})
            first += n
            if bar is not None:
                bar.set_postfix_str(f"sampling {(first - 1) * n_walkers / max(sample_seconds, 1e-9):.3g} step/s",
                                    refresh=False)

    def committed(last_step: int) -> None:
        if bar is not None:
            bar.update(last_step * n_walkers - bar.n)

    try:
        return write_walkers(out_dir, n_walkers, layout, draw(), overwrite=overwrite, directory=True,
                             n_frames=frames, overlap=overlap, on_commit=committed)
    finally:
        if bar is not None:
            bar.close()
