"""`lss train` checks every requested stage against the data before training the first one.

Each bad request fails in seconds with one line on stderr and exit status 1,
and leaves no model behind (nothing was trained).  The stores are short real
OpenMM runs of the one-particle four-state potential.
"""
from __future__ import annotations

import pytest

from lss_engine.cli import main


def _simulate(path, *extra):
    assert main(["simulate", "--system", "four-state", "--steps", "2000", "--report-interval", "10steps",
                 "--equilibrate", "0ps", "--seed", "3", "--out", str(path), "--no-progress", *extra]) == 0
    return str(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """200-frame stores (frame interval 0.1 ps): with the particle's position, without, and a 30-frame one."""
    d = tmp_path_factory.mktemp("checks")
    with_positions = _simulate(d / "pos.zarr", "--save-atoms", "all")
    without = _simulate(d / "nopos.zarr", "--save-atoms", "none")
    short = str(d / "short.zarr")
    assert main(["simulate", "--system", "four-state", "--steps", "300", "--report-interval", "10steps",
                 "--equilibrate", "0ps", "--seed", "4", "--out", short, "--no-progress"]) == 0
    return {"pos": with_positions, "nopos": without, "short": short}


QUICK = ["--lag", "2frames", "--hidden", "8", "--epochs", "1", "--restarts", "1", "--components", "2", "--propagator-epochs", "1",
         "--decoder-epochs", "1", "--no-progress"]


@pytest.mark.parametrize("store, extra, message", [
    ("nopos", [], "saves no positions"),
    ("pos", ["--lag", "500frames"], "not shorter than the trajectories"),
    ("pos", ["--lag", "100ps"], "not shorter than the trajectories"),
    ("pos", ["--propagator-lag", "300frames", "--lag", "2frames"], "propagator's lag"),
    ("short", ["--lag", "10frames"], "too few frames"),
    ("pos", ["--lag", "0.25ps"], "0.25"),
    ("pos", ["--stages", "propagator"], "needs an encoder"),
    ("pos", ["--stages", "decoder", "--no-validation"], "needs an encoder"),
    ("pos", ["--stages", "encoder,bogus"], "unknown stage"),
    ("pos", ["--encoder", "vampnet", "--dim", "2", "--lag", "2frames"], "MDN"),
    ("pos", ["--stages", "encoder,decoder", "--lag", "2frames"], "needs a propagator"),
    ("pos", ["--decoder-alignment", "kabsch", "--lag", "2frames"], "Kabsch alignment needs at least 3"),
    ("pos", ["--propagator", "lstm", "--lag", "5frames", "--stages", "encoder,propagator"], "LSTM sequences"),
])
def test_bad_requests_fail_before_training_in_one_line(stores, tmp_path, capsys, store, extra, message):
    out = tmp_path / "model"
    status = main(["train", stores[store], "--out", str(out), *QUICK, *extra])
    err = capsys.readouterr().err
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lss train: error:") and message in lines[0], lines[0]
    assert not (out / "model.json").exists()  # failed before the first stage trained
    assert not (out / "checkpoints").exists()


def test_later_stages_are_checked_against_an_existing_encoder(stores, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", stores["pos"], "--out", str(out), "--stages", "encoder", "--lag", "2frames", *QUICK]) == 0
    capsys.readouterr()
    # the encoder's features differ from a store without... the same features but no positions: decoder refused
    assert main(["train", stores["nopos"], "--out", str(out), "--stages", "propagator,decoder", *QUICK]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "saves no positions" in err[0]
    assert not (out / "propagator.safetensors").exists()
    # a good request on the existing encoder passes the checks and trains
    assert main(["train", stores["pos"], "--out", str(out), "--stages", "propagator", *QUICK]) == 0
    assert (out / "propagator.safetensors").exists()


def test_check_stages_returns_the_opened_stores(stores, tmp_path):
    from lss_engine.pipeline import DecoderSettings, EncoderSettings, PropagatorSettings, check_stages

    opened = check_stages([stores["pos"]], ["encoder", "propagator", "decoder"], tmp_path / "m",
                          encoder=EncoderSettings(lag=2), propagator=PropagatorSettings(),
                          decoder=DecoderSettings())
    assert len(opened) == 1 and len(opened[0]) == 200
