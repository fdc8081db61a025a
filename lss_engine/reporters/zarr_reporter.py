"""``ZarrReporter``: featurize frames of a running OpenMM simulation into a store."""
from __future__ import annotations

import atexit
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import NonFiniteError, StoreError
from ..interrupts import sigint_deferred
from ..store import StoreWriter, TrajectoryStore, warn_gap

_OPEN_REPORTERS: "weakref.WeakSet[ZarrReporter]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _register_atexit() -> None:
    """Flush open reporters at interpreter exit.

    zarr does its I/O on worker threads whose executors refuse new work once
    the interpreter starts shutting threads down, which happens *before*
    ``atexit`` handlers run.  ``threading._register_atexit`` (the hook that
    ``concurrent.futures`` itself uses) runs earlier, last-in first-out, so a
    handler registered after zarr's first use flushes while zarr still works.
    """
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        register = getattr(threading, "_register_atexit", atexit.register)
        register(_close_open_reporters)
        _ATEXIT_REGISTERED = True


def _close_open_reporters() -> None:
    for reporter in list(_OPEN_REPORTERS):
        try:
            reporter.close()
        except Exception as exc:  # pragma: no cover - never fail interpreter shutdown
            import sys
            print(f"lss_engine: could not flush {reporter.path} at exit: {exc!r}", file=sys.stderr)


def _external_forces(system) -> list[str]:
    """Names of ``system``'s forces that act on absolute positions (``CustomExternalForce`` with particles)."""
    import openmm

    return sorted({type(f).__name__ for f in system.getForces()
                   if isinstance(f, openmm.CustomExternalForce) and f.getNumParticles() > 0})


def integrator_temperature(integrator: Any) -> float | None:
    """The integrator's temperature in K: ``getTemperature()``, or a custom integrator's ``kT`` global
    (``MTSLangevinIntegrator`` and other ``CustomIntegrator``s); ``None`` when it has neither."""
    if hasattr(integrator, "getTemperature"):
        return float(integrator.getTemperature()._value)
    try:
        kT = integrator.getGlobalVariableByName("kT")  # kJ/mol
    except Exception:
        return None
    from openmm import unit

    return float(kT / unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin))


