"""VAMP numerics (lss_engine.models.vamp) against independent references:
float64 numpy/scipy formulas, deeptime, and one-hot data of known Markov chains."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from lss_engine.errors import LssError
from lss_engine.models import vamp as V
from lss_engine.models.vampnet import koopman_model_from_memberships


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: torch's thread pool only adds overhead (and contention on busy CI)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------
# data and references


def correlated_pairs(n=2000, d=4, seed=0, dtype=torch.float64):
    """Pairs (x, y) with y a noisy linear map of x: full-rank, non-symmetric dynamics."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)
    a = rng.normal(size=(d, d)) * 0.6
    y = x @ a + rng.normal(size=(n, d)) + 0.5
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)


def np_covariances(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    n = len(x)
    return xc.T @ xc / (n - 1), xc.T @ yc / (n - 1), yc.T @ yc / (n - 1)


def np_inv_sqrt(c):
    return np.real(scipy.linalg.inv(scipy.linalg.sqrtm(c)))


def np_koopman(x, y):
    c00, c01, c11 = np_covariances(x, y)
    return (np_inv_sqrt(c00) @ c01 @ np_inv_sqrt(c11)).T


def sample_chain(T, n_steps, rng, s0=0):
    """One trajectory of the Markov chain with transition matrix T."""
    cdf = np.cumsum(T, axis=1)
    u = rng.random(n_steps)
    s = np.empty(n_steps, dtype=np.int64)
    s[0] = s0
    for i in range(1, n_steps):
        s[i] = min(np.searchsorted(cdf[s[i - 1]], u[i], side="right"), len(T) - 1)
    return s


def one_hot(s, n):
    out = np.zeros((len(s), n))
    out[np.arange(len(s)), s] = 1.0
    return out


T4 = np.array(
    [
        [0.90, 0.05, 0.03, 0.02],
        [0.04, 0.85, 0.10, 0.01],
        [0.02, 0.08, 0.80, 0.10],
        [0.05, 0.01, 0.14, 0.80],
    ]
)


@pytest.fixture(scope="module")
def chain_pairs():
    """One-hot pairs of 3 trajectories of a 4-state chain at lag 2, and their count matrix."""
    rng = np.random.default_rng(42)
    lag, x0, xt = 2, [], []
    counts = np.zeros((4, 4))
    for k in range(3):
        s = sample_chain(T4, 20000, rng, s0=k)
        np.add.at(counts, (s[:-lag], s[lag:]), 1.0)
        x0.append(one_hot(s[:-lag], 4))
        xt.append(one_hot(s[lag:], 4))
    return np.concatenate(x0), np.concatenate(xt), counts, lag


# --------------------------------------------------------------------------
# covariances and inverses


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_covariances_match_numpy(dtype):
    x, y = correlated_pairs(dtype=dtype)
    ref = np_covariances(x, y)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for got, want in zip(V.covariances(x, y), ref):
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    # raw second moments with 1/N
    raw = V.covariances(x, y, remove_mean=False)
    xn, yn = x.double().numpy(), y.double().numpy()
    np.testing.assert_allclose(raw[1].double().numpy(), xn.T @ yn / len(xn), rtol=tol)


def test_symmetrized_covariances_match_numpy():
    x, y = correlated_pairs()
    xn, yn = x.numpy(), y.numpy()
    mu = 0.5 * (xn.mean(0) + yn.mean(0))
    xc, yc = xn - mu, yn - mu
    n = len(xn)
    c00 = 0.5 * (xc.T @ xc + yc.T @ yc) / (n - 1)
    c01 = 0.5 * (xc.T @ yc + yc.T @ xc) / (n - 1)
    c00s, c01s = V.symmetrized_covariances(x, y)
    np.testing.assert_allclose(c00s.numpy(), c00, rtol=1e-12)
    np.testing.assert_allclose(c01s.numpy(), c01, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(c01s.numpy(), c01s.numpy().T)


def test_sym_inverse_sqrt_regularize_and_trunc():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    c = a @ a.T + 0.1 * np.eye(5)
    eps = 1e-3
    got = V.sym_inverse_sqrt(torch.tensor(c), eps, "regularize").numpy()
    np.testing.assert_allclose(got, np_inv_sqrt(c + eps * np.eye(5)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(V.sym_inverse(torch.tensor(c), eps, "regularize").numpy(),
                               np.linalg.inv(c + eps * np.eye(5)), rtol=1e-10, atol=1e-12)
    # rank-deficient: trunc is the pseudo-inverse square root
    b = rng.normal(size=(5, 3))
    c = b @ b.T
    got = V.sym_inverse_sqrt(torch.tensor(c), 1e-8, "trunc").numpy()
    want = np.real(scipy.linalg.sqrtm(np.linalg.pinv(c, rcond=1e-10)))
    np.testing.assert_allclose(got, want, atol=1e-8)
    # batched: two matrices at once give the same as one by one
    cs = torch.tensor(np.stack([c, c + np.eye(5)]))
    batched = V.sym_inverse_sqrt(cs, 1e-8, "trunc")
    np.testing.assert_allclose(batched[1].numpy(), V.sym_inverse_sqrt(cs[1], 1e-8, "trunc").numpy(), atol=1e-12)


# --------------------------------------------------------------------------
# Koopman matrix and scores


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_koopman_and_scores_match_numpy(dtype):
    x, y = correlated_pairs(dtype=dtype)
    k_ref = np_koopman(x.double().numpy(), y.double().numpy())
    sv = np.linalg.svd(k_ref, compute_uv=False)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    eps = 1e-12 if dtype == torch.float64 else 1e-6
    k = V.koopman_matrix(x, y, epsilon=eps, mode="trunc")
    assert k.dtype == dtype
    np.testing.assert_allclose(k.double().numpy(), k_ref, rtol=tol, atol=tol)
    for method, want in [("VAMP1", 1 + sv.sum()), ("VAMP2", 1 + (sv**2).sum()), ("VAMPE", 1 + (sv**2).sum())]:
        got = V.vamp_score(x, y, method, epsilon=eps, mode="trunc")
        assert got.ndim == 0 and got.dtype == dtype
        assert float(got) == pytest.approx(want, rel=tol), method
        assert float(V.vampnet_loss(x, y, method, eps, "trunc")) == pytest.approx(-want, rel=tol)


@pytest.mark.parametrize("mode", ["trunc", "regularize"])
@pytest.mark.parametrize("method", ["VAMP1", "VAMP2"])
def test_scores_match_deeptime(method, mode):
    from deeptime.decomposition.deep import koopman_matrix, vamp_score, vampnet_loss

    x, y = correlated_pairs(n=500, d=5, seed=3)
    eps = 1e-6
    assert float(V.vamp_score(x, y, method, eps, mode)) == pytest.approx(
        float(vamp_score(x, y, method, eps, mode)), rel=1e-12
    )
    assert float(V.vampnet_loss(x, y, method, eps, mode)) == pytest.approx(
        float(vampnet_loss(x, y, method, eps, mode)), rel=1e-12
    )
    np.testing.assert_allclose(
        V.koopman_matrix(x, y, eps, mode).numpy(), koopman_matrix(x, y, eps, mode).numpy(), rtol=1e-10, atol=1e-12
    )


def test_scores_of_softmax_outputs_match_deeptime_float32():
    """Rank-deficient, as in training (softmax outputs sum to 1), in float32: both
    implementations agree with the float64 value as far as float32 round-off lets
    them (the null direction of C00 holds only noise, amplified by 1/sqrt(epsilon))."""
    from deeptime.decomposition.deep import vamp_score

    x, y = correlated_pairs(n=1000, d=4, seed=5, dtype=torch.float32)
    chi0, chit = torch.softmax(x, 1), torch.softmax(y, 1)
    for method, rel in (("VAMP1", 2e-3), ("VAMP2", 1e-5)):
        exact = float(V.vamp_score(chi0.double(), chit.double(), method, 1e-6, "regularize"))
        assert float(vamp_score(chi0.double(), chit.double(), method, 1e-6, "regularize")) == pytest.approx(exact, rel=1e-12)
        assert float(V.vamp_score(chi0, chit, method, 1e-6, "regularize")) == pytest.approx(exact, rel=rel)
        assert float(vamp_score(chi0, chit, method, 1e-6, "regularize")) == pytest.approx(exact, rel=rel)


def test_vampe_matches_deeptime_vamp_estimator():
    """VAMP-E on the estimation data and on held-out data, against deeptime's numpy VAMP.

    (deeptime's torch ``vamp_score(method='VAMPE')`` pairs the singular vectors
    of the transposed Koopman matrix and disagrees for non-symmetric dynamics;
    its numpy ``CovarianceKoopmanModel.score`` is the reference here.)"""
    from deeptime.decomposition import VAMP

    x, y = correlated_pairs(n=800, d=4, seed=7)
    x2, y2 = correlated_pairs(n=800, d=4, seed=8)
    train = VAMP(epsilon=1e-10).fit((x.numpy(), y.numpy())).fetch_model()
    test = VAMP(epsilon=1e-10).fit((x2.numpy(), y2.numpy())).fetch_model()
    covs, covs_test = V.covariances(x, y), V.covariances(x2, y2)
    for r, method in [(1, "VAMP1"), (2, "VAMP2"), ("E", "VAMPE")]:
        assert float(V.vamp_score_from_covariances(*covs, method, 1e-10)) == pytest.approx(train.score(r), rel=1e-10)
    got = V.vamp_score_from_covariances(*covs, "VAMPE", 1e-10, test=covs_test)
    assert float(got) == pytest.approx(train.score("E", test_model=test), rel=1e-8)


# --------------------------------------------------------------------------
# one-hot data of a known Markov chain


def test_one_hot_chain_gives_the_count_transition_matrix(chain_pairs):
    x0, xt, counts, _ = chain_pairs
    t_counts = counts / counts.sum(axis=1, keepdims=True)
    # non-mean-free moments: K = C00^-1 C01 is exactly the count-based estimate
    c00, c01, _ = V.covariances(torch.tensor(x0), torch.tensor(xt), remove_mean=False)
    k = torch.linalg.solve(c00, c01).numpy()
    np.testing.assert_allclose(k, t_counts, atol=1e-10)
    model = koopman_model_from_memberships(x0, xt, lag=2, unit="frames")
    np.testing.assert_allclose(model.transition_matrix, t_counts, atol=1e-10)
    np.testing.assert_allclose(model.koopman_matrix, t_counts, atol=1e-10)
    assert model.clipped == 0.0
    # ... which approaches the true T^lag on a long chain
    np.testing.assert_allclose(k, np.linalg.matrix_power(T4, 2), atol=0.01)
    # stationary distribution and timescales of the estimate
    pi = model.stationary_distribution
    np.testing.assert_allclose(pi @ t_counts, pi, atol=1e-12)
    ev = np.sort(np.abs(np.linalg.eigvals(t_counts)))[::-1]
    np.testing.assert_allclose(np.abs(model.eigenvalues), ev, atol=1e-10)
    np.testing.assert_allclose(model.implied_timescales, -2 / np.log(ev[1:]), rtol=1e-8)


def test_one_hot_chain_scores_match_the_msm(chain_pairs):
    """Mean-free covariances of one-hot data (rank n-1): singular values and the
    VAMP-2 score equal those of the symmetrised MSM transition matrix, the +1
    standing for the constant singular function (as in deeptime's tests)."""
    x0, xt, counts, _ = chain_pairs
    t = counts / counts.sum(axis=1, keepdims=True)
    p0 = x0.mean(0)
    p1 = xt.mean(0)
    tsym = np.diag(p0**0.5) @ t @ np.diag(p1**-0.5)
    s = np.linalg.svd(tsym, compute_uv=False)
    assert s[0] == pytest.approx(1.0, abs=1e-10)
    x0t, xtt = torch.tensor(x0), torch.tensor(xt)
    k = V.koopman_matrix(x0t, xtt, epsilon=1e-10, mode="trunc")
    np.testing.assert_allclose(np.linalg.svd(k.numpy(), compute_uv=False)[:3], s[1:], atol=1e-8)
    t_adj = np.diag(1 / p1) @ t.T @ np.diag(p0)
    assert float(V.vamp_score(x0t, xtt, "VAMP2", 1e-10, "trunc")) == pytest.approx(np.trace(t @ t_adj), rel=1e-9)
    assert float(V.vamp_score(x0t, xtt, "VAMP1", 1e-10, "trunc")) == pytest.approx(s.sum(), rel=1e-9)


# --------------------------------------------------------------------------
# reversible variant


def test_reversible_scores_and_eigenvalues_match_scipy():
    x, y = correlated_pairs(n=1500, d=4, seed=11)
    c00s, c01s = (c.numpy() for c in V.symmetrized_covariances(x, y))
    lam = scipy.linalg.eigh(c01s, c00s, eigvals_only=True)[::-1]
    got = V.reversible_eigenvalues(x, y, epsilon=1e-14, mode="trunc").numpy()
    np.testing.assert_allclose(got, lam, rtol=1e-10, atol=1e-12)
    assert float(V.reversible_vamp_score(x, y, "VAMP2", 1e-14, "trunc")) == pytest.approx(1 + (lam**2).sum(), rel=1e-10)
    assert float(V.reversible_vamp_score(x, y, "VAMP1", 1e-14, "trunc")) == pytest.approx(1 + np.abs(lam).sum(), rel=1e-10)
    # swapping the direction of time changes nothing
    assert float(V.reversible_vamp_score(y, x)) == pytest.approx(float(V.reversible_vamp_score(x, y)), rel=1e-12)


# --------------------------------------------------------------------------
# streaming estimates


def test_accumulator_equals_one_shot_estimates():
    x, y = correlated_pairs(n=1003, d=3, seed=2, dtype=torch.float32)
    acc = V.CovarianceAccumulator()
    for a in range(0, len(x), 97):
        acc.update(x[a : a + 97], y[a : a + 97])
    assert acc.n == len(x)
    xd, yd = x.double(), y.double()
    for remove_mean in (True, False):
        for got, want in zip(acc.covariances(remove_mean), V.covariances(xd, yd, remove_mean)):
            assert got.dtype == torch.float64
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)
    c00s, c01s, mu = acc.symmetrized()
    r00, r01 = V.symmetrized_covariances(xd, yd)
    np.testing.assert_allclose(c00s.numpy(), r00.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c01s.numpy(), r01.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mu.numpy(), 0.5 * (xd.mean(0) + yd.mean(0)).numpy(), rtol=1e-12)


# --------------------------------------------------------------------------
# gradients and errors


@pytest.mark.parametrize("method", ["VAMP1", "VAMP2", "VAMPE"])
def test_gradients_float64(method):
    x, y = correlated_pairs(n=12, d=3, seed=4)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: V.vamp_score(a, b, method, 1e-6, "regularize"), (x, y))


@pytest.mark.parametrize("method", ["VAMP1", "VAMP2"])
def test_reversible_gradients_float64(method):
    x, y = correlated_pairs(n=12, d=3, seed=6)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: V.reversible_vamp_score(a, b, method, 1e-6, "regularize"), (x, y))


def test_trunc_gradient_is_finite_for_rank_deficient_features():
    x, y = correlated_pairs(n=200, d=3, seed=9)
    chi0 = torch.softmax(x, 1).requires_grad_(True)  # rows sum to 1: C00 has a zero eigenvalue
    chit = torch.softmax(y, 1)
    V.vamp_score(chi0, chit, "VAMP2", 1e-6, "trunc").backward()
    assert torch.isfinite(chi0.grad).all()


def test_bad_arguments_raise():
    x, y = correlated_pairs(n=10, d=2)
    with pytest.raises(LssError, match="score method"):
        V.vamp_score(x, y, "VAMP3")
    with pytest.raises(LssError, match="inverse mode"):
        V.vamp_score(x, y, "VAMP2", mode="clamp")
    with pytest.raises(LssError, match="expected"):
        V.covariances(x, y[:5])
    with pytest.raises(LssError, match="at least 2"):
        V.covariances(x[:1], y[:1])
    assert V.check_method(2) == V.check_method("vamp2") == "VAMP2"
