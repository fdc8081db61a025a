r"""``LatentReporter``: latent coordinates, bias energy and bias parameters of a running OpenMM simulation.

Every recorded frame carries what reweighting needs (issue 12, section 3):
the latent point :math:`s` of the frame (``d`` coordinates), the energy of
the latent bias acting on it (kJ/mol) and the values of the bias's global
parameters at that frame (restraint centre :math:`s^0` and stiffness
:math:`\kappa` for umbrella windows and steering), with the step and time.
The bias's fixed parts (flat-bottom walls, Gaussian hills), the encoder's
identity and the latent names are in the store's attributes, so the bias of
any frame is a function of the store alone (:meth:`LatentRecord.bias_energy_of`).

Design: its own store
---------------------
The reporter writes its own store (one :class:`~lss_engine.store.StoreWriter`,
the package's one file-writing path) holding observables only:

=====================  ==========================  ===========================
observable             columns                     units
=====================  ==========================  ===========================
``latent``             ``psi1`` ... ``psid``       1 (latent units)
``bias_energy``        ``bias_energy``             kJ/mol
``bias_parameters``    the global parameter names  1 (centres), kJ/mol (κ)
                       (``lss_s0_0``, ...,
                       ``lss_kappa_0``, ...)
=====================  ==========================  ===========================

with every array's ``step`` (int64) and ``time`` (float64 ps);
``bias_parameters`` is absent when the bias has no global parameters (no
restraint, or no bias).  Writing into the observables of a
:class:`~lss_engine.reporters.ZarrReporter`'s store instead would need two
reporters to share one writer (a store has exactly one: its commits publish
all arrays at once), to agree on one report interval and flush boundaries,
and the ZarrReporter to know the latent blocks before it creates its store;
a separate store keeps each reporter small, lets the latent be recorded at
its own interval, and is joined to the positions/features store by step
number (:meth:`TrajectoryStore.steps`).  The store's ``parameters`` record
the time step, report interval, temperature (kT for reweighting) and the
system's atom count (no atoms are saved); ``parameters.provenance`` holds
the reporter's setup under ``"latent_reporter"`` (:func:`read_latent_store`
reads it).

Values are stored as float32 (the store's observable dtype): relative error
≤ 6e-8, far below what reweighting resolves.

Where the numbers come from
---------------------------
OpenMM 8.6's ``Simulation`` evaluates one State for all reporters due at a
step, over ``integrator.getIntegrationForceGroups()`` (every group for
ordinary integrators): a reporter cannot restrict it to a force group, so
an ``"energy"`` in ``describeNextReport``'s include list would be the whole
system's energy, and ``"parameterDerivatives"`` would cost an evaluation of
every force.  So with a bias, the reporter asks OpenMM for nothing (an empty
include list; the shared State supplies the time) and makes its own
``context.getState(getEnergy=True, getParameters=True,
getParameterDerivatives=True, groups={bias group})``: one evaluation of the
bias group alone, which gives

* the bias energy: that group's energy, exactly what the force applied (the
  group must hold the bias force only, and the integrator must integrate it,
  both checked);
* the parameters at that step;
* the latent point of the same evaluation, read back from the restraint's
  energy-parameter derivatives (:meth:`~lss_engine.bias.forces.LatentBias.latent_from_state`,
  :math:`s_k = s^0_k - \kappa_k^{-1}\,\partial E/\partial s^0_k`), when the
  bias has a restraint, is on the openmm-torch backend and every
  :math:`\kappa_k > 0` at that step.

Otherwise (no restraint, the Python-force backend, a :math:`\kappa_k = 0`
at that step, or ``latent_source="encoder"``) the same ``getState`` also
returns the positions (and box) and the latent is the encoder export of
those positions, in float64 (the force's own encoder module, so the latent
is the one the force saw), evaluated in one batch at each flush.  Without a
bias (``encoder=``) the reporter records an encoder's latent of the
positions OpenMM's State brings (include ``["positions"]``), with bias
energy 0 and no parameters.

Measured on alanine dipeptide in vacuum (22 atoms, the 2-d SRV of the
tests, float64 force, Reference platform, 1 thread, on a shared 2-core
machine; min / median of 7 rounds): the bias group's ``getState`` costs
0.63 / 0.92 ms with the parameter derivatives (read-back) and 0.74 / 0.88 ms
with positions instead (encoder path) -- the same, one evaluation of the
force (openmm-torch runs its backward pass for any request), as much as
one MD step with the bias (0.61 / 0.86 ms).  A separate
encoder call adds 0.20-0.28 ms for one frame, 0.004 ms per frame in the
batch of 100 at a flush, so read-back saves that call and the buffered
positions, not the evaluation that the bias energy needs.  Over 2000 steps
reporting every 10 steps, the reporter added 2.8 ms per report either way,
about 1.9 ms of it the durable commits (nine arrays fsync'd, 0.19 s per
commit of 100 frames; a :class:`~lss_engine.reporters.ZarrReporter` of
positions added 1.05 ms per report).

Caveat: openmm-torch evaluates the force in the calling thread and always
runs its backward pass, so any ``getState`` of its energy (and MD itself)
fails inside ``torch.no_grad()`` ("element 0 of tensors does not require
grad"); the reporter evaluates only its encoder under ``no_grad``.

Durability and continuation
---------------------------
Frames are buffered and committed every ``flush_interval`` frames, at
:meth:`LatentReporter.close` and at interpreter exit (a killed process loses
at most the frames since the last commit; a commit is atomic).  ``append``
continues a store after its last committed frame, dropping frames beyond
the simulation's current step (a restart from an earlier checkpoint), and
refuses a store written with another setup: other encoder (weights or
features), latent dimension, mode (bias or none), parameter names, fixed
bias terms (walls, Gaussians), time step or report interval.
"""
from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._helpers import canonical_json, jsonable, positive_int
from ..errors import LssError, NonFiniteError, StoreError
from ..interrupts import sigint_deferred
from ..store import FeatureBlock, StoreWriter, TrajectoryStore
from .zarr_reporter import _OPEN_REPORTERS, StoreReporterBase, _register_atexit, integrator_temperature

