"""Where walker tasks run: one thin interface over Dask and over a plain process pool.

The campaign only needs three things from an executor: ``submit(fn, task,
key=..., gpu=...)`` returning a handle, ``as_completed(handles)`` yielding
``(handle, outcome)`` pairs as tasks end, and ``close()``.  An outcome is
``("ok", result)`` or ``("failed", one-line reason)``: a task that raised, a
worker that died (Dask's ``KilledWorker`` after ``allowed-failures``, a broken
process pool) — never an exception in the driver.  The campaign directory,
not the executor, is the record of what is done (:mod:`.driver`).

- :class:`DaskExecutor` — ``dask.distributed``: a ``LocalCluster`` of
  processes (one per usable core, one thread each, ``OMP_NUM_THREADS=1``),
  a running scheduler (``address``), or any cluster object (``SLURMCluster``
  from :mod:`.hpc`).  With GPUs declared, MD tasks ask for
  ``resources={"GPU": 1}``.
- :class:`ProcessPoolExecutor` — ``concurrent.futures`` with spawned
  processes; a dead worker breaks the pool, whose tasks are then reported as
  failed and the pool is rebuilt.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
from typing import Any, Callable, Iterable, Iterator

from .._helpers import first_line, usable_cores

__all__ = ["DaskExecutor", "Executor", "ProcessPoolExecutor", "make_executor"]

_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


class Executor:
    """The interface (see the module docstring)."""

    n_workers: int = 1
    description: str = ""

    def submit(self, fn: Callable[[dict], dict], task: dict, *, key: str, gpu: bool = False) -> Any:
        raise NotImplementedError

    def as_completed(self, handles: Iterable[Any]) -> Iterator[tuple[Any, tuple[str, Any]]]:
        raise NotImplementedError

    def cancel(self, handles: Iterable[Any]) -> None:
        """Forget ``handles`` (a running task may still finish; its output is then ignored)."""

    def close(self) -> None:
        """Release the workers (a cluster this executor started is shut down)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ProcessPoolExecutor(Executor):
    """Tasks in ``workers`` spawned processes (``concurrent.futures``)."""

    def __init__(self, workers: int | None = None):
        self.n_workers = int(workers or usable_cores())
        self.description = f"process pool, {self.n_workers} workers"
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.n_workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(os.getpid(),))

    def submit(self, fn, task, *, key, gpu=False):
        try:
            return self._pool.submit(fn, task)
        except cf.process.BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, task)

    def as_completed(self, handles):
        for future in cf.as_completed(list(handles)):
            try:
                yield future, ("ok", future.result())
            except cf.process.BrokenProcessPool as exc:
                yield future, ("failed", f"worker died ({_reason(exc)})")
            except Exception as exc:  # the task raised: reported, never raised here
                yield future, ("failed", _reason(exc))

    def cancel(self, handles):
        for future in handles:
            future.cancel()

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(driver: int) -> None:
    """Pool worker set-up: one thread, and exit when the driver (pid ``driver``) is gone (no orphan keeps running).

    The driver's pid comes from the driver: a worker whose driver died before this ran (it is
    already an orphan, its parent pid is the reaper's) must not take the reaper for its driver.
    """
    import threading
    import time

    os.environ.update(_THREAD_ENV)
    from .._helpers import configure_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's (see DaskExecutor)
    configure_threads(1)

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="lss-orphan-watch").start()


class DaskExecutor(Executor):
    """Tasks on a Dask cluster.

    Parameters
    ----------
    cluster
        ``None``: start a ``LocalCluster`` of ``workers`` processes (one thread
        each); a string: the address of a running scheduler; otherwise a
        cluster object (e.g. ``SLURMCluster``), used as it is.
    workers
        Local cluster size (default: one per usable core, or per GPU when
        ``gpus`` are declared).
    gpus
        GPUs to declare on a local cluster's workers (one each), so that GPU
        tasks (``submit(..., gpu=True)``) ask for ``resources={"GPU": 1}``.
    """

    def __init__(self, cluster: Any = None, *, workers: int | None = None, gpus: int = 0):
        import dask
        from distributed import Client, LocalCluster

        self._own_cluster = None
        self.gpus = int(gpus)
        if cluster is None:
            n = int(workers or (self.gpus or usable_cores()))
            # Ctrl-C is the driver's: workers start with SIGINT ignored (inherited), so they neither die
            # mid-walker nor print tracebacks; the driver stops, and resume picks up
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                with dask.config.set({"distributed.worker.daemon": False}):  # workers may start processes
                    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None, env=dict(_THREAD_ENV),
                                           resources={"GPU": 1} if self.gpus else None)
            finally:
                signal.signal(signal.SIGINT, previous)
            self._own_cluster = cluster
            self.description = f"Dask LocalCluster, {n} workers × 1 thread"
        elif isinstance(cluster, str):
            self.description = f"Dask scheduler {cluster}"
        else:
            self.description = f"Dask {type(cluster).__name__}"
        self.client = Client(cluster, set_as_default=False)
        self.n_workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def submit(self, fn, task, *, key, gpu=False):
        resources = {"GPU": 1} if gpu and self.gpus else None
        return self.client.submit(fn, task, key=key, pure=False, resources=resources)

    def as_completed(self, handles):
        from distributed import as_completed

        for future in as_completed(list(handles), loop=self.client.loop):
            try:
                yield future, ("ok", future.result())
            except Exception as exc:  # a task that raised, or KilledWorker
                yield future, ("failed", _reason(exc))

    def cancel(self, handles):
        self.client.cancel(list(handles))

    def close(self):
        self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()


def make_executor(cluster: Any, *, scheduler: str | None = None) -> Executor:
    """The executor of a campaign's ``[cluster]`` settings (``scheduler`` overrides with an address)."""
    if scheduler:
        return DaskExecutor(scheduler, gpus=cluster.gpus)
    if cluster.kind == "processes":
        return ProcessPoolExecutor(cluster.workers)
    if cluster.kind == "address":
        return DaskExecutor(cluster.address, gpus=cluster.gpus)
    if cluster.kind == "slurm":
        from .hpc import SlurmSettings, slurm_cluster

        slurm = slurm_cluster(SlurmSettings.from_mapping(cluster.slurm))
        # adapt, not scale: workers retire at their --lifetime and a fixed scale() never replaces their jobs
        slurm.adapt(minimum_jobs=cluster.jobs, maximum_jobs=cluster.jobs)
        executor = DaskExecutor(slurm, gpus=cluster.gpus)
        executor._own_cluster = slurm
        return executor
    return DaskExecutor(None, workers=cluster.workers, gpus=cluster.gpus)
