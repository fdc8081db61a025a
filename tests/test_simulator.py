"""LatentSpaceSimulator: the three stages trained on a real store, safe loading, streaming generation."""
from __future__ import annotations

import json

import mdtraj
import numpy as np
import pytest

from lss_engine.errors import LssError
from lss_engine.simulator import LatentSpaceSimulator
from lss_engine.store import open_store, open_stores


@pytest.fixture(scope="module")
def model_dir(ala2_model):
    return ala2_model


def test_load_and_the_three_maps(model_dir, ala2_store):
    sim = LatentSpaceSimulator.load(model_dir)
    store = open_store(ala2_store)
    assert sim.n_atoms == len(store.atom_indices) == 10 and sim.n_latent == 2
    assert sim.lag_ps == pytest.approx(2 * store.frame_interval_ps)
    assert [a.name for a in sim.topology.atoms()] == [a.name for a in store.topology.atoms]
    z_store = sim.encode(features=store.features(0, 5))
    assert z_store.shape == (5, 2)
    traj = sim.propagate(z_store[0], 20, n_walkers=3, seed=1)
    assert traj.shape == (3, 21, 2) and np.array_equal(traj, sim.propagate(z_store[0], 20, n_walkers=3, seed=1))
    frames = sim.decode(traj[0], seed=2)
    assert frames.shape == (21, 10, 3) and np.isfinite(frames).all()
    assert np.array_equal(frames, sim.decode(traj[0], seed=2))
    # starts: latent point, store frame, whole-system positions
    assert np.array_equal(sim.start_latent((ala2_store, 3), 2), np.repeat(sim.encode(features=store.features(3, 4)), 2, 0))
    assert sim.start_latent(np.zeros(2), 4).shape == (4, 2)
    with pytest.raises(LssError, match="frame"):
        sim.start_latent((ala2_store, 10_000))
    with pytest.raises(LssError, match="start"):
        sim.start_latent(np.zeros(5))


def test_generate_dcd_per_walker_is_reproducible(model_dir, tmp_path):
    sim = LatentSpaceSimulator.load(model_dir)
    paths = sim.generate(30, 2, tmp_path / "a" / "synth.dcd", seed=5, chunk_steps=7, progress=False)
    assert [p.name for p in paths] == ["synth_0.dcd", "synth_1.dcd"]
    top = tmp_path / "a" / "synth_topology.pdb"
    assert top.exists()
    trajs = [mdtraj.load(str(p), top=str(top)) for p in paths]
    assert all(t.n_frames == 30 and t.n_atoms == 10 for t in trajs)
    assert not np.allclose(trajs[0].xyz, trajs[1].xyz)  # walkers differ
    again = sim.generate(30, 2, tmp_path / "b" / "synth.dcd", seed=5, chunk_steps=7, progress=False)
    assert np.array_equal(mdtraj.load(str(again[1]), top=str(top)).xyz, trajs[1].xyz)
    with pytest.raises(LssError, match="exists"):
        sim.generate(30, 2, tmp_path / "a" / "synth.dcd", seed=5, progress=False)
    with pytest.raises(LssError, match="format"):
        sim.generate(30, 1, tmp_path / "x.nc", progress=False)


def test_generate_zarr_matches_dcd_and_keeps_the_latent(model_dir, tmp_path):
    sim = LatentSpaceSimulator.load(model_dir)
    dcd = sim.generate(40, 1, tmp_path / "s.dcd", seed=9, report_interval=4, chunk_steps=8, progress=False)[0]
    store_path = sim.generate(40, 1, tmp_path / "s.zarr", seed=9, report_interval=4, chunk_steps=8,
                              progress=False)[0]
    store = open_store(store_path)
    assert len(store) == 10 and np.allclose(store.times(), np.arange(1, 11) * 4 * sim.lag_ps)
    traj = mdtraj.load(str(dcd), top=str(tmp_path / "s_topology.pdb"))
    assert np.allclose(store.positions(), traj.xyz, atol=1e-5)
    latent = store.observable("latent")
    assert latent.shape == (10, 2)
    assert open_stores(tmp_path / "s.zarr")[0].n_frames == 10


def test_latent_simulation_takes_openmm_reporters(model_dir, tmp_path):
    from openmm import app

    sim = LatentSpaceSimulator.load(model_dir)
    simulation = sim.simulation(seed=3, report_interval=5, chunk_steps=20)
    simulation.reporters.append(app.StateDataReporter(str(tmp_path / "log.csv"), 5, step=True, time=True))
    simulation.reporters.append(app.PDBReporter(str(tmp_path / "out.pdb"), 5))
    simulation.step(20)
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("20,")
    assert mdtraj.load(str(tmp_path / "out.pdb")).n_frames == 4