if TYPE_CHECKING:  # pragma: no cover
    from ..bias.forces import LatentBias
    from ..encoder import Encoder

__all__ = ["BIAS_ENERGY", "BIAS_PARAMETERS", "LATENT", "LatentRecord", "LatentReporter", "read_latent_store"]

#: observable of the latent coordinates
LATENT = "latent"
#: observable of the bias energy (one column, kJ/mol)
BIAS_ENERGY = "bias_energy"
#: observable of the bias's global parameters (one column per parameter)
BIAS_PARAMETERS = "bias_parameters"
#: key of the reporter's setup in the store's provenance
SETUP_KEY = "latent_reporter"
#: version of the setup record
SETUP_VERSION = 1
_LATENT_SOURCES = ("auto", "read-back", "encoder")
#: setup entries that do not define the recorded quantities (not compared on append)
_NOT_COMPARED = ("backend", "force_group", "parameter_defaults", "latent_source")


# --------------------------------------------------------------------------
# the setup record


def _module_sha256(module: Any) -> str:
    """SHA-256 of a torch module's state (names, dtypes, shapes, bytes): the identity of its weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _term_record(term: Any, names: Sequence[str]) -> dict:
    """A JSON record of one bias term: its fixed values (its global parameters are recorded per frame)."""
    from ..bias.potentials import FlatBottomWalls, GaussianSum, HarmonicRestraint

    if isinstance(term, HarmonicRestraint):
        return {"type": "HarmonicRestraint", "n_dim": term.n_dim, "parameters": list(names)}
    if isinstance(term, FlatBottomWalls):  # ±inf (an open side) → null, unambiguous per side
        return {"type": "FlatBottomWalls", "n_dim": term.n_dim, "lower": jsonable(term.lower.numpy()),
                "upper": jsonable(term.upper.numpy()), "stiffness": float(term.wall_stiffness)}
    if isinstance(term, GaussianSum):
        return {"type": "GaussianSum", "n_dim": term.n_dim, "centres": term.centres.numpy().tolist(),
                "widths": term.widths.numpy().tolist(), "heights": term.heights.numpy().tolist()}
    return {"type": type(term).__name__, "n_dim": term.n_dim, "parameters": list(names),
            "sha256": _module_sha256(term)}


def _term_from_record(record: dict) -> Any:
    """The :class:`~lss_engine.bias.potentials.LatentTerm` of a :func:`_term_record`."""
    from ..bias.potentials import FlatBottomWalls, GaussianSum, HarmonicRestraint

    kind, d = record.get("type"), int(record["n_dim"])
    if kind == "HarmonicRestraint":
        return HarmonicRestraint(np.zeros(d), np.zeros(d))  # centre and stiffness come per frame
    if kind == "FlatBottomWalls":
        lower = np.array([-np.inf if v is None else v for v in record["lower"]], dtype=np.float64)
        upper = np.array([np.inf if v is None else v for v in record["upper"]], dtype=np.float64)
        return FlatBottomWalls(lower, upper, record["stiffness"])
    if kind == "GaussianSum":
        return GaussianSum(np.asarray(record["centres"], dtype=np.float64).reshape(-1, d),
                           np.asarray(record["widths"], dtype=np.float64).reshape(-1, d),
                           np.asarray(record["heights"], dtype=np.float64))
    raise LssError(f"a bias term of type {kind!r} cannot be rebuilt from a store (only its checksum is recorded)")


def _parameter_unit(name: str, bias: Any) -> str:
    if name in bias.centre_names:
        return "1"
    if name in bias.stiffness_names:
        return "kJ/mol"
    return ""


# --------------------------------------------------------------------------
# the reporter


class LatentReporter(StoreReporterBase):
    """OpenMM reporter recording latent coordinates, bias energy and bias parameters into a store.

    Parameters
    ----------
    store
        Path of the store (a directory, conventionally ``*.zarr``); its
        layout is in the module docstring.
    reportInterval
        Steps between frames.
    bias
        The :class:`~lss_engine.bias.forces.LatentBias` handle of the latent
        bias force acting in the simulation (the force is in the System, in
        its own force group).  Its parameter values, group energy and latent
        point are recorded per frame.
    encoder
        Without a bias: a model directory or an
        :class:`~lss_engine.encoder.Encoder` whose latent is recorded (bias
        energy 0, no parameters).  Exactly one of ``bias`` and ``encoder``.
    dim, featurizer, periodic
        For ``encoder``: the SRV's leading coordinates (default all), the
        torch featurizer (default: rebuilt from the encoder's spec), and
        whether to apply the minimum image with the simulation's box (default:
        whether the System is periodic), as in
        :func:`~lss_engine.bias.forces.latent_bias_force`.
    latent_source
        ``"auto"`` (read-back where possible, else the encoder), ``"read-back"``
        (refuse a bias that cannot be read back; frames with a
        :math:`\\kappa_k = 0` still use the encoder) or ``"encoder"``.
    append
        Continue an existing store after its last committed frame (created if
        missing); a store of another setup is refused, frames beyond the
        simulation's current step are dropped.
    flush_interval
        Frames buffered before they are written and committed: a killed
        process loses at most this many.
    overwrite
        Replace an existing store at ``store`` (only an lss_engine store).
    seed
        Recorded in the store's provenance.

    Raises
    ------
    LssError
        Neither or both of ``bias`` and ``encoder``, a bad interval, or (at
        the first report) a simulation the bias does not fit: its force group
        missing, shared with other forces or not integrated, or its global
        parameters missing from the Context.

    Attributes
    ----------
    path : pathlib.Path
        The store.
    bias : LatentBias or None
        As given.
    setup : dict or None
        The setup record written into the store's provenance (after the first report).
    n_read_back, n_encoded : int
        Frames of this reporter whose latent was read back from the force,
        or computed by the encoder (committed or dropped at a non-finite value).

    Notes
    -----
    Per report with a bias: one ``getState`` of the bias group (one encoder
    evaluation inside the force) and a copy; with the encoder path, the
    encoder runs over the buffered positions in one batch at each flush.
    A non-finite value is a :class:`~lss_engine.errors.NonFiniteError`
    naming its step; the frames before it are committed first.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        reportInterval: int,
        bias: LatentBias | None = None,
        *,
        encoder: Encoder | str | os.PathLike | None = None,
        dim: int | None = None,
        featurizer: Any = None,
        periodic: bool | None = None,
        latent_source: str = "auto",
        append: bool = False,
        flush_interval: int = 100,
        overwrite: bool = False,
        seed: int | None = None,
    ) -> None:
        from ..bias.forces import LatentBias

        self._interval = positive_int(reportInterval, "reportInterval")
        self._flush_interval = positive_int(flush_interval, "flush_interval")
        if append and overwrite:
            raise StoreError("append and overwrite exclude each other")
        if (bias is None) == (encoder is None):
            raise LssError("a LatentReporter records either a latent bias (bias=LatentBias) or an encoder's latent "
                           "without bias (encoder=model directory or Encoder): give exactly one")
        if bias is not None and not isinstance(bias, LatentBias):
            raise LssError(f"bias must be the LatentBias handle of latent_bias_force, got {type(bias).__name__}")
        if bias is not None and (dim is not None or featurizer is not None or periodic is not None):
            raise LssError("dim, featurizer and periodic are the bias's own; give them to latent_bias_force")
        if latent_source not in _LATENT_SOURCES:
            raise LssError(f"latent_source must be one of {', '.join(map(repr, _LATENT_SOURCES))}, "
                           f"got {latent_source!r}")
        can_read_back = bias is not None and bool(bias.centre_names) and bias.backend == "torch"
        if latent_source == "read-back" and not can_read_back:
            raise LssError("latent_source='read-back' needs a latent bias with a restraint on the torch backend "
                           "(the latent is read back from the restraint's energy-parameter derivatives)")
        self.path = Path(store)
        self.bias = bias
        self._encoder_arg = encoder
        self._encoder_options = (dim, featurizer, periodic)
        self._read_back = can_read_back and latent_source != "encoder"
        self._latent_source = latent_source
        self._append = bool(append)
        self._overwrite = bool(overwrite)
        self._seed = seed
        self._writer: StoreWriter | None = None
        self._closed = False
        self._n_buffered = 0
        self.setup: dict | None = None
        #: frames whose latent was read back from the force / computed by the encoder (this session)
        self.n_read_back = 0
        self.n_encoded = 0

    # -- OpenMM reporter protocol --------------------------------------------
    def describeNextReport(self, simulation: Any) -> dict:
        """Steps to the next report and what it needs from OpenMM's State (OpenMM 8 dict form).

        With a bias nothing (the reporter gets its own State of the bias group,
        see the module docstring); without one the positions.
        """
        if self._writer is None:
            self._setup(simulation)
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": [] if self.bias is not None else ["positions"]}

    def report(self, simulation: Any, state: Any) -> None:
        """Record one frame; flush every ``flush_interval`` frames."""
        if self._closed:
            raise StoreError(f"LatentReporter for {self.path} is closed")
        if self._writer is None:
            self._setup(simulation)
        step = int(simulation.currentStep)
        i = self._n_buffered
        if self.bias is None:
            self._store_positions(i, state)
            self._energy[i] = 0.0
            self._encode[i] = True
        else:
            self._report_bias(i, simulation.context)
        values = [self._energy[i:i + 1], self._params[i]] + ([self._pos[i]] if self._encode[i] else [])
        if self._boxes is not None and self._encode[i]:
            values.append(self._boxes[i])
        if not self._encode[i]:
            values.append(self._latent[i])
        if not all(np.isfinite(v).all() for v in values):
            self.flush()
            raise NonFiniteError(
                f"non-finite positions, latent coordinates, bias energy or parameters at step {step}; "
                f"{self._writer.frames_committed} earlier frames are committed to {self.path}")
        self._steps[i] = step
        self._times[i] = state.getTime()._value  # ps
        self._n_buffered += 1
        if self._n_buffered == self._flush_interval:
            self.flush()

    def _report_bias(self, i: int, context: Any) -> None:
        """The bias group's energy, the parameters and (read-back) the latent, from one evaluation of that group."""
        bias = self.bias
        read_back = self._read_back and all(context.getParameter(n) > 0 for n in bias.stiffness_names)
        state = context.getState(getEnergy=True, getParameters=True, getParameterDerivatives=read_back,
                                 getPositions=not read_back, groups={bias.force_group})
        self._energy[i] = state.getPotentialEnergy()._value  # kJ/mol
        parameters = state.getParameters()
        self._params[i] = [parameters[name] for name in bias.parameter_names]
        self._encode[i] = not read_back
        if read_back:
            self._latent[i] = bias.latent_from_state(state)
        else:
            self._store_positions(i, state)

    def _store_positions(self, i: int, state: Any) -> None:
        self._pos[i] = state.getPositions(asNumpy=True)._value  # nm
        if self._boxes is not None:
            self._boxes[i] = state.getPeriodicBoxVectors(asNumpy=True)._value

    # -- life cycle ----------------------------------------------------------
    def _latent_module(self, simulation: Any) -> tuple[Any, bool, str]:
        """(encoder export positions [+ box] → latent, float64; whether it uses the box; its weights' SHA-256)."""
        import torch

        if self.bias is not None:
            module = self.bias.module
            return module.latent, bool(self.bias.periodic), _module_sha256(module.encoder)
        from ..bias.forces import _encoder_and_bundle, _encoder_module

        dim, featurizer, periodic = self._encoder_options
        if periodic is None:
            periodic = bool(simulation.system.usesPeriodicBoundaryConditions())
        encoder, _ = _encoder_and_bundle(self._encoder_arg)
        module, uses_box = _encoder_module(encoder, featurizer, dim, periodic, torch.float64)
        module.eval()
        return module, uses_box, _module_sha256(module)

    def _check_bias_fits(self, simulation: Any) -> None:
        bias = self.bias
        group = bias.force_group
        in_group = [f for f in simulation.system.getForces() if f.getForceGroup() == group]
        if len(in_group) != 1:
            what = "no force" if not in_group else f"{len(in_group)} forces ({', '.join(f.getName() for f in in_group)})"
            raise LssError(f"the latent bias is in force group {group}, which holds {what} in this System: the "
                           "group must hold the bias force alone (its energy is recorded as the bias energy)")
        groups = int(simulation.integrator.getIntegrationForceGroups())
        if not (groups >> group) & 1:
            raise LssError(f"the integrator does not integrate force group {group}, the latent bias's: "
                           "the recorded bias would not act")
        present = set(simulation.context.getParameters().keys())
        missing = [n for n in bias.parameter_names if n not in present]
        if missing:
            raise LssError(f"the simulation's Context has no global parameters {', '.join(missing)}: "
                           "is this bias's force in its System?")

    def _make_setup(self, simulation: Any, uses_box: bool, sha256: str, n_dim: int) -> dict:
        bias = self.bias
        feature_spec = None
        spec = getattr(self._featurizer_of(), "spec", None)
        if callable(spec):
            feature_spec = spec()
        setup: dict[str, Any] = {
            "version": SETUP_VERSION,
            "mode": "none" if bias is None else "bias",
            "n_dim": int(n_dim),
            "latent_names": [f"psi{k + 1}" for k in range(n_dim)],
            "encoder_sha256": sha256,
            "feature_spec": feature_spec,
            "periodic": bool(uses_box),
            "latent_source": self._latent_source if bias is not None else "encoder",
        }
        if bias is not None:
            suffixes = [term.parameter_suffixes() for term in bias.module.terms]
            names, terms, at = list(bias.parameter_names), [], 0
            for term, own in zip(bias.module.terms, suffixes):
                terms.append(_term_record(term, names[at:at + len(own)]))
                at += len(own)
            setup.update({
                "backend": bias.backend,
                "force_group": int(bias.force_group),
                "parameter_names": names,
                "centre_names": list(bias.centre_names),
                "stiffness_names": list(bias.stiffness_names),
                "parameter_defaults": [float(v) for v in bias.module.parameter_defaults()],
                "terms": terms,
            })
        else:
            setup.update({"parameter_names": [], "terms": []})
        return jsonable(setup)

    def _featurizer_of(self) -> Any:
        module = self.bias.module.encoder if self.bias is not None else self._module
        return getattr(module, "featurizer", None)

    def _setup(self, simulation: Any) -> None:
        import torch

        from ..provenance import provenance

        if self.bias is not None:
            self._check_bias_fits(simulation)
        latent_fn, uses_box, sha256 = self._latent_module(simulation)
        self._module = latent_fn
        n_atoms = simulation.topology.getNumAtoms()
        n_atoms_module = getattr(self._featurizer_of(), "n_atoms", None)
        if n_atoms_module is not None and int(n_atoms_module) != n_atoms:
            raise LssError(f"the encoder's featurizer reads {n_atoms_module} atoms, the simulation has {n_atoms}")
        with torch.no_grad():
            probe = np.random.default_rng(0).normal(scale=0.3, size=(1, n_atoms, 3))
            box = torch.eye(3, dtype=torch.float64) * 10.0 if uses_box else None
            n_dim = int(self._evaluate(torch.as_tensor(probe), box).shape[-1])
        setup = self._make_setup(simulation, uses_box, sha256, n_dim)
        names = setup["parameter_names"]
        blocks = [FeatureBlock(LATENT, list(setup["latent_names"]), ["1"] * n_dim),
                  FeatureBlock(BIAS_ENERGY, [BIAS_ENERGY], ["kJ/mol"])]
        if names:
            blocks.append(FeatureBlock(BIAS_PARAMETERS, list(names), [_parameter_unit(n, self.bias) for n in names]))
        integrator = simulation.integrator
        timestep_ps = integrator.getStepSize()._value
        temperature = integrator_temperature(integrator)
        no_atoms = np.zeros(0, dtype=np.int64)
        if self._append and self.path.exists():
            self._check_append(setup)
            writer = StoreWriter.open_append(self.path, atom_indices=no_atoms, n_atoms_system=n_atoms,
                                             featurizer=None, timestep_ps=timestep_ps,
                                             report_interval=self._interval)
            self._continue_at(writer, simulation.currentStep)
        else:
            writer = StoreWriter.create(
                self.path,
                topology=simulation.topology,
                atom_indices=no_atoms,
                timestep_ps=timestep_ps,
                report_interval=self._interval,
                temperature_K=temperature,
                periodic=bool(simulation.system.usesPeriodicBoundaryConditions()),
                observables=blocks,
                overwrite=self._overwrite,
                provenance=provenance(seed=self._seed, reporter="LatentReporter", **{SETUP_KEY: setup}),
            )
        self._writer = writer
        self.setup = setup
        self._names = list(names)
        f = self._flush_interval
        self._latent = np.zeros((f, n_dim), dtype=np.float64)
        self._energy = np.zeros(f, dtype=np.float64)
        self._params = np.zeros((f, len(names)), dtype=np.float64)
        self._encode = np.zeros(f, dtype=bool)
        self._steps = np.zeros(f, dtype=np.int64)
        self._times = np.zeros(f, dtype=np.float64)
        self._pos = np.zeros((f, n_atoms, 3), dtype=np.float64)
        self._boxes = np.zeros((f, 3, 3), dtype=np.float64) if uses_box else None
        _OPEN_REPORTERS.add(self)
        _register_atexit()

    def _check_append(self, setup: dict) -> None:
        """Refuse to continue a store whose recorded setup differs from this reporter's."""
        reader = TrajectoryStore(self.path)
        recorded = reader.provenance.get(SETUP_KEY)
        if not isinstance(recorded, dict):
            raise StoreError(f"cannot append to {self.path}: it was not written by a LatentReporter")

        def identity(doc: dict) -> dict:
            return {k: v for k, v in doc.items() if k not in _NOT_COMPARED}

        mine, theirs = identity(setup), identity(recorded)
        if canonical_json(mine, "the setup") != canonical_json(theirs, "the store's setup"):
            differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise StoreError(f"cannot append to {self.path}: this reporter's setup differs from the store's "
                             f"({', '.join(differ)})")

    def _evaluate(self, positions: Any, box: Any) -> Any:
        return self._module(positions, box)

    def flush(self) -> None:
        """Compute the buffered frames' encoder latents (one batch), write and commit the frames."""
        if self._writer is None or self._n_buffered == 0:
            return
        n = self._n_buffered
        rows = np.flatnonzero(self._encode[:n])
        bad = n
        if len(rows):
            import torch

            with torch.no_grad():
                pos = torch.from_numpy(self._pos[rows])
                box = None if self._boxes is None else torch.from_numpy(self._boxes[rows])
                self._latent[rows] = self._evaluate(pos, box).to(torch.float64).numpy()
            self.n_encoded += len(rows)
            finite = np.isfinite(self._latent[rows]).all(axis=1)
            if not finite.all():
                bad = int(rows[np.argmin(finite)])
        self.n_read_back += int(n - len(rows))
        if bad:
            self._write(bad)
        self._n_buffered = 0
        if bad < n:
            raise NonFiniteError(f"the encoder gives non-finite latent coordinates at step {self._steps[bad]}; "
                                 f"{self._writer.frames_committed} earlier frames are committed to {self.path}")

    def _write(self, n: int) -> None:
        features = {LATENT: self._latent[:n], BIAS_ENERGY: self._energy[:n, None]}
        if self._names:
            features[BIAS_PARAMETERS] = self._params[:n]
        with sigint_deferred():  # a Ctrl-C lands after the commit, never inside it
            self._writer.append(self._steps[:n], self._times[:n], features=features)
            self._writer.commit()

    def catch_up(self, simulation: Any) -> None:
        """Record the current state if it is a report step whose frame is not recorded yet (as ZarrReporter)."""
        step = simulation.currentStep
        if self._writer is None or self._closed or step % self._interval:
            return
        last = int(self._steps[self._n_buffered - 1]) if self._n_buffered else self._writer.last_step
        if last is None or last < step:
            self.report(simulation, simulation.context.getState(getPositions=self.bias is None, getParameters=True))



