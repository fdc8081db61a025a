"""Stores never read damage as data: checksums, missing chunks, exact array lengths, old schemas.

Every store here is a real zarr v3 directory written by the package's writers;
damage is made the way disks and killed processes make it (a chunk file
deleted, bytes flipped, a file cut short).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from lss_engine.errors import StoreError
from lss_engine.store import FeatureBlock, MultiStoreWriter, StoreWriter, TrajectoryStore, open_stores

BLOCK = FeatureBlock("latent", ["psi1", "psi2"], ["1", "1"])


def _store(path, n=100, chunk_frames=16, seed=0):
    """An observables-only store of ``n`` frames, chunks of ``chunk_frames`` frames."""
    x = np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)
    writer = StoreWriter.create(path, timestep_ps=1.0, report_interval=1, temperature_K=None,
                                observables=[BLOCK], chunk_frames=chunk_frames)
    writer.append(np.arange(n), np.arange(n) * 1.0, features={"latent": x})
    writer.commit()
    return x


def _chunk(path, index, leaf="value"):
    sub = f"c/{index}/0" if leaf == "value" else f"c/{index}"
    return path / "observables" / "latent" / leaf / sub


def test_arrays_are_exactly_as_long_as_the_committed_frames(tmp_path):
    """Plain zarr sees the committed frames and nothing else, after every commit and truncation."""
    path = tmp_path / "s.zarr"
    writer = StoreWriter.create(path, timestep_ps=1.0, report_interval=1, temperature_K=None,
                                observables=[BLOCK], chunk_frames=16)
    start = 0
    for n in (1, 15, 16, 3, 40):
        writer.append(np.arange(start, start + n), np.arange(start, start + n) * 1.0,
                      features={"latent": np.full((n, 2), start + 1.0)})
        writer.commit()
        start += n
        root = zarr.open_group(str(path), mode="r")
        assert root.attrs["frames_committed"] == start
        for leaf in ("value", "step", "time"):
            assert root[f"observables/latent/{leaf}"].shape[0] == start
        assert np.isfinite(root["observables/latent/value"][:]).all()
    assert writer.truncate_after_step(20) == start - 21
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["frames_committed"] == 21 and root["observables/latent/value"].shape[0] == 21
    writer.append([21], [21.0], features={"latent": np.zeros((1, 2))})
    writer.commit()
    np.testing.assert_array_equal(TrajectoryStore(path).steps(), np.arange(22))


def test_chunks_carry_checksums_and_floats_a_nan_fill(tmp_path):
    path = tmp_path / "s.zarr"
    x = _store(path)
    doc = json.loads((path / "observables/latent/value/zarr.json").read_text())
    assert [c["name"] for c in doc["codecs"]] == ["bytes", "blosc", "crc32c"]
    assert doc["fill_value"] == "NaN"
    # the writer's own encoding is what plain zarr decodes, checksum included
    np.testing.assert_array_equal(zarr.open_array(str(path / "observables/latent/value"), mode="r")[:], x)


def test_missing_chunk_is_an_error_naming_store_array_and_frames(tmp_path):
    path = tmp_path / "s.zarr"
    x = _store(path)
    _chunk(path, 2).unlink()  # frames 32-47
    store = TrajectoryStore(path)
    np.testing.assert_array_equal(store.features(0, 32), x[:32])  # intact ranges still read
    with pytest.raises(StoreError) as err:
        store.features()
    line = str(err.value)
    assert "\n" not in line and str(path) in line and "observables/latent/value" in line
    assert "frames 32-47" in line and "missing" in line
    with pytest.raises(StoreError, match="frames 32-47"):
        store.features(40, 41)


@pytest.mark.parametrize("how", ["flip", "truncate", "empty"])
def test_garbled_chunk_is_an_error_not_numbers(tmp_path, how):
    """A flipped byte inside a Blosc stream may decompress into wrong numbers: the checksum catches it."""
    path = tmp_path / "s.zarr"
    _store(path)
    chunk = _chunk(path, 1)
    data = bytearray(chunk.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    elif how == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"observables/latent/value: frames 16-31: .*garbled") as err:
        TrajectoryStore(path).features()
    assert "\n" not in str(err.value)


def test_verify_reports_every_damaged_range(tmp_path):
    path = tmp_path / "s.zarr"
    _store(path)
    assert TrajectoryStore(path).verify() == []
    _chunk(path, 0).unlink()
    raw = bytearray(_chunk(path, 5, "time").read_bytes())
    raw[-1] ^= 0xFF
    _chunk(path, 5, "time").write_bytes(bytes(raw))
    store = TrajectoryStore(path)
    damages = store.verify()
    assert {(d.array, d.start, d.stop) for d in damages} == {
        ("observables/latent/value", 0, 16),
        ("observables/latent/time", 80, 96),
    }
    assert all("checksum" in d.reason or "missing" in d.reason for d in damages)
    assert store.damaged_ranges(damages) == [(0, 16), (80, 96)]


def test_skip_damaged_turns_damage_into_trajectory_breaks(tmp_path):
    """Two damaged chunks cut a 100-frame store into three intact trajectories; no pair spans a cut."""
    from lss_engine.data import TimeLaggedDataset

    path = tmp_path / "s.zarr"
    x = _store(path)
    _chunk(path, 1).unlink()  # 16-31
    _chunk(path, 6).unlink()  # 96-99 (the last, partial chunk)
    with pytest.raises(StoreError, match="missing"):
        TimeLaggedDataset(open_stores(path), lag=1)
    lines: list[str] = []
    pieces = open_stores(path, skip_damaged=True, on_damage=lines.append)
    assert [p.n_frames for p in pieces] == [16, 64]
    np.testing.assert_array_equal(pieces[1].features(), x[32:96])
    np.testing.assert_array_equal(pieces[1].steps(), np.arange(32, 96))
    assert lines == [f"skipping frames 16-31 of {path} (damaged)", f"skipping frames 96-99 of {path} (damaged)"]
    data = TimeLaggedDataset(pieces, lag=5)
    assert data.offsets == (0, 16, 80) and len(data) == (16 - 5) + (64 - 5)


def test_multi_store_writer_stores_are_checked_too(tmp_path):
    paths = [tmp_path / f"w{i}.zarr" for i in range(3)]
    with MultiStoreWriter.create(paths, timestep_ps=1.0, report_interval=1, temperature_K=None,
                                 observables=[BLOCK], chunk_frames=16, threads=2) as writer:
        writer.append(np.arange(40), np.arange(40) * 1.0, features={"latent": np.ones((40, 3, 2))})
        writer.commit()
    for p in paths:
        root = zarr.open_group(str(p), mode="r")
        assert root["observables/latent/value"].shape[0] == 40 == root.attrs["frames_committed"]
    (paths[1] / "observables/latent/step/c/0").unlink()
    assert [len(TrajectoryStore(p).verify()) for p in paths] == [0, 1, 0]
    with pytest.raises(StoreError, match="w1.zarr: observables/latent/step: frames 0-15"):
        TrajectoryStore(paths[1]).steps()


def _schema1_store(path, x):
    """A store as lss_engine wrote it before schema 2: Blosc only, zero fill, arrays grown in whole chunks."""
    from zarr.codecs import BloscCodec

    root = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={
        "lss_engine": {"schema_version": 1, "kind": "trajectory"}, "frames_committed": len(x)})
    root.create_group("h5md")
    root.create_group("parameters", attributes={
        "timestep_ps": 1.0, "report_interval": 1, "frame_interval_ps": 1.0, "temperature_K": None,
        "feature_spec": None, "topology_pdb": None, "particles_group": "selection", "atom_indices": [],
        "n_atoms_system": 0, "periodic": False, "provenance": {}})
    root.create_group("particles")
    element = root.create_group("observables").create_group("latent", attributes={"names": ["a", "b"], "units": ["1", "1"]})
    grown = -(-len(x) // 16) * 16
    for leaf, data in (("value", x), ("step", np.arange(len(x))), ("time", np.arange(len(x)) * 1.0)):
        arr = element.create_array(leaf, shape=(grown,) + data.shape[1:], chunks=(16,) + data.shape[1:],
                                   dtype=data.dtype, fill_value=0,
                                   compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"))
        arr[: len(x)] = data


def test_schema1_stores_open_read_only(tmp_path):
    path = tmp_path / "old.zarr"
    x = np.random.default_rng(1).normal(size=(40, 2)).astype(np.float32)
    _schema1_store(path, x)
    store = TrajectoryStore(path)
    assert store.schema_version == 1 and store.n_frames == 40
    np.testing.assert_array_equal(store.features(), x)
    assert store.verify() == []
    with pytest.raises(StoreError, match="schema version 1: it opens read-only"):
        StoreWriter(path)


@pytest.mark.parametrize("value", [None, -3, "12", 2.5])
def test_garbled_frames_committed_is_refused(tmp_path, value):
    path = tmp_path / "s.zarr"
    _store(path)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["frames_committed"] = value
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="frames_committed"):
        TrajectoryStore(path)
