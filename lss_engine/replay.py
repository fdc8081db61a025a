"""``LatentSimulation``: OpenMM's reporters over synthetic (or stored) frames.

A latent space simulator produces configurations, not forces: it propagates a
latent state by one lag per step and decodes positions.  :class:`LatentSimulation`
offers the part of ``openmm.app.Simulation`` that reporters use
(``topology``, ``system``, ``integrator``, ``context``, ``reporters``,
``currentStep``, ``step``), so OpenMM's own ``DCDReporter``, ``XTCReporter``,
``PDBReporter``, ``StateDataReporter`` and lss_engine's ``ZarrReporter``
record a synthetic trajectory without modification.

The frames come from a :class:`FrameSource`.  :class:`ArrayFrameSource`
replays an array of frames; :meth:`LatentSimulation.from_store` replays the
saved positions of a trajectory store.

Example
-------
>>> from openmm.app import DCDReporter
>>> sim = LatentSimulation(topology, ArrayFrameSource(xyz_nm), step_size_ps=0.1)  # doctest: +SKIP
>>> sim.reporters.append(DCDReporter("replay.dcd", 1))                             # doctest: +SKIP
>>> sim.step(len(xyz_nm) - 1)                                                      # doctest: +SKIP
"""
from __future__ import annotations

import copy
import inspect
import io
from typing import Any, Protocol, runtime_checkable

import numpy as np
import openmm
from openmm import app, unit

from .errors import LssError, NonFiniteError, StoreError
from .interrupts import sigint_deferred
from .units import parse_time_ps

__all__ = ["ArrayFrameSource", "FrameSource", "LatentSimulation"]

#: ``describeNextReport`` includes that a frame of positions can satisfy.
_SUPPORTED_INCLUDES = ("positions", "parameters", "integratorParameters")
#: The old tuple form of ``describeNextReport``: (steps, positions, velocities, forces, energy[, periodic]).
_TUPLE_INCLUDES = ("positions", "velocities", "forces", "energy")
#: StateDataReporter columns that need energies or velocities.
_ENERGY_COLUMNS = ("potentialEnergy", "kineticEnergy", "totalEnergy", "temperature")
_WORKING_COLUMNS = "step, time, speed, progress, elapsedTime and remainingTime"


@runtime_checkable
class FrameSource(Protocol):
    """Where a :class:`LatentSimulation` gets its frames.

    Only frames at report steps are requested: ``advance(k)`` moves ``k``
    steps (lags) at once and returns one frame, so a latent propagator need
    not decode the frames in between.

    A source may also define ``box_vectors() -> ndarray | None``: the (3, 3)
    box of the current frame in nm (rows are the box vectors), read after
    each ``advance``; ``None`` keeps the simulation's box.
    """

    def positions(self) -> np.ndarray:
        """The current frame: (n_atoms, 3) positions in nm."""
        ...

    def advance(self, n_steps: int) -> np.ndarray:
        """Move ``n_steps`` steps forward; return the new current (n_atoms, 3) positions in nm."""
        ...


def _vec3s(box: np.ndarray) -> list[openmm.Vec3]:
    """Rows of a (3, 3) array in nm as OpenMM box vectors."""
    return [openmm.Vec3(*(float(x) for x in row)) * unit.nanometer for row in box]


def _nm(value: Any) -> np.ndarray:
    """A float64 array in nm from an array, an ``openmm.unit.Quantity`` or a list of ``Vec3``."""
    if unit.is_quantity(value):
        value = value.value_in_unit(unit.nanometer)
    elif isinstance(value, (list, tuple)) and value and unit.is_quantity(value[0]):  # [Vec3 nm, ...]
        value = [v.value_in_unit(unit.nanometer) for v in value]
    return np.asarray(value, dtype=np.float64)


