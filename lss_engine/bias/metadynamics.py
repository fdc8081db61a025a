r"""Continuous (well-tempered) metadynamics in latent space, hills deposited during the run.

OpenMM's ``app.Metadynamics`` puts its collective variables into a
``CustomCVForce``, which copies them through XML; the installed openmm-torch
wheel cannot read a ``TorchForce`` back from XML (a segfault), and a
``CustomCVForce`` would evaluate the encoder once per latent coordinate.
:class:`LatentMetadynamics` needs neither: one force on the ``PythonForce``
backend (:mod:`lss_engine.bias.backends`) evaluates the encoder once and the
sum of hills

.. math:: V(s) = \sum_j h_j \exp\Big(-\tfrac12 \sum_k (s_k - c_{jk})^2/\sigma_k^2\Big),

whose hills live in the force's Python module and grow in place, so no
Context is rebuilt.  Every ``frequency`` steps a hill is added at the current
latent point :math:`s` with height :math:`h = h_0 e^{-V(s)/(k_B\Delta T)}`,
:math:`\Delta T = (\gamma - 1) T` for bias factor :math:`\gamma`
(well-tempered; plain metadynamics without ``bias_factor``).  The free
energy along the biased coordinates is then
:math:`F(s) = -\tfrac{\gamma}{\gamma - 1} V(s)` (:math:`-V` for plain), up to a
constant.

A ``PythonForce`` cannot be written to XML (it would pickle its function),
so a System holding this force cannot be serialised or deep-copied.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .._helpers import positive_float, positive_int
from ..errors import LssError
from .forces import DEFAULT_FORCE_GROUP, latent_bias_force
from .potentials import GaussianSum

__all__ = ["LatentMetadynamics"]


class LatentMetadynamics:
    """Deposit Gaussian hills on an encoder's latent coordinates while a Simulation runs.

    Parameters
    ----------
    system
        The OpenMM ``System``; the bias force is added to it (build the
        ``Simulation`` afterwards, as with OpenMM's ``Metadynamics``).
    encoder
        A model directory or :class:`~lss_engine.encoder.Encoder`.
    width
        Hill widths :math:`\\sigma` in latent units: a scalar or one per coordinate.
    height
        Initial hill height :math:`h_0`, kJ/mol.
    frequency
        Steps between hills.
    temperature
        Simulation temperature, K (for the well-tempered rule).
    bias_factor
        :math:`\\gamma > 1` for well-tempered metadynamics; ``None``: plain.
    dim
        Leading SRV coordinates biased (default all).
    force_group
        The force's group.
    """

    def __init__(self, system: Any, encoder: str | os.PathLike | Any, *, width: Any, height: float,
                 frequency: int, temperature: float, bias_factor: float | None = None, dim: int | None = None,
                 force_group: int = DEFAULT_FORCE_GROUP) -> None:
        from openmm import unit

        self.height = positive_float(height, "height")
        self.frequency = positive_int(frequency, "frequency")
        self.temperature = positive_float(temperature, "temperature")
        if bias_factor is not None and not float(bias_factor) > 1.0:
            raise LssError(f"bias_factor must be > 1 (None for plain metadynamics), got {bias_factor!r}")
        self.bias_factor = None if bias_factor is None else float(bias_factor)
        self.kT = self.temperature * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
        self.force, self.bias = latent_bias_force(encoder, gaussians="empty", dim=dim, backend="python",
                                                  force_group=force_group)
        d = self.bias.n_dim
        try:
            widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (d,)).copy()
        except ValueError:
            widths = np.full(d, np.nan)
        if not (np.isfinite(widths).all() and (widths > 0).all()):
            raise LssError(f"hill widths must be {d} positive numbers, got {np.asarray(width).tolist()}")
        self.widths = widths
        self._hills: GaussianSum = next(t for t in self.bias.module.terms if isinstance(t, GaussianSum))
        system.addForce(self.force)

    # -- hills -------------------------------------------------------------
    @property
    def centres(self) -> np.ndarray:
        """``(m, d)`` hill centres so far."""
        return self._hills.centres.numpy().copy()

    @property
    def heights(self) -> np.ndarray:
        """``(m,)`` hill heights so far, kJ/mol."""
        return self._hills.heights.numpy().copy()

    def bias_energy(self, latent: Any) -> np.ndarray:
        """:math:`V(s)` (kJ/mol) of latent points ``(..., d)``."""
        with torch.no_grad():
            return self._hills(torch.as_tensor(np.asarray(latent, dtype=np.float64)), []).numpy()

    def free_energy(self, latent: Any) -> np.ndarray:
        """The metadynamics estimate of :math:`F(s)` (kJ/mol, up to a constant) at latent points ``(..., d)``."""
        scale = 1.0 if self.bias_factor is None else self.bias_factor / (self.bias_factor - 1.0)
        return -scale * self.bias_energy(latent)

    def latent(self, simulation: Any) -> np.ndarray:
        """The current latent point ``(d,)`` of ``simulation`` (one encoder call, no gradient)."""
        from openmm import unit

        state = simulation.context.getState(getPositions=True)
        x = torch.as_tensor(np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                                       dtype=np.float64))
        box = None
        if self.bias.periodic:
            box = torch.as_tensor(np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(
                unit.nanometer), dtype=np.float64))
        with torch.no_grad():
            return self.bias.module.latent(x, box).numpy()

    def deposit(self, latent: Any) -> float:
        """Add one hill at ``latent`` ``(d,)`` (well-tempered height); returns its height."""
        s = np.asarray(latent, dtype=np.float64).reshape(1, -1)
        h = self.height
        if self.bias_factor is not None:
            h *= float(np.exp(-self.bias_energy(s)[0] / (self.kT * (self.bias_factor - 1.0))))
        hills = self._hills
        with torch.no_grad():  # in place: the force's module sees the new hill at its next evaluation
            hills.centres = torch.cat([hills.centres, torch.as_tensor(s)])
            hills.widths = torch.cat([hills.widths, torch.as_tensor(self.widths[None])])
            hills.heights = torch.cat([hills.heights, torch.tensor([h], dtype=torch.float64)])
        return h

    def step(self, simulation: Any, steps: int) -> None:
        """Run ``steps`` steps, depositing a hill every ``frequency`` steps of the simulation's step count."""
        remaining = positive_int(steps, "steps", 0)
        while remaining > 0:
            n = min(self.frequency - simulation.currentStep % self.frequency, remaining)
            simulation.step(n)
            remaining -= n
            if simulation.currentStep % self.frequency == 0:
                self.deposit(self.latent(simulation))
