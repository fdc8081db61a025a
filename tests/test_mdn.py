"""MDN propagator: likelihood, training on an AR(1) process, generation, streaming, round trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from lss_engine import kinetics
from lss_engine.bundle import ModelBundle
from lss_engine.data import TimeLaggedDataset
from lss_engine.errors import LssError, NonFiniteError
from lss_engine.latent_sampling import sample_to_stores
from lss_engine.models import MDNPropagator
from lss_engine.models.mdn import MDNSampler
from lss_engine.store import open_stores
from lss_engine.train import TrainConfig, fit

# AR(1) / discretised Ornstein-Uhlenbeck process, two independent coordinates:
# x_{t+1} - m = phi (x_t - m) + sqrt(1 - phi^2) s eps  ->  stationary N(m, s^2), acf(k) = phi^k
PHI = np.array([0.9, 0.7])
SD = np.array([1.0, 0.5])
MEAN = np.array([3.0, -1.0])


def ar1(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, 2))
    x[0] = MEAN + SD * rng.standard_normal(2)
    noise = rng.standard_normal((n, 2)) * SD * np.sqrt(1 - PHI**2)
    for i in range(1, n):
        x[i] = MEAN + PHI * (x[i - 1] - MEAN) + noise[i]
    return x


@pytest.fixture(scope="module")
def ar1_data():
    return ar1(20_000, seed=0).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(ar1_data):
    """An MDN trained on the AR(1) pairs at lag 1 (a few seconds)."""
    data = TimeLaggedDataset([ar1_data], lag=1)
    train, val = data.split(0.2)
    result = fit(lambda seed: MDNPropagator(2, 3, hidden=(32, 32), activation="tanh").fit_normalization(train),
                 train, val, TrainConfig(epochs=30, batch_size=256, lr=3e-3, patience=5, progress=False,
                                         device="cpu"))
    return result.model


def random_model(bounded: bool = False, dtype: str = "float64", seed: int = 0, **kw) -> MDNPropagator:
    torch.manual_seed(seed)
    model = MDNPropagator(2, 4, hidden=(16, 16), bounded=bounded, dtype=dtype, **kw)
    rng = np.random.default_rng(seed)
    with torch.no_grad():  # small residuals and unit widths: a random walk that does not blow up
        model.net[-1].weight.mul_(0.1)
        model.net[-1].bias.mul_(0.1)
    return model.fit_normalization(rng.normal([2.0, -5.0], [0.3, 4.0], size=(500, 2)))


# -- likelihood ------------------------------------------------------------------


@pytest.mark.parametrize("bounded", [False, True])
def test_log_prob_matches_scipy_mixture(bounded):
    model = random_model(bounded).eval()
    rng = np.random.default_rng(1)
    x0 = rng.normal([2.0, -5.0], [0.3, 4.0], size=(50, 2))
    xt = rng.normal([2.0, -5.0], [0.3, 4.0], size=(50, 2))
    with torch.no_grad():
        log_w, means, stds = (t.numpy() for t in model(x0))
        ours = model.log_prob(x0, xt).numpy()
    assert np.allclose(np.exp(log_w).sum(1), 1.0)
    ref = np.array([
        logsumexp([np.log(np.exp(log_w[n, c]) * multivariate_normal(means[n, c], np.diag(stds[n, c] ** 2)).pdf(xt[n]))
                   for c in range(4)])
        for n in range(50)
    ])
    assert np.allclose(ours, ref, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        assert float(model.training_loss((torch.as_tensor(x0), torch.as_tensor(xt)))) == pytest.approx(-ref.mean())
    # validation_score: -mean NLL over all pairs, in chunks
    assert model.validation_score((x0, xt), chunk_size=7) == pytest.approx(ref.mean(), rel=1e-12)


def test_variance_floor():
    model = MDNPropagator(2, 1, hidden=(8,), min_std=0.01, dtype="float64")
    model.fit_normalization(np.random.default_rng(0).normal(0.0, [2.0, 0.5], size=(1000, 2)))
    last = model.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3:].fill_(-60.0)  # log-std outputs (after 1 logit and 2 means): exp(-60) << min_std
    x0 = np.array([[0.3, -0.2]])
    with torch.no_grad():
        _, means, stds = model(x0)
        scale = model.norm_scale.numpy()
        assert np.allclose(stds.numpy()[0, 0], 0.01 * scale, rtol=1e-12)
        assert np.allclose(means.numpy()[0, 0], x0[0])  # zero residual: the mean is x0
        at_mean = float(model.log_prob(x0, x0))
    expected = -np.sum(np.log(0.01 * scale)) - np.log(2 * np.pi)
    assert at_mean == pytest.approx(expected, rel=1e-12)
    # far from the mean the NLL is large but finite
    with torch.no_grad():
        assert np.isfinite(float(model.log_prob(x0, x0 + 10.0)))
    with pytest.raises(LssError, match="min_std"):
        MDNPropagator(2, min_std=0.0)


# -- sampling --------------------------------------------------------------------


def test_sampling_draws_from_the_mixture():
    """A network with constant output: one step from 0 is a draw from a known mixture."""
    model = MDNPropagator(1, 3, hidden=(4,), dtype="float64")
    last = model.net[-1]
    weights = np.array([0.2, 0.3, 0.5])
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*np.log(weights), -10.0, 0.0, 10.0, *np.log([0.5, 1.0, 0.25])]))
    x = model.propagate([0.0], 1, n_walkers=200_000, seed=0)[:, 1, 0]
    for k, (centre, sd) in enumerate(((-10.0, 0.5), (0.0, 1.0), (10.0, 0.25))):
        part = x[np.abs(x - centre) < 5]
        assert len(part) / len(x) == pytest.approx(weights[k], abs=0.005)
        assert part.mean() == pytest.approx(centre, abs=0.01)
        assert part.std() == pytest.approx(sd, rel=0.02)


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "gelu", "softplus"])
def test_fast_forward_equals_network(activation):
    model = MDNPropagator(3, 5, hidden=(16, 8), activation=activation, dtype="float64").eval()
    sampler = MDNSampler(model, np.zeros(3), n_walkers=20, seed=0, device="cpu")
    z = torch.randn(20, 3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(sampler._forward(z, sampler._buffers()), model.net(z), rtol=1e-12, atol=1e-12)


def test_propagate_is_reproducible_for_a_seed():
    model = random_model(dtype="float32")
    a = model.propagate([2.0, -5.0], 50, n_walkers=4, seed=11, device="cpu")
    b = model.propagate([2.0, -5.0], 50, n_walkers=4, seed=11, device="cpu")
    c = model.propagate([2.0, -5.0], 50, n_walkers=4, seed=12, device="cpu")
    assert a.shape == (4, 51, 2) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(a[:, 0], [2.0, -5.0])
    assert not np.array_equal(a[0], a[1])  # walkers are independent
    starts = np.array([[2.0, -5.0], [2.5, 0.0], [1.5, -9.0]])
    d = model.propagate(starts, 10, seed=1)
    assert d.shape == (3, 11, 2) and np.allclose(d[:, 0], starts)
    assert np.array_equal(d, model.propagate(starts, 10, n_walkers=3, seed=1))
    threads = torch.get_num_threads()
    model.propagate(starts, 10, seed=1, threads=threads + 1)
    assert torch.get_num_threads() == threads  # set for the loop only
    with pytest.raises(LssError, match="walkers"):
        model.propagate(starts, 10, n_walkers=2)
    with pytest.raises(LssError, match="coordinates"):
        model.propagate([0.0, 1.0, 2.0], 10)


def test_divergence_is_reported():
    model = random_model(dtype="float32")
    with torch.no_grad():
        model.net[-1].bias[-8:].fill_(100.0)  # sigma = exp(100) overflows float32
    with pytest.raises(NonFiniteError, match="step 1"):
        model.propagate([2.0, -5.0], 5, seed=0)


def test_chunked_sampler_equals_one_shot():
    model = random_model(dtype="float32")
    one = model.propagate([2.0, -5.0], 700, n_walkers=5, seed=3)
    sampler = model.sampler([2.0, -5.0], n_walkers=5, seed=3)
    assert sampler.block_steps < 700  # noise blocks are refilled inside the run
    parts = [sampler.run(n) for n in (1, 255, 3, 300, 141)]
    assert np.array_equal(np.concatenate(parts).transpose(1, 0, 2), one[:, 1:])


def test_sample_to_stores_streams_the_one_shot_trajectory(tmp_path):
    model = random_model(dtype="float32")
    start = np.array([[2.0, -5.0], [2.2, -1.0], [1.8, -7.0]])
    paths = sample_to_stores(model, start, 300, 3, out_dir=tmp_path / "synth", frame_interval_ps=2.5,
                             names=["a", "b"], seed=5, chunk_steps=37, progress=False)
    assert [p.name for p in paths] == ["walker_000.zarr", "walker_001.zarr", "walker_002.zarr"]
    one = model.propagate(start, 300, seed=5)
    stores = open_stores(tmp_path / "synth")
    assert len(stores) == 3
    for w, store in enumerate(stores):
        assert store.n_frames == 301 and store.feature_names == ["a", "b"]
        assert store.frame_interval_ps == 2.5 and store.observable_names == ["latent"]
        assert np.array_equal(store.steps(), np.arange(301))
        assert np.allclose(store.times(), np.arange(301) * 2.5)
        assert np.array_equal(store.features(), one[w])
    # the stores are training data again
    data = TimeLaggedDataset(stores, lag="5ps")
    assert data.lag == 2 and len(data) == 3 * 299
    with pytest.raises(LssError, match="exists"):
        sample_to_stores(model, start, 10, 3, out_dir=tmp_path / "synth", frame_interval_ps=2.5, progress=False)
    sample_to_stores(model, start[0], 10, 2, out_dir=tmp_path / "synth", frame_interval_ps=2.5, progress=False,
                     overwrite=True, chunk_steps=4)
    assert [s.n_frames for s in open_stores(tmp_path / "synth")] == [11, 11]  # walker 2 of the first run is gone


# -- training --------------------------------------------------------------------


def test_fitted_mdn_recovers_the_ar1_process(fitted, ar1_data):
    lo, hi = np.quantile(ar1_data, [0.05, 0.95], axis=0)
    grid = np.linspace(lo, hi, 9)
    mean, var = fitted.conditional_moments(grid)
    assert np.all(np.abs(mean - (MEAN + PHI * (grid - MEAN))) < 0.08 * SD)
    ratio = var / (SD**2 * (1 - PHI**2))
    assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio
    # a generated trajectory: stationary variance and autocorrelation time of the process
    traj = fitted.propagate(MEAN, 20_000, n_walkers=50, seed=3)[:, 1000:]
    assert np.allclose(traj.mean(axis=(0, 1)), MEAN, atol=0.1 * SD)
    assert np.allclose(traj.var(axis=(0, 1)), SD**2, rtol=0.10)
    acf = kinetics.autocorrelation(list(traj.astype(np.float64)), 40)
    times = [kinetics.fit_exponential_time(acf[:, j]) for j in range(2)]
    assert np.allclose(times, -1 / np.log(PHI), rtol=0.10), times
    assert fitted.at_bound_fraction(traj) < 1e-3


def test_bounded_formulation_stays_in_range(ar1_data):
    data = TimeLaggedDataset([ar1_data], lag=1)
    train, val = data.split(0.2)
    result = fit(lambda seed: MDNPropagator(2, 3, hidden=(32, 32), bounded=True).fit_normalization(train),
                 train, val, TrainConfig(epochs=5, batch_size=256, lr=3e-3, progress=False, device="cpu"))
    model = result.model
    lo, hi = model.data_min.numpy(), model.data_max.numpy()
    x0, xt = train[:]
    frames = torch.cat([x0, xt]).numpy()
    assert np.array_equal(lo, frames.min(0)) and np.array_equal(hi, frames.max(0))  # training frames' range
    traj = model.propagate(MEAN, 5_000, n_walkers=20, seed=0)
    assert np.all(traj >= lo - 1e-5 * (hi - lo)) and np.all(traj <= hi + 1e-5 * (hi - lo))
    fraction = model.at_bound_fraction(traj)
    print(f"bounded MDN on AR(1): fraction of frames at a bound {fraction:.2e}")
    assert 0.0 <= fraction < 0.5
    # the fraction counts frames with any coordinate on a bound
    frames = np.array([[lo[0], MEAN[1]], [MEAN[0], hi[1]], MEAN, MEAN])
    assert model.at_bound_fraction(frames) == 0.5
    with pytest.raises(LssError, match="fit_normalization"):
        MDNPropagator(2).at_bound_fraction(frames)


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("bounded, transform", [(False, "standard"), (True, "standard"), (False, "quantile")])
def test_config_state_dict_and_bundle_round_trip(bounded, transform, tmp_path):
    model = random_model(bounded, dtype="float32", seed=4, min_std=0.02, transform=transform)
    rebuilt = MDNPropagator.from_config(model.config())
    rebuilt.load_state_dict(model.state_dict())
    bundle = ModelBundle()
    bundle.add("propagator", model, lag_ps=10.0)
    bundle.save(tmp_path / "model")
    loaded = ModelBundle.load(tmp_path / "model")["propagator"]
    assert loaded.meta == {"lag_ps": 10.0}
    x0 = np.random.default_rng(3).normal([2.0, -5.0], [0.3, 4.0], size=(20, 2))
    ref = model.propagate(x0, 30, seed=9)
    with torch.no_grad():
        lp = model.log_prob(x0, x0[::-1].copy())
    for other in (rebuilt, loaded.model):
        assert other.config() == model.config()
        assert np.array_equal(other.propagate(x0, 30, seed=9), ref)
        with torch.no_grad():
            assert torch.equal(other.log_prob(x0, x0[::-1].copy()), lp)
    with pytest.raises(LssError, match="config"):
        MDNPropagator.from_config({"n_dim": 2, "wobble": 1})


# -- the quantile (marginal Gaussianisation) transform ------------------------------


def two_basin_jumps(n: int, seed: int) -> np.ndarray:
    """A 1-D coordinate like an SRV indicator: narrow basins at 0 and 5, an empty gap, jumps with p = 0.01."""
    rng = np.random.default_rng(seed)
    state = np.cumsum(rng.random(n) < 0.01) % 2
    return (5.0 * state + 0.05 * rng.standard_normal(n)).astype(np.float32)[:, None]


def test_quantile_transform_is_a_normalised_change_of_variables():
    x = two_basin_jumps(5000, seed=1).astype(np.float64)
    model = MDNPropagator(1, 3, hidden=(8,), transform="quantile", n_knots=64, dtype="float64").fit_normalization(x)
    xt = torch.as_tensor(np.linspace(-1.0, 6.0, 57)[:, None])
    z = model._to_internal(xt)
    assert torch.allclose(model._from_internal(z), xt, atol=1e-12)
    assert bool((z[1:] >= z[:-1]).all())  # monotone, also beyond the data (linear extrapolation)
    z_data = model._to_internal(torch.as_tensor(x))
    assert abs(float(z_data.mean())) < 0.05 and abs(float(z_data.std()) - 1.0) < 0.05  # Gaussianised
    # p_x(y | x0) = p_z(z(y) | x0) |dz/dy|: integrates to 1 over y, and equals a finite-difference Jacobian
    grid = torch.linspace(-2.0, 7.0, 200_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        p = torch.exp(model.log_prob(torch.full_like(grid, 0.02), grid))
    assert abs(float(torch.trapezoid(p, grid[:, 0])) - 1.0) < 2e-3
    y = torch.tensor([[0.01], [4.9], [2.5]], dtype=torch.float64)
    h = 1e-7
    jac = (model._to_internal(y + h) - model._to_internal(y - h)) / (2 * h)
    assert torch.allclose(model._log_jacobian(y), torch.log(jac[:, 0]), atol=1e-5)
    with pytest.raises(LssError, match="transform"):
        MDNPropagator(1, transform="rank")
    with pytest.raises(LssError, match="transformed coordinates"):
        model(y)


def saturating_two_basins(n: int, seed: int) -> np.ndarray:
    """Like an SRV coordinate near saturation: basins pressed against hard edges at 0 and 5, jumps with p = 0.01."""
    rng = np.random.default_rng(seed)
    state = np.cumsum(rng.random(n) < 0.01) % 2
    spread = np.abs(0.1 * rng.standard_normal(n))
    return np.where(state == 1, 5.0 - spread, spread).astype(np.float32)[:, None]


def test_quantile_mdn_respects_hard_edges_and_keeps_the_kinetics():
    """Standard scores let Gaussian steps spill over the edges of saturated basins; the quantile map does not."""
    x = saturating_two_basins(20_000, seed=2)
    data = TimeLaggedDataset([x], lag=1)
    train, val = data.split(0.2)
    found = {}
    for transform in ("standard", "quantile"):
        result = fit(lambda seed: MDNPropagator(1, 4, hidden=(32, 32), transform=transform).fit_normalization(train),
                     train, val, TrainConfig(epochs=8, batch_size=256, lr=3e-3, progress=False, device="cpu", seed=0))
        traj = result.model.propagate(np.array([0.0]), 20_000, seed=1)[0, 1:, 0]
        cores = np.where(traj < 0.5, 0, np.where(traj > 4.5, 1, -1))  # frames between the cores keep the last core
        last = np.maximum.accumulate(np.where(cores >= 0, np.arange(len(cores)), 0))
        core = cores[last]
        found[transform] = {"outside": float(np.mean((traj < 0) | (traj > 5))),
                            "jumps": float(np.mean(core[1:] != core[:-1])), "score": result.best_score}
    print(f"saturated two-basin toy: {found}")
    assert found["standard"]["outside"] > 0.05
    assert found["quantile"]["outside"] < 0.01
    assert abs(found["quantile"]["jumps"] / 0.01 - 1) < 0.4  # the data jump between cores with p = 0.01
    assert found["quantile"]["score"] > found["standard"]["score"]  # a better likelihood of held-out pairs