# --------------------------------------------------------------------------
# reading back


@dataclass(frozen=True)
class LatentRecord:
    """The frames of a :class:`LatentReporter` store, in float64.

    Attributes
    ----------
    path
        The store.
    steps, times
        ``(n,)`` step numbers and times (ps).
    latent
        ``(n, d)`` latent coordinates.
    bias_energy
        ``(n,)`` the bias energy of each frame, kJ/mol (0 without bias).
    parameter_names
        The bias's global parameters (empty without any).
    parameters
        ``(n, len(parameter_names))`` their values at each frame.
    setup
        The reporter's setup record (mode, encoder checksum, fixed bias terms, ...).
    temperature_K
        The integrator's temperature (``None`` if it had none).
    """

    path: Path
    steps: np.ndarray
    times: np.ndarray
    latent: np.ndarray
    bias_energy: np.ndarray
    parameter_names: tuple[str, ...]
    parameters: np.ndarray
    setup: dict
    temperature_K: float | None

    def parameter(self, name: str) -> np.ndarray:
        """``(n,)`` values of one global parameter."""
        if name not in self.parameter_names:
            raise LssError(f"{self.path} records no parameter {name!r} (it has {list(self.parameter_names)})")
        return self.parameters[:, self.parameter_names.index(name)]

    def terms(self) -> list[Any]:
        """The bias's terms rebuilt from the store (a restraint's centre and stiffness come per frame)."""
        return [_term_from_record(t) for t in self.setup.get("terms", [])]

    def bias_energy_of(self, latent: Any, parameters: Any = None) -> np.ndarray:
        """This run's bias (kJ/mol) of latent points ``(m, d)``: the reweighting matrix row of this bias.

        Parameters
        ----------
        latent
            ``(m, d)`` latent points (of this run's frames or any other's).
        parameters
            ``(len(parameter_names),)`` values for all points, or ``(m, ...)``
            one row per point; default: the run's own, which must then be the
            same in every frame (one thermodynamic state per run).
        """
        import torch

        s = np.atleast_2d(np.asarray(latent, dtype=np.float64))
        n_par = len(self.parameter_names)
        if parameters is None:
            if n_par and len(self.parameters) and not (self.parameters == self.parameters[0]).all():
                raise LssError(f"the bias parameters of {self.path} change during the run; pass parameters= "
                               "(one row per point, e.g. record.parameters for its own frames)")
            parameters = self.parameters[0] if len(self.parameters) else np.zeros(n_par)
        p = np.asarray(parameters, dtype=np.float64)
        rows = np.broadcast_to(p, (len(s), n_par)) if p.ndim == 1 else p
        if rows.shape != (len(s), n_par):
            raise LssError(f"parameters must have {n_par} values or one row of them per point, got {p.shape}")
        terms = self.terms()
        out = np.zeros(len(s))
        if not terms:
            return out
        unique, which = np.unique(rows, axis=0, return_inverse=True)
        which = np.asarray(which).reshape(-1)
        with torch.no_grad():
            for u, values in enumerate(unique):
                mask = which == u
                x = torch.as_tensor(s[mask])
                at = 0
                for term in terms:
                    k = len(term.parameter_suffixes())
                    args = [torch.tensor(float(v), dtype=torch.float64) for v in values[at:at + k]]
                    at += k
                    out[mask] += term(x, args).numpy()
        return out


def read_latent_store(store: str | os.PathLike | TrajectoryStore) -> LatentRecord:
    """Read a :class:`LatentReporter` store (its committed frames) as a :class:`LatentRecord`.

    Raises
    ------
    StoreError
        Not a store, damaged, or not written by a :class:`LatentReporter`.
    """
    reader = store if isinstance(store, TrajectoryStore) else TrajectoryStore(store)
    setup = reader.provenance.get(SETUP_KEY)
    if not isinstance(setup, dict):
        raise StoreError(f"{reader.path} was not written by a LatentReporter")
    names = tuple(setup.get("parameter_names", []))
    n = len(reader)
    parameters = (reader.observable(BIAS_PARAMETERS).astype(np.float64) if names
                  else np.zeros((n, 0), dtype=np.float64))
    return LatentRecord(
        path=reader.path,
        steps=reader.steps(),
        times=reader.times(),
        latent=reader.observable(LATENT).astype(np.float64),
        bias_energy=reader.observable(BIAS_ENERGY)[:, 0].astype(np.float64),
        parameter_names=names,
        parameters=parameters,
        setup=copy.deepcopy(setup),
        temperature_K=reader.temperature_K,
    )
