"""VAMPNet and SRV on small numpy toy data with known kinetics (no OpenMM).

* VAMPNet on a 3-state hidden Markov chain with Gaussian emissions recovers
  the transition matrix and timescales;
* SRV on a discretised 1-D double well: psi_1 separates the wells, the
  whitened outputs have identity covariance, eigenvalues agree with scipy, the
  sign convention is deterministic;
* config + state_dict round trips; float32 and float64.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from lss_engine.data import TimeLaggedDataset
from lss_engine.errors import LssError
from lss_engine.models import SRV, VAMPNet
from lss_engine.models.vamp import vamp_score


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small networks: one thread is fastest and avoids contention on busy machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def adam(model, data, epochs, lr, batch_size=1000, seed=0):
    """Minimal training loop of the protocol the shared loop uses."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scores = []
    for epoch in range(epochs):
        model.train()
        for batch in data.batches(batch_size, seed=seed * 1000 + epoch):
            opt.zero_grad(set_to_none=True)
            loss = model.training_loss(batch)
            loss.backward()
            opt.step()
        scores.append(model.validation_score(data))
    return scores


# --------------------------------------------------------------------------
# toy data


T3 = np.array([[0.97, 0.02, 0.01], [0.02, 0.95, 0.03], [0.01, 0.04, 0.95]])


def sample_chain(T, n_steps, rng, s0=0):
    cdf = np.cumsum(T, axis=1)
    u = rng.random(n_steps)
    s = np.empty(n_steps, dtype=np.int64)
    s[0] = s0
    for i in range(1, n_steps):
        s[i] = min(np.searchsorted(cdf[s[i - 1]], u[i], side="right"), len(T) - 1)
    return s


@pytest.fixture(scope="module")
def hmm():
    """30k frames of a 3-state chain observed through 5-D Gaussian emissions (unit noise)."""
    rng = np.random.default_rng(0)
    s = sample_chain(T3, 30000, rng)
    means = rng.normal(size=(3, 5)) * 3
    x = means[s] + rng.normal(size=(len(s), 5))
    return x.astype(np.float32), s, means


@pytest.fixture(scope="module")
def trained_vampnet(hmm):
    x, _, _ = hmm
    data = TimeLaggedDataset(x, 1, frame_interval_ps=2.0)
    torch.manual_seed(0)  # the initial weights: the test is the same on every run
    model = VAMPNet(5, 3, hidden=(32, 16))
    model.score_method = "VAMP1"  # pre-training stage, as in the paper
    pre = adam(model, data, 2, 5e-3)
    model.score_method = "VAMP2"
    scores = adam(model, data, 6, 5e-3, seed=1)
    return model, data, pre + scores


def double_well_chain(n_traj=50, n_steps=1000, n_bins=40, seed=1):
    """Reversible Metropolis chain on bins of [-2, 2] in V(x) = 3 (x^2 - 1)^2."""
    xs = np.linspace(-2, 2, n_bins)
    v = 3 * (xs**2 - 1) ** 2
    p = np.zeros((n_bins, n_bins))
    for i in range(n_bins):
        for j in (i - 1, i + 1):
            if 0 <= j < n_bins:
                p[i, j] = 0.5 * min(1.0, np.exp(-(v[j] - v[i])))
        p[i, i] = 1 - p[i].sum()
    rng = np.random.default_rng(seed)
    cdf = p.cumsum(1)
    s = np.empty((n_traj, n_steps), dtype=np.int64)
    s[:, 0] = rng.integers(0, n_bins, n_traj)
    u = rng.random((n_traj, n_steps))
    for k in range(1, n_steps):  # vectorised over trajectories
        s[:, k] = (u[:, k, None] > cdf[s[:, k - 1]]).sum(1)
    x = xs[s] + 0.05 * rng.normal(size=s.shape)
    features = np.stack([x, np.cos(x), np.sin(2 * x), rng.normal(size=s.shape)], axis=-1)
    return p, x, features


@pytest.fixture(scope="module")
def double_well():
    p, x, features = double_well_chain()
    lag = 5
    lam_true = np.sort(np.linalg.eigvals(np.linalg.matrix_power(p, lag)).real)[::-1]
    return x, list(features), lag, lam_true


@pytest.fixture(scope="module")
def trained_srv(double_well):
    x, trajs, lag, _ = double_well
    data = TimeLaggedDataset(trajs, lag, dtype=torch.float64)
    model = SRV(4, 3, hidden=(32, 32), dtype="float64")
    scores = adam(model, data, 12, 1e-2, batch_size=2000)
    model.fit_whitening(data)
    return model, data, scores


def np_outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=next(model.parameters()).dtype)).double().numpy()


# --------------------------------------------------------------------------
# VAMPNet


