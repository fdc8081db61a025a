r"""OpenMM forces in latent space from a model directory, and their handle.

:func:`latent_bias_force` builds one force that evaluates the encoder once
per call and sums any of a harmonic restraint, flat-bottom walls and a
Gaussian sum on its latent output (:mod:`lss_engine.bias.potentials`).  It
returns the force and a :class:`LatentBias` handle that knows the force's
global parameters: ``set_centre``/``set_stiffness`` move an umbrella window
or steer with ``Context.setParameter`` (no rebuild), and
``latent_from_state`` reads the latent point of the same force evaluation
back from the restraint's energy-parameter derivatives,

.. math:: s_k = s^0_k - \frac{1}{\kappa_k}\frac{\partial E}{\partial s^0_k},

so a reporter that wants the bias energy anyway gets the latent from that
same evaluation.  It is not free: OpenMM evaluates the force (forward and
backward) for the derivatives, ~0.7 ms on Reference against ~0.2 ms for a
no-grad encoder call on the positions (``benchmarks/bias_overhead.py``).

The encoder comes from a model directory (``model.json`` + safetensors,
checksummed; :class:`~lss_engine.bundle.ModelBundle`) or an
:class:`~lss_engine.encoder.Encoder` already loaded from one; nothing is ever
read from a pickled or foreign model file.

Force groups
------------
The force goes into its own force group (``force_group``, default
:data:`DEFAULT_FORCE_GROUP`): its energy is read alone with
``getState(getEnergy=True, groups={g})``, and a multiple-time-step integrator
(``MTSLangevinIntegrator``) can evaluate it less often.  Restraint, walls and
Gaussians in one force share one encoder evaluation; terms in separate
forces (separate groups) cost one encoder evaluation each.

Continuous metadynamics with OpenMM's own ``Metadynamics``
----------------------------------------------------------
:func:`latent_cv_force` gives a ``TorchForce`` whose "energy" is one latent
coordinate; :func:`latent_bias_variable` wraps it in an
``openmm.app.BiasVariable``::

    from openmm.app import Metadynamics
    psi1 = latent_bias_variable("model", 0, -2.5, 2.5, 0.1)
    meta = Metadynamics(system, [psi1], 300 * kelvin, biasFactor=8,
                        height=1 * kilojoule_per_mole, frequency=500)
    simulation = Simulation(topology, system, integrator)  # after Metadynamics
    meta.step(simulation, n_steps)

``Metadynamics`` puts each variable's force into a ``CustomCVForce``, which
evaluates every collective variable separately: :math:`d` latent
coordinates cost :math:`d` full encoder evaluations (forward and backward)
per step, where :func:`latent_bias_force` pays one for all of them; and
``Metadynamics`` grids at most 3 variables.  For more dimensions, or to
deposit between runs, use :class:`~lss_engine.bias.potentials.GaussianSum`.

Caveat of the installed openmm-torch 1.5 wheel (with OpenMM 8.6.1): reading
a ``TorchForce`` back from XML segfaults in ``TorchForceProxy::deserialize``,
and ``CustomCVForce`` copies its variables through XML, so a ``TorchForce``
inside a ``CustomCVForce`` (hence ``Metadynamics`` over it) and
``copy.deepcopy`` of a System holding a ``TorchForce`` crash the process
there.  Writing the XML works; :func:`latent_bias_force` itself needs no
copy.

Periodic systems
----------------
With ``periodic=True`` the force uses periodic boundary conditions, the box
is passed to the encoder and the featurizer applies the minimum image to
every displacement (a molecule split across the box by wrapping has the
features of the whole molecule).  A featurizer saved without minimum image
(a model trained in vacuum) is rebuilt from its spec with minimum image;
featurizers of absolute positions cannot be periodic and are refused.
"""
from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._helpers import positive_int
from ..bundle import ModelBundle
from ..encoder import Encoder
from ..errors import LssError, SpecError
from .backends import ForceBackend, choose_backend
from .module import LatentBiasModule, LatentComponentModule, latent_dim
from .potentials import FlatBottomWalls, GaussianSum, HarmonicRestraint, LatentTerm

