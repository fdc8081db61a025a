"""lss_engine.bias: latent-space bias forces in real OpenMM contexts on the trained alanine dipeptide SRV.

Every force here is built from the ``ala2_model`` model directory (a real
SRV trained on a real 450 K store, 2 latent coordinates), evaluated by
OpenMM on the Reference and CPU platforms, and compared with independent
references: the :class:`~lss_engine.encoder.Encoder` Python path (numpy
features → float32 network), the closed-form energies in numpy, and
central finite differences of OpenMM's own energy.

Most contexts hold a bare 22-particle System with the bias force alone, so
energy and forces are exactly the bias's.

Note on the model: its torsion features are raw angles, so its latent
coordinates jump where φ or ψ crosses ±π; the conformations used stay
0.3 rad away from it.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import numpy as np
import openmm  # before torch's plugin load on purpose: ensure_openmmtorch must cope
import pytest
import torch
from openmm import unit

from lss_engine.bias import (
    FlatBottomWalls,
    GaussianSum,
    HarmonicRestraint,
    latent_bias_force,
    latent_bias_variable,
    latent_cv_force,
    latent_training_range,
)
from lss_engine.bias.backends import PythonForceBackend
from lss_engine.bundle import ModelBundle
from lss_engine.encoder import Encoder
from lss_engine.errors import LssError
from lss_engine.features import featurizer_from_spec

KJ = unit.kilojoule_per_mole
HAS_PYTHON_FORCE = PythonForceBackend.available()
PLATFORMS = ["Reference", "CPU"]


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def frames(ala2_system) -> np.ndarray:
    """Four 450 K conformations ``(4, 22, 3)`` nm, 100 steps apart, with φ and ψ 0.3 rad away from ±π."""
    sim = ala2_system.make_simulation(platform="Reference", seed=11)
    torsions = featurizer_from_spec({"type": "torsions", "name": "t", "indices": [[4, 6, 8, 14], [6, 8, 14, 16]],
                                     "n_atoms": 22})
    out = []
    while len(out) < 4:
        sim.step(100)
        x = np.asarray(sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if np.all(np.abs(torsions.compute(x)) < np.pi - 0.3):
            out.append(x)
    return np.stack(out)


def python_latent(encoder: Encoder, xyz: np.ndarray, box=None) -> np.ndarray:
    """The Encoder's Python path: numpy features of the spec's featurizer → ``Encoder.latent``."""
    features = featurizer_from_spec(encoder.feature_spec).compute(np.atleast_3d(xyz).reshape(-1, 22, 3), box)
    return encoder.latent(features)


def bare_context(force, platform: str = "Reference", box=None) -> openmm.Context:
    system = openmm.System()
    for _ in range(22):
        system.addParticle(12.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box))
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))


def evaluate(context: openmm.Context, xyz: np.ndarray, **kw):
    context.setPositions(xyz * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True, **kw)
    forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer))
    return state.getPotentialEnergy().value_in_unit(KJ), forces, state


def energy(context: openmm.Context, xyz: np.ndarray) -> float:
    context.setPositions(xyz * unit.nanometer)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)


def restraint_energy(s, centre, kappa) -> float:
    return float(0.5 * np.sum(np.asarray(kappa) * (np.asarray(s) - np.asarray(centre)) ** 2))


# --------------------------------------------------------------------------
# latent value and read-back


def test_latent_read_back_equals_the_encoder(ala2_model, encoder, frames, ala2_system):
    """The latent from the force (energy-parameter derivatives) equals the Encoder's Python path.

    float64 inside the force, float32 network in the Python path: they agree
    to ~1e-6, within the 1e-5 asked; against a separate float64 encoder call
    (the force's own module, eager) the read-back agrees to 1e-10.  The
    force is added to the real alanine dipeptide System in its own group,
    whose energy alone is the restraint's ½ Σ κ (s - s0)².
    """
    centre, kappa = np.array([0.3, -0.4]), np.array([150.0, 60.0])
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint(centre, kappa), force_group=7)
    assert bias.backend == "torch" and bias.n_dim == 2 and force.getForceGroup() == 7
    assert bias.centre_names == ("lss_s0_0", "lss_s0_1") and bias.stiffness_names == ("lss_kappa_0", "lss_kappa_1")
    system = copy.deepcopy(ala2_system.system)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    reference = python_latent(encoder, frames)
    for x, s_ref in zip(frames, reference):
        context.setPositions(x * unit.nanometer)
        state = context.getState(getEnergy=True, getParameters=True, getParameterDerivatives=True, groups={7})
        s = bias.latent_from_state(state)
        np.testing.assert_allclose(s, s_ref, rtol=0, atol=1e-5)
        separate = bias.module.latent(torch.as_tensor(x)).detach().numpy()
        np.testing.assert_allclose(s, separate, rtol=0, atol=1e-10)
        assert state.getPotentialEnergy().value_in_unit(KJ) == pytest.approx(
            restraint_energy(separate, centre, kappa), rel=1e-10)
    # all groups (the default) give the same read-back; the energies differ by the rest of the system
    state = context.getState(getEnergy=True, getParameters=True, getParameterDerivatives=True)
    np.testing.assert_allclose(bias.latent_from_state(state), reference[-1], atol=1e-5)


def test_read_back_needs_a_restraint_and_the_derivatives(ala2_model, frames):
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0], [100.0, 0.0]))
    context = bare_context(force)
    _, _, state = evaluate(context, frames[0], getParameters=True, getParameterDerivatives=True)
    s = bias.latent_from_state(state)
    assert np.isfinite(s[0]) and np.isnan(s[1])  # κ_1 = 0: no information about s_1
    _, _, bare_state = evaluate(context, frames[0])
    with pytest.raises(LssError, match="getParameterDerivatives"):
        bias.latent_from_state(bare_state)
    _, walls_only = latent_bias_force(ala2_model, walls="auto")
    with pytest.raises(LssError, match="no restraint"):
        walls_only.latent_from_state(state)


# --------------------------------------------------------------------------
# forces


@pytest.mark.parametrize("platform", PLATFORMS)
def test_forces_are_minus_the_gradient_of_the_energy(ala2_model, encoder, frames, platform):
    """OpenMM's forces equal central finite differences of OpenMM's energy, all 66 coordinates.

    Restraint, walls (active in dimension 0: the point lies 0.2 above the
    upper wall) and two Gaussians act together.  Step h = 1e-6 nm: a central
    difference errs by the truncation h²/6 |E'''| plus the rounding ~ε|E|/h.
    This model's latent is steep (bond-length distances standardised by
    their ~3e-3 nm spread give |F| up to ~8e3 kJ/mol/nm here), so truncation
    dominates: on this configuration the error relative to max |F| was
    5.7e-4, 5.7e-6, 5.7e-8 at h = 1e-4, 1e-5, 1e-6 nm (the h² law) and
    5e-10 at 1e-7 nm, where rounding starts; rounding in float64 (positions
    and energies are float64 on both platforms) is ~2e-16 · 22 kJ/mol /
    1e-6 nm ≈ 5e-9 kJ/mol/nm.  Tolerance 1e-5 × max |F| + 1e-6: ~200 times
    the error measured, far below a real error (a missing chain-rule factor
    or a wrong sign is O(1) relative).
    """
    s = python_latent(encoder, frames[1])[0]
    walls = FlatBottomWalls([s[0] - 1.0, s[1] - 1.0], [s[0] - 0.2, s[1] + 1.0], stiffness=500.0)
    hills = GaussianSum([s + 0.1, s - [0.2, 0.05]], [0.3, 0.2], [4.0, 2.5])
    force, _ = latent_bias_force(ala2_model, restraint=HarmonicRestraint(s + [0.3, -0.2], [120.0, 80.0]),
                                 walls=walls, gaussians=hills)
    context = bare_context(force, platform)
    x = frames[1]
    e0, f, _ = evaluate(context, x)
    assert e0 > 10.0 and np.abs(f).max() > 100.0  # every term is active and the forces are not trivial
    h = 1e-6
    fd = np.zeros_like(f)
    for i in range(22):
        for k in range(3):
            plus, minus = x.copy(), x.copy()
            plus[i, k] += h
            minus[i, k] -= h
            fd[i, k] = -(energy(context, plus) - energy(context, minus)) / (2 * h)
    np.testing.assert_allclose(f, fd, rtol=0, atol=1e-5 * np.abs(f).max() + 1e-6)


def test_set_parameter_changes_the_restraint_without_rebuilding(ala2_model, encoder, frames):
    """``set_centre``/``set_stiffness`` change the energy as ½ Σ κ_k (s_k - s0_k)² says, in the same Context."""
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0], 10.0))
    context = bare_context(force)
    x = frames[2]
    s = bias.module.latent(torch.as_tensor(x)).detach().numpy()
    np.testing.assert_allclose(s, python_latent(encoder, x)[0], atol=1e-5)
    assert energy(context, x) == pytest.approx(restraint_energy(s, [0, 0], [10, 10]), rel=1e-10)
    for centre, kappa in [([1.0, -1.0], [10.0, 10.0]), ([0.5, 2.0], [300.0, 5.0]), (s, [50.0, 50.0]),
                          ([3.0, 3.0], [0.0, 0.0])]:
        bias.set_centre(context, centre)
        bias.set_stiffness(context, kappa)
        np.testing.assert_allclose(bias.centre(context), centre)
        np.testing.assert_allclose(bias.stiffness(context), kappa)
        assert energy(context, x) == pytest.approx(restraint_energy(s, centre, kappa), rel=1e-10, abs=1e-12)
    bias.set_stiffness(context, 40.0)  # a scalar applies to every dimension
    np.testing.assert_allclose(bias.stiffness(context), [40.0, 40.0])
    # the handle's Python energy of latent points uses the context's parameters
    np.testing.assert_allclose(bias.latent_energy(s[None], context), [restraint_energy(s, [3, 3], [40, 40])])
    with pytest.raises(LssError, match="2 finite numbers"):
        bias.set_centre(context, [1.0])
    with pytest.raises(LssError, match=">= 0"):
        bias.set_stiffness(context, [-1.0, 1.0])


# --------------------------------------------------------------------------
# the terms


def test_walls_are_zero_inside_and_quadratic_outside(ala2_model, encoder, frames):
    walls = FlatBottomWalls([-1.0, -2.0], [1.0, 0.5], stiffness=300.0)
    inside = np.array([[0.0, 0.0], [-0.99, 0.49], [1.0, -2.0]])
    np.testing.assert_array_equal(walls.energy_of(inside), 0.0)
    outside = np.array([[1.5, 0.0], [-1.2, 0.9], [0.0, -2.5], [2.0, 1.5]])
    lo, hi = np.array([-1.0, -2.0]), np.array([1.0, 0.5])
    expected = 150.0 * (np.maximum(0, outside - hi) ** 2 + np.maximum(0, lo - outside) ** 2).sum(-1)
    np.testing.assert_allclose(walls.energy_of(outside), expected, rtol=1e-14)
    np.testing.assert_allclose(walls.energy_of(outside[0]), expected[0])  # one point (d,)
    # the default: the training range recorded in the model directory, widened by 10 % per side
    lo_t, hi_t = latent_training_range(ala2_model)
    prop = ModelBundle.load(ala2_model)["propagator"].model
    np.testing.assert_allclose(lo_t, prop.data_min.double().numpy())
    force, bias = latent_bias_force(ala2_model, walls="auto")
    auto = bias.module.terms[0]
    np.testing.assert_allclose(auto.lower.numpy(), lo_t - 0.1 * (hi_t - lo_t))
    np.testing.assert_allclose(auto.upper.numpy(), hi_t + 0.1 * (hi_t - lo_t))
    # in OpenMM: zero for a conformation inside, the formula for walls placed below it
    context = bare_context(force)
    s = python_latent(encoder, frames[0])[0]
    assert np.all((s > auto.lower.numpy()) & (s < auto.upper.numpy()))
    assert energy(context, frames[0]) == 0.0
    below = FlatBottomWalls(s - 2.0, s - [0.3, 0.1], stiffness=200.0)
    force, _ = latent_bias_force(ala2_model, walls=below)
    assert energy(bare_context(force), frames[0]) == pytest.approx(100.0 * (0.3**2 + 0.1**2), rel=1e-5)
    with pytest.raises(LssError, match="lower < upper"):
        FlatBottomWalls([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(LssError, match="model directory"):
        latent_bias_force(Encoder.from_bundle(ModelBundle.load(ala2_model)), walls="auto")


def test_gaussian_sum_matches_numpy(ala2_model, encoder, frames):
    rng = np.random.default_rng(3)
    centres, widths, heights = rng.normal(size=(5, 2)), rng.uniform(0.2, 0.8, size=(5, 2)), rng.uniform(1, 4, 5)

    def reference(s, c, w, h):
        u = (s[:, None, :] - c[None]) / w[None]
        return (h[None] * np.exp(-0.5 * (u * u).sum(-1))).sum(-1)

    hills = GaussianSum(centres, widths, heights)
    points = rng.normal(size=(50, 2))
    np.testing.assert_allclose(hills.energy_of(points), reference(points, centres, widths, heights), rtol=1e-13)
    shared = GaussianSum(centres, [0.3, 0.5], heights)  # one width per dimension for all hills
    np.testing.assert_allclose(shared.energy_of(points),
                               reference(points, centres, np.tile([0.3, 0.5], (5, 1)), heights), rtol=1e-13)
    # deposition between runs: a new sum, the old one unchanged
    more = hills.added([[0.5, 0.5], [-1.0, 0.2]], [0.4, 0.4], 2.0)
    assert (hills.n_hills, more.n_hills) == (5, 7)
    np.testing.assert_allclose(more.energy_of(points), hills.energy_of(points) + reference(
        points, np.array([[0.5, 0.5], [-1.0, 0.2]]), np.full((2, 2), 0.4), np.array([2.0, 2.0])), rtol=1e-13)
    np.testing.assert_array_equal(GaussianSum.empty(2).energy_of(points), 0.0)
    with pytest.raises(LssError, match="3-dimensional"):
        hills.added([[0.0, 0.0, 0.0]], [0.1, 0.1, 0.1], 1.0)
    # in OpenMM
    s = python_latent(encoder, frames[3])[0]
    force, _ = latent_bias_force(ala2_model, gaussians=more.added(s + 0.05, [0.2, 0.3], 5.0))
    all_c = np.vstack([centres, [[0.5, 0.5], [-1.0, 0.2]], [s + 0.05]])
    all_w = np.vstack([widths, np.full((2, 2), 0.4), [[0.2, 0.3]]])
    all_h = np.concatenate([heights, [2.0, 2.0, 5.0]])
    assert energy(bare_context(force), frames[3]) == pytest.approx(reference(s[None], all_c, all_w, all_h)[0],
                                                                   rel=1e-5)


# --------------------------------------------------------------------------
# periodic systems


@pytest.mark.parametrize("platform", PLATFORMS)
def test_periodic_force_uses_the_minimum_image(ala2_model, encoder, frames, platform):
    """Atoms moved by box vectors (each its own) leave energy, forces and latent unchanged.

    A cubic and a triclinic box (OpenMM's reduced form); the model was
    trained in vacuum, so ``periodic=True`` rebuilds its featurizer with the
    minimum image.  The control, the same force without minimum image,
    changes its energy for the same move, so the test sees the wrapping.
    """
    x = frames[0]
    s_ref = python_latent(encoder, x)[0]
    restraint = HarmonicRestraint(s_ref + [0.4, -0.3], [100.0, 100.0])
    rng = np.random.default_rng(5)
    for box in (np.diag([2.0, 2.0, 2.0]), np.array([[2.2, 0, 0], [0.7, 2.1, 0], [-0.6, 0.8, 2.0]])):
        force, bias = latent_bias_force(ala2_model, restraint=restraint, periodic=True)
        assert bias.periodic and force.usesPeriodicBoundaryConditions()
        context = bare_context(force, platform, box)
        e0, f0, state = evaluate(context, x, getParameters=True, getParameterDerivatives=True)
        np.testing.assert_allclose(bias.latent_from_state(state), s_ref, atol=1e-5)
        assert e0 == pytest.approx(restraint_energy(s_ref, s_ref + [0.4, -0.3], [100, 100]), rel=1e-5)
        whole = x + box[0] - 2 * box[2]  # the molecule translated by box vectors
        shifts = rng.integers(-2, 3, size=(22, 3)) @ box  # every atom by its own lattice vector
        assert np.count_nonzero(np.abs(shifts).sum(1)) > 15
        for moved in (whole, x + shifts):
            e1, f1, _ = evaluate(context, moved)
            assert e1 == pytest.approx(e0, rel=1e-9)
            np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-7 * np.abs(f0).max())
        control, _ = latent_bias_force(ala2_model, restraint=restraint)  # no minimum image
        context = bare_context(control, platform, box)
        assert energy(context, x) == pytest.approx(e0, rel=1e-9)
        assert abs(energy(context, x + shifts) - e0) > 1.0


def test_periodic_needs_features_that_can_use_the_minimum_image(ala2_model, encoder):
    plain = featurizer_from_spec(encoder.feature_spec)  # minimum image off
    with pytest.raises(LssError, match="minimum image"):
        latent_bias_force(ala2_model, walls="auto", featurizer=plain, periodic=True)
    positions = featurizer_from_spec({"type": "positions", "name": "xyz", "atom_indices": [0, 1, 2],
                                      "n_atoms": 22})
    aligned_encoder = copy.copy(encoder)
    aligned_encoder.feature_spec = positions.spec()
    with pytest.raises(LssError, match="periodic system"):
        latent_bias_force(aligned_encoder, restraint=HarmonicRestraint([0, 0], 1.0), periodic=True)


# --------------------------------------------------------------------------
# backends


@pytest.mark.skipif(not HAS_PYTHON_FORCE, reason="this OpenMM has no PythonForce (OpenMM >= 8.5)")
@pytest.mark.parametrize("periodic", [False, True])
def test_python_backend_agrees_with_torch_backend(ala2_model, encoder, frames, periodic):
    s = python_latent(encoder, frames[2])[0]
    kwargs = {"restraint": HarmonicRestraint(s - 0.2, [90.0, 40.0]), "gaussians": GaussianSum([s], [0.3, 0.3], [3.0]),
              "walls": FlatBottomWalls(s - 1.0, s + [0.1, 1.0]), "periodic": periodic}
    box = np.diag([2.5, 2.5, 2.5]) if periodic else None
    torch_force, torch_bias = latent_bias_force(ala2_model, backend="torch", **kwargs)
    py_force, py_bias = latent_bias_force(ala2_model, backend="python", **kwargs)
    assert isinstance(py_force, openmm.PythonForce) and py_bias.backend == "python"
    contexts = [bare_context(torch_force, "Reference", box), bare_context(py_force, "Reference", box)]
    for bias, context in zip((torch_bias, py_bias), contexts):
        bias.set_centre(context, s + 0.1)
        bias.set_stiffness(context, [30.0, 70.0])
    for x in frames:
        (e_t, f_t, _), (e_p, f_p, _) = (evaluate(c, x) for c in contexts)
        assert e_p == pytest.approx(e_t, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(f_p, f_t, rtol=0, atol=1e-9 * max(1.0, np.abs(f_t).max()))


@pytest.mark.skipif(not HAS_PYTHON_FORCE, reason="this OpenMM has no PythonForce (OpenMM >= 8.5)")
def test_python_backend_is_never_serialised(ala2_model, frames):
    """OpenMM writes a PythonForce to XML by pickling its function; ours refuses, so XML (and deepcopy) fail."""
    force, bias = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0], 10.0), backend="python")
    system = openmm.System()
    for _ in range(22):
        system.addParticle(12.0)
    system.addForce(force)
    with pytest.raises(openmm.OpenMMException, match="could not be pickled"):
        openmm.XmlSerializer.serialize(system)
    with pytest.raises(openmm.OpenMMException, match="could not be pickled"):
        openmm.XmlSerializer.serialize(force)
    with pytest.raises(openmm.OpenMMException, match="could not be pickled"):
        copy.deepcopy(system)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    _, _, state = evaluate(context, frames[0], getParameters=True, getParameterDerivatives=True)
    with pytest.raises(LssError, match="no energy-parameter derivatives"):
        bias.latent_from_state(state)


def test_torch_backend_writes_system_xml(ala2_model):
    """The openmm-torch force is the serialisable one: System XML holds the TorchScript archive and parameters.

    Not read back here: in this environment (openmm-torch 1.5 wheel, OpenMM
    8.6.1) ``XmlSerializer.deserialize`` of any TorchForce, even a trivial
    module, segfaults inside ``TorchForceProxy::deserialize`` (so does
    ``copy.deepcopy`` of a System holding one).
    """
    force, _ = latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.2, 0.1], 50.0), walls="auto",
                                 force_group=3)
    xml = openmm.XmlSerializer.serialize(force)
    assert 'encodedFileContents="' in xml and 'forceGroup="3"' in xml
    for name in ("lss_s0_0", "lss_s0_1", "lss_kappa_0", "lss_kappa_1"):
        assert f'name="{name}"' in xml


def test_bias_is_built_from_the_checked_model_directory(ala2_model, tmp_path):
    altered = tmp_path / "model"
    shutil.copytree(ala2_model, altered)
    data = bytearray((altered / "encoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (altered / "encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(LssError, match="checksum"):
        latent_bias_force(altered, walls="auto")
    with pytest.raises(LssError, match="model directory or an Encoder"):
        latent_bias_force(object(), walls="auto")
    with pytest.raises(LssError, match="2 latent coordinates"):
        latent_bias_force(ala2_model, restraint=HarmonicRestraint([0.0, 0.0, 0.0], 1.0))
    with pytest.raises(LssError, match="at least one term"):
        latent_bias_force(ala2_model)
    with pytest.raises(LssError, match="force_group"):
        latent_bias_force(ala2_model, walls="auto", force_group=32)
    with pytest.raises(LssError, match="unknown latent bias backend"):
        latent_bias_force(ala2_model, walls="auto", backend="plumed")


# --------------------------------------------------------------------------
# OpenMM's Metadynamics over a latent coordinate


_CV_PROBE = """
import torch, openmm, openmmtorch
class M(torch.nn.Module):
    def forward(self, positions):
        return positions.sum()
cv = openmm.CustomCVForce("x")
cv.addCollectiveVariable("x", openmmtorch.TorchForce(torch.jit.script(M())))
system = openmm.System()
system.addParticle(1.0)
system.addForce(cv)
openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
"""


def torchforce_in_custom_cv_force_works() -> bool:
    """Whether a TorchForce can sit in a CustomCVForce here (probed in a child process: it may segfault).

    CustomCVForce copies its collective variables through XML, and the
    openmm-torch 1.5 wheel with OpenMM 8.6.1 segfaults in
    ``TorchForceProxy::deserialize``.
    """
    result = subprocess.run([sys.executable, "-c", _CV_PROBE], capture_output=True, timeout=300, check=False)
    return result.returncode == 0


def test_latent_coordinate_as_a_collective_variable(ala2_model, encoder, frames):
    """latent_cv_force's energy is ψ_k of the Encoder; its force is -∇ψ_k."""
    s_ref = python_latent(encoder, frames)
    for k in (0, 1):
        context = bare_context(latent_cv_force(ala2_model, k))
        for x, s in zip(frames, s_ref):
            assert energy(context, x) == pytest.approx(s[k], abs=1e-5)
    with pytest.raises(LssError, match="latent index"):
        latent_cv_force(ala2_model, 2)


def test_metadynamics_over_a_latent_coordinate(ala2_model, encoder, ala2_system, frames):
    """OpenMM's Metadynamics on ψ1: hills are deposited and its CV equals the Encoder's ψ1."""
    from openmm.app import Metadynamics, Simulation

    if not torchforce_in_custom_cv_force_works():
        pytest.skip("a TorchForce inside a CustomCVForce segfaults in this openmm-torch build "
                    "(TorchForceProxy::deserialize)")
    system = copy.deepcopy(ala2_system.system)
    variable = latent_bias_variable(ala2_model, 0, -3.0, 3.0, 0.2, grid_width=61)
    meta = Metadynamics(system, [variable], 450 * unit.kelvin, biasFactor=5.0, height=1.0 * KJ, frequency=10)
    simulation = Simulation(ala2_system.topology, system, ala2_system.make_integrator(3),
                            openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(frames[0] * unit.nanometer)
    meta.step(simulation, 20)
    assert np.max(-meta.getFreeEnergy().value_in_unit(KJ)) > 0  # two hills deposited
    x = np.asarray(simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(
        unit.nanometer))
    assert meta.getCollectiveVariables(simulation)[0] == pytest.approx(python_latent(encoder, x)[0, 0], abs=1e-5)


def test_latent_metadynamics_grows_well_tempered_hills_in_place(ala2_model, ala2_system):
    """Continuous well-tempered metadynamics on the PythonForce backend (OpenMM's Metadynamics over a TorchForce
    crashes with this openmm-torch wheel): 300 steps with a hill every 50 give 6 hills, the first of height h0,
    each later one h0·exp(−V_before(c_j)/(kT(γ−1))) with V_before the earlier hills at its centre (recomputed in
    numpy, 1e-12); the force's energy at the current state is V(s) of the encoder's s (1e-8: same float64
    module); F = −γ/(γ−1)·V; the System is not serialisable (the force would pickle its function)."""
    from openmm import app

    from lss_engine.bias import LatentMetadynamics

    if not PythonForceBackend.available():
        pytest.skip("this OpenMM has no PythonForce")
    system = copy.deepcopy(ala2_system.system)
    meta = LatentMetadynamics(system, ala2_model, width=[0.3, 0.4], height=2.0, frequency=50, temperature=450.0,
                              bias_factor=5.0, force_group=7)
    sim = app.Simulation(ala2_system.topology, system, ala2_system.make_integrator(3),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(ala2_system.positions)
    sim.context.setVelocitiesToTemperature(450 * unit.kelvin, 3)
    meta.step(sim, 300)
    c, h = meta.centres, meta.heights
    assert c.shape == (6, 2) and h[0] == pytest.approx(2.0)
    kT = 450.0 * 0.00831446261815324
    for j in range(1, 6):
        before = np.sum(h[:j] * np.exp(-0.5 * np.sum(((c[j] - c[:j]) / [0.3, 0.4]) ** 2, axis=1)))
        assert h[j] == pytest.approx(2.0 * np.exp(-before / (kT * 4.0)), rel=1e-12)
    s = meta.latent(sim)
    energy = sim.context.getState(getEnergy=True, groups={7}).getPotentialEnergy().value_in_unit(
        unit.kilojoule_per_mole)
    assert energy == pytest.approx(float(meta.bias_energy(s)), rel=1e-8, abs=1e-10)
    np.testing.assert_allclose(meta.free_energy(c), -1.25 * meta.bias_energy(c))
    with pytest.raises(Exception):
        openmm.XmlSerializer.serialize(system)
    with pytest.raises(LssError, match="bias_factor"):
        LatentMetadynamics(copy.deepcopy(ala2_system.system), ala2_model, width=0.3, height=1.0, frequency=10,
                           temperature=300.0, bias_factor=1.0)