class StoreReporterBase:
    """The life cycle every store-writing reporter shares: committed frames, close, context manager, reader.

    Subclasses set ``path``, ``_writer``, ``_closed`` and implement ``flush``.
    """

    path: Path
    _writer: Any
    _closed: bool

    _interval: int

    def flush(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _continue_at(self, writer: Any, step: int) -> None:
        """Appending: drop frames after ``step`` (a restart from an earlier checkpoint), warn of a gap."""
        writer.truncate_after_step(step)
        last = writer.last_step
        if last is not None and step - last >= self._interval:
            warn_gap(self.path, last, step, self._interval)

    @property
    def frames_committed(self) -> int:
        """Frames visible to readers so far."""
        return 0 if self._writer is None else self._writer.frames_committed

    def close(self) -> None:
        """Flush and close; further reports raise."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            _OPEN_REPORTERS.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> TrajectoryStore:
        """A reader of the frames committed so far."""
        if self._writer is None:
            raise StoreError(f"nothing has been reported to {self.path} yet")
        return TrajectoryStore(self.path)


class ZarrReporter(StoreReporterBase):
    """OpenMM reporter that streams featurized frames into a zarr trajectory store.

    Parameters
    ----------
    store
        Path of the store (a directory, conventionally ``*.zarr``).
    reportInterval
        Steps between frames.
    featurizer
        A :class:`lss_engine.features.Featurizer`, feature names for
        :func:`lss_engine.features.build_featurizer` (``"backbone-torsions,
        heavy-atom-distances"``), or ``None`` for positions only.  Names are
        resolved against the simulation's topology at the first report; an
        ``aligned-positions`` feature uses the simulation's positions at that
        moment as reference.
    atoms
        Atoms whose positions are saved: ``None``/``"all"``, ``"heavy"``,
        ``"ca"``, ``"backbone"``, ``"none"``, an mdtraj selection string or a
        sequence of indices.
    append
        Continue an existing store after its last committed frame (created if
        missing).  A different saved-atom selection, feature spec, time step or
        report interval is refused.  Frames with a step beyond the
        simulation's current step (a restart from an earlier checkpoint) are
        dropped, so no frame is stored twice.
    flush_interval
        Frames buffered in memory before they are featurized, written and
        committed: a SIGKILL loses at most this many frames.
    enforcePeriodicBox
        Passed to OpenMM as in its own reporters (``None``: OpenMM's default).
    overwrite
        Replace an existing store at ``store`` (only an lss_engine store).
    seed
        Recorded in the store's provenance.

    Notes
    -----
    Frames are featurized in batches at each flush with the torch featurizer,
    so the per-step cost is one ``getState(getPositions=True)`` and a copy.
    Non-finite positions raise :class:`~lss_engine.errors.NonFiniteError`
    naming the step, after the frames before it have been committed.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        reportInterval: int,
        featurizer: Any = None,
        atoms: str | Sequence[int] | None = None,
        append: bool = False,
        flush_interval: int = 100,
        enforcePeriodicBox: bool | None = None,
        overwrite: bool = False,
        seed: int | None = None,
    ):
        if int(reportInterval) < 1:
            raise StoreError("reportInterval must be a positive number of steps")
        if int(flush_interval) < 1:
            raise StoreError("flush_interval must be at least one frame")
        if append and overwrite:
            raise StoreError("append and overwrite exclude each other")
        self.path = Path(store)
        self._interval = int(reportInterval)
        self._featurizer_arg = featurizer
        self._atoms_arg = atoms
        self._append = bool(append)
        self._flush_interval = int(flush_interval)
        self._periodic_request = enforcePeriodicBox
        self._overwrite = bool(overwrite)
        self._seed = seed
        self._writer: StoreWriter | None = None
        self._closed = False
        self.featurizer = None
        self.atom_indices: np.ndarray | None = None
        self._n_buffered = 0

    # -- OpenMM reporter protocol --------------------------------------------
    def describeNextReport(self, simulation) -> dict:
        """Steps to the next report and what it needs (OpenMM 8 dict form)."""
        if self._writer is None:
            self._setup(simulation)
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": self._periodic_request, "include": ["positions"]}

    def report(self, simulation, state) -> None:
        """Buffer one frame; flush every ``flush_interval`` frames."""
        if self._closed:
            raise StoreError(f"ZarrReporter for {self.path} is closed")
        if self._writer is None:
            self._setup(simulation)
        with np.errstate(over="ignore"):  # finite in float64 but past the store's dtype is non-finite too
            positions = np.asarray(state.getPositions(asNumpy=True)._value, dtype=self._pos.dtype)  # nm
        step = simulation.currentStep
        if not np.isfinite(positions).all():
            self.flush()
            raise NonFiniteError(
                f"non-finite positions at step {step}; {self._writer.frames_committed} earlier frames are "
                f"committed to {self.path}"
            )
        i = self._n_buffered
        self._pos[i] = positions
        self._steps[i] = step
        self._times[i] = state.getTime()._value  # ps
        if self._boxes is not None:
            self._boxes[i] = state.getPeriodicBoxVectors(asNumpy=True)._value
        self._n_buffered += 1
        if self._n_buffered == self._flush_interval:
            self.flush()

    # -- life cycle ----------------------------------------------------------
    def _setup(self, simulation) -> None:
        from .. import features as feats
        from ..provenance import provenance

        topology = simulation.topology
        n_atoms = topology.getNumAtoms()
        state = simulation.context.getState(getPositions=True)
        current = state.getPositions(asNumpy=True)._value
        self.featurizer = self._resolve_featurizer(topology, current, feats)
        atoms = self._atoms_arg
        self.atom_indices = (
            np.arange(n_atoms) if atoms is None else np.asarray(feats.select_atoms(topology, atoms), dtype=np.int64)
        )
        integrator = simulation.integrator
        timestep_ps = integrator.getStepSize()._value
        temperature = integrator_temperature(integrator)
        periodic = simulation.system.usesPeriodicBoundaryConditions()

        if self._append and self.path.exists():
            writer = StoreWriter.open_append(
                self.path,
                atom_indices=self.atom_indices,
                n_atoms_system=n_atoms,
                featurizer=self.featurizer,
                timestep_ps=timestep_ps,
                report_interval=self._interval,
            )
            self._continue_at(writer, simulation.currentStep)
        else:
            writer = StoreWriter.create(
                self.path,
                topology=topology,
                positions_for_pdb=current,
                atom_indices=self.atom_indices,
                featurizer=self.featurizer,
                timestep_ps=timestep_ps,
                report_interval=self._interval,
                temperature_K=temperature,
                periodic=periodic,
                overwrite=self._overwrite,
                provenance=provenance(seed=self._seed, reporter="ZarrReporter"),
                external_forces=_external_forces(simulation.system),
            )
        self._writer = writer
        self._pos = np.empty((self._flush_interval, n_atoms, 3), dtype=np.float32)
        self._steps = np.empty(self._flush_interval, dtype=np.int64)
        self._times = np.empty(self._flush_interval, dtype=np.float64)
        self._boxes = np.empty((self._flush_interval, 3, 3), dtype=np.float32) if periodic else None
        _OPEN_REPORTERS.add(self)
        _register_atexit()

    def _resolve_featurizer(self, topology, positions, feats):
        arg = self._featurizer_arg
        if arg is None or isinstance(arg, feats.Featurizer):
            return arg
        return feats.build_featurizer(arg, topology, reference_positions=positions)

    def flush(self) -> None:
        """Featurize buffered frames, write them and publish them to readers."""
        if self._writer is None or self._n_buffered == 0:
            return
        n = self._n_buffered
        pos = self._pos[:n]
        boxes = None if self._boxes is None else self._boxes[:n]
        features = {}
        if self.featurizer is not None:
            import torch

            with torch.no_grad():
                box_t = None if boxes is None else torch.from_numpy(boxes)
                pos_t = torch.from_numpy(pos)
                for block in getattr(self.featurizer, "blocks", None) or [self.featurizer]:
                    features[block.name] = block(pos_t, box_t).numpy()
        with sigint_deferred():  # a Ctrl-C lands after the commit, never inside it
            self._writer.append(
                self._steps[:n],
                self._times[:n],
                positions=pos[:, self.atom_indices] if len(self.atom_indices) else None,
                features=features,
                box_vectors=boxes if len(self.atom_indices) else None,
            )
            self._writer.commit()
            self._n_buffered = 0

    def catch_up(self, simulation) -> None:
        """Record the current state if it is a report step whose frame is not recorded yet.

        A Ctrl-C can land between an integration step and its report; a run
        that stops there calls this before checkpointing, so that a resumed
        run (which reports from the next report step on) leaves no gap.
        """
        step = simulation.currentStep
        if self._writer is None or self._closed or step % self._interval:
            return
        last = int(self._steps[self._n_buffered - 1]) if self._n_buffered else self._writer.last_step
        if last is None or last < step:
            self.report(simulation, simulation.context.getState(getPositions=True,
                                                                enforcePeriodicBox=bool(self._periodic_request)))