__all__ = ["DEFAULT_FORCE_GROUP", "DEFAULT_PREFIX", "LatentBias", "latent_bias_force", "latent_bias_variable",
           "latent_cv_force", "latent_training_range"]

#: force group of a latent bias unless one is given (high, so it rarely meets a user's own groups)
DEFAULT_FORCE_GROUP = 30
#: prefix of the global parameter names
DEFAULT_PREFIX = "lss"
_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

EncoderLike = Encoder | str | os.PathLike


def _encoder_and_bundle(encoder: EncoderLike) -> tuple[Encoder, ModelBundle | None]:
    """The encoder (and its bundle, when read here) of a model directory, or an :class:`Encoder` as given."""
    if isinstance(encoder, Encoder):
        return encoder, None
    if isinstance(encoder, (str, os.PathLike)):
        bundle = ModelBundle.load(encoder)
        return Encoder.from_bundle(bundle), bundle
    raise LssError(f"a latent bias is built from a model directory or an Encoder, got {type(encoder).__name__}")


def latent_training_range(model: ModelBundle | str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension minimum and maximum of the training latent recorded in a model directory.

    The range is the one the ``propagator`` stage (an MDN) recorded when it
    was fitted on the encoder's latent coordinates of the training stores.

    Raises
    ------
    LssError
        The model has no propagator stage with a recorded range.
    """
    bundle = model if isinstance(model, ModelBundle) else ModelBundle.load(model)
    stage = bundle.stages.get("propagator")
    net = None if stage is None else stage.model
    if net is None or not hasattr(net, "data_min") or not bool(getattr(net, "norm_fitted", False)):
        raise LssError("the model directory records no latent training range (no fitted propagator stage): "
                       "pass walls=FlatBottomWalls.from_latent(encoder.latent(features)) or explicit bounds")
    return (net.data_min.detach().to(torch.float64).numpy().copy(),
            net.data_max.detach().to(torch.float64).numpy().copy())


def _periodic_spec(spec: Any) -> Any:
    """A feature spec (dict or JSON text) with minimum image switched on in every leaf."""
    spec = json.loads(spec) if isinstance(spec, (str, bytes)) else copy.deepcopy(spec)
    if spec.get("type") == "union":
        spec["features"] = [_periodic_spec(child) for child in spec.get("features", [])]
    else:
        spec["periodic"] = True
    return spec


def _encoder_module(encoder: Encoder, featurizer: Any, dim: int | None, periodic: bool | None,
                    dtype: torch.dtype) -> tuple[Any, bool]:
    """The encoder export for a force, and whether the force is periodic."""
    if featurizer is None and periodic:
        if encoder.feature_spec is None:
            raise LssError("the encoder has no feature spec; pass featurizer=")
        from ..features import featurizer_from_spec

        try:
            featurizer = featurizer_from_spec(_periodic_spec(encoder.feature_spec))
        except SpecError as exc:
            raise LssError(f"the encoder's features cannot use the minimum image, so they cannot be "
                           f"evaluated in a periodic system ({exc})") from None
    module = encoder.export_module(featurizer, dim, dtype=dtype)
    uses_box = bool(getattr(module.featurizer, "periodic", False))
    if periodic is None:
        periodic = uses_box
    if periodic and not uses_box:
        raise LssError("periodic=True, but the featurizer given does not apply the minimum image "
                       "(build it with periodic=True)")
    return module, bool(periodic)


def _check_group(force_group: Any) -> int:
    group = positive_int(force_group, "force_group", minimum=0)
    if group > 31:
        raise LssError(f"force_group must be an integer from 0 to 31, got {force_group!r}")
    return group


def _check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise LssError(f"the parameter prefix must be an identifier like 'lss', got {prefix!r}")
    return prefix


@dataclass(frozen=True, eq=False)
class LatentBias:
    """Handle of a force made by :func:`latent_bias_force`.

    Attributes
    ----------
    force
        The OpenMM force (already in its force group).
    module
        The eager :class:`~lss_engine.bias.module.LatentBiasModule` (float64)
        the force evaluates: latent coordinates and bias energies in Python.
    backend
        ``"torch"`` or ``"python"``.
    parameter_names
        All global parameters of the force, in the module's order.
    centre_names, stiffness_names
        The restraint's ``<prefix>_s0_<k>`` and ``<prefix>_kappa_<k>`` (empty
        without a restraint).
    force_group, periodic, n_dim
        As built.
    """

    force: Any
    module: LatentBiasModule
    backend: str
    parameter_names: tuple[str, ...]
    centre_names: tuple[str, ...]
    stiffness_names: tuple[str, ...]
    force_group: int
    periodic: bool
    n_dim: int

    # -- parameters --------------------------------------------------------
    def _restraint(self) -> None:
        if not self.centre_names:
            raise LssError("this latent bias has no restraint (build it with restraint=HarmonicRestraint(...))")

    def set_centre(self, context: Any, centre: Any) -> None:
        """Move the restraint's centre :math:`s^0` (``(d,)`` latent units) in ``context``; no rebuild."""
        self._restraint()
        c = np.asarray(centre, dtype=np.float64).reshape(-1)
        if c.shape != (self.n_dim,) or not np.isfinite(c).all():
            raise LssError(f"the centre must be {self.n_dim} finite numbers, got {np.asarray(centre).tolist()}")
        for name, value in zip(self.centre_names, c):
            context.setParameter(name, float(value))

    def set_stiffness(self, context: Any, stiffness: Any) -> None:
        """Set the restraint's :math:`\\kappa` (a scalar or ``(d,)``, kJ/mol per latent unit², >= 0) in ``context``."""
        self._restraint()
        k = np.asarray(stiffness, dtype=np.float64)
        k = np.full(self.n_dim, float(k)) if k.ndim == 0 else k.reshape(-1)
        if k.shape != (self.n_dim,) or not np.isfinite(k).all() or (k < 0).any():
            raise LssError(f"the stiffness must be a number or {self.n_dim} numbers, finite and >= 0, "
                           f"got {np.asarray(stiffness).tolist()}")
        for name, value in zip(self.stiffness_names, k):
            context.setParameter(name, float(value))

    def centre(self, context: Any) -> np.ndarray:
        """The restraint's current centre in ``context``."""
        self._restraint()
        return np.array([context.getParameter(n) for n in self.centre_names])

    def stiffness(self, context: Any) -> np.ndarray:
        """The restraint's current stiffness in ``context``."""
        self._restraint()
        return np.array([context.getParameter(n) for n in self.stiffness_names])

    # -- read-back ---------------------------------------------------------
    def latent_from_state(self, state: Any) -> np.ndarray:
        r"""The latent point of the force evaluation behind ``state``, ``(d,)``, without another encoder call.

        :math:`s_k = s^0_k - (\partial E / \partial s^0_k) / \kappa_k` from the
        restraint's energy-parameter derivative.  ``state`` must come from
        ``context.getState(getParameters=True, getParameterDerivatives=True,
        ...)`` with this force's group among the groups evaluated (the
        default, all groups): with the group left out the derivative is 0
        and the result would be the centre.  A dimension with
        :math:`\kappa_k = 0` carries no information and is NaN (a tiny
        stiffness, e.g. 1e-6 kJ/mol, reads back to ~1e-10 at no measurable
        bias).

        Raises
        ------
        LssError
            No restraint, a Python-force backend (no parameter derivatives),
            or a state without parameters or parameter derivatives.
        """
        self._restraint()
        if self.backend != "torch":
            raise LssError(f"the {self.backend!r} backend reports no energy-parameter derivatives, so the latent "
                           "cannot be read back from a state; use backend='torch' or module.latent(positions)")
        import openmm

        try:
            derivatives = state.getEnergyParameterDerivatives()
            parameters = state.getParameters()
        except openmm.OpenMMException:
            raise LssError("the state lacks parameters or parameter derivatives: get it with "
                           "context.getState(getParameters=True, getParameterDerivatives=True)") from None
        try:
            s0 = np.array([parameters[n] for n in self.centre_names])
            kappa = np.array([parameters[n] for n in self.stiffness_names])
            grad = np.array([derivatives[n] for n in self.centre_names])
        except (KeyError, IndexError):
            raise LssError("the state has no values for this force's parameters (another context?)") from None
        out = np.full(self.n_dim, np.nan)
        positive = kappa > 0
        out[positive] = s0[positive] - grad[positive] / kappa[positive]
        return out

    # -- energies in Python ------------------------------------------------
    def latent_energy(self, latent: Any, context: Any = None) -> np.ndarray:
        """Bias energy (kJ/mol) of latent points ``(..., d)`` with ``context``'s parameters (default: the defaults).

        For reweighting: the bias of stored latent coordinates under this
        force, without OpenMM.
        """
        params = None
        if context is not None and self.parameter_names:
            params = [context.getParameter(name) for name in self.parameter_names]
        x = torch.as_tensor(np.asarray(latent, dtype=np.float64))
        values = [] if params is None else [torch.tensor(float(p), dtype=torch.float64) for p in params]
        with torch.no_grad():
            return self.module.latent_energy(x, values).numpy()