def test_tampered_or_incomplete_bundles_are_refused(model_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad, ignore=shutil.ignore_patterns("checkpoints"))
    data = bytearray((bad / "decoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "decoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(LssError, match="(?i)checksum|sha|altered|damaged"):
        LatentSpaceSimulator.load(bad)
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((partial / "model.json").read_text())
    del meta["stages"]["decoder"]
    (partial / "model.json").write_text(json.dumps(meta))
    with pytest.raises(LssError, match="decoder"):
        LatentSpaceSimulator.load(partial)


def test_command_line_train_all_stages_then_generate(ala2_store, tmp_path, capsys):
    from lss_engine.cli import main

    model = tmp_path / "m"
    assert main(["train", str(ala2_store), "--out", str(model), "--lag", "2frames", "--hidden", "16",
                 "--epochs", "2", "--restarts", "1", "--batch-size", "64", "--components", "3",
                 "--propagator-epochs", "10", "--decoder-epochs", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "cWGAN decoder of 10 atoms" in printed and "validation (MD vs LSS)" in printed
    metrics = json.loads((model / "validation" / "metrics.json").read_text())
    assert {"fes_psi1_rmse_kT", "relaxation_times_ps", "structures"} <= set(metrics)
    assert "ramachandran_js" in metrics["structures"] and "bond_mae_nm" in metrics["structures"]
    assert (model / "validation" / "fes_md_vs_lss.png").exists()
    assert "ramachandran_md_vs_lss.png" in metrics["figures"]
    assert (model / "validation" / "ramachandran_md_vs_lss.png").exists()
    kinetics = metrics["torsion_kinetics"]  # MD vs the synthetic walkers decoded in time order
    assert kinetics["md"]["frames"] == metrics["md_frames"] and kinetics["lss"]["dt_ps"] == metrics["lag_ps"]
    assert set(kinetics["lss"]["mfpt_ps"]) == {"C7eq->C7ax", "C7ax->C7eq"}
    assert 0 <= kinetics["lss"]["fraction_phi_positive"] <= 1
    assert main(["generate", str(model), "--steps", "12", "--walkers", "2", "--out", str(tmp_path / "g.xtc"),
                 "--seed", "1", "--start", f"{ala2_store}:5", "--no-progress"]) == 0
    assert "frames/s" in capsys.readouterr().out
    traj = mdtraj.load(str(tmp_path / "g_1.xtc"), top=str(tmp_path / "g_topology.pdb"))
    assert traj.n_frames == 12
    assert main(["generate", str(model), "--steps", "5", "--out", str(tmp_path / "g.mol2"), "--no-progress"]) == 1
    assert "unknown output format" in capsys.readouterr().err


def test_torsion_kinetics_counts_cored_passages_and_fits_a_grid_msm():
    from lss_engine.pipeline import torsion_kinetics

    rng = np.random.default_rng(0)
    # C7eq (phi -2) for 300 frames, C7ax (phi 1) for 50, between-cores frames (phi 0.3) keep C7ax, then C7eq again
    phi = np.concatenate([np.full(300, -2.0), np.full(50, 1.0), np.full(20, 0.3), np.full(400, -2.0),
                          np.full(30, 1.2)]) + rng.normal(0, 0.05, 800)
    psi = rng.uniform(-np.pi, np.pi, 800)
    out = torsion_kinetics([phi], [psi], dt=2.0)
    there, back = out["mfpt_ps"]["C7eq->C7ax"], out["mfpt_ps"]["C7ax->C7eq"]
    # C7eq->C7ax from the trajectory start (300 frames) and from frame 370 (400 frames); C7ax->C7eq: 70 frames
    assert there["n"] == 2 and there["mean"] == pytest.approx(2.0 * (300 + 400) / 2)
    assert back["n"] == 1 and back["mean"] == pytest.approx(2.0 * 70) and back["n_censored"] == 1
    assert out["fraction_phi_positive"] == pytest.approx(100 / 800)
    assert out["msm_lag_ps"] == 10.0 and out["time_ns"] == pytest.approx(1.6)
    assert out["slowest_timescale_ps"] > 100  # the phi switch dominates; psi is noise