class ArrayFrameSource:
    """Replay stored frames, one per step.

    Parameters
    ----------
    positions
        (n_frames, n_atoms, 3) positions in nm: a numpy array, an
        ``openmm.unit.Quantity``, an ``mdtraj.Trajectory`` (its ``xyz`` and
        ``unitcell_vectors``), or any object with ``shape`` and integer
        indexing returning one frame (read lazily, e.g. a zarr array).
    box_vectors
        (n_frames, 3, 3) or (3, 3) box vectors in nm; ``None`` for none (or
        the trajectory's own unit cell).
    initial
        (n_atoms, 3) positions of the starting configuration, before
        ``positions[0]``.  Without it the source starts at ``positions[0]``
        and ``advance(1)`` goes to ``positions[1]``; with it ``advance(1)``
        goes to ``positions[0]``, so every frame can be reported.

    Raises
    ------
    LssError
        For malformed arrays, and from :meth:`advance` when asked to go past
        the last frame (the source does not move then).

    Examples
    --------
    >>> src = ArrayFrameSource(np.zeros((5, 22, 3)))
    >>> src.advance(3).shape, src.frame_index
    ((22, 3), 3)
    """

    def __init__(self, positions: Any, box_vectors: Any = None, *, initial: Any = None):
        if box_vectors is None and getattr(positions, "unitcell_vectors", None) is not None:
            box_vectors = positions.unitcell_vectors
        if hasattr(positions, "xyz"):  # mdtraj.Trajectory
            positions = positions.xyz
        if unit.is_quantity(positions) or not (hasattr(positions, "shape") and hasattr(positions, "__getitem__")):
            positions = _nm(positions)
        shape = tuple(positions.shape)
        if len(shape) != 3 or shape[2] != 3 or shape[0] < 1:
            raise LssError(f"ArrayFrameSource needs positions shaped (n_frames, n_atoms, 3), got {shape}")
        self._frames = positions
        self.n_frames, self.n_atoms = int(shape[0]), int(shape[1])
        self._box = None
        if box_vectors is not None:
            box = _nm(box_vectors)
            if box.shape not in ((3, 3), (self.n_frames, 3, 3)):
                raise LssError(f"box_vectors must be shaped (3, 3) or ({self.n_frames}, 3, 3), got {box.shape}")
            self._box = box
        self._initial = None
        if initial is not None:
            self._initial = _nm(initial)
            if self._initial.shape != (self.n_atoms, 3):
                raise LssError(f"initial positions must be shaped ({self.n_atoms}, 3), got {self._initial.shape}")
        self._index = -1 if self._initial is not None else 0

    @property
    def frame_index(self) -> int:
        """Index of the current frame in ``positions`` (-1: the ``initial`` configuration)."""
        return self._index

    @property
    def frames_left(self) -> int:
        """How many more steps :meth:`advance` can take."""
        return self.n_frames - 1 - self._index

    def positions(self) -> np.ndarray:
        """The current frame, (n_atoms, 3) in nm."""
        if self._index < 0:
            return self._initial
        return np.asarray(self._frames[self._index])

    def advance(self, n_steps: int) -> np.ndarray:
        """Move ``n_steps`` frames forward and return the new current frame."""
        n = int(n_steps)
        if n < 0:
            raise LssError(f"ArrayFrameSource cannot go backwards ({n_steps} steps)")
        if n > self.frames_left:
            raise LssError(
                f"ArrayFrameSource has {self.n_frames} frames and is at frame {self._index}; it cannot "
                f"advance {n} steps (at most {self.frames_left} more)")
        self._index += n
        return self.positions()

    def box_vectors(self) -> np.ndarray | None:
        """(3, 3) box vectors of the current frame in nm, or ``None``."""
        if self._box is None or self._box.ndim == 2:
            return self._box
        return self._box[max(self._index, 0)]


