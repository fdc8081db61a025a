"""Training data: time-lagged pairs, splits, normalisation, batches, sequences.

Most trajectories here encode each frame's global id (its row in the
concatenated frame tensor) in feature 0, so tests can check exactly which
frames were paired.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lss_engine.data import Normalizer, SequenceDataset, TimeLaggedDataset
from lss_engine.errors import LssError, NonFiniteError


def id_trajectories(lengths, n_features=3):
    """Arrays whose rows are ``[global id, trajectory number, -global id, ...]``."""
    trajs, start = [], 0
    for k, n in enumerate(lengths):
        ids = np.arange(start, start + n, dtype=np.float32)
        cols = [ids, np.full(n, k, np.float32), -ids] + [ids * 0.5] * (n_features - 3)
        trajs.append(np.stack(cols[:n_features], axis=1))
        start += n
    return trajs


def traj_of(frame_ids, lengths):
    return np.searchsorted(np.cumsum(lengths), frame_ids, side="right")


def pairs_of(dataset):
    """(n_pairs, 2) global frame ids of every pair, read from the features."""
    idx = torch.arange(len(dataset))
    return np.stack([dataset.x0(idx)[:, 0].numpy(), dataset.xt(idx)[:, 0].numpy()], axis=1).astype(np.int64)


class FakeStore:
    """Duck-typed trajectory store."""

    def __init__(self, array, frame_interval_ps=2.0, names=None, path="fake.zarr"):
        self._array = np.asarray(array, dtype=np.float32)
        self.n_frames = len(self._array)
        self.frame_interval_ps = frame_interval_ps
        self.feature_names = names or [f"f{i}" for i in range(self._array.shape[1])]
        self.path = path

    def features(self, start=0, stop=None):
        return self._array[start:stop].copy()


def one_line_error(exc_info):
    assert "\n" not in str(exc_info.value)
    return str(exc_info.value)


# --------------------------------------------------------------------------- pairs


def test_pairs_never_cross_trajectory_boundaries():
    lengths = [50, 7, 3, 33]  # the 3-frame trajectory is shorter than the lag
    data = TimeLaggedDataset(id_trajectories(lengths), 5)
    assert data.offsets == (0, 50, 57, 60, 93)
    assert data.frames.shape == (93, 3) and data.frames.is_contiguous()
    expected = np.concatenate([np.arange(0, 45), np.arange(50, 52), np.arange(60, 88)])
    np.testing.assert_array_equal(data.pair_indices.numpy(), expected)
    assert len(data) == len(expected)
    pairs = pairs_of(data)
    np.testing.assert_array_equal(pairs[:, 0], expected)
    np.testing.assert_array_equal(pairs[:, 1], expected + 5)
    np.testing.assert_array_equal(traj_of(pairs[:, 0], lengths), traj_of(pairs[:, 1], lengths))
    np.testing.assert_array_equal(data.trajectory_of(slice(None)).numpy(), traj_of(expected, lengths))
    x0, xt = data[3]
    assert x0[0] == 3 and xt[0] == 8


def test_lag_as_time_and_bad_lags():
    trajs = id_trajectories([40, 30])
    data = TimeLaggedDataset(trajs, "10ps", frame_interval_ps=2.0)
    assert data.lag == 5 and data.lag_ps == pytest.approx(10.0)
    assert TimeLaggedDataset(trajs, "5frames").lag == 5
    with pytest.raises(LssError) as err:
        TimeLaggedDataset(trajs, "3ps", frame_interval_ps=2.0)
    assert "multiple" in one_line_error(err)
    with pytest.raises(LssError) as err:
        TimeLaggedDataset(trajs, "10ps")  # arrays without an interval
    assert "frame_interval_ps" in one_line_error(err)
    with pytest.raises(LssError) as err:
        TimeLaggedDataset(trajs, 40)
    assert "longer than every trajectory" in one_line_error(err)


def test_input_errors_are_one_line():
    a, b = id_trajectories([20, 20])
    cases = [
        lambda: TimeLaggedDataset([], 1),
        lambda: TimeLaggedDataset([np.zeros((0, 3))], 1),
        lambda: TimeLaggedDataset([a, b[:, :2]], 1),
        lambda: TimeLaggedDataset([np.arange(5.0)], 1),
        lambda: TimeLaggedDataset([np.arange(20), a], 1),
        lambda: TimeLaggedDataset([FakeStore(a), FakeStore(b, frame_interval_ps=4.0)], 1),
        lambda: TimeLaggedDataset([FakeStore(a), FakeStore(b, names=["x", "y", "z"])], 1),
        lambda: TimeLaggedDataset([FakeStore(a)], 1, frame_interval_ps=1.0),
        lambda: TimeLaggedDataset(a, 0),
    ]
    for make in cases:
        with pytest.raises(LssError) as err:
            make()
        one_line_error(err)
    bad = a.copy()
    bad[7, 1] = np.nan
    with pytest.raises(NonFiniteError, match="frame 7"):
        TimeLaggedDataset(bad, 1)


def test_stores_and_arrays_mix_and_carry_metadata():
    a, b = id_trajectories([20, 25])
    data = TimeLaggedDataset([FakeStore(a), b], "4ps")
    assert data.lag == 2 and data.frame_interval_ps == 2.0
    assert data.feature_names == ["f0", "f1", "f2"] and data.n_features == 3
    np.testing.assert_array_equal(data.frames.numpy(), np.concatenate([a, b]))
    single = TimeLaggedDataset(a, 1, dtype=torch.float64)  # one array, not in a list
    assert single.frames.dtype == torch.float64 and len(single) == 19


# --------------------------------------------------------------------------- splits


def test_split_by_blocks_shares_no_frames_and_covers_in_block_pairs():
    lengths = [400, 250, 130]
    lag, block = 4, 60
    data = TimeLaggedDataset(id_trajectories(lengths), lag)
    train, val = data.split(0.3, block_length=block, seed=1)
    assert train.frames is data.frames and val.frames is data.frames
    tr, va = pairs_of(train), pairs_of(val)
    assert not set(tr.ravel()) & set(va.ravel())

    # independent block numbering: trajectory of n frames -> max(1, n // block) equal blocks
    block_of = np.concatenate([
        k * 1000 + np.concatenate([np.full(len(p), j) for j, p in enumerate(np.array_split(np.arange(n), n // block))])
        for k, n in enumerate(lengths)
    ])
    for pairs in (tr, va):
        assert (block_of[pairs[:, 0]] == block_of[pairs[:, 1]]).all()
    assert not set(block_of[tr[:, 0]]) & set(block_of[va[:, 0]])
    all_pairs = pairs_of(data)
    in_block = all_pairs[block_of[all_pairs[:, 0]] == block_of[all_pairs[:, 1]]]
    got = np.concatenate([tr, va])
    assert len(got) == len(in_block)
    assert set(map(tuple, got)) == set(map(tuple, in_block))
    assert 0.2 < len(va) / len(got) < 0.4
    # deterministic for a seed
    train2, val2 = data.split(0.3, block_length=block, seed=1)
    assert torch.equal(val2.pair_indices, val.pair_indices)
    assert not torch.equal(data.split(0.3, block_length=block, seed=2)[1].pair_indices, val.pair_indices)


def test_default_block_length_gives_ten_blocks_or_a_hundred_interleaved():
    data = TimeLaggedDataset(id_trajectories([1000]), 5)
    train, val = data.split(0.2)
    # 10 blocks of 100 frames; 2 go to validation; 95 pairs lie inside each block
    assert (len(train), len(val)) == (8 * 95, 2 * 95)
    starts = val.pair_indices.numpy()
    assert len(set(starts // 100)) == 2 and (starts % 100 < 95).all()
    # blocks are never shorter than 10 x lag: 1000 frames, lag 20 -> 5 blocks of 200
    train, val = TimeLaggedDataset(id_trajectories([1000]), 20).split(0.2)
    assert len(val) == 180 and len(train) == 4 * 180
    # interleaved: 100 blocks of 100 frames; every 5th goes to validation
    train, val = TimeLaggedDataset(id_trajectories([10_000]), 5).split(0.2, by="interleaved")
    assert (len(train), len(val)) == (80 * 95, 20 * 95)
    starts = val.pair_indices.numpy()
    assert len(set(starts // 100)) == 20 and (starts % 100 < 95).all()


def test_interleaved_validation_spans_every_trajectory_and_no_pair_crosses_a_block_edge():
    """A rare state visited once (here: frames 2300-2700 of trajectory 0) lands in training and validation."""
    lengths, lag, block = [5000, 3000], 10, 100
    data = TimeLaggedDataset(id_trajectories(lengths), lag)
    train, val = data.split(0.2, by="interleaved", block_length=block, seed=4)
    tr, va = pairs_of(train), pairs_of(val)
    assert not set(tr.ravel()) & set(va.ravel())
    for pairs in (tr, va):  # both frames of every pair in one block of one trajectory
        assert (traj_of(pairs[:, 0], lengths) == traj_of(pairs[:, 1], lengths)).all()
        assert (pairs[:, 0] // block == pairs[:, 1] // block).all()
    val_blocks = np.unique(va[:, 0] // block)
    # every 5th block: evenly spaced over the whole of both trajectories
    assert len(val_blocks) == 16 and set(np.diff(val_blocks)) == {5}
    for k, (a, b) in enumerate([(0, 5000), (5000, 8000)]):
        mine = va[(va[:, 0] >= a) & (va[:, 0] < b), 0]
        assert mine.min() - a < 5 * block and b - mine.max() < 5 * block + lag
        assert len(mine) == pytest.approx(0.2 * (lengths[k] // block) * (block - lag), abs=block)
    rare = (va[:, 0] >= 2300) & (va[:, 0] < 2700)
    assert rare.sum() >= block - lag and ((tr[:, 0] >= 2300) & (tr[:, 0] < 2700)).sum() >= 2 * (block - lag)
    # the seed moves the phase; random blocks on request
    other = pairs_of(data.split(0.2, by="interleaved", block_length=block, seed=1)[1])
    assert set(np.diff(np.unique(other[:, 0] // block))) == {5} and not np.array_equal(other, va)
    random_val = pairs_of(data.split(0.2, block_length=block, seed=4)[1])
    assert len(np.unique(random_val[:, 0] // block)) == 16
    assert set(np.diff(np.unique(random_val[:, 0] // block))) != {5}


def test_split_by_trajectories():
    lengths = [30, 40, 50, 60, 70]
    data = TimeLaggedDataset(id_trajectories(lengths), 3)
    train, val = data.split(0.4, by="trajectories", seed=3)
    t_train = set(traj_of(pairs_of(train).ravel(), lengths))
    t_val = set(traj_of(pairs_of(val).ravel(), lengths))
    assert t_train and t_val and not t_train & t_val
    assert t_train | t_val == set(range(5))
    assert len(train) + len(val) == len(data)
    for k in t_val:  # whole trajectories
        assert (traj_of(val.pair_indices.numpy(), lengths) == k).sum() == lengths[k] - 3
    with pytest.raises(LssError) as err:
        TimeLaggedDataset(id_trajectories([100]), 3).split(by="trajectories")
    assert "by='blocks'" in one_line_error(err)
    for bad in (dict(val_fraction=0.0), dict(val_fraction=1.5), dict(by="frames"), dict(block_length=3)):
        with pytest.raises(LssError):
            data.split(**bad)


# --------------------------------------------------------------------------- normalisation


def test_normalizer_uses_training_frames_only():
    rng = np.random.default_rng(0)
    trajs = [rng.normal(3.0, 2.0, size=(n, 4)).astype(np.float32) for n in (300, 200)]
    trajs[1][:, 2] = 7.0  # a constant feature
    data = TimeLaggedDataset(trajs, 2)
    train, val = data.split(0.25, block_length=50)
    norm = Normalizer().fit(train)
    used = np.unique(np.concatenate([train.pair_indices.numpy(), train.pair_indices.numpy() + 2]))
    assert len(used) < data.n_frames
    ref = np.concatenate(trajs).astype(np.float64)[used]
    np.testing.assert_allclose(norm.mean, ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm.std, np.maximum(ref.std(axis=0), norm.min_std), rtol=1e-12)
    assert norm.n_frames == len(used)

    const = Normalizer().fit(np.full((10, 2), 5.0))
    assert (const.std == const.min_std).all()
    assert np.isfinite(const.transform(np.full((3, 2), 5.0))).all()

    x = np.concatenate(trajs)[:10]
    np.testing.assert_allclose(norm.transform(x), (x - ref.mean(0)) / norm.std, rtol=1e-5, atol=1e-6)
    xt = norm.transform(torch.from_numpy(x))
    assert xt.dtype == torch.float32
    np.testing.assert_allclose(xt.numpy(), norm.transform(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.inverse_transform(norm.transform(x)), x, rtol=1e-5, atol=1e-5)

    state = json.loads(json.dumps(norm.state_dict()))
    again = Normalizer.from_state_dict(state)
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std, norm.std)

    normed = val.with_normalizer(norm)
    assert val.normalizer is None
    x0, xt_ = next(normed.batches(16, seed=0))
    r0, rt = next(val.batches(16, seed=0))
    assert torch.equal(x0, norm.transform(r0)) and torch.equal(xt_, norm.transform(rt))
    assert torch.equal(normed.x0([0, 1]), norm.transform(val.x0([0, 1])))
    with pytest.raises(LssError):
        TimeLaggedDataset(id_trajectories([20]), 1, normalizer=norm)  # 3 features, not 4
    with pytest.raises(LssError):
        Normalizer().transform(x)


# --------------------------------------------------------------------------- batches


def test_batches_cover_every_pair_once_and_are_reproducible():
    data = TimeLaggedDataset(id_trajectories([500, 3, 321]), 7)
    batches = list(data.batches(64, seed=5))
    assert [len(b[0]) for b in batches] == [64] * (len(data) // 64) + [len(data) % 64]
    x0 = torch.cat([b[0] for b in batches])
    xt = torch.cat([b[1] for b in batches])
    assert torch.equal(xt[:, 0], x0[:, 0] + 7)
    assert torch.equal(xt[:, 1], x0[:, 1])  # same trajectory
    np.testing.assert_array_equal(np.sort(x0[:, 0].numpy()).astype(np.int64), data.pair_indices.numpy())
    assert not torch.equal(x0[:, 0].long(), data.pair_indices)  # shuffled

    again = torch.cat([b[0] for b in data.batches(64, seed=5)])
    assert torch.equal(x0, again)
    assert not torch.equal(x0, torch.cat([b[0] for b in data.batches(64, seed=6)]))
    gen = torch.Generator().manual_seed(5)
    epoch1 = torch.cat([b[0] for b in data.batches(64, generator=gen)])
    epoch2 = torch.cat([b[0] for b in data.batches(64, generator=gen)])
    assert torch.equal(epoch1, x0) and not torch.equal(epoch1, epoch2)

    ordered = torch.cat([b[0] for b in data.batches(100, shuffle=False)])
    assert torch.equal(ordered[:, 0].long(), data.pair_indices)
    dropped = list(data.batches(64, seed=0, drop_last=True))
    assert all(len(b[0]) == 64 for b in dropped) and len(dropped) == len(data) // 64
    with pytest.raises(LssError):
        data.batches(0)


# --------------------------------------------------------------------------- sequences


def test_sequences_never_cross_boundaries():
    lengths = [20, 4, 13]
    data = SequenceDataset(id_trajectories(lengths), 5, stride=2)
    expected = np.concatenate([np.arange(0, 16, 2), np.arange(24, 33, 2)])
    np.testing.assert_array_equal(data.window_starts.numpy(), expected)
    windows = data.windows(torch.arange(len(data)))
    assert windows.shape == (len(expected), 5, 3)
    ids = windows[..., 0].numpy().astype(np.int64)
    np.testing.assert_array_equal(ids, expected[:, None] + np.arange(5))
    assert (traj_of(ids, lengths) == traj_of(ids[:, :1], lengths)).all()

    batches = list(data.batches(4, seed=0))
    got = torch.cat(batches)[..., 0].numpy().astype(np.int64)
    np.testing.assert_array_equal(np.sort(got[:, 0]), expected)
    assert (np.diff(got, axis=1) == 1).all()


def test_label_sequences_and_sequence_splits():
    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 4, size=n) for n in (300, 150)]
    data = SequenceDataset(labels, 8)
    assert data.is_labels and data.frames.dtype == torch.int64
    window = data.windows([0, 295])
    np.testing.assert_array_equal(window[0].numpy(), labels[0][:8])
    np.testing.assert_array_equal(window[1].numpy(), labels[1][2:10])  # trajectory 0 has 293 windows
    assert next(data.batches(32, seed=0)).shape == (32, 8)
    with pytest.raises(LssError):
        Normalizer().fit(data)

    train, val = data.split(0.3, block_length=75)
    tr = train.window_starts.numpy()[:, None] + np.arange(8)
    va = val.window_starts.numpy()[:, None] + np.arange(8)
    assert not set(tr.ravel()) & set(va.ravel())
    assert (tr[:, 0] // 75 == tr[:, -1] // 75).all()
    with pytest.raises(LssError) as err:
        SequenceDataset(labels, 400)
    one_line_error(err)


# --------------------------------------------------------------------------- real store


def test_dataset_from_real_stores(ala2_store):
    """Pairs from a store written by ZarrReporter during real MD (session fixture)."""
    from lss_engine.store import open_stores

    stores = open_stores([ala2_store, ala2_store])  # two trajectories
    n = stores[0].n_frames
    data = TimeLaggedDataset(stores, "1ps")  # frames are 0.1 ps apart
    assert data.lag == 10 and data.offsets == (0, n, 2 * n)
    assert data.feature_names == stores[0].feature_names
    features = stores[0].features()
    np.testing.assert_array_equal(data.frames.numpy(), np.concatenate([features, features]))
    x0, xt = data[torch.arange(len(data))]
    assert len(data) == 2 * (n - 10)
    expected = torch.from_numpy(np.concatenate([features[10:], features[10:]]))
    assert torch.equal(xt, expected)
    assert torch.equal(x0, torch.from_numpy(np.concatenate([features[:-10], features[:-10]])))
