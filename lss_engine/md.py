"""Molecular dynamics into a trajectory store, interruptible and resumable: :func:`run_md`.

The MD loop behind ``lss simulate``, as a library function for scripts and
the adaptive-sampling campaign.  An OpenMM ``Simulation`` (or one of
:mod:`lss_engine.systems`' test systems, which builds one) steps with a
:class:`~lss_engine.reporters.ZarrReporter` attached; every ``report_interval
× flush_interval`` steps the reporter commits its frames and the simulation's
state is checkpointed next to the store (``<store>.state.xml``: an OpenMM state
XML, written atomically and fsync'd; never a pickle).  So a run killed at any
moment loses at most the frames after the last checkpoint, and
``resume=True`` continues from the checkpoint: the store keeps its frames up to
the checkpoint's step (later ones are dropped) and grows from there.

Ctrl-C (``KeyboardInterrupt``) commits the buffered frames, writes the
checkpoint and raises :class:`MDInterrupted` (a ``KeyboardInterrupt``) whose
``result`` says where the run stopped.

Example
-------
>>> from lss_engine.md import run_md
>>> from lss_engine.systems import get_system
>>> result = run_md(get_system("alanine-dipeptide"), "ala2.zarr", steps=500_000,   # doctest: +SKIP
...                 report_interval="1ps", featurizer="backbone-torsions", atoms="heavy", seed=1)
>>> result = run_md(get_system("alanine-dipeptide"), "ala2.zarr", steps=1_000_000,  # doctest: +SKIP
...                 report_interval="1ps", featurizer="backbone-torsions", atoms="heavy", seed=1, resume=True)
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ._helpers import atomic_write_bytes
from .errors import LssError
from .interrupts import sigint_deferred
from .outputs import claim_outputs
from .units import parse_time_ps

__all__ = ["MDInterrupted", "MDResult", "MDRun", "checkpoint_path", "default_features", "run_md", "run_md_walkers",
           "to_steps", "walker_stores"]


def checkpoint_path(store: str | os.PathLike) -> Path:
    """Where :func:`run_md` checkpoints the run writing ``store``: ``<store>.state.xml``."""
    store = Path(store)
    return store.with_name(store.name + ".state.xml")


def default_features(topology) -> str:
    """Feature names for a topology: backbone torsions and heavy-atom distances of peptides, positions of toys."""
    residues = [r.name for r in topology.residues()]
    return "backbone-torsions,heavy-atom-distances" if "ALA" in residues or len(residues) > 1 else "positions"


def to_steps(value: Any, timestep_ps: Any, what: str = "steps", *, exact: bool = True) -> int:
    """A number of integration steps from ``value``.

    ``value`` is an int (steps), ``"500steps"``/``"500"``, or a time: an
    ``openmm.unit.Quantity`` or a string such as ``"1ps"`` (see
    :func:`lss_engine.units.parse_time_ps`), divided by ``timestep_ps`` (ps or
    a ``Quantity``).  With ``exact`` a time must be a whole number of steps;
    otherwise it is rounded.  ``what`` names the value in errors.
    """
    dt = parse_time_ps(timestep_ps)
    if isinstance(value, bool):
        raise LssError(f"{what} must be a number of steps or a time, got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "unit")):
        return int(value)
    if isinstance(value, float):
        raise LssError(f"{what} must be a whole number of steps (int) or a time with a unit, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() or (text.endswith("steps") and text.removesuffix("steps").strip().isdigit()):
            return int(text.removesuffix("steps").strip())
    ratio = parse_time_ps(value) / dt
    steps = round(ratio)
    if exact and (steps < 1 or abs(ratio - steps) > 1e-6 * ratio):
        raise LssError(f"{what} {value} is not a whole number of {dt:g} ps steps")
    return steps


@dataclass
class MDResult:
    """Where a run of :func:`run_md` stands.

    Attributes
    ----------
    store, checkpoint
        The trajectory store and the checkpoint beside it.
    step
        The simulation's step count now (the run's steps so far, resumes included).
    total_steps
        The run's target length in steps.
    steps_run
        Steps integrated by this call (equilibration not counted).
    frames, n_features
        Committed frames and features per frame in the store.
    wall_s, ns_per_day
        Wall time of this call's production steps and their speed.
    interrupted
        The run was stopped by Ctrl-C (``step < total_steps``).
    """

    store: Path
    checkpoint: Path
    step: int
    total_steps: int
    steps_run: int
    frames: int
    n_features: int
    wall_s: float
    ns_per_day: float
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps


class MDInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`run_md`; the frames so far are committed and the checkpoint written.

    ``result`` is the :class:`MDResult` at the stop; run again with
    ``resume=True`` to continue.
    """

    def __init__(self, result: MDResult):
        super().__init__(f"interrupted at step {result.step}: {result.frames} frames are safe in {result.store}")
        self.result = result


