"""LSTM language model (LSTM paper) and the discretiser: numpy data only, fast."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lss_engine.bundle import ModelBundle
from lss_engine.data import SequenceDataset
from lss_engine.discretize import Discretizer, core_short_visits
from lss_engine.errors import LssError
from lss_engine.models import LSTMLanguageModel, embedding_transition_matrix, kinetic_distance
from lss_engine.train import TrainConfig, fit

#: a 3-state Markov chain with distinct rows
P = np.array([[0.90, 0.08, 0.02],
              [0.10, 0.80, 0.10],
              [0.05, 0.15, 0.80]])


def stationary(T: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eig(T.T)
    pi = np.real(v[:, np.argmax(np.real(w))])
    return pi / pi.sum()


def markov_chain(T: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cdf, u = T.cumsum(1), rng.random(n)
    x = np.empty(n, dtype=np.int64)
    x[0] = 0
    for t in range(1, n):
        x[t] = min(np.searchsorted(cdf[x[t - 1]], u[t]), len(T) - 1)
    return x


def empirical(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Label frequencies and row-normalised transition counts of (S, T) sequences."""
    labels = np.atleast_2d(labels)
    pi = np.bincount(labels.ravel(), minlength=n) / labels.size
    C = np.zeros((n, n))
    np.add.at(C, (labels[:, :-1].ravel(), labels[:, 1:].ravel()), 1)
    return pi, C / C.sum(1, keepdims=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small LSTMs run fastest on one thread (and far faster on a busy CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained():
    """An LSTM trained with lss_engine.train.fit on 60k labels of the chain P."""
    x = markov_chain(P, 60_000, seed=0)
    train, val = SequenceDataset(x, 33, stride=32).split(0.2)
    # a decaying learning rate (cut on every plateau): without it, optimiser noise shifts
    # the learned stationary distribution by ~0.02
    cfg = TrainConfig(epochs=12, batch_size=32, lr=1e-2, patience=None, lr_patience=0, lr_factor=0.3,
                      progress=False, seed=0)
    result = fit(lambda seed: LSTMLanguageModel(3, embedding_dim=4, hidden=16), train, val, cfg)
    return result


def untrained(n_labels: int = 4, **kw) -> LSTMLanguageModel:
    torch.manual_seed(3)
    return LSTMLanguageModel(n_labels, embedding_dim=5, hidden=12, **kw).eval()


# ------------------------------------------------------------------ learning a Markov chain
def test_trained_lstm_reproduces_markov_chain(trained):
    pi_true = stationary(P)
    entropy_rate = -(pi_true[:, None] * P * np.log(P)).sum()
    # the validation cross-entropy approaches the chain's entropy rate (the path-entropy argument)
    assert -trained.best_score == pytest.approx(entropy_rate, abs=0.01)
    g = trained.model.generate(2000, n_sequences=50, seed=1)[:, 100:]
    pi, T = empirical(g, 3)
    np.testing.assert_allclose(pi, pi_true, atol=0.02)
    np.testing.assert_allclose(T, P, atol=0.02)


def test_validation_score_is_minus_mean_cross_entropy(trained):
    model = trained.model
    windows = torch.as_tensor(markov_chain(P, 3 * 21, seed=5).reshape(3, 21))
    with torch.no_grad():
        logp = torch.log_softmax(model(windows[:, :-1])[0], -1).numpy()
    targets = windows[:, 1:].numpy()
    ce = -np.mean(np.take_along_axis(logp, targets[..., None], -1))
    assert model.validation_score(windows.numpy(), chunk_size=2) == pytest.approx(-ce, rel=1e-6)
    ds = SequenceDataset(windows.reshape(-1).numpy(), 21, stride=21)
    assert model.validation_score(ds) == pytest.approx(-ce, rel=1e-6)
    assert float(model.training_loss(windows).detach()) == pytest.approx(ce, rel=1e-5)


# ---------------------------------------------------------------------------- sampling
def test_zero_temperature_is_argmax_of_the_model():
    model = untrained()
    prefix = np.array([[0, 1, 2, 3, 3], [3, 3, 2, 1, 0]])
    g = model.generate(30, start=prefix, temperature=0.0, seed=0)
    assert g.shape == (2, 30)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(np.concatenate([prefix, g[:, :-1]], axis=1)))
    np.testing.assert_array_equal(logits[:, prefix.shape[1] - 1:].argmax(-1).numpy(), g)
    # a tiny temperature samples the argmax too
    np.testing.assert_array_equal(model.generate(30, start=prefix, temperature=1e-4, seed=9), g)


def test_high_temperature_flattens(trained):
    g = trained.model.generate(3000, n_sequences=20, temperature=1e4, seed=2)
    pi, T = empirical(g, 3)
    np.testing.assert_allclose(pi, 1 / 3, atol=0.02)
    np.testing.assert_allclose(T, 1 / 3, atol=0.03)
    # while T = 1 keeps the chain's sticky diagonal
    _, T1 = empirical(trained.model.generate(1000, n_sequences=20, seed=2), 3)
    assert np.diag(T1).min() > 0.7


def test_generate_is_reproducible_for_a_seed():
    model = untrained()
    a = model.generate(200, n_sequences=7, seed=11)
    b = model.generate(200, n_sequences=7, seed=11)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 4
    assert not np.array_equal(a, model.generate(200, n_sequences=7, seed=12))
    assert len({tuple(r) for r in a}) == 7  # the sequences are not copies of each other


def test_batched_generation_equals_sequential():
    """Per-sequence seeds: a sequence is the same whether generated alone or in a batch
    (across a block of pre-drawn random numbers, too)."""
    model = untrained()
    seeds = [10, 11, 12, 13]
    starts = np.array([0, 1, 2, 3])
    n = 1100  # > one block of random numbers
    batched = model.generate(n, n_sequences=4, start=starts, seed=seeds)
    for k in range(4):
        alone = model.generate(n, start=int(starts[k]), seed=[seeds[k]])
        np.testing.assert_array_equal(batched[k], alone[0])


def test_start_forms():
    model = untrained()
    assert model.generate(5, n_sequences=3).shape == (3, 5)
    assert model.generate(5, n_sequences=3, start=2).shape == (3, 5)
    assert model.generate(5, start=np.array([0, 1, 2, 3, 0])).shape == (5, 5)  # rows set S
    assert model.generate(5, n_sequences=4, start=np.array([[0, 1, 2]])).shape == (4, 5)  # one row broadcast
    with pytest.raises(LssError):
        model.generate(5, n_sequences=3, start=np.array([0, 1]))
    with pytest.raises(LssError):
        model.generate(5, start=7)
    with pytest.raises(LssError):
        model.generate(5, temperature=-1.0)
    with pytest.raises(LssError):
        model.generate(5, n_sequences=2, seed=[1])


# ---------------------------------------------------------------------------- persistence
def test_config_state_dict_and_bundle_round_trip(tmp_path):
    model = untrained(n_labels=5, layers=2, dropout=0.1)
    config = model.config()
    assert config == {"n_labels": 5, "embedding_dim": 5, "hidden": 12, "layers": 2, "dropout": 0.1,
                      "dtype": "float32"}
    clone = LSTMLanguageModel.from_config(config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.as_tensor(np.random.default_rng(0).integers(0, 5, (3, 40)))
    with torch.no_grad():
        torch.testing.assert_close(clone(x)[0], model(x)[0], rtol=0, atol=0)
    np.testing.assert_array_equal(clone.generate(50, n_sequences=3, seed=4), model.generate(50, n_sequences=3, seed=4))

    bundle = ModelBundle()
    bundle.add("propagator", model, discretizer=Discretizer.uniform(5, range=(-1.0, 1.0)).config())
    bundle.save(tmp_path / "lstm")
    loaded = ModelBundle.load(tmp_path / "lstm")
    stage = loaded["propagator"]
    assert isinstance(stage.model, LSTMLanguageModel) and stage.model.config() == config
    with torch.no_grad():
        torch.testing.assert_close(stage.model(x)[0], model(x)[0], rtol=0, atol=0)
    np.testing.assert_array_equal(stage.model.generate(50, n_sequences=3, seed=4),
                                  model.generate(50, n_sequences=3, seed=4))
    assert Discretizer.from_config(stage.meta["discretizer"]) == Discretizer.uniform(5, range=(-1.0, 1.0))


def test_float64_model_and_bad_configs():
    model = LSTMLanguageModel(3, 2, 4, dtype="float64")
    assert model.output.weight.dtype == torch.float64 and model.config()["dtype"] == "float64"
    assert model.generate(10, seed=0).shape == (1, 10)
    with pytest.raises(LssError):
        LSTMLanguageModel.from_config({"n_labels": 3, "bogus": 1})
    with pytest.raises(LssError):
        LSTMLanguageModel(3, dropout=0.2)  # dropout needs layers > 1
    with pytest.raises(LssError):
        model.training_loss(torch.tensor([[0, 1, 3]]))  # label out of range


# ------------------------------------------------------------------------ kinetic distance
def test_kinetic_distance_matches_direct_computation():
    model = untrained(n_labels=4)
    e = model.embedding.weight.detach().double().numpy()
    pi = np.array([0.1, 0.2, 0.3, 0.4])
    Q = np.empty((4, 4))
    for l in range(4):
        for m in range(4):
            Q[l, m] = np.exp(e[m] @ e[l]) / sum(np.exp(e[k] @ e[l]) for k in range(4))
    np.testing.assert_allclose(embedding_transition_matrix(model), Q, rtol=1e-12)
    t = kinetic_distance(model, pi * 3.0)  # normalised internally
    for l in range(4):
        for m in range(4):
            if l == m:
                assert np.isnan(t[l, m])
            else:
                assert t[l, m] == pytest.approx(1.0 / (pi[l] * Q[l, m] + pi[m] * Q[m, l]), rel=1e-12)
    tn = kinetic_distance(e, pi, normalize=True)  # an embedding matrix works too
    off = ~np.eye(4, dtype=bool)
    assert tn[off].min() == pytest.approx(0.0) and tn[off].max() == pytest.approx(1.0)
    np.testing.assert_allclose(tn[off], (t[off] - t[off].min()) / (t[off].max() - t[off].min()), rtol=1e-12)
    with pytest.raises(LssError):
        kinetic_distance(model, [0.5, 0.5])


# ------------------------------------------------------------------------------ discretiser
def test_coring_of_short_visits_on_hand_made_labels():
    lab = np.array([0, 0, 0, 1, 0, 0, 0, 2, 2, 1, 1, 1])
    np.testing.assert_array_equal(core_short_visits(lab, 3), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(core_short_visits(lab, 1), lab)
    # short visits before the first long one keep their labels; a chain of short visits
    # takes the label of the last long visit, not of the short one before it
    lab = np.array([2, 1, 1, 0, 0, 0, 3, 1, 1, 3, 3, 3])
    np.testing.assert_array_equal(core_short_visits(lab, 3), [2, 1, 1, 0, 0, 0, 0, 0, 0, 3, 3, 3])
    # raising min_visit removes the middle visit too
    np.testing.assert_array_equal(core_short_visits(np.array([0] * 4 + [1] * 3 + [0] * 4), 4), [0] * 11)
    with pytest.raises(LssError):
        core_short_visits(lab, 0)


def test_discretiser_bins_centres_kmeans_and_config():
    d = Discretizer.uniform(4, range=(0.0, 4.0))
    np.testing.assert_array_equal(d.to_labels(np.array([-1.0, 0.0, 0.5, 1.2, 3.99, 4.0, 9.0])),
                                  [0, 0, 0, 1, 3, 3, 3])
    np.testing.assert_allclose(d.centers, [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(d.decode(np.array([[0, 3]])), [[0.5, 3.5]])
    # bins from data cover the data; coring applies per trajectory of a list
    x = np.array([0.0, 0.1, 0.9, 0.1, 0.0, 1.0, 1.0, 1.0])
    dd = Discretizer.uniform(2, data=x, min_visit=2)
    out = dd.to_labels([x, x[::-1]])
    np.testing.assert_array_equal(out[0], [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(out[1], [1, 1, 1, 0, 0, 0, 0, 0])
    # nearest centre, 1-D and 2-D
    c = Discretizer.from_centers([2.0, 0.5, -0.5, -2.0])
    np.testing.assert_array_equal(c.to_labels(np.array([3.0, 1.0, 0.1, -0.2, -5.0])), [0, 1, 1, 2, 3])
    c2 = Discretizer.from_centers([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(c2.to_labels(np.array([[0.1, 0.2], [0.9, 0.6]])), [0, 1])
    # k-means finds well separated clusters, sorted
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(m, 0.1, 300) for m in (3.0, -2.0, 0.5)])
    k = Discretizer.kmeans(data, 3, seed=1)
    np.testing.assert_allclose(k.centers, [-2.0, 0.5, 3.0], atol=0.03)
    for disc in (d, dd, c, c2, k):
        again = Discretizer.from_config(disc.config())
        assert again == disc
        np.testing.assert_array_equal(again.to_labels(data if disc.dim == 1 else np.c_[data, data]),
                                      disc.to_labels(data if disc.dim == 1 else np.c_[data, data]))
    with pytest.raises(LssError):
        Discretizer.uniform(3, range=(1.0, 1.0))
    with pytest.raises(LssError):
        Discretizer.from_config({"kind": "bins", "range": [0, 1], "n_labels": 2, "extra": 1})
    with pytest.raises(LssError):
        d.decode(np.array([4]))