def latent_bias_force(
    encoder: EncoderLike,
    *,
    restraint: HarmonicRestraint | None = None,
    walls: FlatBottomWalls | str | None = None,
    gaussians: GaussianSum | str | None = None,
    terms: Sequence[LatentTerm] = (),
    dim: int | None = None,
    featurizer: Any = None,
    periodic: bool | None = None,
    backend: str | ForceBackend = "auto",
    force_group: int = DEFAULT_FORCE_GROUP,
    prefix: str = DEFAULT_PREFIX,
    dtype: torch.dtype = torch.float64,
) -> tuple[Any, LatentBias]:
    """An OpenMM force biasing the encoder's latent coordinates, and its :class:`LatentBias` handle.

    Parameters
    ----------
    encoder
        A model directory (path) or an :class:`~lss_engine.encoder.Encoder`.
    restraint
        A :class:`~lss_engine.bias.potentials.HarmonicRestraint`; its centre
        and stiffness become the global parameters ``<prefix>_s0_<k>`` and
        ``<prefix>_kappa_<k>`` (their defaults are the restraint's).
    walls
        :class:`~lss_engine.bias.potentials.FlatBottomWalls`, or ``"auto"``:
        the training range recorded in the model directory
        (:func:`latent_training_range`) widened by 10 % on each side, at the
        default stiffness.
    gaussians
        A :class:`~lss_engine.bias.potentials.GaussianSum`, or ``"empty"``:
        one with no hills yet, for hills added in place during the run
        (:class:`~lss_engine.bias.metadynamics.LatentMetadynamics`).
    terms
        Further :class:`~lss_engine.bias.potentials.LatentTerm` objects.
    dim
        SRV: the leading latent coordinates the bias sees (default all).
    featurizer
        The torch featurizer (default: rebuilt from the encoder's spec).
    periodic
        Whether the force uses periodic boundary conditions (box → encoder,
        minimum image); default: whether the featurizer applies the minimum
        image.  Pass ``system.usesPeriodicBoundaryConditions()``.
    backend
        ``"auto"`` (openmm-torch, else OpenMM's PythonForce), ``"torch"``,
        ``"python"`` or a :class:`~lss_engine.bias.backends.ForceBackend`.
    force_group
        The force's group, 0-31.
    prefix
        Prefix of the global parameter names (distinct per force in one System).
    dtype
        The network's dtype inside the force (float64: forces that match
        finite differences on Reference/CPU; float32 is faster on CUDA).

    Returns
    -------
    (force, handle)
        Add ``force`` to the System before creating the Context.

    Raises
    ------
    LssError
        No term, terms of another dimension than the encoder's, too many
        restrained dimensions (:data:`~lss_engine.bias.module.MAX_ARGUMENTS`),
        an unavailable backend, a bad group or prefix, or ``walls="auto"``
        without a recorded training range.
    """
    group = _check_group(force_group)
    prefix = _check_prefix(prefix)
    chosen = backend if isinstance(backend, ForceBackend) else choose_backend(backend)
    enc, bundle = _encoder_and_bundle(encoder)
    module, uses_pbc = _encoder_module(enc, featurizer, dim, periodic, dtype)
    d = latent_dim(module)
    all_terms: list[LatentTerm] = []
    if restraint is not None:
        if not isinstance(restraint, HarmonicRestraint):
            raise LssError(f"restraint must be a HarmonicRestraint, got {type(restraint).__name__}")
        all_terms.append(restraint)
    if isinstance(walls, str):
        if walls != "auto":
            raise LssError(f"walls must be a FlatBottomWalls, 'auto' or None, got {walls!r}")
        if bundle is None:
            raise LssError("walls='auto' reads the training range from the model directory: pass the directory, "
                           "not an Encoder, or walls=FlatBottomWalls.from_latent(...)")
        lo, hi = latent_training_range(bundle)
        if len(lo) < d:
            raise LssError(f"the recorded training range has {len(lo)} dimensions, the bias acts on {d}")
        walls = FlatBottomWalls.from_range(lo[:d], hi[:d])
    if walls is not None:
        if not isinstance(walls, FlatBottomWalls):
            raise LssError(f"walls must be a FlatBottomWalls, 'auto' or None, got {type(walls).__name__}")
        all_terms.append(walls)
    if isinstance(gaussians, str) and gaussians == "empty":  # hills deposited during the run (LatentMetadynamics)
        gaussians = GaussianSum.empty(d)
    if gaussians is not None:
        if not isinstance(gaussians, GaussianSum):
            raise LssError(f"gaussians must be a GaussianSum, got {type(gaussians).__name__}")
        all_terms.append(gaussians)
    all_terms.extend(terms)
    bias = LatentBiasModule(module, [copy.deepcopy(t) for t in all_terms])
    bias.eval()
    names = [f"{prefix}_{suffix}" for suffix in bias.parameter_suffixes()]
    if len(set(names)) != len(names):
        raise LssError(f"two terms of the bias share a global parameter name: {names}")
    centre_names = tuple(f"{prefix}_s0_{k}" for k in range(d)) if restraint is not None else ()
    stiffness_names = tuple(f"{prefix}_kappa_{k}" for k in range(d)) if restraint is not None else ()
    force = chosen.make_force(bias, names, bias.parameter_defaults(), centre_names, uses_pbc)
    force.setForceGroup(group)
    handle = LatentBias(force=force, module=bias, backend=chosen.name, parameter_names=tuple(names),
                        centre_names=centre_names, stiffness_names=stiffness_names, force_group=group,
                        periodic=uses_pbc, n_dim=d)
    return force, handle