class MDRun:
    """A prepared :func:`run_md`: the simulation is built (and, with ``resume``, restored) but not stepped.

    Its attributes describe the run before it starts (``name``,
    ``temperature_K``, ``platform``, ``timestep_ps``, ``total_steps``,
    ``report_interval``, ``start_step``, ``store``, ``checkpoint``,
    ``simulation``); :meth:`run` runs it.  The parameters are those of
    :func:`run_md`.
    """

    def __init__(
        self,
        system: Any,
        store: str | os.PathLike,
        *,
        steps: Any,
        report_interval: Any,
        featurizer: Any = "auto",
        atoms: Any = None,
        platform: str = "auto",
        seed: int | None = None,
        resume: bool = False,
        overwrite: bool = False,
        equilibrate: Any = 0,
        flush_interval: int = 100,
        reporters: Sequence[Any] = (),
    ):
        from openmm import app, unit

        from .features import build_featurizer, select_atoms
        from .reporters import ZarrReporter

        if resume and overwrite:
            raise LssError("resume and overwrite exclude each other")
        if int(flush_interval) < 1:
            raise LssError("flush_interval must be at least one frame")
        self.store = Path(store)
        self.checkpoint = checkpoint_path(self.store)
        self.resume = bool(resume)
        if resume and not self.checkpoint.is_file():
            raise LssError(f"cannot resume: no checkpoint {self.checkpoint} (was the run started by run_md / "
                           f"lss simulate?)")
        if not resume:
            claim_outputs([self.store], overwrite=overwrite)  # an existing store is replaced only if asked
        if isinstance(system, app.Simulation):
            simulation, test_system = system, None
            if platform not in (None, "auto"):
                raise LssError("platform applies to a test system; an openmm.app.Simulation has its own")
            self.name = "simulation"
        elif hasattr(system, "make_simulation"):
            simulation, test_system = None, system
            self.name = system.name
        else:
            raise LssError(f"run_md needs an openmm.app.Simulation or an lss_engine test system, "
                           f"got {type(system).__name__}")
        topology = system.topology
        self.timestep_ps = parse_time_ps(system.timestep if test_system is not None
                                         else system.integrator.getStepSize())
        self.report_interval = to_steps(report_interval, self.timestep_ps, "report_interval")
        self.total_steps = to_steps(steps, self.timestep_ps, "steps", exact=False)
        self.equilibrate_steps = to_steps(equilibrate, self.timestep_ps, "equilibrate", exact=False)
        if self.report_interval < 1:
            raise LssError("report_interval must be at least one step")
        if self.total_steps < 1:
            raise LssError("nothing to simulate: steps must be positive")
        if self.equilibrate_steps < 0:
            raise LssError("equilibrate must not be negative")

        # features and atoms are resolved now, so a bad name fails before any MD
        if isinstance(featurizer, str) and featurizer.strip().lower() == "auto":
            featurizer = default_features(topology)
        if isinstance(featurizer, str) and featurizer.strip().lower() == "none":
            featurizer = None
        if isinstance(featurizer, (str, list, tuple)):
            if test_system is not None:
                reference = test_system.positions
            else:
                reference = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
            featurizer = build_featurizer(featurizer, topology,
                                          reference_positions=reference.value_in_unit(unit.nanometer))
        if isinstance(atoms, str) and atoms.strip().lower() == "all":
            atoms = None
        if atoms is not None:
            select_atoms(topology, atoms)

        if simulation is None:
            simulation = test_system.make_simulation(platform=platform, seed=seed, minimize=not resume)
        self.simulation = simulation
        self.platform = simulation.context.getPlatform().getName()
        integrator = simulation.integrator
        temperature = test_system.temperature if test_system is not None else (
            integrator.getTemperature() if hasattr(integrator, "getTemperature") else None)
        self.temperature_K = None if temperature is None else float(temperature.value_in_unit(unit.kelvin))
        if resume:
            simulation.loadState(str(self.checkpoint))
            now_ps = simulation.context.getState().getTime()._value
            simulation.currentStep = int(round(now_ps / self.timestep_ps))
        self.start_step = simulation.currentStep if resume else 0
        self._reporter = ZarrReporter(self.store, self.report_interval, featurizer=featurizer, atoms=atoms,
                                      append=resume, flush_interval=flush_interval,
                                      overwrite=overwrite and not resume, seed=seed)
        self._flush_interval = int(flush_interval)
        self._extra_reporters = list(reporters)

    def _save_checkpoint(self) -> None:
        """The simulation's state as OpenMM state XML (as ``Simulation.saveState``), written atomically."""
        import openmm

        state = self.simulation.context.getState(getPositions=True, getVelocities=True, getParameters=True,
                                                 getIntegratorParameters=True)
        atomic_write_bytes(self.checkpoint, openmm.XmlSerializer.serialize(state).encode())

    def _result(self, steps_run: int, wall: float, interrupted: bool) -> MDResult:
        from .store import TrajectoryStore

        frames, n_features = 0, 0
        if self.store.exists():
            reader = TrajectoryStore(self.store)
            frames, n_features = reader.n_frames, reader.n_features
        ns_day = steps_run * self.timestep_ps * 1e-3 / max(wall, 1e-9) * 86400 if steps_run else 0.0
        return MDResult(self.store, self.checkpoint, int(self.simulation.currentStep), self.total_steps, steps_run,
                        frames, n_features, wall, ns_day, interrupted)

    def run(self, *, progress: bool = True) -> MDResult:
        """Equilibrate (a fresh run), then step to ``total_steps``, committing and checkpointing as it goes.

        Raises
        ------
        MDInterrupted
            On Ctrl-C, after the frames are committed and the checkpoint is written.
        """
        from tqdm.auto import tqdm

        sim = self.simulation
        if not self.resume:
            if self.checkpoint.is_file():  # a stale checkpoint of a replaced run must never be resumed
                os.unlink(self.checkpoint)
            if self.equilibrate_steps > 0:
                sim.step(self.equilibrate_steps)
            sim.currentStep = 0
            sim.context.setTime(0.0)
            sim.context.setStepCount(0)
        reporter = self._reporter
        sim.reporters.append(reporter)
        sim.reporters.extend(self._extra_reporters)
        chunk = self.report_interval * self._flush_interval  # checkpoints coincide with committed frames
        bar = tqdm(total=self.total_steps, initial=min(sim.currentStep, self.total_steps), unit="step",
                   unit_scale=True, disable=not progress, dynamic_ncols=True, desc="MD")
        start_wall, start_step = time.perf_counter(), sim.currentStep
        try:
            while sim.currentStep < self.total_steps:
                n = min(chunk - sim.currentStep % chunk, self.total_steps - sim.currentStep)
                sim.step(n)
                with sigint_deferred():
                    for r in [reporter, *self._extra_reporters]:  # every store holds the checkpoint's frames
                        if hasattr(r, "flush"):
                            r.flush()
                    self._save_checkpoint()
                bar.update(n)
                elapsed = time.perf_counter() - start_wall
                ns_day = (sim.currentStep - start_step) * self.timestep_ps * 1e-3 / max(elapsed, 1e-9) * 86400
                bar.set_postfix_str(f"{ns_day:.3g} ns/day, {reporter.frames_committed} frames")
        except KeyboardInterrupt:
            with sigint_deferred():
                reporter.catch_up(sim)  # a Ctrl-C between a report step and its report
                reporter.close()
                self._save_checkpoint()  # the state matches the last committed frame's step or later
            raise MDInterrupted(self._result(sim.currentStep - start_step, time.perf_counter() - start_wall,
                                             True)) from None
        finally:
            reporter.close()
            bar.close()
            for r in [reporter, *self._extra_reporters]:
                if r in sim.reporters:
                    sim.reporters.remove(r)
        return self._result(sim.currentStep - start_step, time.perf_counter() - start_wall, False)


