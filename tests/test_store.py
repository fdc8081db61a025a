"""The zarr store layout, writer and reader, without a simulation in the loop."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from lss_engine.errors import StoreError
from lss_engine.store import SCHEMA_VERSION, StoreWriter, TrajectoryStore, chunk_frames_for, open_stores


def _toy_topology(n_atoms: int = 4):
    from openmm.app import Element, Topology

    top = Topology()
    chain = top.addChain()
    res = top.addResidue("TOY", chain)
    for i in range(n_atoms):
        top.addAtom(f"C{i}", Element.getBySymbol("C"), res)
    return top


def _writer(path, **kw):
    from lss_engine.features import build_featurizer

    top = _toy_topology()
    featurizer = build_featurizer("positions", top)
    args = dict(topology=top, featurizer=featurizer, timestep_ps=0.002, report_interval=10,
                temperature_K=300.0, chunk_bytes=4096)
    args.update(kw)
    return StoreWriter.create(path, **args), featurizer


def _features(featurizer, xyz):
    return {block.name: block.compute(xyz) for block in featurizer.blocks}


def _frames(start, n, n_atoms=4):
    steps = (np.arange(start, start + n) + 1) * 10
    xyz = np.random.default_rng(start).normal(size=(n, n_atoms, 3)).astype(np.float32)
    return steps, steps * 0.002, xyz


def test_roundtrip_across_chunks_and_partial_flushes(tmp_path):
    writer, feat = _writer(tmp_path / "s.zarr")
    chunk = writer._appenders["particles/all/position/value"].chunk
    assert chunk < 150  # the test crosses several chunk boundaries
    all_xyz = []
    start = 0
    for n in (7, 50, 1, 200, 33):
        steps, times, xyz = _frames(start, n)
        writer.append(steps, times, positions=xyz, features=_features(feat, xyz))
        writer.commit()
        all_xyz.append(xyz)
        start += n
        reader = TrajectoryStore(tmp_path / "s.zarr")
        assert reader.n_frames == start
    xyz = np.concatenate(all_xyz)
    reader = TrajectoryStore(tmp_path / "s.zarr")
    np.testing.assert_array_equal(reader.positions(), xyz)
    np.testing.assert_array_equal(reader.features(), xyz.reshape(len(xyz), -1))
    np.testing.assert_array_equal(reader.steps(), (np.arange(start) + 1) * 10)
    np.testing.assert_allclose(reader.times(), reader.steps() * 0.002)
    assert reader.frame_interval_ps == pytest.approx(0.02)
    assert reader.positions(10, 20, 3).shape == (4, 4, 3)
    traj = reader.to_mdtraj()
    assert traj.n_frames == start and traj.n_atoms == 4


def test_uncommitted_frames_are_invisible(tmp_path):
    writer, feat = _writer(tmp_path / "s.zarr")
    steps, times, xyz = _frames(0, 20)
    writer.append(steps, times, positions=xyz, features=_features(feat, xyz))
    writer.commit()
    steps, times, xyz = _frames(20, 5)
    writer.append(steps, times, positions=xyz, features=_features(feat, xyz))
    assert TrajectoryStore(tmp_path / "s.zarr").n_frames == 20


def test_layout_readable_with_plain_zarr(tmp_path):
    writer, feat = _writer(tmp_path / "s.zarr")
    steps, times, xyz = _frames(0, 30)
    writer.append(steps, times, positions=xyz, features=_features(feat, xyz))
    writer.commit()
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root.attrs["lss_engine"] == {"schema_version": SCHEMA_VERSION, "kind": "trajectory"}
    n = root.attrs["frames_committed"]
    assert n == 30
    value = root["particles/all/position/value"]
    assert value.attrs["unit"] == "nm" and value.dtype == np.float32
    np.testing.assert_array_equal(value[:n], xyz)
    assert root["particles/all/position/step"].dtype == np.int64
    assert root["particles/all/position/time"].dtype == np.float64
    assert root["particles/all/position/time"].attrs["unit"] == "ps"
    params = root["parameters"].attrs
    assert params["timestep_ps"] == 0.002 and params["report_interval"] == 10
    assert params["temperature_K"] == 300.0
    assert "packages" in params["provenance"] and "created" in params["provenance"]
    assert "HETATM" in params["topology_pdb"]
    json.dumps(params["feature_spec"])  # JSON, not pickle
    obs = root["observables/positions"]
    assert list(obs.attrs["names"]) == list(feat.names)
    assert root["h5md"].attrs["creator"]["name"] == "lss_engine"


def test_chunks_target_megabytes():
    # 22 atoms x 3 float32 = 264 B/frame -> thousands of frames per 1 MiB chunk
    frames = chunk_frames_for((22, 3), 4)
    assert 1 * 1024**2 <= frames * 22 * 3 * 4 <= 16 * 1024**2


def test_not_a_store_and_newer_schema(tmp_path):
    with pytest.raises(StoreError, match="not an lss_engine trajectory store"):
        TrajectoryStore(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not an lss_engine"):
        TrajectoryStore(tmp_path / "plain")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", attributes={"foo": 1})
    with pytest.raises(StoreError, match="not an lss_engine trajectory store"):
        TrajectoryStore(tmp_path / "other.zarr")
    _writer(tmp_path / "s.zarr")
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    root.attrs["lss_engine"] = {"schema_version": SCHEMA_VERSION + 1, "kind": "trajectory"}
    with pytest.raises(StoreError, match="newer than this lss_engine reads"):
        TrajectoryStore(tmp_path / "s.zarr")


def test_create_refuses_existing_and_overwrite_only_stores(tmp_path):
    _writer(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="already exists"):
        _writer(tmp_path / "s.zarr")
    _writer(tmp_path / "s.zarr", overwrite=True)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("do not delete")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        _writer(tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_truncate_after_step_then_continue(tmp_path):
    writer, feat = _writer(tmp_path / "s.zarr")
    steps, times, xyz = _frames(0, 100)
    writer.append(steps, times, positions=xyz, features=_features(feat, xyz))
    writer.commit()
    reopened = StoreWriter(tmp_path / "s.zarr")
    assert reopened.truncate_after_step(455) == 55  # keeps steps 10..450
    steps2, times2, xyz2 = _frames(45, 30)
    reopened.append(steps2, times2, positions=xyz2, features=_features(feat, xyz2))
    reopened.commit()
    reader = TrajectoryStore(tmp_path / "s.zarr")
    assert reader.n_frames == 75
    np.testing.assert_array_equal(reader.steps(), (np.arange(75) + 1) * 10)
    np.testing.assert_array_equal(reader.positions(), np.concatenate([xyz[:45], xyz2]))


def test_shape_mismatch_is_a_clear_error(tmp_path):
    writer, feat = _writer(tmp_path / "s.zarr")
    steps, times, xyz = _frames(0, 3)
    with pytest.raises(StoreError, match="positions: shape"):
        writer.append(steps, times, positions=xyz[:, :2], features=_features(feat, xyz))
    with pytest.raises(StoreError, match="missing"):
        writer.append(steps, times, positions=xyz)


def test_open_stores_many_and_glob(tmp_path):
    for i in range(3):
        writer, feat = _writer(tmp_path / f"run{i}.zarr")
        steps, times, xyz = _frames(0, 10 + i)
        writer.append(steps, times, positions=xyz, features=_features(feat, xyz))
        writer.commit()
    stores = open_stores(str(tmp_path / "run*.zarr"))
    assert [s.n_frames for s in stores] == [10, 11, 12]
    with pytest.raises(StoreError, match="no store matches"):
        open_stores(str(tmp_path / "nothing*.zarr"))


def test_observable_only_store_and_directory_of_stores(tmp_path):
    from lss_engine.store import FeatureBlock

    for walker in range(3):
        writer = StoreWriter.create(tmp_path / "synth" / f"walker_{walker:03d}.zarr", timestep_ps=10.0,
                                    report_interval=1, temperature_K=None,
                                    observables=[FeatureBlock("latent", ["psi1", "psi2"], ["1", "1"])])
        writer.append(np.arange(1, 8), np.arange(1, 8) * 10.0, features={"latent": np.full((7, 2), walker)})
        writer.commit()
    stores = open_stores(tmp_path / "synth")
    assert [s.path.name for s in stores] == ["walker_000.zarr", "walker_001.zarr", "walker_002.zarr"]
    assert stores[2].feature_names == ["psi1", "psi2"] and stores[2].features()[0, 0] == 2
    assert stores[0].frame_interval_ps == 10.0 and len(stores[0].atom_indices) == 0