class _BlockedFrames:
    """Frames of a store read in blocks, so a replay does not load the whole store."""

    def __init__(self, store, block: int = 1024):
        self._store = store
        self._block = max(1, int(block))
        self._start = 0
        self._data: np.ndarray | None = None
        self.shape = (store.n_frames, len(store.atom_indices), 3)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._data is None or not (self._start <= i < self._start + len(self._data)):
            self._start = (i // self._block) * self._block
            self._data = self._store.positions(self._start, min(self._start + self._block, self.shape[0]))
        return self._data[i - self._start]


def _state_keywords() -> dict[str, str]:
    """``getState`` keyword for each include name (OpenMM 8.2 renamed ``getPositions`` to ``positions``)."""
    names = ("positions", "velocities", "forces", "energy", "parameters", "parameterDerivatives",
             "integratorParameters")
    try:
        new = "positions" in inspect.signature(openmm.Context.getState).parameters
    except (TypeError, ValueError):  # pragma: no cover - a signature SWIG does not expose
        new = False
    return {n: n if new else "get" + n[0].upper() + n[1:] for n in names}


_STATE_KEYWORDS = _state_keywords()


def _normalise_report(report: Any) -> dict:
    """A ``describeNextReport`` answer in OpenMM 8's dict form (converts the old tuple form as OpenMM does)."""
    if isinstance(report, tuple):
        converted = {"steps": report[0], "include": [name for name, wanted in zip(_TUPLE_INCLUDES, report[1:5]) if wanted]}
        if len(report) > 5:
            converted["periodic"] = report[5]
        return converted
    return report


class LatentSimulation:
    """The ``openmm.app.Simulation`` surface that reporters use, over synthetic frames.

    Each step is one lag of the latent space simulator: :meth:`step` asks the
    reporters when they report (``describeNextReport``, in OpenMM 8's dict
    form or the old tuple form), advances the frame source straight to the
    next report step with one ``advance(k)`` call, loads that frame into a
    real OpenMM ``Context`` (Reference platform) and hands the reporters a
    genuine ``openmm.State`` from ``context.getState``, exactly when and as
    ``Simulation.step`` would.

    Parameters
    ----------
    topology
        ``openmm.app.Topology`` of the atoms the source produces.  If it has
        no box but the simulation is periodic, a copy with the box is used.
    source
        A :class:`FrameSource` whose current frame is the starting
        configuration (never reported, as in OpenMM).
    step_size_ps
        Time per step (the lag time), in ps or a time such as ``"10ps"``;
        the ``integrator`` (a ``VerletIntegrator``) has it as step size, so
        DCD/XTC headers and ``ZarrReporter`` record it.
    system
        ``openmm.System`` of ``topology``; ``None`` builds one with one
        particle per atom, masses from the elements and no forces (plus
        zero-strength bonds along the topology's bonds when periodic, so that
        ``enforcePeriodicBox`` wraps whole molecules as OpenMM does).
    start_step, start_time_ps
        Step count and time of the starting configuration.
    box_vectors
        (3, 3) periodic box in nm (or a ``Quantity``/tuple of ``Vec3``);
        ``None`` uses the topology's box, if any (otherwise vacuum).  A source
        with ``box_vectors()`` overrides it frame by frame.

    Attributes
    ----------
    topology, system, integrator, context, reporters, source
        As in ``openmm.app.Simulation`` (``source`` is the frame source).

    Notes
    -----
    Frames carry positions only: there are no energies, forces or
    velocities.  A reporter that asks for them (``energy``, ``forces``,
    ``velocities``, ``parameterDerivatives`` in ``describeNextReport``; for
    example ``StateDataReporter(potentialEnergy=True)`` or
    ``temperature=True``) makes :meth:`step` raise
    :class:`~lss_engine.errors.LssError` before any frame is generated, and
    nothing is written for that report -- zeros are never reported.
    ``StateDataReporter`` works with ``step``, ``time``, ``speed``,
    ``progress``, ``elapsedTime`` and ``remainingTime`` (``volume`` and
    ``density`` too when the simulation is periodic).  Checkpoints
    (``CheckpointReporter``, ``saveState``) are refused: the latent state
    is not in the OpenMM context.

    On ``KeyboardInterrupt`` the reports are never left half written (Ctrl-C
    is held while a frame is reported), reporters with a ``flush()`` method
    (``ZarrReporter``) are flushed, and ``currentStep`` is the step of the
    last reported frame.  A source interrupted inside ``advance`` may have
    moved on; :class:`ArrayFrameSource` moves only when it succeeds.

    Examples
    --------
    Replay 50 frames of MD through OpenMM's DCD writer:

    >>> from openmm.app import DCDReporter
    >>> sim = LatentSimulation(topology, ArrayFrameSource(xyz, initial=start), 0.1)  # doctest: +SKIP
    >>> sim.reporters.append(DCDReporter("replay.dcd", 1))                            # doctest: +SKIP
    >>> sim.step(50)                                                                   # doctest: +SKIP
    """

    def __init__(
        self,
        topology: app.Topology,
        source: FrameSource,
        step_size_ps: Any,
        *,
        system: openmm.System | None = None,
        start_step: int = 0,
        start_time_ps: float = 0.0,
        box_vectors: Any = None,
    ):
        if not isinstance(source, FrameSource):
            raise LssError(f"{type(source).__name__} is not a frame source: it needs positions() and advance(n_steps)")
        dt = parse_time_ps(step_size_ps)
        if not dt > 0:
            raise LssError(f"step_size_ps must be positive, got {step_size_ps!r}")
        self.source = source
        self.n_atoms = topology.getNumAtoms()
        box = self._initial_box(topology, system, box_vectors, source)
        if box is not None and topology.getPeriodicBoxVectors() is None:
            topology = copy.deepcopy(topology)
            topology.setPeriodicBoxVectors(_vec3s(box))
        self.topology = topology
        if system is None:
            system = self._make_system(topology, box)
        elif system.getNumParticles() != self.n_atoms:
            raise LssError(f"the system has {system.getNumParticles()} particles but the topology {self.n_atoms} atoms")
        self.system = system
        self.integrator = openmm.VerletIntegrator(dt * unit.picosecond)
        self.context = openmm.Context(system, self.integrator, openmm.Platform.getPlatformByName("Reference"))
        self.reporters: list[Any] = []
        self._step_ps = dt
        self._time_origin_ps, self._steps_since_origin, self._last_time_ps = 0.0, 0, 0.0
        try:
            self._usesPBC = system.usesPeriodicBoundaryConditions()
        except Exception:  # as openmm.app.Simulation: some forces do not implement it
            self._usesPBC = topology.getUnitCellDimensions() is not None
        if box is not None:
            self.context.setPeriodicBoxVectors(*_vec3s(box))
        self._load_frame(source.positions(), int(start_step))
        self.context.setStepCount(int(start_step))
        self._set_time(float(start_time_ps), 0)

    # -- construction helpers -------------------------------------------------
    @staticmethod
    def _initial_box(topology, system, box_vectors, source) -> np.ndarray | None:
        for candidate in (box_vectors, _source_box(source), topology.getPeriodicBoxVectors()):
            if candidate is not None:
                box = _nm(candidate)
                if box.shape != (3, 3):
                    raise LssError(f"box vectors must be shaped (3, 3), got {box.shape}")
                return box
        if system is not None and system.usesPeriodicBoundaryConditions():
            return _nm(system.getDefaultPeriodicBoxVectors())
        return None

    @staticmethod
    def _make_system(topology: app.Topology, box: np.ndarray | None) -> openmm.System:
        system = openmm.System()
        for atom in topology.atoms():
            system.addParticle(atom.element.mass if atom.element is not None else 0.0 * unit.dalton)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*_vec3s(box))
            # k = 0 bonds: no energy, but they define molecules for enforcePeriodicBox and mark the system periodic
            bonds = openmm.HarmonicBondForce()
            for a, b in topology.bonds():
                bonds.addBond(a.index, b.index, 0.1, 0.0)
            bonds.setUsesPeriodicBoundaryConditions(True)
            system.addForce(bonds)
        return system

    @classmethod
    def from_store(cls, store: Any, *, system: openmm.System | None = None) -> "LatentSimulation":
        """Replay the saved positions of a trajectory store through OpenMM reporters.

        One replay step is one stored frame: the step size is the store's
        frame interval, the simulation starts one frame before the first
        stored frame (at the store's starting structure, from its topology
        PDB) at step ``steps[0] / report_interval - 1``, so that
        ``sim.step(len(store))`` reports every frame at its stored time.
        Frames are read from the store in blocks as they are needed.

        Parameters
        ----------
        store
            A :class:`~lss_engine.store.TrajectoryStore` or its path.
        system
            Optional ``openmm.System`` of the saved atoms.

        Raises
        ------
        StoreError
            If the store saves no positions, is empty, or has gaps between frames.

        Examples
        --------
        >>> sim = LatentSimulation.from_store("run.zarr")          # doctest: +SKIP
        >>> sim.reporters.append(XTCReporter("run.xtc", 1))        # doctest: +SKIP
        >>> sim.step(sim.source.frames_left)                       # doctest: +SKIP
        """
        from .store import TrajectoryStore

        if not isinstance(store, TrajectoryStore):
            store = TrajectoryStore(store)
        if not len(store.atom_indices) or not store.topology_pdb:
            raise StoreError(f"{store.path} saves no positions, so there is nothing to replay")
        if store.n_frames == 0:
            raise StoreError(f"{store.path} has no frames to replay")
        steps = store.steps()
        interval = store.report_interval
        if np.any(np.diff(steps) != interval) or steps[0] % interval:
            raise StoreError(f"{store.path} has frames that are not every {interval} steps (an appended run with "
                             f"a gap?); a replay needs evenly spaced frames")
        pdb = app.PDBFile(io.StringIO(store.topology_pdb))
        boxes = store.box_vectors() if store.periodic else None
        source = ArrayFrameSource(_BlockedFrames(store), boxes, initial=pdb.getPositions(asNumpy=True))
        frame_ps = store.frame_interval_ps
        return cls(pdb.topology, source, frame_ps, system=system, start_step=int(steps[0] // interval) - 1,
                   start_time_ps=float(store.times(0, 1)[0]) - frame_ps)

    # -- the Simulation surface -------------------------------------------------
    @property
    def currentStep(self) -> int:
        """The index of the current step (settable, as in ``openmm.app.Simulation``)."""
        return self.context.getStepCount()

    @currentStep.setter
    def currentStep(self, step: int) -> None:
        self.context.setStepCount(int(step))

    def step(self, steps: int, *, progress: bool = False) -> None:
        """Advance by ``steps`` steps (lags), calling reporters when ``Simulation.step`` would.

        Parameters
        ----------
        steps
            Number of steps; reporters fire at the steps their
            ``describeNextReport`` names (never at the starting step).
        progress
            Show a tqdm progress bar.

        Raises
        ------
        LssError
            If a reporter asks for energies, forces or velocities (before
            anything is generated or written for that report), or the source
            runs out of frames.
        NonFiniteError
            If the source returns NaN or Inf positions (nothing is reported
            for that frame).
        """
        if int(steps) != steps:
            raise TypeError(f"Expected an integer for steps, got {type(steps)}")
        end = self.currentStep + int(steps)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max(int(steps), 0), unit="step", unit_scale=True, desc="latent simulation",
                       dynamic_ncols=True)
        try:
            while self.currentStep < end:
                k, due = self._next_reports(end - self.currentStep)
                positions = self.source.advance(k)
                with sigint_deferred():
                    self._load_frame(positions, self.currentStep + k)
                    self.context.setStepCount(self.currentStep + k)
                    self._set_time(None, k)
                    self._report(due)
                if bar is not None:
                    bar.update(k)
        except KeyboardInterrupt:
            self._flush_reporters()
            raise
        finally:
            if bar is not None:
                bar.close()

    def saveState(self, file: Any) -> None:
        """Refused: the latent state cannot be saved as an OpenMM state."""
        raise LssError("a LatentSimulation cannot save an OpenMM state or checkpoint: its latent state is not in "
                       "the OpenMM context (remove CheckpointReporter)")

    saveCheckpoint = saveState

    # -- internals ----------------------------------------------------------------
    def _next_reports(self, steps_left: int) -> tuple[int, list[tuple[Any, dict]]]:
        """Steps to the next report (or ``steps_left``) and the reporters due then, as ``Simulation._simulate``."""
        described = [(reporter, _normalise_report(reporter.describeNextReport(self))) for reporter in self.reporters]
        for reporter, report in described:
            self._check_supported(reporter, report)
        next_steps = steps_left
        for _, report in described:
            if 0 < report["steps"] <= next_steps:
                next_steps = report["steps"]
        due = [(r, report) for r, report in described if report["steps"] == next_steps]
        return next_steps, due

    def _check_supported(self, reporter: Any, report: dict) -> None:
        unsupported = [name for name in report.get("include", []) if name not in _SUPPORTED_INCLUDES]
        if isinstance(reporter, app.StateDataReporter):
            columns = [c for c in _ENERGY_COLUMNS if getattr(reporter, "_" + c, False)]
            if not self._usesPBC:
                columns += [c for c in ("volume", "density") if getattr(reporter, "_" + c, False)]
            if columns:  # name the constructor flags rather than the include they imply
                unsupported = columns
        if unsupported:
            raise LssError(
                f"{type(reporter).__name__} asks for {', '.join(unsupported)}, which a latent space simulation does "
                f"not have (its frames are positions only, no energies, forces or velocities"
                f"{'' if self._usesPBC else ', and no periodic box'}); StateDataReporter works with "
                f"{_WORKING_COLUMNS}")

    def _report(self, due: list[tuple[Any, dict]]) -> None:
        """Group the due reporters by periodic wrapping and report, as ``Simulation._simulate`` does."""
        wrapped, unwrapped, either = [], [], []
        for reporter, report in due:
            want_wrap = self._usesPBC if report.get("periodic") is None else report["periodic"]
            if "positions" not in report["include"]:
                either.append((reporter, report))
            elif want_wrap:
                wrapped.append((reporter, report))
            else:
                unwrapped.append((reporter, report))
        if len(wrapped) > len(unwrapped):
            wrapped += either
        else:
            unwrapped += either
        if wrapped:
            self._generate_reports(wrapped, True)
        if unwrapped:
            self._generate_reports(unwrapped, False)

    def _generate_reports(self, reports: list[tuple[Any, dict]], periodic: bool) -> None:
        includes = set().union(*(report["include"] for _, report in reports)) | {"parameters"}
        kwargs = {_STATE_KEYWORDS[name]: True for name in includes}
        state = self.context.getState(groups=self.integrator.getIntegrationForceGroups(),
                                      enforcePeriodicBox=periodic, **kwargs)
        for reporter, _ in reports:
            reporter.report(self, state)

    def _load_frame(self, positions: Any, step: int) -> None:
        xyz = _nm(positions)
        if xyz.shape != (self.n_atoms, 3):
            raise LssError(f"{type(self.source).__name__} returned positions shaped {xyz.shape} at step {step}; "
                           f"the topology has {self.n_atoms} atoms, so ({self.n_atoms}, 3) was expected")
        if not np.isfinite(xyz).all():
            raise NonFiniteError(f"{type(self.source).__name__} returned non-finite positions at step {step}")
        box = _source_box(self.source)
        if box is not None:
            self.context.setPeriodicBoxVectors(*_vec3s(_nm(box)))
        self.context.setPositions(xyz * unit.nanometer)

    def _set_time(self, origin_ps: float | None, k: int) -> None:
        """Time = origin + steps × step size (no round-off build-up); an outside ``setTime`` starts a new origin."""
        if origin_ps is None:
            now = self.context.getTime().value_in_unit(unit.picosecond)
            if now != self._last_time_ps:
                origin_ps = now
        if origin_ps is not None:
            self._time_origin_ps, self._steps_since_origin = origin_ps, 0
        self._steps_since_origin += k
        self.context.setTime(self._time_origin_ps + self._steps_since_origin * self._step_ps)
        self._last_time_ps = self.context.getTime().value_in_unit(unit.picosecond)

    def _flush_reporters(self) -> None:
        for reporter in self.reporters:
            flush = getattr(reporter, "flush", None)
            if callable(flush):
                flush()


def _source_box(source: Any) -> Any:
    getter = getattr(source, "box_vectors", None)
    return getter() if callable(getter) else None
