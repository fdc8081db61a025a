"""How a :class:`~lss_engine.bias.module.LatentBiasModule` becomes an OpenMM force: one small interface, two backends.

* :class:`TorchForceBackend` -- openmm-torch's ``TorchForce`` on the
  TorchScript-compiled module (``torch.jit.script``).  Global parameters,
  energy-parameter derivatives (the latent read-back), System XML (the
  TorchScript archive, no Python pickle) and every platform openmm-torch
  supports (Reference/CPU in float64 positions, CUDA in float32).
* :class:`PythonForceBackend` -- OpenMM's ``PythonForce`` (OpenMM >= 8.5,
  found by feature detection) calling the eager module from Python on each
  evaluation.  No TorchScript, but no energy-parameter derivatives, only
  the platform's Python callback, and no System XML: OpenMM serialises a
  ``PythonForce`` by pickling its function, and this backend's function
  refuses to be pickled, so ``XmlSerializer.serialize`` (and
  ``copy.deepcopy``) of a System holding it fail with OpenMM's "Could not
  serialize PythonForce because its function could not be pickled".  Rebuild
  the force from the model directory instead.

:func:`choose_backend` picks one: ``"auto"`` is openmm-torch when it loads,
else the Python force where the installed OpenMM has it.
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import LssError
from .module import LatentBiasModule, TorchForceModule

__all__ = ["BACKENDS", "NOT_SERIALISABLE", "ForceBackend", "PythonForceBackend", "TorchForceBackend",
           "choose_backend"]

#: why the Python-force backend's function is never pickled
NOT_SERIALISABLE = ("an lss_engine latent bias on OpenMM's PythonForce is not serialisable (OpenMM would pickle "
                    "it); rebuild it from the model directory with lss_engine.bias.latent_bias_force")


class ForceBackend(abc.ABC):
    """Makes an OpenMM force from a latent bias module.

    Attributes
    ----------
    name : str
        ``"torch"`` or ``"python"``.
    parameter_derivatives : bool
        Whether the force reports energy-parameter derivatives.
    """

    name: str = ""
    parameter_derivatives: bool = False

    @classmethod
    @abc.abstractmethod
    def available(cls) -> bool:
        """Whether this backend works in the installed OpenMM (and plugins)."""

    @abc.abstractmethod
    def make_force(self, bias: LatentBiasModule, names: Sequence[str], defaults: Sequence[float],
                   derivatives: Sequence[str], periodic: bool) -> Any:
        """An OpenMM force evaluating ``bias`` with global parameters ``names`` (``defaults``).

        ``derivatives``: the parameters whose energy derivatives the force
        reports (ignored where :attr:`parameter_derivatives` is false).
        ``periodic``: the force uses periodic boundary conditions (the box is
        passed to the module).
        """


class TorchForceBackend(ForceBackend):
    """openmm-torch ``TorchForce`` on ``torch.jit.script`` of the module."""

    name = "torch"
    parameter_derivatives = True

    @classmethod
    def available(cls) -> bool:
        try:
            from ..openmm_plugins import ensure_openmmtorch

            ensure_openmmtorch()
            return True
        except (ImportError, OSError):
            return False

    def make_force(self, bias: LatentBiasModule, names: Sequence[str], defaults: Sequence[float],
                   derivatives: Sequence[str], periodic: bool) -> Any:
        from ..openmm_plugins import ensure_openmmtorch

        ensure_openmmtorch()
        import openmmtorch

        scripted = torch.jit.script(TorchForceModule(bias, periodic))
        force = openmmtorch.TorchForce(scripted)
        for name, value in zip(names, defaults):
            force.addGlobalParameter(name, float(value))
        for name in derivatives:
            force.addEnergyParameterDerivative(name)
        force.setUsesPeriodicBoundaryConditions(bool(periodic))
        force.setName("lss_engine latent bias (openmm-torch)")
        return force


class _PythonComputation:
    """The function of a ``PythonForce``: State → (energy kJ/mol, forces kJ/mol/nm), never picklable."""

    def __init__(self, bias: LatentBiasModule, names: Sequence[str], periodic: bool) -> None:
        self.bias = bias
        self.names = list(names)
        self.periodic = bool(periodic)

    def __call__(self, state: Any) -> tuple[float, np.ndarray]:
        from openmm import unit

        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
        box = None
        if self.periodic:
            box = torch.as_tensor(np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer),
                                             dtype=np.float64))
        values = state.getParameters()
        params = [torch.tensor(float(values[name]), dtype=torch.float64) for name in self.names]
        x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            energy = self.bias(x, box, params)
            (grad,) = torch.autograd.grad(energy, x)
        return float(energy.detach()), -grad.numpy()

    def __reduce__(self) -> Any:
        raise TypeError(NOT_SERIALISABLE)


class PythonForceBackend(ForceBackend):
    """OpenMM's ``PythonForce`` calling the eager module (OpenMM >= 8.5); never written to XML."""

    name = "python"
    parameter_derivatives = False

    @classmethod
    def available(cls) -> bool:
        import openmm

        return hasattr(openmm, "PythonForce")

    def make_force(self, bias: LatentBiasModule, names: Sequence[str], defaults: Sequence[float],
                   derivatives: Sequence[str], periodic: bool) -> Any:
        import openmm

        if not self.available():
            raise LssError(f"OpenMM {openmm.__version__} has no PythonForce (it came in 8.5); use backend='torch'")
        bias.eval()
        computation = _PythonComputation(bias, names, periodic)
        force = openmm.PythonForce(computation, {name: float(v) for name, v in zip(names, defaults)})
        force.setUsesPeriodicBoundaryConditions(bool(periodic))
        force.setName("lss_engine latent bias (PythonForce; not serialisable)")
        return force


#: backends by name, in the order ``"auto"`` tries them
BACKENDS: dict[str, type[ForceBackend]] = {"torch": TorchForceBackend, "python": PythonForceBackend}


def choose_backend(name: str = "auto") -> ForceBackend:
    """The backend ``name`` (``"torch"``, ``"python"``), or for ``"auto"`` the first available of those.

    Raises
    ------
    LssError
        An unknown name, a backend not available here, or none available.
    """
    if name == "auto":
        for cls in BACKENDS.values():
            if cls.available():
                return cls()
        raise LssError("no latent bias backend: openmm-torch does not load and OpenMM has no PythonForce")
    if name not in BACKENDS:
        raise LssError(f"unknown latent bias backend {name!r}; expected 'auto', {', '.join(map(repr, BACKENDS))}")
    cls = BACKENDS[name]
    if not cls.available():
        what = "openmm-torch does not load" if name == "torch" else "this OpenMM has no PythonForce (OpenMM >= 8.5)"
        raise LssError(f"latent bias backend {name!r} is not available: {what}")
    return cls()
