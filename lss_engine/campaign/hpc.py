"""Dask workers on a SLURM cluster: :class:`SlurmSettings` and a ``dask_jobqueue.SLURMCluster`` built from them.

A campaign's ``[cluster]`` table with ``kind = "slurm"`` keeps these settings
in its ``[cluster.slurm]`` sub-table (see ``docs/hpc.md``)::

    [cluster.slurm]
    partition = "gpu"
    account = "my-project"
    walltime = "04:00:00"
    cores = 4
    processes = 1
    memory = "16GB"
    gpus = 1
    job_script_prologue = ["module load cuda/12.4", "source ~/venvs/lss/bin/activate"]

Every SLURM job starts ``processes`` Dask workers with one thread each (one
task at a time per worker: an MD walker or a training run owns its worker).
The job books ``cores`` CPUs, so each task gets ``cores // processes`` CPUs,
which the job script hands to OpenMP, MKL, OpenBLAS and OpenMM's CPU platform
through environment variables.  GPU jobs add ``#SBATCH --gres=gpu:N`` and
advertise the Dask worker resource ``GPU=N``, so that a task submitted with
``resources={"GPU": 1}`` runs only on GPU workers.  Workers retire themselves
(``--lifetime``) a few minutes before the job's walltime: their tasks are
rescheduled on other workers instead of being lost when SLURM kills the job.

``dask-jobqueue`` is an optional dependency (``pip install lss_engine[hpc]``)
and is imported only when a cluster is built or a job script rendered.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import LssError

__all__ = ["PLACEHOLDER_SCHEDULER", "SlurmSettings", "render_job_script", "slurm_cluster"]

#: The scheduler address written into a job script rendered without a cluster
#: (the one ``SLURMCluster.job_script()`` shows before its scheduler has started).
PLACEHOLDER_SCHEDULER = "tcp://<insert-scheduler-address-here>:8786"

#: Environment variables that size the thread pools of the libraries a task uses.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENMM_CPU_THREADS")

_WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")
#: Most that a derived lifetime stops before the walltime (seconds).
_MAX_MARGIN_S = 300


def _parse_walltime(value: str, what: str) -> int:
    """Seconds in an ``HH:MM:SS`` walltime (hours may exceed 23), else a one-line :class:`LssError`."""
    match = _WALLTIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise LssError(f"{what} must be a walltime HH:MM:SS (like \"02:00:00\"), got {value!r}")
    h, m, s = (int(x) for x in match.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds < 60:
        raise LssError(f"{what} must be at least one minute, got {value!r}")
    return seconds


def _parse_duration(value: str, what: str) -> int:
    """Seconds in a Dask duration string (``"55m"``, ``"3300s"``, ``"1h"``), else a one-line :class:`LssError`."""
    from dask.utils import parse_timedelta

    if not isinstance(value, str) or not value.strip():
        raise LssError(f"{what} must be a duration like \"55m\" or \"3300s\", got {value!r}")
    try:
        seconds = parse_timedelta(value.strip(), default="seconds")
    except (ValueError, KeyError, TypeError):
        raise LssError(f"{what} must be a duration like \"55m\" or \"3300s\", got {value!r}") from None
    if seconds is None or seconds < 0:
        raise LssError(f"{what} must be a non-negative duration, got {value!r}")
    return int(seconds)


def _format_duration(seconds: int) -> str:
    """``seconds`` as a Dask duration: whole minutes as ``"55m"``, otherwise ``"3290s"``."""
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _parse_memory(value: str, what: str) -> int:
    """Bytes in a memory string (``"16GB"``, ``"4 GiB"``), else a one-line :class:`LssError`."""
    from dask.utils import parse_bytes

    if not isinstance(value, str) or not value.strip():
        raise LssError(f"{what} must be a memory size like \"16GB\", got {value!r}")
    try:
        n = parse_bytes(value)
    except (ValueError, KeyError, TypeError):
        raise LssError(f"{what} must be a memory size like \"16GB\", got {value!r}") from None
    if n < 2**20:
        raise LssError(f"{what} must be at least 1MiB, got {value!r}")
    return n


def _one_line(value: Any) -> str:
    return " ".join(repr(value).split())


@dataclass
class SlurmSettings:
    """How each SLURM job that hosts Dask workers is shaped.

    All fields are plain JSON/TOML values (``None`` fields are left out by
    :meth:`to_mapping`); :meth:`from_mapping` checks a parsed table.

    Attributes
    ----------
    partition : str or None
        SLURM partition (``#SBATCH -p``; dask-jobqueue's ``queue``).  ``None``:
        the site's default partition.
    account : str or None
        Account charged for the jobs (``#SBATCH -A``).
    walltime : str
        Time limit of each job, ``HH:MM:SS`` (``#SBATCH -t``).
    cores : int
        CPUs booked per job (``#SBATCH --cpus-per-task``); a multiple of
        ``processes``.  Each worker's task gets ``cores // processes`` of them.
    processes : int
        Dask workers per job, one thread each.
    memory : str
        Memory per job (``#SBATCH --mem``), shared equally by its workers as
        their ``--memory-limit``.
    gpus : int
        GPUs per job; 0 for CPU-only jobs.  With ``gpus > 0`` the job asks for
        them with ``gpu_directive`` and every worker advertises the resource
        ``GPU=gpus``.  ``gpus > 1`` needs ``processes = 1`` (workers of one job
        would otherwise all pick the job's first device).
    gpu_directive : str
        The ``#SBATCH`` option that books the GPUs, ``{gpus}`` standing for
        the count; ``"--gres=gpu:{gpus}"`` by default (a site with typed GRES
        may need e.g. ``"--gres=gpu:a100:{gpus}"``, another ``"--gpus={gpus}"``).
    job_name : str
        SLURM job name (``#SBATCH -J``).
    job_extra_directives : list of str
        More ``#SBATCH`` options, without the prefix (``"--qos=long"``,
        ``"--output=logs/%x-%j.out"``, ``"--constraint=a100"``).
    job_directives_skip : list of str
        Generated ``#SBATCH`` lines that contain any of these strings are
        dropped (e.g. ``["--mem"]`` on sites that refuse ``--mem``).
    job_script_prologue : list of str
        Shell lines run before the workers start (``module load ...``,
        ``conda activate ...``, ``source venv/bin/activate``).  They run after
        the thread-count exports, so they may override them.
    local_directory : str or None
        Workers' scratch directory (``--local-directory``), e.g.
        ``"$TMPDIR"`` or ``"/scratch/$USER"``; expanded by the job's shell.
    interface : str or None
        Network interface for the scheduler and the workers (``"ib0"``,
        ``"eth0"``); ``None``: Dask's default.
    python : str or None
        Python that runs the workers on the compute nodes; ``None``: the
        interpreter that builds the cluster (it must exist on the nodes too).
    lifetime : str or None
        Dask duration after which a worker retires gracefully
        (``--lifetime``); ``None`` derives it from ``walltime`` (see
        :meth:`worker_lifetime`).
    lifetime_stagger : str or None
        Random spread of the lifetime, ``lifetime +/- stagger``
        (``--lifetime-stagger``); ``None`` derives it from ``walltime``.
    lifetime_restart : bool
        Let the nanny restart a worker that reached its lifetime inside the
        same job (``--lifetime-restart``).  Off by default: the job ends soon
        after anyway, and ``cluster.adapt`` submits replacement jobs.
    worker_extra_args : list of str
        More ``dask worker`` command-line arguments, appended last.
    """

    partition: str | None = None
    account: str | None = None
    walltime: str = "02:00:00"
    cores: int = 4
    processes: int = 4
    memory: str = "16GiB"
    gpus: int = 0
    gpu_directive: str = "--gres=gpu:{gpus}"
    job_name: str = "lss-worker"
    job_extra_directives: list[str] = field(default_factory=list)
    job_directives_skip: list[str] = field(default_factory=list)
    job_script_prologue: list[str] = field(default_factory=list)
    local_directory: str | None = None
    interface: str | None = None
    python: str | None = None
    lifetime: str | None = None
    lifetime_stagger: str | None = None
    lifetime_restart: bool = False
    worker_extra_args: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ checking
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "cluster.slurm") -> SlurmSettings:
        """Build settings from a parsed TOML/JSON table, checking every key.

        Parameters
        ----------
        mapping : Mapping[str, Any]
            The table (``[cluster.slurm]`` of a campaign config).  Missing keys
            take their defaults.
        where : str
            Prefix of the key names in error messages.

        Returns
        -------
        SlurmSettings

        Raises
        ------
        LssError
            One line naming the key: an unknown key, a value of the wrong type
            or a bad value.
        """
        if not isinstance(mapping, Mapping):
            raise LssError(f"[{where}] must be a table, got {type(mapping).__name__}")
        known = [f.name for f in fields(cls)]
        for key in mapping:
            if key not in known:
                raise LssError(f"unknown key {where}.{key} (valid: {', '.join(known)})")
        values = dict(mapping)
        for key in ("job_extra_directives", "job_directives_skip", "job_script_prologue", "worker_extra_args"):
            if isinstance(values.get(key), (list, tuple)):
                values[key] = list(values[key])  # a copy: the settings do not share the caller's list
        settings = cls(**values)
        settings.check(where)
        return settings

    def check(self, where: str = "cluster.slurm") -> None:
        """Raise a one-line :class:`LssError` naming the first bad field.

        Parameters
        ----------
        where : str
            Prefix of the field names in error messages.
        """
        for name in ("partition", "account", "local_directory", "interface", "python", "lifetime",
                     "lifetime_stagger"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise LssError(f"{where}.{name} must be a non-empty string, got {_one_line(value)}")
        for name in ("job_name", "gpu_directive"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise LssError(f"{where}.{name} must be a non-empty string, got {_one_line(value)}")
        # These end up unquoted in #SBATCH lines or on the ``dask worker`` command line.
        for name in ("partition", "account", "job_name", "interface", "local_directory", "python", "lifetime",
                     "lifetime_stagger"):
            value = getattr(self, name)
            if value is not None and any(c.isspace() for c in value):
                raise LssError(f"{where}.{name} must not contain white space, got {value!r}")
        for name, minimum in (("cores", 1), ("processes", 1), ("gpus", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
                raise LssError(f"{where}.{name} must be {rule}, got {_one_line(value)}")
        if self.cores % self.processes:
            raise LssError(f"{where}.cores ({self.cores}) must be a multiple of {where}.processes "
                           f"({self.processes}): each worker gets cores // processes CPUs")
        if self.gpus > 1 and self.processes > 1:
            raise LssError(f"{where}.gpus = {self.gpus} needs {where}.processes = 1 (got {self.processes}): "
                           f"the workers of one job would all use its first GPU")
        if "{gpus}" not in self.gpu_directive:
            raise LssError(f"{where}.gpu_directive must contain {{gpus}} (the GPU count), got {self.gpu_directive!r}")
        if not isinstance(self.lifetime_restart, bool):
            raise LssError(f"{where}.lifetime_restart must be true or false, got {_one_line(self.lifetime_restart)}")
        for name in ("job_extra_directives", "job_directives_skip", "job_script_prologue", "worker_extra_args"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
                raise LssError(f"{where}.{name} must be a list of non-empty strings, got {_one_line(value)}")
            if any("\n" in x for x in value):
                raise LssError(f"{where}.{name}: put each line in its own list item (found a newline)")
        _parse_memory(self.memory, f"{where}.memory")
        wall = _parse_walltime(self.walltime, f"{where}.walltime")
        life = (_parse_duration(self.lifetime, f"{where}.lifetime") if self.lifetime is not None
                else self._derived_lifetime(wall)[0])
        stagger = (_parse_duration(self.lifetime_stagger, f"{where}.lifetime_stagger")
                   if self.lifetime_stagger is not None else self._derived_lifetime(wall)[1])
        if life <= 0:
            raise LssError(f"{where}.lifetime must be positive, got {self.lifetime!r}")
        if stagger >= life:
            raise LssError(f"{where}.lifetime_stagger ({_format_duration(stagger)}) must be shorter than the "
                           f"lifetime ({_format_duration(life)})")
        if life + stagger >= wall:
            raise LssError(f"{where}.lifetime + lifetime_stagger ({_format_duration(life)} + "
                           f"{_format_duration(stagger)}) must be shorter than the walltime {self.walltime}: "
                           f"workers must retire before SLURM kills the job")

    # ------------------------------------------------------------ derived values
    @staticmethod
    def _derived_lifetime(walltime_s: int) -> tuple[int, int]:
        """Default ``(lifetime, stagger)`` seconds: stop ``margin`` before the walltime, stagger 4/5 of it.

        ``margin`` is 5 minutes, or a twelfth of the walltime for walltimes
        under an hour, so a worker retires between ``walltime - 9/5 margin`` and
        ``walltime - 1/5 margin`` (for 2 h: between 1:51 and 1:59).
        """
        margin = max(5, min(_MAX_MARGIN_S, walltime_s // 12))
        return walltime_s - margin, (4 * margin) // 5

    @property
    def walltime_seconds(self) -> int:
        """The walltime in seconds."""
        return _parse_walltime(self.walltime, "walltime")

    def worker_lifetime(self) -> tuple[str, str]:
        """The ``--lifetime`` and ``--lifetime-stagger`` values the workers get.

        Returns
        -------
        tuple of str
            ``(lifetime, stagger)`` as Dask durations.  Fields left ``None``
            are derived from the walltime: the lifetime ends 5 minutes before
            it (a twelfth of the walltime when that is shorter) and the stagger
            is 4/5 of that margin (``"02:00:00"`` gives ``("115m", "4m")``).
        """
        life, stagger = self._derived_lifetime(self.walltime_seconds)
        life_s = self.lifetime if self.lifetime is not None else _format_duration(life)
        stagger_s = self.lifetime_stagger if self.lifetime_stagger is not None else _format_duration(stagger)
        return life_s.strip(), stagger_s.strip()

    @property
    def threads_per_task(self) -> int:
        """CPUs of each worker's task (``cores // processes``): the thread-count variables' value."""
        return self.cores // self.processes

    def to_mapping(self) -> dict[str, Any]:
        """The settings as a JSON/TOML-able dict (``None`` fields left out); :meth:`from_mapping` reads it back."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in dataclasses.asdict(self).items() if v is not None}

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for these settings.

        Returns
        -------
        dict
            ``cores`` is the number of workers per job (so dask-jobqueue gives
            each worker ``--nthreads 1``); the CPUs booked are ``job_cpu``.
        """
        self.check()
        lifetime, stagger = self.worker_lifetime()
        threads = self.threads_per_task
        prologue = [f"export {name}={threads}" for name in THREAD_VARIABLES] + list(self.job_script_prologue)
        directives = list(self.job_extra_directives)
        worker_args = ["--lifetime", lifetime, "--lifetime-stagger", stagger]
        if self.lifetime_restart:
            worker_args.append("--lifetime-restart")
        if self.gpus:
            directives.append(self.gpu_directive.format(gpus=self.gpus))
            worker_args += ["--resources", f"GPU={self.gpus}"]
        worker_args += list(self.worker_extra_args)
        kwargs: dict[str, Any] = {
            "queue": self.partition,
            "account": self.account,
            "walltime": self.walltime,
            # dask-jobqueue gives each worker cores // processes threads: one here.
            "cores": self.processes,
            "processes": self.processes,
            "job_cpu": self.cores,
            "memory": self.memory,
            "job_name": self.job_name,
            "job_extra_directives": directives,
            "job_directives_skip": list(self.job_directives_skip),
            "job_script_prologue": prologue,
            "worker_extra_args": worker_args,
            "local_directory": self.local_directory,
            "interface": self.interface,
        }
        if self.python is not None:
            kwargs["python"] = self.python
        return kwargs


def _import_jobqueue():
    try:
        import dask_jobqueue
    except ImportError:
        raise LssError("SLURM clusters need dask-jobqueue: pip install lss_engine[hpc]") from None
    return dask_jobqueue


_CLUSTER_CLASS: type | None = None


def _cluster_class() -> type:
    """``SLURMCluster`` that also notices when every worker of a multi-worker job has left.

    ``SpecCluster`` forgets a job whose worker left (after
    ``distributed.deploy.lost-worker-timeout``) by looking up the worker's
    name among its jobs.  A job of ``processes > 1`` workers is named
    ``SLURMCluster-0`` while its workers are ``SLURMCluster-0-0``,
    ``SLURMCluster-0-1``, ... so the lookup never matches (dask-jobqueue
    issue #611): the ended job stays on the books, and neither ``adapt`` nor
    another ``scale`` call submits a replacement once the workers retired at
    their ``--lifetime``.  This subclass maps a worker to its job and forgets
    the job once none of its workers is connected any more; with one worker
    per job it changes nothing.
    """
    global _CLUSTER_CLASS
    if _CLUSTER_CLASS is not None:
        return _CLUSTER_CLASS
    import asyncio

    import dask
    from dask.utils import parse_timedelta

    jobqueue = _import_jobqueue()

    class LssSLURMCluster(jobqueue.SLURMCluster):
        """``dask_jobqueue.SLURMCluster`` that replaces multi-worker jobs whose workers all left."""

        def _job_of(self, worker_name: Any) -> tuple[Any, set[str]] | None:
            """``(job name, its worker names)`` of a worker of a multi-worker job, else ``None``."""
            for job, spec in self.worker_spec.items():
                group = spec.get("group") if isinstance(spec, dict) else None
                if group:
                    members = {str(job) + suffix for suffix in group}
                    if str(worker_name) in members:
                        return job, members
            return None

        def _update_worker_status(self, op, msg):
            if op == "remove":
                info = self.scheduler_info.get("workers", {}).get(msg, {})
                found = self._job_of(info.get("name"))
                if found is not None:
                    job, members = found

                    def forget_job_if_empty():
                        alive = any(str(d.get("name")) in members for d in self.scheduler_info["workers"].values())
                        if job in self.workers and not alive:
                            self._futures.add(asyncio.ensure_future(self.workers[job].close()))
                            del self.workers[job]

                    delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
                    asyncio.get_running_loop().call_later(delay, forget_job_if_empty)
            super()._update_worker_status(op, msg)

    LssSLURMCluster.__module__ = __name__
    _CLUSTER_CLASS = LssSLURMCluster
    return LssSLURMCluster


def slurm_cluster(settings: SlurmSettings, **overrides: Any):
    """A ``dask_jobqueue.SLURMCluster`` for ``settings`` (no jobs submitted yet).

    Constructing it starts a Dask scheduler in this process; jobs are
    submitted by ``cluster.scale(jobs=N)`` or ``cluster.adapt(...)``.  Close it
    (``cluster.close()``, or use it as a context manager) to stop the
    scheduler and cancel the jobs.

    Jobs end when their workers reach ``--lifetime``; ``cluster.adapt(
    minimum_jobs=N, maximum_jobs=N)`` keeps ``N`` jobs by submitting
    replacements, a plain ``cluster.scale(jobs=N)`` does not (``docs/hpc.md``).
    The class is a subclass of ``SLURMCluster`` that makes replacement work
    for jobs of several workers too (see ``_cluster_class``).

    Parameters
    ----------
    settings : SlurmSettings
        The shape of each job.
    **overrides
        ``SLURMCluster`` keyword arguments that replace the ones derived from
        ``settings`` (e.g. ``scheduler_options={"dashboard_address": ":0"}``,
        ``log_directory="logs"``).  List arguments are replaced, not extended.

    Returns
    -------
    dask_jobqueue.SLURMCluster

    Raises
    ------
    LssError
        ``settings`` are invalid, or dask-jobqueue is not installed.
    """
    cls = _cluster_class()
    kwargs = settings.cluster_kwargs()
    kwargs.update(overrides)
    return cls(**kwargs)


def render_job_script(settings: SlurmSettings, scheduler_address: str = PLACEHOLDER_SCHEDULER,
                      worker_name: str = "dummy-name") -> str:
    """The batch script each SLURM job of :func:`slurm_cluster` runs, without starting anything.

    It is built by the same job class ``SLURMCluster`` submits
    (``SLURMCluster.job_cls``), with the arguments ``SLURMCluster`` passes it,
    but no scheduler is started (constructing ``SLURMCluster`` would start
    one).  The worker name is ``dummy-name`` by default, as in
    ``SLURMCluster.job_script()``.

    Parameters
    ----------
    settings : SlurmSettings
        The shape of each job.
    scheduler_address : str
        Scheduler address on the ``dask worker`` line; by default the
        placeholder ``SLURMCluster.job_script()`` shows before its scheduler
        has started.
    worker_name : str
        The workers' ``--name`` (``SLURMCluster`` gives every job its own).
        For scripts submitted by hand to a running scheduler it must differ
        between jobs, e.g. ``"lss-$SLURM_JOB_ID"`` (expanded by the job's
        shell); a job of several workers appends ``-0``, ``-1``, ...

    Returns
    -------
    str
        The job script (``#!/usr/bin/env bash``, ``#SBATCH`` lines, prologue,
        ``dask worker`` command).

    Raises
    ------
    LssError
        ``settings`` are invalid, or dask-jobqueue is not installed.
    """
    jobqueue = _import_jobqueue()
    kwargs = settings.cluster_kwargs()
    job_cls = jobqueue.SLURMCluster.job_cls
    # The arguments JobQueueCluster.__init__ adds to the job keywords it keeps.
    kwargs.update(config_name=job_cls.default_config_name(), protocol=None, security=None)
    if not isinstance(worker_name, str) or not worker_name.strip() or any(c.isspace() for c in worker_name):
        raise LssError(f"worker_name must be a non-empty string without white space, got {worker_name!r}")
    job = job_cls(scheduler_address, name=worker_name, **kwargs)
    return job.job_script()
