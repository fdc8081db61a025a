"""One walker attempt: the task a campaign sends to a worker, and what it leaves on disk.

A task (a plain JSON-able dict, so any executor can ship it) says which system,
which seed frame, which velocity seed and how many steps.  :func:`run_walker`
runs it with :func:`lss_engine.md.run_md` into a fresh *execution folder*

    attempts/r003/w001/a2-<token>/
        md.zarr            the walker's frames (the campaign's feature spec, its saved atoms)
        restarts.zarr      full-system positions and box every ``restart_interval`` steps
        bias.zarr          explorers only: latent, bias energy and bias parameters of every frame
                           (:class:`~lss_engine.reporters.LatentReporter`), what reweighting needs
        done.json          written last (atomically): the result, with the SHA-256 of both stores

``<token>`` is drawn inside the task, so a task that Dask re-runs after its
worker died (same arguments) writes elsewhere, and a zombie execution still
running somewhere can never write into the folder the campaign committed.  A
folder without ``done.json`` is unfinished and is removed by the driver.

Restarts are real frames: positions (and box) of a frame saved by an earlier
walker, or an OpenMM State XML; velocities are drawn fresh from
Maxwell–Boltzmann at the system's temperature with the recorded seed, unless
the seed is a State XML with velocities and ``keep_velocities`` is set (plain
MD continuing a walker).  Nothing is ever minimised.

An explorer whose ``bias`` says ``"mts": n`` evaluates its bias once every
n time steps (``MTSLangevinIntegrator``, see
:class:`~lss_engine.campaign.config.ExploreConfig`): the task's ``steps``,
``report_interval`` and ``restart_interval`` count time steps (multiples of
n), the integrator takes them n at a time, and ``done.json`` reports
``steps`` in time steps again (and ``"mts": n``), so the campaign's MD budget
counts the same physical time for every walker.  Its stores record the
outer step as their time step; frame times are the same as an unbiased
walker's.

Warm Contexts: each worker process keeps one ``Simulation`` per system
(keyed by :func:`lss_engine.systems.system_key`), so walkers of a tiny system
do not pay the system build and Context creation each time.  Each task reseeds
the integrator (``setRandomNumberSeed`` + ``Context.reinitialize``), so a
walker's noise depends on its own seed only, warm or cold.  The integrator's
seed is :func:`lss_engine.systems.integrator_seed` of the velocity seed: with
the same seed for both, OpenMM's Reference platform makes the first step's
noise equal to the velocities' draw (a heat pulse at every restart).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._helpers import atomic_write_json, canonical_json, hash_file, positive_int
from ..errors import LssError
from .config import mts_steps

__all__ = ["DONE", "bias_terms", "read_done", "run_walker", "tree_hash", "warm_cache_clear"]

#: The file that marks a finished execution folder.
DONE = "done.json"

_WARM: dict[str, Any] = {}  # system key (+ bias model) -> (test system, Simulation, LatentBias), per worker process


def warm_cache_clear() -> None:
    """Forget this process's warm Simulations."""
    _WARM.clear()


