"""The simulator for systems whose absolute positions matter: decoder alignment 'none', chosen automatically.

A one-particle toy potential (a ``CustomExternalForce``) recorded with the
particle's position goes through ``lss train`` (all three stages) and
``lss generate --out x.zarr``; molecules keep the Kabsch alignment.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from lss_engine.cli import main
from lss_engine.decoder_data import DecoderDataset, choose_alignment
from lss_engine.errors import LssError


def test_alignment_rule():
    from lss_engine.systems import get_system

    toy = get_system("four-state").topology
    ala2 = get_system("alanine-dipeptide").topology
    assert choose_alignment(1, toy) == "none"
    assert choose_alignment(2) == "none"  # fewer than 3 atoms define no rotation
    assert choose_alignment(22, ala2) == "kabsch"
    assert choose_alignment(5) == "kabsch"  # no topology: the molecular default
    five = get_system("folding-5d").topology  # two particles, no bonds
    assert choose_alignment(2, five) == "none"
    assert choose_alignment(22, ala2, "none") == "none"  # explicit choices win
    with pytest.raises(LssError, match="at least 3"):
        choose_alignment(1, toy, "kabsch")
    with pytest.raises(LssError, match="auto, kabsch or none"):
        choose_alignment(3, None, "rotate")


def test_unaligned_dataset_keeps_absolute_positions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 1, 3)) + np.array([2.0, -1.0, 0.0])
    data = DecoderDataset(rng.normal(size=(50, 2)), x, alignment="none")
    assert data.alignment == "none"
    np.testing.assert_allclose(data.coords.numpy(), x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.reference, x.mean(axis=0))
    with pytest.raises(LssError, match="at least 3 atoms"):
        DecoderDataset(rng.normal(size=(50, 2)), x)  # Kabsch, the default, needs 3 atoms


def test_old_decoder_configs_mean_kabsch_and_one_atom_scores_are_finite():
    import torch

    from lss_engine.models import CWGANDecoder

    config = CWGANDecoder(2, 4).config()
    assert config.pop("alignment") == "kabsch"
    assert CWGANDecoder.from_config(config).alignment == "kabsch"  # a bundle written before the field
    model = CWGANDecoder(1, 1, hidden=(8,), noise_dim=2, alignment="none")
    psi = torch.linspace(-1, 1, 40)[:, None]
    x = torch.cat([psi, -psi, torch.zeros_like(psi)], dim=1)[:, None, :]
    model.fit_normalization((psi, x))
    assert np.isfinite(model.validation_score((psi, x)))
    assert np.isfinite(model.training_step((psi, x), model.configure_optimizers(1e-3))["loss"])


def test_structure_metrics_skip_what_one_atom_does_not_define():
    from lss_engine.structure import compare_structures

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(100, 1, 3)), rng.normal(size=(80, 1, 3)) + 1.0
    metrics = compare_structures(a, b, absolute=True)
    assert "rg_mean_nm" not in metrics and "pair_distance_w1_nm" not in metrics
    assert 0.5 < metrics["coordinate_w1_nm"] < 1.5


def test_cli_defaults_are_the_pipeline_defaults():
    """``lss train``'s defaults are the settings of the accepted simulator (the Settings dataclasses)."""
    from lss_engine.cli import _build_parser
    from lss_engine.pipeline import DecoderSettings, EncoderSettings, PropagatorSettings

    args = _build_parser().parse_args(["train", "x.zarr", "--out", "m"])
    enc, prop, dec = EncoderSettings(), PropagatorSettings(), DecoderSettings()
    assert (args.encoder, args.lag, int(args.dim), args.epochs, args.batch_size, args.lr, args.restarts,
            args.patience, args.val_fraction, args.seed) == (enc.kind, enc.lag, enc.dim, enc.epochs, enc.batch_size,
                                                             enc.lr, enc.restarts, enc.patience, enc.val_fraction,
                                                             enc.seed)
    assert (args.propagator, args.propagator_lag, args.components, args.mdn_transform, args.labels,
            args.propagator_epochs) == (prop.kind, prop.lag, prop.n_components, prop.transform, prop.n_labels,
                                        prop.epochs)
    assert (args.decoder_epochs, args.decoder_stride, args.decoder_alignment) == (dec.epochs, dec.stride,
                                                                                  dec.alignment)
    assert prop.n_components == 24 and dec.alignment == "auto"


def test_one_particle_potential_end_to_end(tmp_path, capsys):
    """lss simulate (one particle, position saved) -> lss train (3 stages) -> lss generate --out x.zarr."""
    from lss_engine.bundle import ModelBundle
    from lss_engine.store import open_store

    store, model = tmp_path / "md.zarr", tmp_path / "model"
    assert main(["simulate", "--system", "four-state", "--steps", "20000", "--report-interval", "10steps",
                 "--save-atoms", "all", "--equilibrate", "0ps", "--seed", "2", "--out", str(store),
                 "--no-progress"]) == 0
    assert main(["train", str(store), "--out", str(model), "--lag", "5frames", "--hidden", "16", "--epochs", "2",
                 "--restarts", "1", "--batch-size", "256", "--components", "3", "--propagator-epochs", "2",
                 "--decoder-epochs", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "cWGAN decoder of 1 atoms (none alignment)" in printed and "position W1" in printed
    bundle = ModelBundle.load(model)
    assert bundle["decoder"].meta["alignment"] == "none"
    assert json.loads((model / "model.json").read_text())["stages"]["decoder"]["config"]["alignment"] == "none"
    metrics = json.loads((model / "validation" / "metrics.json").read_text())
    assert metrics["decoder_alignment"] == "none" and np.isfinite(metrics["structures"]["coordinate_w1_nm"])
    assert main(["generate", str(model), "--steps", "40", "--walkers", "2", "--out", str(tmp_path / "x.zarr"),
                 "--seed", "1", "--no-progress"]) == 0
    synth = open_store(tmp_path / "x_1.zarr")
    xyz = synth.positions()
    assert xyz.shape == (40, 1, 3) and np.isfinite(xyz).all()
    md = open_store(store).positions()
    # absolute positions: the decoded particle stays in the region the MD visited (no superposition moved it)
    assert (np.abs(xyz[:, 0, :2]) < np.abs(md[:, 0, :2]).max() + 2.0).all()


def test_stores_record_forces_on_absolute_positions_and_the_decoder_keeps_them(ala2_store, tmp_path):
    """A molecule in an external field: its frame carries information, so ``auto`` keeps absolute positions."""
    import openmm

    from lss_engine.decoder_data import choose_alignment
    from lss_engine.reporters import ZarrReporter
    from lss_engine.store import open_store
    from lss_engine.systems import get_system

    plain = open_store(ala2_store)
    assert plain.external_forces == []
    assert choose_alignment(10, plain.topology, "auto", plain.external_forces) == "kabsch"
    test_system = get_system("alanine-dipeptide", temperature=450.0)
    field = openmm.CustomExternalForce("0.5*z")  # a weak uniform field along z, kJ/mol/nm
    for i in range(test_system.system.getNumParticles()):
        field.addParticle(i, [])
    test_system.system.addForce(field)
    sim = test_system.make_simulation(platform="Reference", seed=2)
    path = tmp_path / "field.zarr"
    with ZarrReporter(path, 10, featurizer="backbone-torsions", atoms="heavy") as rep:
        sim.reporters.append(rep)
        sim.step(50)
    store = open_store(path)
    assert store.external_forces == ["CustomExternalForce"]
    assert choose_alignment(10, store.topology, "auto", store.external_forces) == "none"