def latent_cv_force(encoder: EncoderLike, index: int, *, featurizer: Any = None, periodic: bool | None = None,
                    dtype: torch.dtype = torch.float64) -> Any:
    """A ``TorchForce`` whose energy is latent coordinate ``index`` (0-based): a collective variable.

    For ``openmm.CustomCVForce`` and ``openmm.app.Metadynamics``
    (:func:`latent_bias_variable`).  Each such force is one full encoder
    evaluation per step.
    """
    from ..openmm_plugins import ensure_openmmtorch

    ensure_openmmtorch()
    import openmmtorch

    enc, _ = _encoder_and_bundle(encoder)
    module, uses_pbc = _encoder_module(enc, featurizer, None, periodic, dtype)
    d = latent_dim(module)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < d:
        raise LssError(f"latent index must be an integer from 0 to {d - 1}, got {index!r}")
    force = openmmtorch.TorchForce(torch.jit.script(LatentComponentModule(module.eval(), int(index))))
    force.setUsesPeriodicBoundaryConditions(uses_pbc)
    force.setName(f"lss_engine latent coordinate {index}")
    return force


def latent_bias_variable(encoder: EncoderLike, index: int, min_value: float, max_value: float, bias_width: float,
                         *, grid_width: int | None = None, featurizer: Any = None,
                         periodic: bool | None = None) -> Any:
    """An ``openmm.app.BiasVariable`` over latent coordinate ``index`` for OpenMM's ``Metadynamics``.

    ``min_value``/``max_value``: the grid's range (latent units; the walls'
    or the training range), ``bias_width``: the Gaussian width.  One encoder
    evaluation per variable per step (see the module docstring).
    """
    from openmm.app import BiasVariable

    force = latent_cv_force(encoder, index, featurizer=featurizer, periodic=periodic)
    return BiasVariable(force, float(min_value), float(max_value), float(bias_width), periodic=False,
                        gridWidth=grid_width)
