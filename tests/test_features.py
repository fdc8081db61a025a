"""Tests of lss_engine.features against mdtraj, on alanine-dipeptide MD frames and synthetic topologies."""
from __future__ import annotations

import io
import itertools
import json
import warnings

import mdtraj as md
import numpy as np
import pytest
import torch

from lss_engine.errors import SpecError
from lss_engine.features import (
    AlignedPositions,
    Contacts,
    Distances,
    FeatureUnion,
    Featurizer,
    Positions,
    Torsions,
    build_featurizer,
    featurizer_from_spec,
    select_atoms,
    to_json,
)

ATOL = 1e-5
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ala2():
    """200 frames of 450 K alanine-dipeptide MD (Reference platform, every 50 steps)."""
    import openmm.unit as u

    from lss_engine.systems import get_system

    system = get_system("alanine-dipeptide", temperature=450.0)
    sim = system.make_simulation(platform="Reference", seed=2024)
    frames = []
    for _ in range(200):
        sim.step(50)
        state = sim.context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(u.nanometer))
    xyz = np.asarray(frames, dtype=np.float32)
    assert xyz.shape == (200, 22, 3) and np.isfinite(xyz).all()
    top = md.Topology.from_openmm(system.topology)
    return {"omm_top": system.topology, "top": top, "xyz": xyz, "traj": md.Trajectory(xyz, top)}


@pytest.fixture(scope="module")
def peptide():
    """A synthetic SER-VAL-LEU-LYS-ARG chain (heavy atoms + H, HA) with random coordinates."""
    residues = [
        ("SER", "N CA C O CB OG H HA"),
        ("VAL", "N CA C O CB CG1 CG2 H HA"),
        ("LEU", "N CA C O CB CG CD1 CD2 H HA"),
        ("LYS", "N CA C O CB CG CD CE NZ H HA"),
        ("ARG", "N CA C O CB CG CD NE CZ NH1 NH2 H HA"),
    ]
    top = md.Topology()
    chain = top.add_chain()
    for k, (resname, atoms) in enumerate(residues):
        res = top.add_residue(resname, chain, resSeq=k + 1)
        for name in atoms.split():
            top.add_atom(name, md.element.get_by_symbol(name[0]), res)
    rng = np.random.default_rng(7)
    xyz = rng.normal(scale=0.6, size=(20, top.n_atoms, 3)).astype(np.float32)
    return {"top": top, "xyz": xyz, "traj": md.Trajectory(xyz, top)}