def test_vampnet_recovers_hidden_markov_chain(trained_vampnet, hmm):
    model, data, scores = trained_vampnet
    x, s, means = hmm
    assert scores[-1] > scores[0]
    # the best possible VAMP-2 score is that of the hidden states themselves
    onehot = torch.nn.functional.one_hot(torch.as_tensor(s)).double()
    best = float(vamp_score(onehot[:-1], onehot[1:], "VAMP2", 1e-10, "trunc"))
    assert scores[-1] == pytest.approx(best, abs=0.02)

    km = model.koopman_model(data)
    perm = model.memberships(means).argmax(axis=1)  # network state of each hidden state
    assert sorted(perm) == [0, 1, 2]
    t = km.transition_matrix[np.ix_(perm, perm)]
    np.testing.assert_allclose(t, T3, atol=0.015)
    np.testing.assert_allclose(km.transition_matrix.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(km.koopman_matrix.sum(1), 1.0, atol=1e-8)  # softmax: rows of K sum to 1
    # timescales in ps (frames 2 ps apart, lag 1 frame)
    assert km.unit == "ps" and km.lag == 2.0
    ev_true = np.sort(np.linalg.eigvals(T3).real)[::-1]
    np.testing.assert_allclose(km.implied_timescales, -2.0 / np.log(ev_true[1:]), rtol=0.12)
    assert km.eigenvalues[0] == pytest.approx(1.0, abs=1e-12)
    pi_emp = np.bincount(s, minlength=3) / len(s)
    np.testing.assert_allclose(km.stationary_distribution[perm], pi_emp, atol=0.02)  # hidden state h is perm[h]


def test_vampnet_memberships_and_koopman_model_from_arrays(trained_vampnet, hmm):
    model, data, _ = trained_vampnet
    x = hmm[0]
    chi = model.memberships(x)
    assert chi.dtype == np.float64 and chi.shape == (len(x), 3)
    np.testing.assert_allclose(chi.sum(1), 1.0, atol=1e-6)
    # a torch tensor and smaller chunks give the same memberships
    np.testing.assert_allclose(model.memberships(torch.as_tensor(x), chunk_size=777), chi, atol=1e-7)
    km_arrays = model.koopman_model((x[:-1], x[1:]), lag=1)
    km_data = model.koopman_model(data)
    assert km_arrays.unit == "frames"
    np.testing.assert_allclose(km_arrays.transition_matrix, km_data.transition_matrix, atol=1e-10)
    np.testing.assert_allclose(km_arrays.implied_timescales * 2.0, km_data.implied_timescales, rtol=1e-8)
    assert model.koopman_model((x[:-1], x[1:])).unit == "lags"


def test_vampnet_validation_score_is_one_estimate_over_all_pairs(trained_vampnet, hmm):
    model, data, _ = trained_vampnet
    x = torch.as_tensor(hmm[0])
    whole = model.validation_score(data)
    assert model.validation_score(data, chunk_size=1234) == pytest.approx(whole, rel=1e-10)
    model.eval()
    with torch.no_grad():
        chi = model(x).double()
    assert whole == pytest.approx(float(vamp_score(chi[:-1], chi[1:], "VAMP2", model.epsilon, model.mode)), rel=1e-6)
    model.train()
    assert model.validation_score((x[:-1], x[1:])) == pytest.approx(whole, rel=1e-10)
    assert model.training  # validation_score restores the mode


def test_vampnet_separate_lobes_and_float64():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 4))
    data = TimeLaggedDataset(x, 2, dtype=torch.float64)
    model = VAMPNet(4, 3, hidden=(8,), shared=False, dtype="float64")
    assert model.lobe_timelagged is not model.lobe
    assert any(k.startswith("lobe_t.") for k in model.state_dict())
    loss = model.training_loss(next(data.batches(200, seed=0)))
    assert loss.dtype == torch.float64 and loss.ndim == 0
    adam(model, data, 1, 1e-3, batch_size=200)
    shared = VAMPNet(4, 3, hidden=(8,))
    assert shared.lobe_timelagged is shared.lobe
    assert not any(k.startswith("lobe_t") for k in shared.state_dict())
    # float32 model fed float64 frames: inputs are cast to the parameters' dtype
    assert shared.training_loss(next(data.batches(200, seed=0))).dtype == torch.float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vampnet_config_round_trip(dtype, tmp_path):
    from safetensors.torch import load_file, save_file

    model = VAMPNet(5, 4, hidden=(16, 8), shared=False, batchnorm=True, dropout=0.1, dtype=dtype)
    model.score_method = "VAMP1"
    cfg = json.loads(json.dumps(model.config()))
    assert cfg["dtype"] == dtype and cfg["score_method"] == "VAMP1"
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))  # no shared tensors
    clone = VAMPNet.from_config(cfg)
    clone.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    x = np.random.default_rng(0).normal(size=(50, 5))
    np.testing.assert_array_equal(clone.memberships(x), model.memberships(x))
    np.testing.assert_array_equal(clone.memberships(x, instantaneous=False), model.memberships(x, instantaneous=False))
    assert clone.config() == cfg
    with pytest.raises(LssError, match="bad VAMPNet config"):
        VAMPNet.from_config({**cfg, "colour": "blue"})


