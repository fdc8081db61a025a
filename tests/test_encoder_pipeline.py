"""Encoders end to end: OpenMM toy dynamics -> store -> VAMPNet/SRV -> model directory -> analysis."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lss_engine import kinetics
from lss_engine.bundle import ModelBundle
from lss_engine.cli import main
from lss_engine.errors import LssError
from lss_engine.pipeline import EncoderSettings, load_encoder, train_encoder
from lss_engine.reporters import ZarrReporter
from lss_engine.store import open_store
from lss_engine.systems import get_system


@pytest.fixture(scope="module")
def double_well_store(tmp_path_factory):
    """Asymmetric double well x⁴ − 6x² + 2x, Brownian, kT = 2 (β = 0.5): 1e6 steps, a frame every 20."""
    path = tmp_path_factory.mktemp("dw") / "dw.zarr"
    sim = get_system("double-well", beta=0.5, timestep=0.005).make_simulation(seed=1)
    with ZarrReporter(path, 20, featurizer="positions", atoms="none", flush_interval=5000) as rep:
        sim.reporters.append(rep)
        sim.step(1_000_000)
    return open_store(path)


def test_vampnet_timescale_matches_fine_grid_msm(double_well_store, tmp_path):
    """Acceptance (issue 3): 5-state VAMPNet slowest ITS within 10 % of a 100-bin MSM, same data and lag.

    Pinned to the split and seed of that acceptance (10 random blocks, seed 0).
    This training is seed-sensitive (measured in issue 10, same data: ratios
    0.31-0.76 over six seeds with interleaved blocks at lr 1e-3, 0.80-0.96 at
    lr 5e-3), so this is a regression check of one configuration, not a
    statement that every seed reaches 10 %.
    """
    x = double_well_store.features()[:, 0]
    lag = 20
    edges = np.linspace(x.min(), x.max(), 101)
    dtraj = np.clip(np.digitize(x, edges) - 1, 0, 99)
    msm = kinetics.estimate_msm([dtraj], lag, dt=double_well_store.frame_interval_ps, n_states=100)
    t_msm = msm.timescales(1)[0]
    settings = EncoderSettings(kind="vampnet", lag=lag, dim=5, hidden=(32, 32), epochs=200, lr=1e-3,
                               batch_size=500, patience=30, restarts=2, seed=0, progress=False, val_split="blocks")
    encoder = train_encoder([double_well_store], settings, tmp_path / "vn", analyze=False)
    t_net = encoder.extra["implied_timescales_ps"][0]
    assert abs(t_net / t_msm - 1) <= 0.10, (t_net, t_msm)


def test_srv_finds_the_barrier_crossing(double_well_store, tmp_path):
    x = double_well_store.features()[:, 0]
    settings = EncoderSettings(kind="srv", lag=20, dim=1, hidden=(32, 32), epochs=30, restarts=1,
                               patience=10, lr=1e-3, progress=False)
    encoder = train_encoder([double_well_store], settings, tmp_path / "srv")
    psi1 = encoder.latent(double_well_store.features())[:, 0]
    left = x < 0.17  # barrier top
    threshold_accuracy = max(np.mean((psi1 < t) == left) for t in np.quantile(psi1, np.linspace(0.01, 0.99, 99)))
    assert threshold_accuracy > 0.99
    metrics = json.loads((tmp_path / "srv" / "metrics.json").read_text())
    assert metrics["encoder"] == "srv" and metrics["ck_test"]["max_deviation"] < 0.1
    for name in ("implied_timescales.png", "ck_test.png", "fes.png"):
        assert (tmp_path / "srv" / name).stat().st_size > 1000


def test_lss_train_and_analyze_commands(tmp_path, capsys):
    store = tmp_path / "fw.zarr"
    assert main(["simulate", "--system", "four-well", "--steps", "200000", "--report-interval", "20steps",
                 "--out", str(store), "--no-progress", "--seed", "2"]) == 0
    model = tmp_path / "model"
    assert main(["train", str(store), "--stages", "encoder", "--encoder", "vampnet", "--lag", "10frames",
                 "--dim", "4", "--epochs", "3", "--restarts", "1", "--out", str(model), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "lss train: vampnet" in out
    for name in ("model.json", "encoder.safetensors", "metrics.json", "history_encoder.json",
                 "implied_timescales.png", "ck_test.png", "fes.png"):
        assert (model / name).is_file(), name
    history = json.loads((model / "history_encoder.json").read_text())["history"]
    assert len(history) >= 1 and "val_score" in history[0]
    encoder = load_encoder(model)
    memberships = encoder.latent(open_store(store).features()[:100])
    np.testing.assert_allclose(memberships.sum(1), 1.0, atol=1e-5)
    assert main(["analyze", str(model), str(store), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "metrics.json").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nostore.zarr", "--out", "m"], "not an lss_engine trajectory store"),
        (["train", "x.zarr", "--stages", "encoder,bias", "--out", "m"], "unknown stage"),
        (["train", "x.zarr", "--encoder", "pca", "--out", "m"], "invalid choice"),
        (["analyze", "nomodel", "x.zarr"], "not an lss_engine model directory"),
    ],
)
def test_train_errors_are_one_line(tmp_path, argv, message):
    result = subprocess.run([sys.executable, "-m", "lss_engine.cli", *argv], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_bundle_refuses_tampered_or_foreign_files(double_well_store, tmp_path):
    settings = EncoderSettings(kind="vampnet", lag=20, dim=3, hidden=(8,), epochs=1, restarts=1, progress=False)
    encoder = train_encoder([double_well_store], settings, tmp_path / "m", analyze=False)
    reloaded = load_encoder(tmp_path / "m")
    x = double_well_store.features()[:500]
    np.testing.assert_array_equal(encoder.latent(x), reloaded.latent(x))

    weights = tmp_path / "m" / "encoder.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-7])  # truncated
    with pytest.raises(LssError, match="checksum"):
        ModelBundle.load(tmp_path / "m")
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # altered
    with pytest.raises(LssError, match="checksum"):
        ModelBundle.load(tmp_path / "m")
    weights.write_bytes(original)
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    for change, message in ((dict(schema_version=99), "schema version"),
                            (dict(stages={"encoder": {**manifest["stages"]["encoder"], "type": "os.system"}}),
                             "unknown network type")):
        (tmp_path / "m" / "model.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(LssError, match=message):
            ModelBundle.load(tmp_path / "m")
