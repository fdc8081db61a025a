"""openmmtorch smoke test: a TorchScript harmonic restraint inside OpenMM.

Exists so that a broken torch / openmmtorch pin fails CI: it builds an
``openmmtorch.TorchForce`` from a scripted module, evaluates it on the
Reference platform and compares energy and forces with the analytic values
E = ½ k Σ_i |r_i - r0_i|², F_i = -k (r_i - r0_i).
"""
from __future__ import annotations

import numpy as np
import pytest

import openmm  # imported before torch on purpose: the plugin must load all the same
import torch
from openmm import unit

from lss_engine.openmm_plugins import ensure_openmmtorch

ensure_openmmtorch()
import openmmtorch  # noqa: E402


class HarmonicRestraint(torch.nn.Module):
    """E = 0.5 k sum |r - r0|^2 in kJ/mol, positions in nm."""

    def __init__(self, reference: np.ndarray, k: float) -> None:
        super().__init__()
        self.register_buffer("reference", torch.tensor(reference, dtype=torch.float64))
        self.k = k

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        d = positions.to(torch.float64) - self.reference
        return 0.5 * self.k * torch.sum(d * d)


def _context(force: openmm.Force, n: int) -> openmm.Context:
    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001),
                          openmm.Platform.getPlatformByName("Reference"))


def test_torchforce_harmonic_restraint_energy_and_forces():
    rng = np.random.default_rng(7)
    n, k = 5, 250.0
    reference = rng.normal(size=(n, 3))
    positions = reference + 0.1 * rng.normal(size=(n, 3))
    module = torch.jit.script(HarmonicRestraint(reference, k))
    force = openmmtorch.TorchForce(module)
    context = _context(force, n)
    context.setPositions(positions * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer))
    d = positions - reference
    assert energy == pytest.approx(0.5 * k * np.sum(d * d), rel=1e-5)
    np.testing.assert_allclose(forces, -k * d, rtol=1e-4, atol=1e-4)


def test_torchforce_from_saved_file(tmp_path):
    """The file-path constructor works too (the usual way models are shipped)."""
    n, k = 3, 10.0
    reference = np.zeros((n, 3))
    path = tmp_path / "restraint.pt"
    torch.jit.script(HarmonicRestraint(reference, k)).save(str(path))
    context = _context(openmmtorch.TorchForce(str(path)), n)
    positions = np.array([[0.1, 0.0, 0.0], [0.0, -0.2, 0.0], [0.0, 0.0, 0.3]])
    context.setPositions(positions * unit.nanometer)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
        unit.kilojoule_per_mole)
    assert energy == pytest.approx(0.5 * k * 0.14, rel=1e-5)