def _wrap(xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Put every atom into the unit cell (rows of ``box`` are a, b, c)."""
    frac = xyz @ np.linalg.inv(box)
    return (frac - np.floor(frac)) @ box


BOXES = {
    "orthorhombic": np.diag([2.4, 2.6, 2.8]),
    "triclinic": np.array([[2.6, 0.0, 0.0], [0.7, 2.5, 0.0], [-0.8, 0.9, 2.4]]),
}


@pytest.fixture(scope="module", params=sorted(BOXES))
def dimer_in_box(request, ala2):
    """Two alanine dipeptides per frame, each straddling the cell boundary, wrapped atom by atom."""
    box = BOXES[request.param]
    xyz = ala2["xyz"][::4].astype(np.float64)
    n = len(xyz)
    rng = np.random.default_rng(3)
    one = xyz - xyz.mean(axis=1, keepdims=True)
    two = one[::-1] + np.array([1.1, 0.9, 1.0])  # another conformation, displaced
    both = np.concatenate([one, two], axis=1) + rng.uniform(-0.2, 0.2, size=(n, 1, 3))
    boxes = np.repeat(box[None], n, axis=0)
    wrapped = _wrap(both, box).astype(np.float32)
    top = ala2["top"].join(ala2["top"])
    traj = md.Trajectory(wrapped, top)
    traj.unitcell_vectors = boxes.astype(np.float32)
    widths = np.abs(np.linalg.det(box)) / np.linalg.norm(np.cross(box[[1, 2, 0]], box[[2, 0, 1]]), axis=1)
    intra = np.linalg.norm(one[:, :, None] - one[:, None], axis=-1).max()
    assert intra < 0.5 * widths.min()  # bonded geometry is well inside half the box
    assert (np.abs(wrapped - both.astype(np.float32)) > 0.1).any()  # some atoms really were moved
    return {
        "name": request.param,
        "top": top,
        "xyz": wrapped,
        "unwrapped": both,
        "box": boxes,
        "traj": traj,
        "half_width": 0.5 * widths.min(),
    }


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + np.pi) % (2 * np.pi) - np.pi)


# ---------------------------------------------------------------------------
# agreement with mdtraj
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_backbone_torsions_match_mdtraj(ala2, dtype):
    f = build_featurizer("backbone-torsions", ala2["omm_top"])
    torsions = f.blocks[0]
    phi_idx, phi = md.compute_phi(ala2["traj"])
    psi_idx, psi = md.compute_psi(ala2["traj"])
    assert torsions.names == ["phi ALA2", "psi ALA2"] and torsions.units == ["rad", "rad"]
    np.testing.assert_array_equal(torsions.indices.numpy(), np.concatenate([phi_idx, psi_idx]))
    out = f.compute(ala2["xyz"].astype(dtype))
    assert out.dtype == dtype and out.shape == (200, 2)
    assert _angle_diff(out, np.concatenate([phi, psi], axis=1)).max() < ATOL
    assert np.ptp(out[:, 0]) > 1.0  # the MD actually moves


@pytest.mark.parametrize("dtype", DTYPES)
def test_chi_torsions_match_mdtraj(peptide, dtype):
    f = build_featurizer(["chi-torsions"], peptide["top"]).blocks[0]
    expected = [getattr(md, f"compute_chi{k}")(peptide["traj"]) for k in range(1, 6)]
    np.testing.assert_array_equal(f.indices.numpy(), np.concatenate([e[0] for e in expected]))
    assert f.n_features == 5 + 3 + 2 + 2 + 1  # chi1: all 5, chi2: LEU LYS ARG, chi3/chi4: LYS ARG, chi5: ARG
    assert f.names[:2] == ["chi1 SER1", "chi1 VAL2"] and f.names[-1] == "chi5 ARG5"
    out = f.compute(peptide["xyz"].astype(dtype))
    assert out.dtype == dtype
    assert _angle_diff(out, np.concatenate([e[1] for e in expected], axis=1)).max() < ATOL


@pytest.mark.parametrize("dtype", DTYPES)
def test_arbitrary_torsions_match_compute_dihedrals(ala2, dtype):
    quartets = np.array([[0, 1, 4, 6], [1, 4, 6, 8], [10, 8, 14, 16], [11, 10, 8, 6], [21, 18, 16, 14]])
    f = Torsions(quartets, n_atoms=22)
    expected = md.compute_dihedrals(ala2["traj"], quartets)
    assert _angle_diff(f.compute(ala2["xyz"].astype(dtype)), expected).max() < ATOL


@pytest.mark.parametrize("dtype", DTYPES)
def test_distances_match_mdtraj(ala2, dtype):
    f = build_featurizer("heavy-atom-distances", ala2["omm_top"]).blocks[0]
    heavy = [a.index for a in ala2["top"].atoms if a.element.symbol != "H"]
    pairs = np.array(list(itertools.combinations(heavy, 2)))
    np.testing.assert_array_equal(f.pairs.numpy(), pairs)
    assert f.names[0] == "d ACE1:CH3-ACE1:C" and set(f.units) == {"nm"}
    out = f.compute(ala2["xyz"].astype(dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, md.compute_distances(ala2["traj"], pairs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_periodic_distances_and_torsions_match_mdtraj(dimer_in_box, dtype):
    d = dimer_in_box
    n = d["top"].n_atoms
    pairs = np.array(list(itertools.combinations(range(n), 2)))
    xyz, box = d["xyz"].astype(dtype), d["box"].astype(dtype)
    out = Distances(pairs, n_atoms=n, periodic=True).compute(xyz, box)
    assert out.dtype == dtype
    ref = md.compute_distances(d["traj"], pairs, periodic=True)
    if d["name"] == "triclinic":
        # OpenMM's reduced-box rule is the minimum image only below half the box width
        keep = ref < d["half_width"]
        assert keep.mean() > 0.3
        np.testing.assert_allclose(out[keep], ref[keep], atol=ATOL, rtol=0)
    else:
        np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    # bonded geometry is recovered exactly from the wrapped coordinates
    intra = (pairs < 22).all(axis=1)
    raw = np.linalg.norm(d["unwrapped"][:, pairs[intra, 1]] - d["unwrapped"][:, pairs[intra, 0]], axis=-1)
    np.testing.assert_allclose(out[:, intra], raw, atol=ATOL, rtol=0)
    # without periodic=True (or without a box) the wrapped coordinates give plain distances
    plain = md.compute_distances(d["traj"], pairs, periodic=False)
    np.testing.assert_allclose(Distances(pairs, n_atoms=n).compute(xyz, box), plain, atol=ATOL, rtol=0)
    np.testing.assert_allclose(Distances(pairs, n_atoms=n, periodic=True).compute(xyz), plain, atol=ATOL, rtol=0)

    tors = build_featurizer("backbone-torsions", d["top"], periodic=True).blocks[0]
    got = tors.compute(xyz, box)
    assert tors.n_features == 4
    assert _angle_diff(got, md.compute_dihedrals(d["traj"], tors.indices.numpy(), periodic=True)).max() < ATOL
    unwrapped = md.Trajectory(d["unwrapped"], d["top"])
    assert _angle_diff(got, md.compute_dihedrals(unwrapped, tors.indices.numpy())).max() < ATOL


@pytest.mark.parametrize("scheme", ["ca", "closest", "closest-heavy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_contacts_match_mdtraj(dimer_in_box, scheme, dtype):
    d = dimer_in_box
    residue_pairs = np.array(list(itertools.combinations(range(6), 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mdtraj warns about residues without CA
        for periodic in (False, True):
            ref, ref_pairs = md.compute_contacts(d["traj"], residue_pairs.tolist(), scheme=scheme, periodic=periodic)
            f = Contacts.from_topology(d["top"], residue_pairs, scheme, periodic=periodic)
            assert f.n_features == len(ref_pairs) == (1 if scheme == "ca" else 15)
            out = f.compute(d["xyz"].astype(dtype), d["box"])
            assert out.dtype == dtype
            if periodic and d["name"] == "triclinic":
                keep = ref < d["half_width"]
                np.testing.assert_allclose(out[keep], ref[keep], atol=ATOL, rtol=0)
            else:
                np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    if scheme == "ca":
        assert f.names == ["dmin 0:ALA2-1:ALA2"]  # chain index prefix: the chain IDs are blank


def test_contacts_all_and_transforms_match_mdtraj(peptide):
    ref, ref_pairs = md.compute_contacts(peptide["traj"], "all", scheme="closest-heavy")
    f = build_featurizer("contacts", peptide["top"]).blocks[0]
    assert f.name == "contacts" and f.n_features == len(ref_pairs) == 3
    assert f.names[0] == "exp(-dmin/0.5) SER1-LYS4" and f.units == ["1"] * 3
    np.testing.assert_allclose(f.compute(peptide["xyz"]), np.exp(-ref / 0.5), rtol=1e-5, atol=0)
    for scheme in ("sidechain", "sidechain-heavy", "ca", "closest"):
        ref, _ = md.compute_contacts(peptide["traj"], "all", scheme=scheme)
        got = Contacts.from_topology(peptide["top"], "all", scheme).compute(peptide["xyz"])
        np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
    # rational switching function, including d == r0 exactly
    sw = Contacts.from_topology(peptide["top"], "all", "closest-heavy", transform="switch", r0=0.8)
    assert sw.names[0] == "s(dmin/0.8) SER1-LYS4"
    x = md.compute_contacts(peptide["traj"], "all", scheme="closest-heavy")[0].astype(np.float64) / 0.8
    np.testing.assert_allclose(sw.compute(peptide["xyz"].astype(np.float64)), (1 - x**6) / (1 - x**12), rtol=1e-6)
    d = np.array([0.4, 0.8, 1.6])  # includes d == r0, where the ratio is 0/0 -> n/m
    pos = np.zeros((3, 2, 3))
    pos[:, 1, 0] = d
    for n, m in [(6, 12), (4, 10)]:
        s = Contacts([[0], [1]], [[0, 1]], n_atoms=2, transform="switch", r0=0.8, n=n, m=m)
        with np.errstate(invalid="ignore"):
            expected = np.where(d == 0.8, n / m, (1 - (d / 0.8) ** n) / (1 - (d / 0.8) ** m))
        np.testing.assert_allclose(s.compute(pos)[:, 0], expected, rtol=1e-12)
        np.testing.assert_allclose(s.compute(pos.astype(np.float32))[:, 0], expected, rtol=1e-6)


def _kabsch_numpy(mobile: np.ndarray, reference: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Independent float64 Kabsch superposition of every frame of ``mobile`` (all atoms)."""
    out = np.empty(mobile.shape, dtype=np.float64)
    y = reference[fit].astype(np.float64)
    for k, frame in enumerate(mobile.astype(np.float64)):
        x = frame[fit]
        u, _, vt = np.linalg.svd((x - x.mean(0)).T @ (y - y.mean(0)))
        rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
        out[k] = (frame - x.mean(0)) @ rot + y.mean(0)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_aligned_positions_match_superpose(ala2, dtype):
    xyz = ala2["xyz"]
    heavy = select_atoms(ala2["omm_top"], "heavy")
    reference = xyz[17]
    superposed = md.Trajectory(xyz.copy(), ala2["top"]).superpose(
        md.Trajectory(reference[None], ala2["top"]), atom_indices=heavy
    ).xyz
    f = build_featurizer("aligned-positions", ala2["omm_top"], reference_positions=reference).blocks[0]
    assert f.names[:3] == ["x ACE1:CH3", "y ACE1:CH3", "z ACE1:CH3"] and f.n_features == 3 * len(heavy)
    out = f.compute(xyz.astype(dtype))
    assert out.dtype == dtype
    # output atoms other than the fit atoms
    everything = AlignedPositions(np.arange(22), reference, fit_indices=heavy).compute(xyz.astype(dtype))
    np.testing.assert_array_equal(everything.reshape(200, 22, 3)[:, heavy].reshape(200, -1), out)

    # an independent float64 Kabsch
    exact = _kabsch_numpy(xyz, reference, heavy)
    np.testing.assert_allclose(everything, exact.reshape(200, -1), atol=1e-9 if dtype == np.float64 else ATOL, rtol=0)

    # mdtraj (float32 QCP): within 1e-5 nm, except on the odd frame whose fit is ill-conditioned
    # (smallest singular value of the covariance ~0.005 nm^2) where mdtraj is off by up to ~1e-4 nm
    # and our fit has the lower RMSD
    err = np.abs(everything.reshape(200, 22, 3) - superposed).max(axis=(1, 2))
    assert (err < ATOL).mean() >= 0.97 and err.max() < 3e-4

    def rmsd(aligned):
        return np.sqrt(((aligned.reshape(200, -1, 3)[:, -len(heavy) :] - reference[heavy]) ** 2).sum(-1).mean(-1))

    assert (rmsd(out.astype(np.float64)) <= rmsd(superposed[:, heavy].astype(np.float64)) + 1e-7).all()

    # mirror images: the fit stays a proper rotation (no reflection), like mdtraj's
    mirrored = xyz * np.array([-1, 1, 1], dtype=np.float32)
    md_mirrored = md.Trajectory(mirrored.copy(), ala2["top"]).superpose(
        md.Trajectory(reference[None], ala2["top"]), atom_indices=heavy
    )
    ours = f.compute(mirrored.astype(dtype)).astype(np.float64)
    np.testing.assert_allclose(rmsd(ours), rmsd(md_mirrored.xyz[:, heavy].astype(np.float64)), atol=1e-6)
    np.testing.assert_allclose(ours, _kabsch_numpy(mirrored, reference, heavy)[:, heavy].reshape(200, -1), atol=ATOL)
    assert (rmsd(ours) > rmsd(out.astype(np.float64)) + 0.01).mean() > 0.9  # a reflection would fit better


def test_positions_and_selection(ala2):
    f = build_featurizer("positions", ala2["omm_top"]).blocks[0]
    assert isinstance(f, Positions) and f.n_features == 66 and f.names[3:5] == ["x ACE1:CH3", "y ACE1:CH3"]
    np.testing.assert_array_equal(f.compute(ala2["xyz"]), ala2["xyz"].reshape(200, -1))
    np.testing.assert_array_equal(Positions([8, 2], n_atoms=22).compute(ala2["xyz"][0]), ala2["xyz"][0, [8, 2]].ravel())
    top = ala2["omm_top"]
    assert select_atoms(top, None).tolist() == list(range(22)) == select_atoms(top, "all").tolist()
    assert select_atoms(top, "none").tolist() == []
    assert select_atoms(top, "ca").tolist() == [8]
    assert select_atoms(top, "heavy").tolist() == [1, 4, 5, 6, 8, 10, 14, 15, 16, 18]
    assert select_atoms(ala2["top"], "backbone").tolist() == ala2["top"].select("backbone").tolist()
    assert select_atoms(top, "resname ALA and name CB").tolist() == [10]
    assert select_atoms(top, [5, 1]).tolist() == [5, 1]
    for bad in ("resname and and", [0, 22], [1, 1], [[0, 1]]):
        with pytest.raises(SpecError):
            select_atoms(top, bad)


# ---------------------------------------------------------------------------
# conventions, numpy front, spec, autograd, TorchScript
# ---------------------------------------------------------------------------
def test_sincos_columns_interleave_sin_and_cos(ala2):
    f = build_featurizer("backbone-torsions,backbone-torsions-sincos", ala2["omm_top"])
    angles, sincos = f.blocks
    assert sincos.names == ["sin(phi ALA2)", "cos(phi ALA2)", "sin(psi ALA2)", "cos(psi ALA2)"]
    assert sincos.units == ["1"] * 4 and sincos.name == "backbone_torsions_sincos"
    a = angles.compute(ala2["xyz"].astype(np.float64))
    sc = sincos.compute(ala2["xyz"].astype(np.float64))
    np.testing.assert_allclose(sc[:, 0::2], np.sin(a), atol=1e-12)
    np.testing.assert_allclose(sc[:, 1::2], np.cos(a), atol=1e-12)


def test_compute_front_shapes_dtypes_and_boxes(ala2):
    f = Distances([[0, 21], [5, 16]], n_atoms=22, periodic=True)
    x = ala2["xyz"][:5]
    for dtype in (np.float32, np.float64):
        assert f.compute(x.astype(dtype)).dtype == dtype
    assert f.compute(x.astype(np.int64) * 0).dtype == np.float64
    assert f.compute(x[0]).shape == (2,)
    full = f.compute(x, np.repeat(np.diag([0.6, 0.7, 0.8])[None], 5, axis=0))
    np.testing.assert_array_equal(f.compute(x, np.diag([0.6, 0.7, 0.8])), full)
    np.testing.assert_array_equal(f.compute(x, np.array([0.6, 0.7, 0.8])), full)
    assert (full <= 0.5 * np.linalg.norm([0.6, 0.7, 0.8]) + 1e-6).all()
    t = torch.from_numpy(x.astype(np.float64))
    assert f(t).dtype == torch.float64 and f(t.float()).dtype == torch.float32
    assert f(t[0]).shape == (2,)
    with pytest.raises(SpecError):
        f.compute(x[:, :10])


def _everything(ala2) -> FeatureUnion:
    top = ala2["omm_top"]
    names = "backbone-torsions,backbone-torsions-sincos,heavy-atom-distances,aligned-positions,positions"
    f = build_featurizer(names, top, reference_positions=ala2["xyz"][0], periodic=True)
    extra = [
        Contacts.from_topology(top, [[0, 2], [0, 1]], "closest", transform="switch", r0=0.45, name="contacts_sw"),
        Contacts.from_topology(top, [[0, 2]], "closest-heavy", transform="exp", periodic=True, name="contacts_exp"),
        Torsions([[0, 1, 4, 6]], n_atoms=22, periodic=True, name="methyl"),
    ]
    return FeatureUnion([f, *extra], name="all_features")


def test_spec_json_round_trip_is_bitwise_identical(ala2):
    f = _everything(ala2)
    assert [b.name for b in f.blocks] == [
        "backbone_torsions",
        "backbone_torsions_sincos",
        "heavy_atom_distances",
        "aligned_positions",
        "positions",
        "contacts_sw",
        "contacts_exp",
        "methyl",
    ]
    assert len(f.names) == len(f.units) == f.n_features == sum(b.n_features for b in f.blocks)
    spec = f.spec()
    assert spec["type"] == "union" and len(spec["features"]) == 8 and spec["n_atoms"] == 22
    assert all(c["n_atoms"] == 22 and "name" in c for c in spec["features"])
    text = to_json(f)
    assert text == f.to_json() and json.loads(text) == spec
    box = np.diag([3.0, 3.1, 3.2])
    for rebuilt in (featurizer_from_spec(text), featurizer_from_spec(json.loads(text))):
        assert rebuilt.spec() == spec and rebuilt.names == f.names and rebuilt.units == f.units
        for dtype in DTYPES:
            x = ala2["xyz"][:40].astype(dtype)
            np.testing.assert_array_equal(rebuilt.compute(x, box), f.compute(x, box))
    for block in f.blocks:  # each block alone round-trips too
        again = featurizer_from_spec(block.to_json())
        assert type(again) is type(block) and again.spec() == block.spec()
        np.testing.assert_array_equal(again.compute(ala2["xyz"][:3]), block.compute(ala2["xyz"][:3]))


def test_gradcheck_float64(ala2):
    x = torch.tensor(ala2["xyz"][:2], dtype=torch.float64, requires_grad=True)
    box = torch.tensor(np.diag([1.5, 1.6, 1.7]), dtype=torch.float64)
    heavy = select_atoms(ala2["omm_top"], "heavy")
    featurizers = [
        Torsions([[4, 6, 8, 14], [6, 8, 14, 16]], n_atoms=22),
        Torsions([[4, 6, 8, 14]], n_atoms=22, form="sincos", periodic=True),
        Distances([[1, 18], [8, 10], [5, 16]], n_atoms=22, periodic=True),
        AlignedPositions(heavy[:6], ala2["xyz"][50], fit_indices=heavy),
        Contacts.from_topology(ala2["omm_top"], [[0, 2]], "closest-heavy", transform="switch"),
    ]
    for f in featurizers:
        assert torch.autograd.gradcheck(lambda p, f=f: f(p, box), (x,), eps=1e-6, atol=1e-6)


def test_torchscript_round_trip(ala2):
    f = _everything(ala2)
    scripted = torch.jit.script(f)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    box = torch.tensor(np.diag([2.0, 2.1, 2.2]))
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(ala2["xyz"][:10], dtype=dtype)
        expected = f(x, box)
        assert expected.dtype == dtype
        torch.testing.assert_close(loaded(x, box), expected)
        torch.testing.assert_close(loaded(x), f(x))
        torch.testing.assert_close(loaded(x[0]), f(x[0]))
    # gradients flow through the scripted module (what an openmm-torch force needs)
    x = torch.tensor(ala2["xyz"][:1], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loaded(x, box).sum(), x)
    (ref,) = torch.autograd.grad(f(x, box).sum(), x)
    torch.testing.assert_close(grad, ref)


def test_features_reject_what_they_cannot_compute(ala2):
    top = ala2["omm_top"]
    with pytest.raises(SpecError, match="valid names: backbone-torsions"):
        build_featurizer("backbone-torsions,phi-psi", top)
    with pytest.raises(SpecError, match="no features"):
        build_featurizer("chi-torsions", top)  # alanine has no chi
    with pytest.raises(SpecError, match="no features"):
        build_featurizer("contacts", top)  # no residues 3 apart
    with pytest.raises(SpecError, match="no features"):
        build_featurizer("ca-distances", top)  # a single CA
    with pytest.raises(SpecError, match="reference"):
        build_featurizer("aligned-positions", top)
    with pytest.raises(SpecError, match="duplicate"):
        build_featurizer("positions, positions", top)
    with pytest.raises(SpecError):
        build_featurizer("", top)
    with pytest.raises(SpecError):
        Torsions([[0, 1, 2, 22]], n_atoms=22)
    with pytest.raises(SpecError):
        Torsions([[0, 1, 2]], n_atoms=22)
    with pytest.raises(SpecError):
        Torsions([[0, 1, 2, 3]], n_atoms=22, form="cos")
    with pytest.raises(SpecError):
        AlignedPositions([0, 1], ala2["xyz"][0])  # fewer than 3 fit atoms
    with pytest.raises(SpecError):
        Distances([[0, 1]], n_atoms=22, name="bad name")
    with pytest.raises(SpecError):
        FeatureUnion([Positions(n_atoms=22), Positions(n_atoms=22)])


def _bad_specs(ala2) -> list:
    good = Distances([[0, 1], [2, 3]], n_atoms=22, name="d").spec()
    aligned = AlignedPositions([1, 4, 5], ala2["xyz"][0]).spec()
    return [
        "not json {",
        "[1, 2]",
        {"type": "wormholes", "name": "x", "n_atoms": 22},
        {"name": "x"},
        {**good, "pairs": [[0, 1, 2]]},
        {**good, "pairs": [[0, 99]]},
        {**good, "pairs": "0-1"},
        {**good, "n_atoms": "22"},
        {k: v for k, v in good.items() if k != "pairs"},
        {**good, "labels": ["only one"]},
        {**good, "name": "has space"},
        {**Torsions([[0, 1, 2, 3]], n_atoms=22).spec(), "form": "tan"},
        {**aligned, "reference": [[0.0, 0.0, 0.0]]},
        {**aligned, "fit_indices": [1, 4]},
        {"type": "union", "features": []},
        {"type": "union", "features": [good, good]},
        {"type": "union", "features": [good, {**good, "name": "e", "n_atoms": 30}]},
        {"type": "contacts", "name": "c", "groups": [[0], []], "pairs": [[0, 1]], "n_atoms": 22},
        {"type": "contacts", "name": "c", "groups": [[0], [1]], "pairs": [[0, 1]], "n_atoms": 22, "transform": "log"},
        {"type": "contacts", "name": "c", "groups": [[0], [1]], "pairs": [[0, 1]], "n_atoms": 22, "r0": -1},
    ]


def test_bad_specs_raise_spec_error(ala2):
    for spec in _bad_specs(ala2):
        with pytest.raises(SpecError) as info:
            featurizer_from_spec(spec)
        assert "\n" not in str(info.value), spec


def test_featurizer_is_a_module_with_the_documented_attributes(ala2):
    f = build_featurizer("backbone-torsions", ala2["omm_top"])
    assert isinstance(f, Featurizer) and isinstance(f, torch.nn.Module)
    for block in f.blocks:
        assert isinstance(block.name, str) and isinstance(block.periodic, bool)
        assert len(block.names) == len(block.units) == block.n_features
        assert not hasattr(block, "blocks")  # the store treats a featurizer without .blocks as one block