def tree_hash(*paths: str | os.PathLike) -> str:
    """SHA-256 over the files under ``paths`` (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    for root in paths:
        root = Path(root)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            digest.update(str(f.relative_to(root.parent)).encode() + b"\0")
            hash_file(f, digest)
            digest.update(b"\0")
    return digest.hexdigest()


def read_done(folder: str | os.PathLike) -> dict | None:
    """The result recorded in an execution folder, or ``None`` if it is unfinished or damaged."""
    path = Path(folder) / DONE
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("hash") != tree_hash(*_stores(folder, bool(result.get("bias")))):
        return None
    return result


def _stores(folder: str | os.PathLike, biased: bool) -> list[Path]:
    """The stores an execution folder holds (hashed into ``done.json``)."""
    names = ("md.zarr", "restarts.zarr", "bias.zarr") if biased else ("md.zarr", "restarts.zarr")
    return [Path(folder) / name for name in names]


def _simulation(spec: dict, platform: str, warm: bool, bias: dict | None = None) -> tuple[Any, Any, Any, bool]:
    """The (test system, Simulation, bias handle or ``None``) for ``spec``: this process's warm one, or a new one.

    An explorer's system carries the latent restraint of ``bias["model"]``
    (:func:`lss_engine.bias.latent_bias_force`); its centre and stiffness are
    global parameters, so a warm biased Context serves every explorer of
    that model.  ``bias["mts"]`` = n > 1: the integrator is an
    ``MTSLangevinIntegrator`` with an outer step of n time steps, the bias
    force's group evaluated once per outer step and every group of the
    system's own forces n times (:meth:`~lss_engine.systems.TestSystem.make_integrator`).
    """
    from ..systems import build_system, system_key

    mts = _mts(bias)
    key = f"{system_key(spec)}:{platform}"
    if bias is not None:  # a restraint's centre and stiffness are parameters; Gaussians are part of the force
        hills = hashlib.sha256(canonical_json(bias.get("gaussians")).encode()).hexdigest()
        key += f":bias:{bias['model']}:{bias.get('backend', 'auto')}:{hills}:mts{mts}"
    if warm and key in _WARM:
        return (*_WARM[key], True)
    test_system = build_system(spec)
    handle = None
    slow: tuple[int, ...] = ()
    if bias is not None:
        from ..bias import latent_bias_force

        restraint, gaussians = bias_terms(bias)
        force, handle = latent_bias_force(
            bias["model"], restraint=restraint, gaussians=gaussians,
            periodic=test_system.system.usesPeriodicBoundaryConditions(), backend=bias.get("backend", "auto"))
        own = {f.getForceGroup() for f in test_system.system.getForces()}
        if mts > 1 and handle.force_group in own:
            raise LssError(f"force group {handle.force_group} holds forces of the system {test_system.name}: the "
                           f"latent bias needs a group of its own to be evaluated every {mts} steps")
        test_system.system.addForce(force)
        slow = (handle.force_group,)
    simulation = test_system.make_simulation(platform=platform, minimize=False, mts=mts, slow_groups=slow)
    if warm:
        if bias is not None:  # one biased Context per system: an earlier round's model or hills are not used again
            stale = f"{system_key(spec)}:{platform}:bias:"
            for old in [k for k in _WARM if k.startswith(stale)]:
                del _WARM[old]
        _WARM[key] = (test_system, simulation, handle)
    return test_system, simulation, handle, False


def bias_terms(bias: dict) -> tuple[Any, Any]:
    """The latent terms of an explorer's ``bias`` record: (``HarmonicRestraint`` or ``None``, ``GaussianSum`` or ``None``).

    Both in the coordinates of the record's model (what the OpenMM force applies, and what
    :meth:`~lss_engine.campaign.driver.Campaign.bias_energies` re-evaluates on stored frames).
    """
    from ..bias import GaussianSum, HarmonicRestraint

    restraint = HarmonicRestraint(bias["centre"], bias["kappa"]) if "centre" in bias else None
    hills = bias.get("gaussians")
    gaussians = None if hills is None else GaussianSum(hills["centres"], hills["widths"], hills["heights"])
    return restraint, gaussians


def _mts(bias: dict | None) -> int:
    """MD steps per bias evaluation of an explorer's ``bias`` (1: every step, and for unbiased walkers)."""
    return 1 if bias is None else positive_int(bias.get("mts", 1), "bias mts")


