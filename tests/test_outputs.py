"""One way to write walker stores (MDN latents, LSTM labels) and one overwrite rule, in Python and via ``lss``."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lss_engine.bundle import ModelBundle
from lss_engine.errors import LssError, OutputExistsError
from lss_engine.outputs import WalkerFrames, claim_outputs, walker_paths, write_walkers
from lss_engine.store import FeatureBlock, open_stores

LSS = [sys.executable, "-m", "lss_engine.cli"]


@pytest.fixture(scope="module")
def mdn_model_dir(tmp_path_factory):
    from lss_engine.models import MDNPropagator

    rng = np.random.default_rng(0)
    model = MDNPropagator(2, 3, hidden=(8,)).fit_normalization(rng.standard_normal((100, 2)))
    bundle = ModelBundle()
    bundle.add("propagator", model.eval(), kind="mdn", lag_ps=2.0, latent_names=["psi1", "psi2"],
               start_points=rng.standard_normal((5, 2)).tolist())
    return bundle.save(tmp_path_factory.mktemp("models") / "mdn")


@pytest.fixture(scope="module")
def lstm_model_dir(tmp_path_factory):
    from lss_engine.discretize import Discretizer
    from lss_engine.models import LSTMLanguageModel

    discretizer = Discretizer.uniform(4, range=(-1.0, 1.0))
    bundle = ModelBundle()
    bundle.add("propagator", LSTMLanguageModel(4, embedding_dim=3, hidden=8).eval(), kind="lstm", lag_ps=5.0,
               latent_names=["psi1"], discretizer=discretizer.config(), start_points=[0, 1, 2, 3])
    return bundle.save(tmp_path_factory.mktemp("models") / "lstm")


def test_walker_paths():
    assert [p.name for p in walker_paths("out/synth.zarr", 1)] == ["synth.zarr"]
    assert [p.name for p in walker_paths("out/synth.dcd", 2)] == ["synth_0.dcd", "synth_1.dcd"]
    assert [str(p) for p in walker_paths("out/walkers", 2)] == ["out/walkers/walker_000.zarr",
                                                                "out/walkers/walker_001.zarr"]
    assert [p.name for p in walker_paths("out/w.zarr", 1, directory=True)] == ["walker_000.zarr"]


def test_write_walkers_in_chunks_with_and_without_overlap(tmp_path):
    layout = dict(timestep_ps=1.0, report_interval=1, temperature_K=None,
                  observables=[FeatureBlock("latent", ["a", "b"], ["1", "1"])])
    data = np.random.default_rng(1).standard_normal((25, 3, 2)).astype(np.float32)

    def chunks():
        buffer = np.empty((10, 3, 2), np.float32)  # reused: the writer must copy
        for first in range(0, 25, 10):
            n = min(10, 25 - first)
            buffer[:n] = data[first:first + n]
            steps = np.arange(first, first + n)
            yield WalkerFrames(steps, steps * 1.0, features={"latent": buffer[:n]})

    for overlap in (False, True):
        commits = []
        out = tmp_path / f"overlap{overlap}"
        paths = write_walkers(out, 3, layout, chunks(), overlap=overlap, n_frames=25, on_commit=commits.append)
        assert commits == [9, 19, 24]
        stores = open_stores(out)
        assert [s.path for s in stores] == paths
        for w, store in enumerate(stores):
            np.testing.assert_array_equal(store.features(), data[:, w])
            np.testing.assert_array_equal(store.steps(), np.arange(25))


def test_the_overwrite_rule(tmp_path):
    layout = dict(timestep_ps=1.0, report_interval=1, temperature_K=None,
                  observables=[FeatureBlock("latent", ["a"], ["1"])])

    def one_frame(walkers):
        yield WalkerFrames(np.array([1]), np.array([1.0]), features={"latent": np.zeros((1, walkers, 1))})

    out = tmp_path / "walkers"
    write_walkers(out, 3, layout, one_frame(3))
    with pytest.raises(OutputExistsError, match="walker_000.zarr exists") as info:
        write_walkers(out, 2, layout, one_frame(2))
    assert str(info.value).endswith("walker_000.zarr exists (and 2 more outputs)")  # neutral: names no flag
    assert len(open_stores(out)) == 3
    write_walkers(out, 2, layout, one_frame(2), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["walker_000.zarr", "walker_001.zarr"]  # no stale walker
    # only lss_engine stores are ever replaced; nothing is removed when one output is not a store
    (out / "walker_005.zarr").mkdir()
    (out / "walker_005.zarr" / "thesis.tex").write_text("keep")
    with pytest.raises(LssError, match="refusing to overwrite"):
        write_walkers(out, 1, layout, one_frame(1), overwrite=True)
    assert (out / "walker_005.zarr" / "thesis.tex").exists() and (out / "walker_001.zarr").exists()
    # a trajectory file output: a file may be replaced, a directory never
    (tmp_path / "t.dcd").write_bytes(b"x")
    assert claim_outputs([tmp_path / "t.dcd"], overwrite=True) == [tmp_path / "t.dcd"]
    (tmp_path / "d.dcd").mkdir()
    with pytest.raises(LssError, match="refusing to overwrite"):
        claim_outputs([tmp_path / "d.dcd"], overwrite=True)


def test_mdn_and_lstm_latents_go_through_the_same_writer_and_rule(mdn_model_dir, lstm_model_dir, tmp_path):
    from lss_engine.pipeline import sample_latent

    for model, observables in ((mdn_model_dir, ["latent"]), (lstm_model_dir, ["latent", "labels"])):
        out = tmp_path / model.name
        paths = sample_latent(model, 30, 3, out, seed=1, progress=False)
        stores = open_stores(out)
        assert [s.path for s in stores] == paths and len(paths) == 3
        assert all(sorted(s.observable_names) == sorted(observables) for s in stores)
        with pytest.raises(OutputExistsError):
            sample_latent(model, 30, 2, out, seed=1, progress=False)
        sample_latent(model, 20, 2, out, seed=2, progress=False, overwrite=True)
        assert len(open_stores(out)) == 2  # the third walker of the first run is gone
    lstm = open_stores(tmp_path / "lstm")[0]
    labels = lstm.observable("labels")[:, 0].astype(int)
    np.testing.assert_array_equal(lstm.steps(), np.arange(1, 21))
    centers = np.linspace(-0.75, 0.75, 4)
    np.testing.assert_allclose(lstm.observable("latent")[:, 0], centers[labels], atol=1e-6)


@pytest.mark.parametrize("command", ["sample-latent", "simulate"])
def test_cli_existing_output_is_one_line_naming_overwrite(command, mdn_model_dir, tmp_path):
    if command == "sample-latent":
        argv = ["sample-latent", str(mdn_model_dir), "--steps", "5", "--walkers", "2", "--out", str(tmp_path / "w"),
                "--no-progress"]
    else:
        argv = ["simulate", "--system", "double-well", "--steps", "20", "--report-interval", "10steps",
                "--equilibrate", "0ps", "--out", str(tmp_path / "s.zarr"), "--no-progress"]
    first = subprocess.run(LSS + argv, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(LSS + argv, capture_output=True, text=True)
    assert again.returncode == 1
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1, again.stderr
    assert lines[0].startswith(f"lss {command}: error: ") and "exists" in lines[0] and "--overwrite" in lines[0]
    assert "overwrite=True" not in lines[0]
    assert subprocess.run(LSS + argv + ["--overwrite"], capture_output=True, text=True).returncode == 0
