"""Every ``lss`` command, given a damaged store or model bundle, ends in one line and a non-zero exit.

The corpus is made the way disks, killed processes and careless users make
damage: a chunk file deleted or garbled, a metadata document cut short, a
directory that is not a store, weight files truncated or byte-flipped, a
pickle in place of safetensors (which must never be unpickled: its payload
would leave a marker file), a future schema version, a garbled ``model.json``.
Commands run in-process through ``lss_engine.cli.main`` (the console script's
entry point); one case also runs the installed ``lss`` executable to check
that no traceback reaches the terminal.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lss_engine.cli import main


@pytest.fixture(scope="module")
def corpus(ala2_store, ala2_model, tmp_path_factory):
    """Damaged copies of a small trained model and of its store."""
    root = tmp_path_factory.mktemp("corpus")
    model = ala2_model
    stores = {}

    def store_copy(name):
        path = root / "stores" / f"{name}.zarr"
        shutil.copytree(ala2_store, path)
        stores[name] = path
        return path

    value = "observables/backbone_torsions/value"
    p = store_copy("deleted_chunk")
    (p / value / "c/0/0").unlink()
    p = store_copy("garbled_chunk")
    chunk = p / value / "c/0/0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    p = store_copy("truncated_root_json")
    text = (p / "zarr.json").read_bytes()
    (p / "zarr.json").write_bytes(text[: len(text) // 2])
    p = store_copy("truncated_array_json")
    text = (p / value / "zarr.json").read_bytes()
    (p / value / "zarr.json").write_bytes(text[: len(text) // 3])
    p = root / "stores" / "not_a_store.zarr"
    p.mkdir()
    (p / "notes.txt").write_text("hello")
    stores["not_a_store"] = p
    p = store_copy("future_schema")
    doc = json.loads((p / "zarr.json").read_text())
    doc["attributes"]["lss_engine"]["schema_version"] = 99
    (p / "zarr.json").write_text(json.dumps(doc))

    bundles = {}
    marker = root / "PICKLE_RAN"

    def bundle_copy(name):
        path = root / "bundles" / name
        shutil.copytree(model, path, ignore=shutil.ignore_patterns("checkpoints", "analysis", "validation"))
        bundles[name] = path
        return path

    def reseal(path, stage):
        """Update model.json's checksum so that the loader gets past it to the file itself."""
        doc = json.loads((path / "model.json").read_text())
        doc["stages"][stage]["sha256"] = hashlib.sha256((path / f"{stage}.safetensors").read_bytes()).hexdigest()
        (path / "model.json").write_text(json.dumps(doc))

    p = bundle_copy("truncated_weights")
    data = (p / "encoder.safetensors").read_bytes()
    (p / "encoder.safetensors").write_bytes(data[: len(data) // 2])
    p = bundle_copy("truncated_weights_resealed")
    (p / "encoder.safetensors").write_bytes(data[: len(data) // 2])
    reseal(p, "encoder")
    p = bundle_copy("flipped_weights")
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    (p / "encoder.safetensors").write_bytes(bytes(flipped))
    p = bundle_copy("pickle_weights")

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (p / "encoder.safetensors").write_bytes(pickle.dumps(Payload()))
    reseal(p, "encoder")
    p = bundle_copy("future_schema")
    doc = json.loads((p / "model.json").read_text())
    doc["schema_version"] = 99
    (p / "model.json").write_text(json.dumps(doc))
    p = bundle_copy("garbled_json")
    text = (p / "model.json").read_bytes()
    (p / "model.json").write_bytes(text[: len(text) // 2])
    p = bundle_copy("garbled_structure")
    doc = json.loads((p / "model.json").read_text())
    doc["stages"] = ["encoder"]
    (p / "model.json").write_text(json.dumps(doc))
    p = bundle_copy("garbled_config")
    doc = json.loads((p / "model.json").read_text())
    doc["stages"]["encoder"]["config"] = {"nonsense": True}
    (p / "model.json").write_text(json.dumps(doc))
    return {"model": model, "store": ala2_store, "stores": stores, "bundles": bundles, "marker": marker,
            "root": root}


def _one_line_failure(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), (argv, err)
    assert err and "\n" not in err and "Traceback" not in err, (argv, err)
    assert "internal error" not in err, (argv, err)  # damage is named, not reported as a bug
    return err


STORE_CASES = ["deleted_chunk", "garbled_chunk", "truncated_root_json", "truncated_array_json", "not_a_store",
               "future_schema"]


@pytest.mark.parametrize("case", STORE_CASES)
def test_damaged_store_in_every_store_command(corpus, case, capsys, tmp_path):
    store = corpus["stores"][case]
    if case != "garbled_chunk":  # info without --verify checks that chunks exist, it does not decode them
        _one_line_failure(capsys, ["info", store])
    _one_line_failure(capsys, ["info", "--verify", store])
    _one_line_failure(capsys, ["verify", store])
    err = _one_line_failure(capsys, ["analyze", corpus["model"], store, "--out", tmp_path / "a"])
    _one_line_failure(capsys, ["train", store, "--out", tmp_path / "m", "--lag", "2frames", "--epochs", "1",
                               "--hidden", "8", "--stages", "encoder", "--no-progress"])
    _one_line_failure(capsys, ["generate", corpus["model"], "--start", f"{store}:0", "--steps", "2",
                               "--out", tmp_path / "g.zarr", "--no-progress"])
    _one_line_failure(capsys, ["simulate", "--system", "alanine-dipeptide", "--ns", "0.001", "--out", store,
                               "--resume", "--no-progress"])
    if case in ("deleted_chunk", "garbled_chunk"):
        assert "backbone_torsions/value: frames 0-" in err


def test_skip_damaged_trains_on_the_intact_frames(ala2_store, capsys, tmp_path):
    """A store of 5 chunks with the middle one deleted trains with --skip-damaged, as two trajectories."""
    import numpy as np

    from lss_engine.store import FeatureBlock, StoreWriter, open_store

    source = open_store(ala2_store)
    path = tmp_path / "chunked.zarr"
    writer = StoreWriter.create(path, timestep_ps=source.timestep_ps, report_interval=source.report_interval,
                                temperature_K=source.temperature_K, chunk_frames=40,
                                observables=[FeatureBlock("features", source.feature_names, source.feature_units)])
    writer.append(source.steps(), source.times(), features={"features": source.features()})
    writer.commit()
    (path / "observables/features/value/c/2/0").unlink()  # frames 80-119
    _one_line_failure(capsys, ["train", path, "--out", tmp_path / "refused", "--lag", "2frames", "--epochs", "1",
                               "--hidden", "8", "--stages", "encoder", "--no-progress"])
    code = main([str(a) for a in ["train", path, "--out", tmp_path / "m", "--lag", "2frames", "--epochs", "1",
                                  "--hidden", "8", "--restarts", "1", "--stages", "encoder", "--no-progress",
                                  "--skip-damaged"]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"skipping frames 80-119 of {path} (damaged)" in captured.err
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["frames"] == 160 and metrics["trajectories"] == 2  # the gap is a break, not a pair
    assert np.isfinite(metrics["validation_score"])


BUNDLE_CASES = ["truncated_weights", "truncated_weights_resealed", "flipped_weights", "pickle_weights",
                "future_schema", "garbled_json", "garbled_structure", "garbled_config"]


@pytest.mark.parametrize("case", BUNDLE_CASES)
def test_damaged_bundle_in_every_model_command(corpus, case, capsys, tmp_path):
    bundle = corpus["bundles"][case]
    _one_line_failure(capsys, ["generate", bundle, "--steps", "2", "--out", tmp_path / "g.zarr", "--no-progress"])
    _one_line_failure(capsys, ["analyze", bundle, corpus["store"], "--out", tmp_path / "a"])
    _one_line_failure(capsys, ["sample-latent", bundle, "--steps", "2", "--out", tmp_path / "s", "--no-progress"])
    _one_line_failure(capsys, ["train", corpus["store"], "--out", bundle, "--stages", "propagator",
                               "--propagator-epochs", "1", "--no-progress"])
    assert not corpus["marker"].exists(), "a pickle in a model directory was unpickled"


def test_no_traceback_reaches_the_terminal(corpus):
    """The installed console script, on a garbled chunk and a pickled weight file."""
    lss = Path(sys.executable).with_name("lss")
    for argv in (["verify", corpus["stores"]["garbled_chunk"]],
                 ["generate", corpus["bundles"]["pickle_weights"], "--steps", "2", "--out",
                  corpus["root"] / "x.zarr", "--no-progress"]):
        run = subprocess.run([str(lss)] + [str(a) for a in argv], capture_output=True, text=True, timeout=300)
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 or argv[0] == "verify", run.stderr
    assert not corpus["marker"].exists()