def _seed_state(seed: dict) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Positions (nm), box vectors and velocities (or ``None``) of a seed frame."""
    import openmm

    from ..store import TrajectoryStore

    if seed["kind"] == "state":
        state = openmm.XmlSerializer.deserialize(Path(seed["path"]).read_text())
        if not isinstance(state, openmm.State):
            raise LssError(f"{seed['path']}: not an OpenMM State XML")
        positions = state.getPositions(asNumpy=True)._value
        box = state.getPeriodicBoxVectors(asNumpy=True)._value
        try:
            velocities = state.getVelocities(asNumpy=True)._value
        except Exception:  # a State without velocities
            velocities = None
        return positions, box, velocities
    store = TrajectoryStore(seed["path"])
    i = int(seed["frame"])
    positions = store.positions(i, i + 1)[0]
    box = store.box_vectors(i, i + 1)
    return positions, None if box is None else box[0], None


class _ExitAt:
    """An OpenMM reporter that kills its process at a step (a worker dying mid-walker)."""

    def __init__(self, step: int):
        self.step = int(step)

    def describeNextReport(self, simulation) -> dict:
        return {"steps": max(self.step - simulation.currentStep, 1), "periodic": False, "include": []}

    def report(self, simulation, state) -> None:
        os._exit(1)


def _inject_fault(fault: dict | None) -> list:
    """Resilience tests: the first ``fault["times"]`` (default 1) executions that reach here fail.

    Executions are counted with marker files ``<fault["marker"]>.<k>``
    (created exclusively, so concurrent executions count once each).
    ``kind="raise"``: the task raises (as a walker whose system exploded);
    ``kind="exit"``: the worker process dies (``os._exit``) at MD step
    ``fault["at_step"]`` (default: before the first step), leaving an
    unfinished execution folder behind.  Returns the reporters to attach.
    """
    if not fault:
        return []
    for k in range(int(fault.get("times", 1))):
        try:
            fd = os.open(f"{fault['marker']}.{k}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue
        os.close(fd)
        break
    else:
        return []
    if fault["kind"] == "exit":
        if fault.get("at_step"):
            return [_ExitAt(fault["at_step"])]
        os._exit(1)
    raise LssError("injected failure (test)")


def run_walker(task: dict) -> dict:
    """Run one walker attempt (see the module docstring); return its result (also in ``done.json``).

    ``task`` keys: ``out`` (the attempt's folder prefix: the execution folder
    is ``<out>-<token>``), ``system`` (a :func:`lss_engine.systems.system_spec`),
    ``platform``, ``seed_frame`` (``{"kind": "state", "path"}`` or
    ``{"kind": "store", "path", "frame"}``), ``velocity_seed``,
    ``keep_velocities``, ``steps``, ``report_interval``, ``restart_interval``,
    ``featurizer`` (a feature spec), ``atoms``, ``flush_interval``, ``warm``;
    optional ``bias`` (an explorer: ``{"model", "backend"}`` and either
    ``"centre", "kappa"`` (a latent restraint) or ``"gaussians": {"centres",
    "widths", "heights"}``, in the model's own coordinates; ``"mts": n``: the
    bias once every n time steps) and ``fault`` (tests only, see
    :func:`_inject_fault`).
    """
    import openmm
    from openmm import unit

    from .._helpers import configure_threads
    from ..features import featurizer_from_spec
    from ..systems import integrator_seed
    from ..md import run_md
    from ..reporters import LatentReporter, ZarrReporter

    configure_threads(1)
    start = time.perf_counter()
    bias = task.get("bias")
    mts = _mts(bias)
    # the integrator's steps: outer steps of mts time steps for an MTS explorer (the task counts time steps)
    steps, report, restart = (mts_steps(int(task[k]), mts, k) for k in ("steps", "report_interval",
                                                                         "restart_interval"))
    folder = Path(f"{task['out']}-{uuid.uuid4().hex[:8]}")
    folder.mkdir(parents=True)
    faults = _inject_fault(task.get("fault"))
    test_system, simulation, handle, was_warm = _simulation(task["system"], task.get("platform", "auto"),
                                                           bool(task.get("warm", True)), bias)
    seed = int(task["velocity_seed"])
    positions, box, velocities = _seed_state(task["seed_frame"])
    context, integrator = simulation.context, simulation.integrator
    integrator.setRandomNumberSeed(integrator_seed(seed))  # noise independent of the velocities' draw
    context.reinitialize()  # applies the seed: the walker's noise depends on its seed alone
    if handle is not None and "centre" in bias:  # after reinitialize, which resets global parameters
        handle.set_centre(context, bias["centre"])
        handle.set_stiffness(context, bias["kappa"])
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    if test_system.integrator != "brownian":
        if velocities is not None and task.get("keep_velocities"):
            context.setVelocities(velocities)
        else:
            context.setVelocitiesToTemperature(test_system.temperature, seed)
    context.setTime(0.0)
    context.setStepCount(0)
    simulation.currentStep = 0
    setup = time.perf_counter() - start
    flush = int(task.get("flush_interval", 100))
    restarts = ZarrReporter(folder / "restarts.zarr", restart, featurizer=None, atoms=None,
                            flush_interval=flush, seed=seed)
    extra = [restarts]
    if handle is not None:
        extra.append(LatentReporter(folder / "bias.zarr", report, handle, flush_interval=flush, seed=seed))
    try:
        result = run_md(simulation, folder / "md.zarr", steps=steps, report_interval=report,
                        featurizer=featurizer_from_spec(task["featurizer"]), atoms=task.get("atoms"), seed=seed,
                        flush_interval=flush, reporters=[*extra, *faults], progress=False)
    finally:
        for reporter in extra:
            reporter.close()
    if not result.complete:
        raise LssError(f"walker {folder.name} stopped at step {result.step} of {result.total_steps}")
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not np.isfinite(energy):
        raise LssError(f"walker {folder.name}: the final potential energy is {energy}")
    done = {"folder": str(folder), "frames": result.frames, "steps": result.step * mts,  # time steps, as the task's
            "restart_frames": restarts.frames_committed, "velocity_seed": seed,
            "hash": tree_hash(*_stores(folder, handle is not None)),
            "bias": bias is not None, "setup_s": setup, "md_s": result.wall_s, "wall_s": time.perf_counter() - start, "warm": was_warm,
            "pid": os.getpid(), "platform": context.getPlatform().getName(), "openmm": openmm.__version__,
            **({"mts": mts} if mts > 1 else {})}
    atomic_write_json(folder / DONE, done)
    return done


def remove_folder(folder: str | os.PathLike) -> None:
    """Delete an execution folder (unfinished, failed, or a late duplicate)."""
    shutil.rmtree(folder, ignore_errors=True)
