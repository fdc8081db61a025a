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


# -- many stores at once ----------------------------------------------------------


def _multi(paths, **kw):
    from lss_engine.store import FeatureBlock, MultiStoreWriter

    args = dict(timestep_ps=2.0, report_interval=1, temperature_K=None, chunk_frames=16,
                observables=[FeatureBlock("latent", ["psi1", "psi2"], ["1", "1"])], threads=2)
    args.update(kw)
    return MultiStoreWriter.create(paths, **args)


def test_multi_store_writer_roundtrip_partial_chunks_and_growth(tmp_path):
    paths = [tmp_path / "synth" / f"walker_{w:03d}.zarr" for w in range(4)]
    x = np.random.default_rng(1).normal(size=(70, 4, 2)).astype(np.float32)
    with _multi(paths) as writer:
        start = 0
        for n in (1, 15, 16, 3, 35):  # partial chunks, whole chunks
            steps = np.arange(start, start + n)
            writer.append(steps, steps * 2.0, features={"latent": x[start : start + n]})
            assert TrajectoryStore(paths[0]).n_frames == start  # uncommitted frames are invisible
            start += n
            assert writer.commit() == start
            assert [TrajectoryStore(p).n_frames for p in paths] == [start] * 4
    stores = open_stores(tmp_path / "synth")
    for w, store in enumerate(stores):
        np.testing.assert_array_equal(store.features(), x[:, w])
        np.testing.assert_array_equal(store.steps(), np.arange(70))
        np.testing.assert_allclose(store.times(), np.arange(70) * 2.0)
        assert store.feature_names == ["psi1", "psi2"] and store.frame_interval_ps == 2.0
    root = zarr.open_group(str(paths[3]), mode="r")  # plain zarr reads it
    assert root.attrs["frames_committed"] == 70 and root["observables/latent/value"].shape[0] == 70
    np.testing.assert_array_equal(root["observables/latent/value"][:70], x[:, 3])
    assert sorted(p.name for p in (tmp_path / "synth").iterdir()) == [p.name for p in paths]  # no leftovers
    # a plain StoreWriter continues such a store
    writer = StoreWriter(paths[1])
    writer.append([70], [140.0], features={"latent": np.ones((1, 2))})
    assert writer.commit() == 71
    np.testing.assert_array_equal(TrajectoryStore(paths[1]).features()[:70], x[:, 1])


def test_multi_store_files_are_those_zarr_writes(tmp_path):
    from lss_engine.store import FeatureBlock

    paths = [tmp_path / f"m{w}.zarr" for w in range(3)]
    x = np.random.default_rng(2).normal(size=(50, 3, 2)).astype(np.float32)
    writer = _multi(paths, threads=1)
    writer.append(np.arange(50), np.arange(50) * 2.0, features={"latent": x})
    writer.commit()
    single = StoreWriter.create(tmp_path / "single.zarr", timestep_ps=2.0, report_interval=1, temperature_K=None,
                                observables=[FeatureBlock("latent", ["psi1", "psi2"], ["1", "1"])],
                                chunk_frames=16)
    single.append(np.arange(50), np.arange(50) * 2.0, features={"latent": x[:, 1]})
    single.commit()
    a, b = paths[1], tmp_path / "single.zarr"
    for key in ("value/c/0/0", "value/c/3/0", "step/c/2", "time/c/3"):
        assert (a / "observables/latent" / key).read_bytes() == (b / "observables/latent" / key).read_bytes(), key
    for key in ("value", "step", "time"):
        doc = json.loads((a / "observables/latent" / key / "zarr.json").read_text())
        assert doc == json.loads((b / "observables/latent" / key / "zarr.json").read_text())


def test_multi_store_failed_commit_publishes_no_frames_without_data(tmp_path, monkeypatch):
    import lss_engine.store as store_module

    paths = [tmp_path / f"w{w}.zarr" for w in range(3)]
    x = np.random.default_rng(3).normal(size=(40, 3, 2)).astype(np.float32)
    writer = _multi(paths, threads=1)
    writer.append(np.arange(20), np.arange(20) * 2.0, features={"latent": x[:20]})
    writer.commit()
    put = store_module.atomic_write_bytes

    def failing(path, data, **kw):
        if "w1.zarr" in path and "/value/c/" in path:
            raise OSError("disk full")
        put(path, data, **kw)

    monkeypatch.setattr(store_module, "atomic_write_bytes", failing)
    writer.append(np.arange(20, 40), np.arange(20, 40) * 2.0, features={"latent": x[20:]})
    with pytest.raises(OSError, match="disk full"):
        writer.commit()
    assert TrajectoryStore(paths[0]).n_frames == 40  # written before the failure
    assert TrajectoryStore(paths[1]).n_frames == 20  # its data failed: frames_committed not moved
    np.testing.assert_array_equal(TrajectoryStore(paths[1]).features(), x[:20, 1])
    assert TrajectoryStore(paths[2]).n_frames == 20  # not reached
    with pytest.raises(StoreError, match="cannot go on"):
        writer.commit()


def test_multi_store_create_refuses_existing_and_overwrites_only_stores(tmp_path):
    paths = [tmp_path / f"w{w}.zarr" for w in range(2)]
    _multi(paths).close()
    with pytest.raises(StoreError, match="already exists"):
        _multi(paths)
    with pytest.raises(StoreError, match="distinct"):
        _multi([tmp_path / "a.zarr", tmp_path / "a.zarr"])
    _multi(paths, overwrite=True).close()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("do not delete")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        _multi([tmp_path / "new.zarr", tmp_path / "precious"], overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").exists() and not (tmp_path / "new.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "w0.zarr", "w1.zarr"]


def test_latent_commit_plan_chunks():
    from lss_engine.latent_sampling import _commit_plan

    # 20,000 steps in chunks of 10,000: two commits of one whole chunk each, no 1-frame remainder
    assert _commit_plan(20_001, 10_000, 1000, 2) == (10_001, 10_001)
    per_commit, chunk = _commit_plan(301, 37, 3, 2)  # tiny commits: a chunk spans several (>= 16 KiB)
    assert per_commit * 9 >= 301 and chunk % per_commit == 0 and chunk * 8 >= 16 * 1024
    per_commit, chunk = _commit_plan(10**6 + 1, 10**6, 10, 4)  # huge commits: several chunks of <= 1 MiB
    assert per_commit % chunk == 0 and chunk * 16 <= 1024**2 and per_commit >= 10**6 + 1


@pytest.mark.parametrize("overlap", [True, False])
def test_sample_to_stores_chunk_plans_hold_the_one_shot_trajectory(tmp_path, overlap):
    from lss_engine.latent_sampling import sample_to_stores
    from lss_engine.models import MDNPropagator

    model = MDNPropagator(2, 4, hidden=(16,)).fit_normalization(np.random.default_rng(0).standard_normal((100, 2)))
    one = model.eval().propagate(np.zeros(2), 120, n_walkers=3, seed=4)
    for chunk_steps in (1, 7, 60, 119, 120, 500):  # chunks spanning commits, even splits, a single commit
        out = tmp_path / f"{chunk_steps}"
        sample_to_stores(model, np.zeros(2), 120, 3, out_dir=out, frame_interval_ps=1.0, seed=4,
                         chunk_steps=chunk_steps, progress=False, overlap=overlap)
        for w, store in enumerate(open_stores(out)):
            assert store.n_frames == 121 and np.array_equal(store.features(), one[w]), chunk_steps
            np.testing.assert_array_equal(store.steps(), np.arange(121))