def run_md(system: Any, store: str | os.PathLike, *, progress: bool = True, **options: Any) -> MDResult:
    """Run MD of ``system`` into the trajectory store ``store``, checkpointing; resumable.

    Parameters
    ----------
    system
        An ``openmm.app.Simulation`` (used as it is: its positions, velocities
        and platform) or a test system of :mod:`lss_engine.systems` (a
        Simulation is built on ``platform`` with ``seed``, energy-minimised and
        given velocities).
    store
        Path of the zarr trajectory store.
    steps
        Length of the whole run (a resumed run continues up to it): integration
        steps (int) or a time (``openmm.unit.Quantity``, ``"2ns"``), rounded to
        whole steps.
    report_interval
        Steps between frames, or a time that is a whole number of steps
        (``"1ps"``, ``1 * unit.picosecond``), as OpenMM reporters'
        ``reportInterval``.
    featurizer
        ``"auto"`` (:func:`default_features`), feature names
        (``"backbone-torsions,heavy-atom-distances"``, resolved now against the
        topology), a :class:`~lss_engine.features.Featurizer`, or
        ``None``/``"none"`` (positions only).
    atoms
        Atoms whose positions are saved (see ``ZarrReporter``): ``None``/``"all"``,
        ``"heavy"``, ``"ca"``, ``"none"``, an mdtraj selection or indices.
    platform, seed
        For a test system: the OpenMM platform (``"auto"``: the system's
        fastest) and the velocity/integrator seed; the seed is recorded in the
        store's provenance either way.
    resume
        Continue from the checkpoint ``<store>.state.xml``.
    overwrite
        Replace an existing store (only an lss_engine store); otherwise an
        existing store is refused with :class:`~lss_engine.errors.OutputExistsError`.
    equilibrate
        Unrecorded MD (steps or a time) before a fresh run; then time and step
        count restart at 0.
    flush_interval
        Frames per commit and checkpoint (a crash loses at most this many).
    reporters
        Further OpenMM reporters attached for the production steps.
    progress
        A tqdm progress bar with ns/day.

    All but ``system``, ``store`` and ``progress`` are keywords of
    :class:`MDRun` (which :func:`run_md` builds and runs).

    Returns
    -------
    MDResult

    Raises
    ------
    OutputExistsError
        The store exists and neither ``resume`` nor ``overwrite`` is set.
    MDInterrupted
        Ctrl-C: the frames so far are committed and the checkpoint written.
    LssError
        Bad arguments (before any MD), or a store that does not fit a resumed run.
    """
    return MDRun(system, store, **options).run(progress=progress)