# --------------------------------------------------------------------------
# SRV


def test_srv_separates_the_wells_and_estimates_the_eigenvalue(trained_srv, double_well):
    model, data, scores = trained_srv
    x, trajs, lag, lam_true = double_well
    assert scores[-1] > scores[0]
    psi = model.transform(np.concatenate(trajs))
    assert psi.shape == (len(psi), model.n_latent)
    well = np.concatenate(x) > 0
    agree = ((psi[:, 0] > 0) == well).mean()
    assert max(agree, 1 - agree) > 0.98
    # variational: close to (and in expectation below) the chain's eigenvalue
    assert model.eigenvalues[0] == pytest.approx(lam_true[1], abs=0.01)
    assert model.timescale_unit == "frames" and model.lag == lag
    np.testing.assert_allclose(model.implied_timescales, -lag / np.log(model.eigenvalues))
    assert model.n_latent == 1  # one slow process, then the largest timescale gap
    assert np.all(np.diff(model.eigenvalues) <= 0)


def test_srv_whitened_outputs_are_orthonormal(trained_srv, double_well):
    model, data, _ = trained_srv
    _, trajs, lag, _ = double_well
    x0 = np.concatenate([t[:-lag] for t in trajs])
    xt = np.concatenate([t[lag:] for t in trajs])
    p0, pt = model.transform(x0, dim=3), model.transform(xt, dim=3)
    n = len(p0)
    pooled = np.concatenate([p0, pt])
    np.testing.assert_allclose(pooled.mean(0), 0.0, atol=1e-10)
    c00 = 0.5 * (p0.T @ p0 + pt.T @ pt) / (n - 1)
    c01 = 0.5 * (p0.T @ pt + pt.T @ p0) / (n - 1)
    np.testing.assert_allclose(c00, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(c01, np.diag(model.eigenvalues), atol=1e-8)
    # ... and over the frames themselves, nearly so
    np.testing.assert_allclose(np.cov(pooled.T), np.eye(3), atol=1e-3)


def test_srv_eigenvalues_match_scipy(trained_srv, double_well):
    model, _, _ = trained_srv
    _, trajs, lag, _ = double_well
    z0 = np_outputs(model, np.concatenate([t[:-lag] for t in trajs]))
    zt = np_outputs(model, np.concatenate([t[lag:] for t in trajs]))
    mu = 0.5 * (z0.mean(0) + zt.mean(0))
    a, b = z0 - mu, zt - mu
    c00 = (a.T @ a + b.T @ b) / 2
    c01 = (a.T @ b + b.T @ a) / 2
    lam = scipy.linalg.eigh(c01, c00, eigvals_only=True)[::-1]
    np.testing.assert_allclose(model.eigenvalues, lam, rtol=1e-10, atol=1e-12)


def test_srv_sign_convention_is_deterministic(trained_srv, double_well):
    model, data, _ = trained_srv
    trajs = double_well[1]
    frames = np.concatenate(trajs)[:5000]
    psi = model.transform(frames, dim=3)
    skew = (model.transform(np.concatenate(trajs), dim=3) ** 3).mean(0)
    assert np.all(skew > 0)
    # flipping the sign of a network output and permuting the outputs gives the same psi
    clone = SRV.from_config(model.config())
    clone.load_state_dict(model.state_dict())
    last = clone.lobe[-1]
    with torch.no_grad():
        order = torch.tensor([2, 0, 1])
        sign = torch.tensor([-1.0, 1.0, -1.0], dtype=last.weight.dtype)[:, None]
        last.weight.copy_(last.weight[order] * sign)
        last.bias.copy_(last.bias[order] * sign[:, 0])
    clone.fit_whitening(data)
    np.testing.assert_allclose(clone.transform(frames, dim=3), psi, atol=1e-8)
    np.testing.assert_allclose(clone.eigenvalues, model.eigenvalues, rtol=1e-10)
    # trajectories + lag give the same whitening as the data set
    again = SRV.from_config(model.config())
    again.load_state_dict(model.state_dict())
    again.fit_whitening(trajs, lag=double_well[2])
    np.testing.assert_allclose(again.transform(frames, dim=3), psi, atol=1e-12)


def test_srv_state_dict_round_trip_keeps_whitening(trained_srv, double_well, tmp_path):
    from safetensors.torch import load_file, save_file

    model, _, _ = trained_srv
    frames = np.concatenate(double_well[1])[:2000]
    save_file(model.state_dict(), str(tmp_path / "srv.safetensors"))
    clone = SRV.from_config(json.loads(json.dumps(model.config())))
    assert not clone.is_whitened
    with pytest.raises(LssError, match="fit_whitening"):
        clone.transform(frames)
    clone.load_state_dict(load_file(str(tmp_path / "srv.safetensors")))
    assert clone.is_whitened and clone.n_latent == model.n_latent
    np.testing.assert_array_equal(clone.transform(frames), model.transform(frames))
    np.testing.assert_array_equal(clone.eigenvalues, model.eigenvalues)
    assert clone.timescale_unit == model.timescale_unit
    # casting the network keeps the whitening in float64
    clone.float()
    assert clone.whiten_vectors.dtype == torch.float64 and clone.lobe[0].weight.dtype == torch.float32
    np.testing.assert_allclose(clone.transform(frames), model.transform(frames), atol=1e-4)
    # differentiable latent coordinates
    x = torch.as_tensor(frames[:10], dtype=torch.float64).requires_grad_(True)
    model.eval()
    model.latent(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_srv_float32_with_dataset_in_ps(double_well):
    x, trajs, lag, _ = double_well
    data = TimeLaggedDataset([t.astype(np.float32) for t in trajs], lag, frame_interval_ps=0.5)
    model = SRV(4, 2, hidden=(16, 16), n_latent=2)
    assert model.config()["dtype"] == "float32"
    adam(model, data, 2, 1e-2, batch_size=4000)
    model.fit_whitening(data)
    assert model.timescale_unit == "ps" and model.lag == 0.5 * lag
    assert model.n_latent == 2
    psi = model.transform(np.concatenate(trajs).astype(np.float32))
    assert psi.dtype == np.float64 and psi.shape[1] == 2
    assert np.isfinite(psi).all()
    # float32 outputs, float64 whitening: still orthonormal to float64 round-off
    x0 = np.concatenate([t[:-lag] for t in trajs]).astype(np.float32)
    xt = np.concatenate([t[lag:] for t in trajs]).astype(np.float32)
    p0, pt = model.transform(x0), model.transform(xt)
    c00 = 0.5 * (p0.T @ p0 + pt.T @ pt) / (len(p0) - 1)
    np.testing.assert_allclose(c00, np.eye(2), atol=1e-8)


def test_choose_dim_rule():
    assert SRV.choose_dim([0.99, 0.5, 0.45]) == 1
    assert SRV.choose_dim([0.99, 0.98, 0.5, 0.4]) == 2
    assert SRV.choose_dim([0.9]) == 1
    assert SRV.choose_dim([0.9, -0.1, 0.0]) == 1  # non-positive eigenvalues have no timescale
    # t = 999, 499, 333, 1.4 frames: ratios 2, 1.5, 231 -> three slow processes
    assert SRV.choose_dim([0.999, 0.998, 0.997, 0.5]) == 3
    # the gap is a ratio of timescales, not a difference of eigenvalues
    assert SRV.choose_dim([0.99, 0.9, 0.8, 0.2]) == 1


def test_srv_errors():
    with pytest.raises(LssError):
        SRV(3, 2, n_latent=3)
    with pytest.raises(LssError):
        SRV(3, 0)
    model = SRV(3, 2)
    with pytest.raises(LssError, match="lag"):
        model.fit_whitening(np.zeros((100, 3)))
    with pytest.raises(LssError, match="TimeLaggedDataset"):
        model.validation_score("not data")


def test_two_stage_training_through_the_shared_loop(hmm):
    """VAMP-1 pre-training then VAMP-2, as in the paper, with lss_engine.train.fit."""
    import lss_engine.train as train_mod

    x, s, _ = hmm
    data = TimeLaggedDataset(x[:20000], 1)
    train, val = data.split(0.2)
    cfg = train_mod.TrainConfig(epochs=3, batch_size=1000, lr=5e-3, patience=None, lr_patience=None, progress=False)

    def factory(score_method):
        return lambda seed: VAMPNet(5, 3, hidden=(32, 16), score_method=score_method)

    pre = train_mod.fit(factory("VAMP1"), train, val, cfg, stage="vamp1")
    result = train_mod.fit(factory("VAMP2"), train, val, cfg, stage="vamp2", initial_state=pre.model)
    assert result.model.score_method == "VAMP2"
    assert result.best_score == pytest.approx(result.model.validation_score(val), rel=1e-10)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(s[:20000])).double()
    best = float(vamp_score(onehot[:-1], onehot[1:], "VAMP2", 1e-10, "trunc"))
    assert result.best_score == pytest.approx(best, abs=0.05)
