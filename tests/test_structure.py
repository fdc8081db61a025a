"""Structure-quality metrics against mdtraj and scipy on a short real alanine dipeptide run."""
from __future__ import annotations

import mdtraj as md
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from lss_engine import structure as S
from lss_engine.errors import LssError, NonFiniteError
from lss_engine.store import open_store


@pytest.fixture(scope="module")
def traj(ala2_store):
    """200 frames of the heavy atoms (10) of alanine dipeptide at 450 K, with their topology."""
    return open_store(ala2_store).to_mdtraj()


def rotate(xyz, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # proper rotation
    return xyz @ q.T + rng.normal(size=3)


def test_radius_of_gyration_matches_mdtraj(traj):
    np.testing.assert_allclose(S.radius_of_gyration(traj.xyz), md.compute_rg(traj), rtol=1e-5, atol=1e-6)
    # rigid motions do not change it; masses weight it
    np.testing.assert_allclose(S.radius_of_gyration(rotate(traj.xyz)), md.compute_rg(traj), rtol=1e-5)
    # mass-weighted about the centre of mass (mdtraj's masses= keeps the unweighted centre, so not compared)
    masses = np.array([a.element.mass for a in traj.topology.atoms])
    x = traj.xyz.astype(np.float64)
    com = (x * masses[:, None]).sum(1, keepdims=True) / masses.sum()
    expected = np.sqrt((((x - com) ** 2).sum(-1) * masses).sum(1) / masses.sum())
    np.testing.assert_allclose(S.radius_of_gyration(traj.xyz, masses), expected, rtol=1e-10)


def test_pair_distances_match_mdtraj(traj):
    pairs = np.stack(np.triu_indices(traj.n_atoms, 1), axis=1)
    expected = md.compute_distances(traj, pairs, periodic=False)
    np.testing.assert_allclose(S.pair_distances(traj.xyz), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(S.pair_distances(traj.xyz, pairs[:5]), expected[:, :5], rtol=1e-5, atol=1e-6)


def test_bonds_of_the_heavy_atoms(traj, ala2_system, ala2_store):
    bonds = S.topology_bonds(traj.topology)
    names = [(traj.topology.atom(int(i)).name, traj.topology.atom(int(j)).name) for i, j in bonds]
    assert len(bonds) == 9 and ("CA", "CB") in names and ("C", "O") in names  # the heavy-atom tree
    # the full system's topology restricted to the saved atoms gives the same bonds
    saved = open_store(ala2_store).atom_indices
    np.testing.assert_array_equal(S.topology_bonds(ala2_system.topology, saved), bonds)
    lengths = S.bond_lengths(traj.xyz, bonds)
    np.testing.assert_allclose(lengths, md.compute_distances(traj, bonds, periodic=False), rtol=1e-5, atol=1e-6)
    assert 0.11 < lengths.mean(axis=0).min() and lengths.mean(axis=0).max() < 0.16  # C=O ... C-C, nm
    # MAE of per-bond means: 0 against itself (and a rotated copy); a 1 % expansion shifts each bond by 1 %
    assert S.bond_length_mae(traj.xyz, rotate(traj.xyz), bonds) < 1e-6
    expected = 0.01 * lengths.mean(axis=0).mean()
    assert S.bond_length_mae(1.01 * traj.xyz, traj.xyz, bonds) == pytest.approx(expected, rel=1e-4)


def test_proper_torsions_of_the_heavy_atoms(traj):
    """Every chain of three bonds once: the heavy-atom tree of alanine dipeptide has 10, φ and ψ among them,
    and their angles (mdtraj) match the critic's differentiable sin/cos."""
    import torch

    from lss_engine.models.cwgan import torsion_sin_cos

    quads = S.proper_torsions(S.topology_bonds(traj.topology))
    names = [tuple(traj.topology.atom(int(i)).name for i in q) for q in quads]
    assert len(quads) == 10 and len(set(map(tuple, quads))) == 10
    assert ("C", "N", "CA", "C") in names and ("N", "CA", "C", "N") in names  # φ, ψ
    bonded = {tuple(sorted(b)) for b in S.topology_bonds(traj.topology).tolist()}
    for q in quads.tolist():
        assert len(set(q)) == 4 and all(tuple(sorted(q[k : k + 2])) in bonded for k in range(3))
    assert S.proper_torsions([[0, 1], [1, 2]]).shape == (0, 4)  # no chain of three bonds
    angles = md.compute_dihedrals(traj, quads, periodic=False)
    sin_cos = torsion_sin_cos(torch.as_tensor(traj.xyz, dtype=torch.float64), torch.as_tensor(quads)).numpy()
    np.testing.assert_allclose(sin_cos[:, : len(quads)], np.sin(angles), atol=1e-4)  # float32 positions
    np.testing.assert_allclose(sin_cos[:, len(quads) :], np.cos(angles), atol=1e-4)


def test_bonded_pairs_are_the_shortest_paths_of_up_to_three_bonds(traj):
    """1-2, 1-3 and 1-4 neighbours of alanine dipeptide's heavy atoms vs an all-pairs shortest-path reference;
    and the decoder's default critic cutoff (0.8 nm) keeps every heavy-atom pair of these frames."""
    from lss_engine.pipeline import DecoderSettings

    bonds = S.topology_bonds(traj.topology)
    n = traj.n_atoms
    hops = np.full((n, n), np.inf)
    np.fill_diagonal(hops, 0)
    hops[bonds[:, 0], bonds[:, 1]] = hops[bonds[:, 1], bonds[:, 0]] = 1
    for k in range(n):  # Floyd-Warshall
        hops = np.minimum(hops, hops[:, k : k + 1] + hops[k : k + 1, :])
    for max_bonds in (1, 2, 3):
        expected = [[i, j] for i in range(n) for j in range(i + 1, n) if hops[i, j] <= max_bonds]
        assert S.bonded_pairs(bonds, max_bonds).tolist() == expected
    assert S.bonded_pairs(bonds, 1).tolist() == bonds.tolist()
    assert S.bonded_pairs(np.zeros((0, 2), dtype=np.int64)).shape == (0, 2)
    with pytest.raises(LssError, match="max_bonds"):
        S.bonded_pairs(bonds, 0)
    assert S.pair_distances(traj.xyz).max() < DecoderSettings().critic_cutoff


def test_backbone_torsions_match_mdtraj(traj):
    phi, psi = S.backbone_torsions(traj.xyz, traj.topology)
    assert phi.shape == psi.shape == (traj.n_frames, 1)
    np.testing.assert_allclose(phi, md.compute_phi(traj)[1], atol=1e-5)
    np.testing.assert_allclose(psi, md.compute_psi(traj)[1], atol=1e-5)
    # torsions are invariant under rigid motions
    rphi, rpsi = S.backbone_torsions(rotate(traj.xyz), traj.topology)
    np.testing.assert_allclose(np.cos(rphi - phi), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.cos(rpsi - psi), 1.0, atol=1e-6)


def test_ramachandran_histogram_and_jensen_shannon(traj):
    phi, psi = S.backbone_torsions(traj.xyz, traj.topology)
    hist = S.ramachandran_histogram(phi, psi)
    assert hist.shape == (50, 50) and hist.sum() == pytest.approx(1.0)
    edges = np.linspace(-np.pi, np.pi, 51)
    expected, _, _ = np.histogram2d(phi.ravel(), psi.ravel(), bins=[edges, edges])
    np.testing.assert_allclose(hist, expected / expected.sum())
    assert S.ramachandran_js(phi, psi, phi, psi) == 0.0
    half = len(phi) // 2
    js = S.ramachandran_js(phi[:half], psi[:half], phi[half:], psi[half:])
    p = S.ramachandran_histogram(phi[:half], psi[:half]).ravel()
    q = S.ramachandran_histogram(phi[half:], psi[half:]).ravel()
    assert js == pytest.approx(jensenshannon(p, q, base=2)) and 0 < js <= 1
    assert S.ramachandran_js(phi[half:], psi[half:], phi[:half], psi[:half]) == pytest.approx(js)  # symmetric
    # disjoint histograms are at the maximum distance, 1 in base 2
    assert S.ramachandran_js([-2.0], [2.0], [1.0], [-1.0]) == pytest.approx(1.0)
    # +pi and -pi are the same angle
    np.testing.assert_array_equal(S.ramachandran_histogram([np.pi], [np.pi]),
                                  S.ramachandran_histogram([-np.pi], [-np.pi]))


def test_pair_distance_w1(traj):
    x = traj.xyz
    assert S.pair_distance_w1(x, rotate(x)) < 1e-6
    half = len(x) // 2
    a, b = S.pair_distances(x[:half]), S.pair_distances(x[half:])
    expected = np.mean([wasserstein_distance(a[:, k], b[:, k]) for k in range(a.shape[1])])
    assert S.pair_distance_w1(x[:half], x[half:]) == pytest.approx(expected)
    # a 2 % expansion moves every distance distribution by 2 % of its mean
    shift = S.pair_distance_w1(1.02 * x, x)
    assert shift == pytest.approx(0.02 * S.pair_distances(x).mean(), rel=1e-3)


def test_compare_structures(traj):
    out = S.compare_structures(rotate(traj.xyz), traj.xyz, traj.topology)
    assert set(out) == {"bond_mae_nm", "rg_mean_nm", "rg_std_nm", "reference_rg_mean_nm", "reference_rg_std_nm",
                        "rg_mean_rel_err", "rg_std_rel_err", "pair_distance_w1_nm", "ramachandran_js"}
    assert out["bond_mae_nm"] < 1e-6 and out["pair_distance_w1_nm"] < 1e-6 and out["ramachandran_js"] < 1e-6
    assert out["rg_mean_rel_err"] < 1e-6 and out["rg_std_rel_err"] < 1e-4
    assert out["rg_mean_nm"] == pytest.approx(float(md.compute_rg(traj).mean()), rel=1e-5)
    # without a topology: what needs none
    assert set(S.compare_structures(traj.xyz, traj.xyz)) == out.keys() - {"bond_mae_nm", "ramachandran_js"}


def test_bad_input(traj):
    with pytest.raises(LssError, match=r"\(n_frames, n_atoms, 3\)"):
        S.radius_of_gyration(traj.xyz[0])
    bad = traj.xyz.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        S.pair_distances(bad)
    with pytest.raises(LssError, match="same atoms"):
        S.pair_distance_w1(traj.xyz, traj.xyz[:, :5])
    with pytest.raises(LssError, match="index atoms"):
        S.bond_lengths(traj.xyz, [[0, 10]])
    with pytest.raises(LssError, match="topology has 10 atoms"):
        S.backbone_torsions(traj.xyz[:, :5], traj.topology)
    with pytest.raises(LssError, match="equally many"):
        S.ramachandran_histogram([0.0, 1.0], [0.0])
    with pytest.raises(LssError, match="masses"):
        S.radius_of_gyration(traj.xyz, masses=np.ones(3))