# ---------------------------------------------------------------------------
# several walkers, one process each
# ---------------------------------------------------------------------------
def walker_stores(out: str | os.PathLike, n_walkers: int) -> list[Path]:
    """The stores of :func:`run_md_walkers`: ``out`` for one walker, ``md_0.zarr``, ``md_1.zarr``, ... for
    several (``out = md.zarr``); see :func:`lss_engine.outputs.walker_paths`."""
    from .outputs import walker_paths

    return walker_paths(out, n_walkers)


def _walker_system(system: Any, system_kwargs: dict) -> Any:
    """The test system of :func:`run_md_walkers`: a registry name with keyword arguments, or a spec."""
    from collections.abc import Mapping

    from .systems import build_system, get_system

    if isinstance(system, Mapping):
        if system_kwargs:
            raise LssError("system_kwargs apply to a system name; a system spec carries its own parameters")
        return build_system(system)
    return get_system(system, **system_kwargs)


def _walker_process(queue: Any, index: int, system: Any, system_kwargs: dict, store: Path, seed: int | None,
                    kwargs: dict) -> None:
    """One walker in a spawned process: its MD result (or its error as one line) goes to ``queue``."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops this walker cleanly
    try:
        from ._helpers import configure_threads

        configure_threads(1)  # features are computed in small batches; the cores belong to the walkers
        result = run_md(_walker_system(system, system_kwargs), store, seed=seed, progress=False, **kwargs)
        queue.put((index, result, None))
    except MDInterrupted as exc:
        queue.put((index, exc.result, None))
    except KeyboardInterrupt:  # before the run started: nothing written
        queue.put((index, None, "interrupted before the run started"))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent as one line
        from ._helpers import first_line

        message = first_line(exc) if isinstance(exc, LssError) else f"{exc.__class__.__name__}: {first_line(exc)}"
        queue.put((index, None, message))


def run_md_walkers(
    system: Any,
    out: str | os.PathLike,
    n_walkers: int,
    *,
    steps: Any,
    report_interval: Any,
    system_kwargs: dict | None = None,
    seed: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    processes: int | None = None,
    progress: bool = True,
    **options: Any,
) -> list[MDResult]:
    """:func:`run_md` of ``n_walkers`` independent walkers of a test system, each in its own process.

    OpenMM's Reference and CPU platforms step one system on about one core,
    so walkers in separate processes (``multiprocessing`` with *spawn*) use
    every core: two walkers of half the length each take half the wall time
    on two cores.  Walker ``k`` writes ``walker_stores(out, n_walkers)[k]``
    (``md_0.zarr``, ``md_1.zarr``, ... for ``out = md.zarr``; checkpointed and
    resumable one by one) with seed ``seed + k`` (``None``: each its own random
    seed), every walker ``steps`` long.

    Parameters
    ----------
    system, system_kwargs
        A test system name of :mod:`lss_engine.systems` and its keyword
        arguments (``{"temperature": 450}``), or a spec of
        :func:`lss_engine.systems.system_spec` (a built-in or a user's XML
        system; no ``system_kwargs``); each process builds its own (an XML
        system's files are checked against the spec's SHA-256 each time).
    processes
        Walkers run at once (default: one per usable core, at most ``n_walkers``).
    progress
        One progress bar over all walkers (frames committed).
    steps, report_interval, seed, resume, overwrite
        As :func:`run_md`, for every walker (walker ``k`` gets ``seed + k``).
    options
        The other keywords of :class:`MDRun` (``featurizer``, ``atoms``,
        ``platform``, ``equilibrate``, ``flush_interval``), for every walker.

    Returns
    -------
    list of MDResult, one per walker.

    Raises
    ------
    OutputExistsError
        A walker store exists and neither ``resume`` nor ``overwrite`` is set
        (checked before any process starts).
    MDInterrupted
        Ctrl-C: every running walker commits its frames and writes its
        checkpoint; ``exc.results`` holds every walker's :class:`MDResult`
        (``None`` for walkers that never started); ``resume=True`` continues.
    LssError
        A walker failed (bad arguments, a store that does not fit a resumed
        run): one line naming the walker.
    """
    import multiprocessing
    import queue as queue_module
    import signal

    from tqdm.auto import tqdm

    from .store import TrajectoryStore

    n_walkers = int(n_walkers)
    if n_walkers < 1:
        raise LssError(f"the number of walkers must be at least 1, got {n_walkers}")
    if resume and overwrite:
        raise LssError("resume and overwrite exclude each other")
    system_kwargs = dict(system_kwargs or {})
    test_system = _walker_system(system, system_kwargs)  # a bad name or argument fails here, before any process
    total_steps = to_steps(steps, test_system.timestep, "steps", exact=False)
    interval = to_steps(report_interval, test_system.timestep, "report_interval")
    if total_steps < 1 or interval < 1:
        raise LssError("nothing to simulate: steps and report_interval must be positive")
    stores = walker_stores(out, n_walkers)
    if resume:
        missing = [str(checkpoint_path(s)) for s in stores if not checkpoint_path(s).is_file()]
        if missing:
            raise LssError(f"cannot resume: no checkpoint {', '.join(missing)}")
    else:
        claim_outputs(stores, overwrite=overwrite)
    from ._helpers import usable_cores

    n_procs = max(1, min(n_walkers, usable_cores() if processes is None else int(processes)))
    kwargs = dict(options, steps=total_steps, report_interval=interval, resume=resume, overwrite=overwrite)
    ctx = multiprocessing.get_context("spawn")
    results_queue = ctx.Queue()
    pending = list(range(n_walkers))
    running: dict[int, Any] = {}
    results: list[MDResult | None] = [None] * n_walkers
    errors: dict[int, str] = {}
    interrupted = False
    frames_total = n_walkers * (total_steps // interval)
    bar = tqdm(total=frames_total, unit="frame", disable=not progress, dynamic_ncols=True,
               desc=f"MD ({n_walkers} walkers)")

    def committed() -> int:
        n = 0
        for path in stores:
            try:
                n += TrajectoryStore(path).n_frames
            except Exception:  # not created yet, or mid-commit
                pass
        return n

    def collect(timeout: float) -> None:
        try:
            index, result, error = results_queue.get(timeout=timeout)
        except queue_module.Empty:
            for index, proc in list(running.items()):  # a process that died without a word (killed, crashed)
                if proc.exitcode is not None and results_queue.empty():
                    proc.join()
                    del running[index]
                    errors[index] = f"its process ended with exit code {proc.exitcode}"
            return
        results[index] = result
        if error is not None:
            errors[index] = error
        running.pop(index).join()

    last_poll = 0.0
    try:
        while pending or running:
            while pending and len(running) < n_procs and not interrupted and not errors:
                index = pending.pop(0)
                seed_k = None if seed is None else int(seed) + index
                proc = ctx.Process(target=_walker_process, name=f"lss-md-walker-{index}",
                                   args=(results_queue, index, system, system_kwargs, stores[index], seed_k,
                                         kwargs))
                proc.start()
                running[index] = proc
            if errors:
                pending.clear()
            if not running:
                break
            collect(0.5)
            if progress and time.monotonic() - last_poll > 2.0:
                last_poll = time.monotonic()
                bar.n = min(committed(), frames_total)
                bar.refresh()
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches every walker too; those that missed it (a signal sent to this process
        # alone) get it after a moment.  Further Ctrl-C are held until every walker has committed.
        interrupted = True
        pending.clear()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            deadline = time.monotonic() + 2.0
            while running and time.monotonic() < deadline:
                collect(0.2)
            for proc in running.values():
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGINT)
            while running:
                collect(0.5)
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        bar.n = min(committed(), frames_total)
        bar.close()
        for proc in running.values():  # only after an unexpected error in this process
            proc.terminate()
            proc.join()
    if errors:
        raise LssError("; ".join(f"walker {k} ({stores[k]}): {msg}" for k, msg in sorted(errors.items())))
    if interrupted or any(r is None or not r.complete for r in results):
        first = next((r for r in results if r is not None and not r.complete), None) \
            or next((r for r in results if r is not None), None)
        if first is None:
            raise KeyboardInterrupt
        exc = MDInterrupted(first)
        exc.results = results
        raise exc
    return results  # type: ignore[return-value]
