"""Where generated outputs go: the one overwrite rule and the one writer of walker stores.

Every job that writes trajectories of many walkers (latent trajectories of an
MDN, label trajectories of an LSTM, decoded positions and latents of a latent
space simulator) writes them with :func:`write_walkers`, on top of
:class:`~lss_engine.store.MultiStoreWriter`; every output path is claimed with
:func:`claim_outputs` first:

* an existing output is refused (:class:`~lss_engine.errors.OutputExistsError`,
  whose message names the paths only) unless ``overwrite`` is asked for;
* with ``overwrite``, an existing store output is replaced only if it is an
  lss_engine store, and a trajectory-file output only if it is a file: never
  an arbitrary directory;
* a directory of walker stores is one output: with ``overwrite``, walker
  stores of an earlier run left in it (``walker_*.zarr`` beyond the new
  walkers) are removed too, so that ``open_stores(directory)`` reads this run
  only.

Walker output names (:func:`walker_paths`): ``out`` with a suffix
(``synth.zarr``, ``synth.dcd``) names the output of one walker,
``synth_0.zarr``, ``synth_1.zarr``, ... of several; a directory ``out`` holds
``walker_000.zarr``, ``walker_001.zarr``, ...
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ._helpers import usable_cores
from .errors import LssError, OutputExistsError, StoreError

__all__ = ["WalkerFrames", "claim_outputs", "walker_paths", "write_walkers"]

#: most threads writing walker stores (one per core, less one core for the producer when it runs beside)
_MAX_WRITE_THREADS = 4
#: names of the walker stores of a directory output
_WALKER_GLOB = "walker_*.zarr"


@dataclass
class WalkerFrames:
    """Frames of every walker at the same steps: data with the walker axis second.

    ``steps``, ``times_ps``: ``(n,)``; ``positions``: ``(n, n_walkers, n_atoms, 3)`` nm;
    ``features``: ``{observable: (n, n_walkers, n_columns)}``; ``box_vectors``:
    ``(n, n_walkers, 3, 3)`` nm.  :func:`write_walkers` copies the arrays, so a
    producer may reuse its buffers for the next chunk.
    """

    steps: np.ndarray
    times_ps: np.ndarray
    positions: np.ndarray | None = None
    features: Mapping[str, np.ndarray] | None = None
    box_vectors: np.ndarray | None = None


def _is_directory_output(out: Path, directory: bool | None) -> bool:
    return out.suffix == "" if directory is None else bool(directory)


def walker_paths(out: str | os.PathLike, n_walkers: int, *, directory: bool | None = None) -> list[Path]:
    """The output of each walker.

    A file or store ``out`` (``synth.zarr``, ``synth.dcd``): itself for one
    walker, ``synth_0.zarr``, ``synth_1.zarr``, ... for several.  A directory
    ``out`` (``directory=True``; by default a path without a suffix): walker
    stores ``out/walker_000.zarr``, ``out/walker_001.zarr``, ...
    """
    out = Path(out)
    n_walkers = int(n_walkers)
    if n_walkers < 1:
        raise LssError(f"n_walkers must be at least 1, got {n_walkers}")
    if _is_directory_output(out, directory):
        return [out / f"walker_{w:03d}.zarr" for w in range(n_walkers)]
    if n_walkers == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{w}{out.suffix}") for w in range(n_walkers)]


def _is_store_path(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or path.is_dir()


def claim_outputs(paths: Sequence[str | os.PathLike], *, overwrite: bool = False,
                  directory: str | os.PathLike | None = None) -> list[Path]:
    """Apply the overwrite rule to the outputs ``paths`` (and the walker stores of ``directory``).

    Nothing is removed here (except, with ``overwrite``, walker stores in
    ``directory`` that are not among ``paths``, once every existing output has
    passed the checks); the writers replace the other outputs.  Returns the
    existing outputs that are replaced.

    Raises
    ------
    OutputExistsError
        If an output exists and ``overwrite`` is false.
    StoreError
        With ``overwrite``, if an existing store output is not an lss_engine
        store, or a file output is a directory.
    """
    from .store import TrajectoryStore

    paths = [Path(p) for p in paths]
    existing = [p for p in paths if os.path.lexists(p)]
    leftovers: list[Path] = []
    if directory is not None:
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise LssError(f"{directory} is not a directory")
        wanted = {p.resolve() for p in paths}
        leftovers = sorted(p for p in directory.glob(_WALKER_GLOB) if p.resolve() not in wanted)
    existing += leftovers
    if not existing:
        return []
    if not overwrite:
        raise OutputExistsError(existing)
    for path in existing:
        if _is_store_path(path):
            try:
                TrajectoryStore(path)
            except StoreError as exc:
                raise StoreError(f"refusing to overwrite {path}: {exc}") from None
        elif not path.is_file():
            raise StoreError(f"refusing to overwrite {path}: it is not a file")
    for path in leftovers:
        shutil.rmtree(path)
    return existing


def write_walkers(
    out: str | os.PathLike | Sequence[str | os.PathLike],
    n_walkers: int,
    layout: Mapping[str, Any],
    frames: Iterable[WalkerFrames],
    *,
    overwrite: bool = False,
    directory: bool | None = None,
    n_frames: int | None = None,
    overlap: bool = False,
    threads: int | None = None,
    on_commit: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write ``n_walkers`` walker stores of one layout from chunks of frames; returns their paths.

    Parameters
    ----------
    out
        A path (see :func:`walker_paths`: a ``.zarr`` path or a
        directory of walker stores) or the list of the ``n_walkers`` store paths.
    layout
        Keyword arguments of :meth:`~lss_engine.store.StoreWriter.create`
        (``timestep_ps``, ``report_interval``, ``temperature_K``,
        ``observables``, ``topology``, ``chunk_frames``, ...).
    frames
        :class:`WalkerFrames` chunks, drawn one at a time; every chunk is
        appended to every store and committed, so a reader (or a killed run)
        sees whole chunks only.
    overwrite
        The overwrite rule of :func:`claim_outputs`, applied before the first
        chunk is drawn.
    directory
        Whether a path ``out`` is a directory of walker stores (default: when
        it has no suffix).
    n_frames
        The total number of frames, when known: the stores are created at
        that length (commits need not grow them) and the last commit gets
        every writing thread.
    overlap
        Create the stores while the first chunk is drawn and write each chunk
        while the next one is drawn (on one background thread), instead of in
        between.
    threads
        Threads writing the stores (default: one per core up to 4, less the
        producer's core while it runs beside).
    on_commit
        Called with the last step of each chunk once the chunk is in every store.

    Raises
    ------
    OutputExistsError, StoreError
        See :func:`claim_outputs`; and whatever the producer of ``frames`` raises.
    """
    from .store import MultiStoreWriter

    if isinstance(out, (str, os.PathLike)):
        paths = walker_paths(out, n_walkers, directory=directory)
        folder = Path(out) if _is_directory_output(Path(out), directory) else None
    else:
        paths, folder = [Path(p) for p in out], None
        if len(paths) != int(n_walkers):
            raise LssError(f"{len(paths)} store paths for {n_walkers} walkers")
    claim_outputs(paths, overwrite=overwrite, directory=folder)
    layout = dict(layout)
    all_threads = max(1, min(_MAX_WRITE_THREADS, usable_cores())) if threads is None else max(1, int(threads))
    io_threads = max(1, min(all_threads, usable_cores() - 1)) if overlap and threads is None else all_threads
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lss-walker-io")

    def later(fn, *args, **kwargs) -> Future:
        """Run store I/O beside the producer (``overlap``), or now."""
        future = io.submit(fn, *args, **kwargs)
        if not overlap:
            future.exception()  # waits; its error is raised where the result is taken
        return future

    created = later(MultiStoreWriter.create, paths, overwrite=overwrite, threads=io_threads, **layout)
    writer: MultiStoreWriter | None = None
    committed: Future | None = None
    last_step = 0
    appended = 0
    try:
        if not overlap:
            created.result()  # a store that cannot be created fails before anything is drawn
        for chunk in frames:
            if writer is None:
                writer = created.result()
            if committed is not None:
                committed.result()  # the previous chunk is in every store
                if on_commit is not None:
                    on_commit(last_step)
            steps = np.asarray(chunk.steps, dtype=np.int64).reshape(-1)
            writer.append(steps, chunk.times_ps, positions=chunk.positions, features=dict(chunk.features or {}),
                          box_vectors=chunk.box_vectors)  # copied: the producer's buffers are free
            appended += len(steps)
            final = n_frames is not None and appended >= n_frames
            committed = later(writer.commit, all_threads if final else io_threads)
            last_step = int(steps[-1]) if len(steps) else last_step
        if writer is None:
            writer = created.result()
        if committed is not None:
            committed.result()
            if on_commit is not None:
                on_commit(last_step)
    finally:
        io.shutdown(wait=True)
        if writer is None and created.done() and created.exception() is None:
            writer = created.result()
        if writer is not None:
            writer.close()
    return paths
