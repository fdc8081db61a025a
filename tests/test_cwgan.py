"""The cWGAN decoder on a toy whose answer is known, and its training through the shared loop.

Toy: three atoms A-B-C with bonds |AB| = 0.15 nm, |BC| = 0.13 nm (each with
0.002 nm noise) and a bond angle that depends on a 1-D latent coordinate,
angle = 110 deg + 30 deg * psi (+ 2 deg noise), psi ~ U[-1, 1], each frame
randomly rotated and translated.  A decoder that ignores psi would put the
mean angle at 110 deg everywhere; one that learned p(x | psi) reproduces the
conditional mean angle and the bond lengths of the data.
"""
from __future__ import annotations

import json
import math

import mdtraj as md
import numpy as np
import pytest
import torch

from lss_engine.bundle import ModelBundle
from lss_engine.decoder_data import DecoderDataset, align_to_reference, mean_structure
from lss_engine.errors import LssError, NonFiniteError
from lss_engine.models import CWGANDecoder
from lss_engine.models.cwgan import binned_distance_w1
from lss_engine.train import TrainConfig, TrainingWarning, fit

BONDS = (0.15, 0.13)
SMALL = dict(noise_dim=8, hidden=(64, 64), n_critic=5)


def random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, a, b, c = q.T
    return np.stack([
        np.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)], -1),
        np.stack([2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)], -1),
        np.stack([2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)], -1),
    ], 1)


def true_angle(psi):
    return 110.0 + 30.0 * np.asarray(psi)


def toy(n, seed=0):
    rng = np.random.default_rng(seed)
    psi = rng.uniform(-1, 1, n)
    theta = np.deg2rad(true_angle(psi) + rng.normal(0, 2, n))
    b1 = BONDS[0] + rng.normal(0, 0.002, n)
    b2 = BONDS[1] + rng.normal(0, 0.002, n)
    x = np.zeros((n, 3, 3))
    x[:, 0, 0] = b1
    x[:, 2, 0], x[:, 2, 1] = b2 * np.cos(theta), b2 * np.sin(theta)
    x = np.einsum("nij,nkj->nki", random_rotations(rng, n), x) + rng.normal(0, 1, (n, 1, 3))
    return psi[:, None], x


def angles(x):
    u, v = x[:, 0] - x[:, 1], x[:, 2] - x[:, 1]
    cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    return np.rad2deg(np.arccos(np.clip(cos, -1, 1)))


def cfg(**kwargs):
    base = dict(epochs=40, batch_size=128, lr=1e-3, patience=None, lr_patience=None, progress=False, device="cpu")
    base.update(kwargs)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def toy_data():
    psi, x = toy(4000)
    data = DecoderDataset(psi, x)
    return data.split(0.2, seed=0)


@pytest.fixture(scope="module")
def trained(toy_data):
    train, val = toy_data
    return fit(lambda seed: CWGANDecoder(1, 3, **SMALL).fit_normalization(train), train, val, cfg())


# --------------------------------------------------------------------------
# what the decoder learned


@pytest.mark.parametrize("psi", [-0.6, 0.0, 0.6])
def test_decoded_structures_follow_the_latent_coordinate(trained, psi):
    """Conditional mean angle within 4 deg and mean bond lengths within 0.005 nm of the truth.

    4 deg is a tenth of the 36 deg the mean angle moves between psi = -0.6
    and 0.6 (a decoder ignoring psi is 18 deg off at either end) and twice
    the angle noise; 0.005 nm is 3 % of a bond, 2.5 times its noise (a
    2000-sample mean has a standard error of ~5e-5, so the tolerance is for
    the model's bias).  Observed over six training seeds: <= 1.5 deg and <= 0.0015 nm.
    """
    decoded = trained.model.decode(np.full((2000, 1), psi), seed=1)
    assert decoded.shape == (2000, 3, 3) and np.isfinite(decoded).all()
    a = angles(decoded)
    assert abs(a.mean() - true_angle(psi)) < 4.0
    assert 0.5 < a.std() < 6.0  # noise drives a spread (the data's is 2 deg), not a collapse nor a smear
    for (i, j), length in zip([(0, 1), (1, 2)], BONDS):
        r = np.linalg.norm(decoded[:, i] - decoded[:, j], axis=-1)
        assert abs(r.mean() - length) < 0.005


def test_training_history_and_score(trained, toy_data):
    _, val = toy_data
    history = trained.history
    assert set(history[0]["train_metrics"]) == {"wasserstein", "gradient_penalty", "generator_loss"}
    assert all(math.isfinite(h["train_loss"]) for h in history)
    # the structure score improved a lot over the first epoch's, and is what fit() kept
    assert trained.best_score > 3 * history[0]["val_score"]  # scores are negative distances
    assert trained.best_score == pytest.approx(trained.model.validation_score(val), rel=1e-6)
    assert -trained.best_score < 0.003  # nm, mean W1 of the three distances' distributions per psi bin
    assert int(trained.model.critic_steps) > 0


def test_validation_score_is_conditional():
    """The binned W1 is 0 for the real frames, and sees frames shuffled across psi that match the marginal."""
    psi, x = toy(2000, seed=3)
    latent = torch.as_tensor(psi)
    real = torch.as_tensor(align_to_reference(x, x[0]))
    shuffled = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))]
    assert float(binned_distance_w1(latent, real, real, 4)) == 0.0
    marginal = float(binned_distance_w1(latent, real, shuffled, 1))
    conditional = float(binned_distance_w1(latent, real, shuffled, 4))
    assert marginal < 1e-3 and conditional > 5 * marginal


# --------------------------------------------------------------------------
# the gradient penalty


def test_gradient_penalty_matches_direct_autograd():
    torch.manual_seed(0)
    model = CWGANDecoder(2, 4, noise_dim=3, hidden=(16, 16), dtype="float64")
    real, fake, u = torch.randn(7, 12, dtype=torch.float64), torch.randn(7, 12, dtype=torch.float64), torch.randn(
        7, 2, dtype=torch.float64)
    eps = torch.rand(7, 1, dtype=torch.float64)
    gp = model.gradient_penalty(real, fake, u, eps)
    expected = []
    for k in range(7):  # one sample at a time, the critic's gradient with respect to its configuration input
        point = (eps[k] * real[k] + (1 - eps[k]) * fake[k]).clone().requires_grad_(True)
        out = model.critic(torch.cat([point, u[k]])[None])[0, 0]
        (grad,) = torch.autograd.grad(out, point)
        expected.append((grad.norm() - 1) ** 2)
    torch.testing.assert_close(gp, torch.stack(expected).mean(), rtol=1e-12, atol=1e-12)
    # differentiable with respect to the critic's weights (the update needs it); the output bias
    # does not change the input gradient, so it gets none
    gp.backward()
    grads = {name: p.grad for name, p in model.critic.named_parameters()}
    last_bias = f"{len(model.critic) - 1}.bias"
    assert grads.pop(last_bias) is None
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in model.generator.parameters())


def test_critic_features_enter_the_penalty_and_the_average_tracks_the_generator(toy_data):
    """With pair distances and a torsion in the critic's input, the penalty is still the gradient with
    respect to the configuration (now through the features); the weight average decodes."""
    torch.manual_seed(1)
    model = CWGANDecoder(2, 4, noise_dim=3, hidden=(16, 16), critic_distances=True, critic_torsions=[[0, 1, 2, 3]],
                         ema_decay=0.9, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (50, 4, 3)) + np.array([[0, 0, 0], [0.15, 0, 0], [0.2, 0.14, 0], [0.35, 0.14, 0.05]])
    model.fit_normalization((rng.normal(size=(50, 2)), x))
    dist = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)[:, *np.triu_indices(4, 1)]
    torch.testing.assert_close(model.distance_shift, torch.as_tensor(dist.mean(0)))
    real, fake = torch.randn(7, 12, dtype=torch.float64), torch.randn(7, 12, dtype=torch.float64)
    u, eps = torch.randn(7, 2, dtype=torch.float64), torch.rand(7, 1, dtype=torch.float64)
    assert model.critic_input(real, u).shape == (7, 12 + 6 + 2 + 2)
    gp = model.gradient_penalty(real, fake, u, eps)
    expected = []
    for k in range(7):
        point = (eps[k] * real[k] + (1 - eps[k]) * fake[k]).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.score(point[None], u[k : k + 1])[0], point)
        expected.append((grad.norm() - 1) ** 2)
    torch.testing.assert_close(gp, torch.stack(expected).mean(), rtol=1e-12, atol=1e-12)
    # the average starts as the generator, is not trained directly, and follows it with a lag
    avg, gen = model.generator_average, model.generator
    assert all(torch.equal(a, g) for a, g in zip(avg.parameters(), gen.parameters()))
    assert not any(p.requires_grad for p in avg.parameters())
    opts = model.configure_optimizers(1e-2)
    assert not {id(p) for p in avg.parameters()} & {id(p) for g in opts["generator"].param_groups for p in g["params"]}
    batch = (torch.as_tensor(rng.normal(size=(50, 2))), torch.as_tensor(x))
    before = [p.clone() for p in avg.parameters()]
    for _ in range(3 * model.n_critic):
        model.training_step(batch, opts)
    moved = [float((a - b).abs().max()) for a, b in zip(avg.parameters(), before)]
    lag = [float((a - g.detach()).abs().max()) for a, g in zip(avg.parameters(), gen.parameters())]
    assert max(moved) > 0 and max(lag) > 0
    latent = rng.normal(size=(5, 2))
    with torch.no_grad():
        noise = torch.randn((5, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        u5 = model._latent_in(torch.as_tensor(latent))
        expected_xyz = model._coords_out(model.generate(u5, noise, averaged=True)).numpy()
    np.testing.assert_allclose(model.decode(latent, seed=4), expected_xyz, rtol=1e-12)
    # round trip, and a config written before these options existed still loads (as neither)
    clone = CWGANDecoder.from_config(json.loads(json.dumps(model.config())))
    clone.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(clone.decode(latent, seed=4), model.decode(latent, seed=4))
    legacy = {k: v for k, v in model.config().items() if k not in ("critic_distances", "critic_torsions", "ema_decay")}
    old = CWGANDecoder.from_config(legacy)
    assert not old.critic_distances and old.critic_torsions == () and old.ema_decay == 0
    assert not hasattr(old, "generator_average")
    with pytest.raises(LssError, match="critic torsion"):
        CWGANDecoder(1, 4, critic_torsions=[[0, 1, 2, 2]])
    with pytest.raises(LssError, match="critic torsion"):
        CWGANDecoder(1, 4, critic_torsions=[[0, 1, 2, 4]])
    with pytest.raises(LssError, match="ema_decay"):
        CWGANDecoder(1, 4, ema_decay=1.0)


def test_critic_pairs_are_chosen_from_the_training_structure_and_kept_in_the_config():
    """Pairs within a cutoff of the mean structure plus the bonded ones; the list travels in the config, and a
    config without it (older bundles) means all pairs, as before."""
    from lss_engine.features import geometry
    from lss_engine.models.cwgan import select_critic_pairs, torsion_sin_cos

    chain = np.array([[0.15 * k, 0.02 * (k % 2), 0.0] for k in range(6)])  # a straight-ish chain, 0.15 nm apart
    pairs = select_critic_pairs(chain, 0.32, bonded=[[0, 3], [3, 0]])
    near = [(i, j) for i in range(6) for j in range(i + 1, 6) if np.linalg.norm(chain[i] - chain[j]) < 0.32]
    assert pairs.tolist() == [list(p) for p in sorted(set(near) | {(0, 3)})]
    assert select_critic_pairs(chain, 10.0).tolist() == np.stack(np.triu_indices(6, 1), 1).tolist()
    with pytest.raises(LssError, match="cutoff"):
        select_critic_pairs(chain, 0.0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = chain + rng.normal(0, 0.01, (40, 6, 3))
    psi = rng.normal(size=(40, 1))
    model = CWGANDecoder(1, 6, noise_dim=3, hidden=(16,), critic_distances=True, critic_pairs=pairs.tolist(),
                         critic_torsions=[[0, 1, 2, 3]], dtype="float64").fit_normalization((psi, x))
    dist = np.linalg.norm(x[:, pairs[:, 0]] - x[:, pairs[:, 1]], axis=-1)
    torch.testing.assert_close(model.distance_shift, torch.as_tensor(dist.mean(0)))
    y = model._coords_in(torch.as_tensor(x))
    u = model._latent_in(torch.as_tensor(psi))
    seen = model.critic_input(y, u)
    assert seen.shape == (40, 18 + len(pairs) + 2 + 1)
    # the features are geometry's kernels
    xt = torch.as_tensor(x)
    torch.testing.assert_close(seen[:, 18 : 18 + len(pairs)] * model.distance_scale + model.distance_shift,
                               geometry.distances(xt, torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])))
    spread = torch.randn(10, 4, 3, dtype=torch.float64)  # far from collinear: the gradient floor is negligible
    angle = geometry.dihedrals(spread, torch.tensor([[0, 1, 2, 3]]))
    torch.testing.assert_close(torsion_sin_cos(spread, torch.tensor([[0, 1, 2, 3]])),
                               torch.cat([angle.sin(), angle.cos()], 1))
    # the pair list is in the (JSON) config: a reload needs no data
    config = json.loads(json.dumps(model.config()))
    assert config["critic_pairs"] == pairs.tolist()
    clone = CWGANDecoder.from_config(config)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.critic_input(y, u), seen, rtol=0, atol=0)
    # older configs say critic_distances only: all pairs
    legacy = {k: v for k, v in config.items() if k != "critic_pairs"}
    old = CWGANDecoder.from_config(legacy)
    assert old.critic_pairs is None and old.pair_index.shape == (2, 15)
    assert torch.equal(old.pair_index, torch.triu_indices(6, 6, 1))
    with pytest.raises(LssError, match="critic_distances"):
        CWGANDecoder(1, 6, critic_pairs=[[0, 1]])
    with pytest.raises(LssError, match="critic pair"):
        CWGANDecoder(1, 6, critic_distances=True, critic_pairs=[[0, 6]])
    with pytest.raises(LssError, match="critic pair"):
        CWGANDecoder(1, 6, critic_distances=True, critic_pairs=[[2, 2]])
    with pytest.raises(LssError, match="empty"):
        CWGANDecoder(1, 6, critic_distances=True, critic_pairs=[])


# --------------------------------------------------------------------------
# decoding, config and state


def test_decode_is_reproducible_for_a_seed(trained):
    model = trained.model
    latent = np.linspace(-1, 1, 50)[:, None]
    state = torch.get_rng_state()
    one, two = model.decode(latent, seed=7), model.decode(latent, seed=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, model.decode(latent, seed=8))
    many = model.decode(latent, seed=7, n_samples_per_point=4, batch_size=64)
    assert many.shape == (200, 3, 3)
    # the samples of point i are rows 4i..4i+3: their angles follow psi_i
    per_point = angles(many).reshape(50, 4).mean(axis=1)
    assert np.corrcoef(per_point, latent[:, 0])[0, 1] > 0.95
    torch_latent = torch.as_tensor(latent, dtype=torch.float32)
    np.testing.assert_array_equal(model.decode(torch_latent, seed=7), one)


def test_config_and_state_round_trip(trained, tmp_path):
    model = trained.model
    config = json.loads(json.dumps(model.config()))
    clone = CWGANDecoder.from_config(config)
    clone.load_state_dict(model.state_dict())
    latent = np.array([[-0.5], [0.5]])
    np.testing.assert_array_equal(clone.decode(latent, seed=3), model.decode(latent, seed=3))
    assert set(model.state_dict()) >= {"latent_shift", "latent_scale", "coord_shift", "coord_scale", "reference",
                                       "norm_fitted", "critic_steps"}
    bundle = ModelBundle()
    bundle.add("decoder", model, atoms=[0, 1, 2])
    bundle.save(tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["stages"]["decoder"]["type"] == "cwgan"
    loaded = ModelBundle.load(tmp_path / "model")["decoder"]
    np.testing.assert_array_equal(loaded.model.decode(latent, seed=3), model.decode(latent, seed=3))
    assert loaded.meta == {"atoms": [0, 1, 2]}
    with pytest.raises(LssError, match="bad CWGANDecoder config"):
        CWGANDecoder.from_config({**config, "colour": "red"})


# --------------------------------------------------------------------------
# the shared training loop: checkpoints, resume, NaN recovery


class Interrupted(CWGANDecoder):
    """Raises KeyboardInterrupt at a given training step, or NaN from a given step."""

    def __init__(self, *args, interrupt_at=None, nan_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.interrupt_at, self.nan_at = 0, interrupt_at, nan_at

    def training_step(self, batch, optimizers):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        metrics = super().training_step(batch, optimizers)
        if self.calls == self.nan_at:
            metrics["loss"] = float("nan")
        return metrics


@pytest.fixture(scope="module")
def small_data():
    psi, x = toy(800, seed=1)
    return DecoderDataset(psi, x).split(0.25, seed=1)


@pytest.mark.parametrize("extra", [{}, {"critic_distances": True, "ema_decay": 0.9}], ids=["plain", "features+average"])
def test_checkpoint_resume_is_bit_identical(small_data, tmp_path, extra):
    train, val = small_data
    config = cfg(epochs=4, restarts=2, batch_size=64, lr_patience=1, seed=5)
    steps = len(train) // 64
    plan = {"on": True}

    def make(seed):
        interrupt = 2 * steps + 3 if plan["on"] and seed == 6 else None
        return Interrupted(1, 3, **SMALL, **extra, interrupt_at=interrupt).fit_normalization(train)

    straight = fit(lambda seed: Interrupted(1, 3, **SMALL, **extra).fit_normalization(train), train, val, config)
    with pytest.raises(KeyboardInterrupt):
        fit(make, train, val, config, checkpoint_dir=tmp_path)
    record = json.loads((tmp_path / "train" / "checkpoint.json").read_text())
    assert (record["progress"]["restart"], record["progress"]["epoch"]) == (1, 2)
    assert record["optimizer"] is None and set(record["optimizers"]) == {"critic", "generator"}
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "train" / record["state_file"])
    assert {k.split("/")[0] for k in tensors} >= {"optim.critic", "optim.generator", "model", "rng"}
    plan["on"] = False
    resumed = fit(make, train, val, config, checkpoint_dir=tmp_path)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    assert straight.scores == resumed.scores


def test_non_finite_step_restores_and_halves_the_learning_rate(small_data):
    train, val = small_data
    with pytest.warns(TrainingWarning, match="training step's loss is nan; restored"):
        result = fit(lambda seed: Interrupted(1, 3, **SMALL, nan_at=4).fit_normalization(train), train, val,
                     cfg(epochs=2, batch_size=64))
    assert [h["nan_restores"] for h in result.history] == [1, 0]
    assert [h["lr"] for h in result.history] == [5e-4, 5e-4]
    # both optimisers' learning rates were halved, the model is finite
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_plateau_reduces_every_optimiser(small_data):
    train, val = small_data
    seen = []

    class Spy(CWGANDecoder):
        def training_step(self, batch, optimizers):
            seen.append({k: o.param_groups[0]["lr"] for k, o in optimizers.items()})
            return super().training_step(batch, optimizers)

        def validation_score(self, data):
            return 0.0  # never improves after the first epoch

    fit(lambda seed: Spy(1, 3, **SMALL).fit_normalization(train), train, val,
        cfg(epochs=3, batch_size=64, lr_patience=1, lr_factor=0.5))
    assert seen[0] == {"critic": 1e-3, "generator": 1e-3} and seen[-1] == {"critic": 5e-4, "generator": 5e-4}


# --------------------------------------------------------------------------
# data and bad input


def test_alignment_matches_mdtraj_superpose():
    # five atoms, not planar (mdtraj's quaternion fit does not converge for three)
    rng = np.random.default_rng(2)
    base = rng.normal(0, 0.2, (5, 3))
    x = base + rng.normal(0, 0.02, (50, 5, 3))
    x = np.einsum("nij,nkj->nki", random_rotations(rng, 50), x) + rng.normal(0, 1, (50, 1, 3))
    ref = mean_structure(x)
    aligned = align_to_reference(x, ref)
    top = md.Topology()
    chain = top.add_chain()
    res = top.add_residue("TOY", chain)
    for name in "ABCDE":
        top.add_atom(name, md.element.carbon, res)
    expected = md.Trajectory(x.astype(np.float32), top).superpose(md.Trajectory(ref[None].astype(np.float32), top))
    np.testing.assert_allclose(aligned, expected.xyz, atol=2e-4)  # mdtraj fits in float32
    # the reference is a fixed point: the mean of the frames aligned onto it
    np.testing.assert_allclose(aligned.mean(axis=0), ref, atol=1e-6)
    # internal geometry is untouched
    np.testing.assert_allclose(angles(aligned), angles(x), atol=1e-6)
    psi, planar = toy(50, seed=2)  # three atoms: still a proper superposition
    flat = align_to_reference(planar, planar[0])
    np.testing.assert_allclose(angles(flat), angles(planar), atol=1e-6)
    np.testing.assert_allclose(flat[0], planar[0], atol=1e-9)


def test_dataset_split_and_batches():
    psi, x = toy(1000, seed=4)
    data = DecoderDataset(psi, x, reference="first")
    np.testing.assert_allclose(data.reference, x[0])
    train, val = data.split(0.2, seed=0)
    assert len(train) + len(val) == 1000 and abs(len(val) - 200) <= 50
    seen = torch.cat([lat for lat, _ in train.batches(64, seed=0)])
    assert len(seen) == len(train) and len(torch.unique(seen)) == len(train)
    lat, coords = next(iter(val.batches(10, shuffle=False)))
    assert lat.shape == (10, 1) and coords.shape == (10, 3, 3) and coords.dtype == torch.float32
    assert len(list(train.batches(64, seed=0, drop_last=True))) == len(train) // 64


def test_bad_input_is_a_clear_error(trained):
    model = trained.model
    psi, x = toy(20)
    with pytest.raises(LssError, match=r"latent must have shape \(n_frames, 1\)"):
        model.decode(np.zeros((5, 2)))
    with pytest.raises(LssError, match="latent must have shape"):
        model.decode(np.zeros(5))
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        model.decode(np.array([[0.0], [np.nan]]))
    with pytest.raises(LssError, match="n_samples_per_point"):
        model.decode(np.zeros((2, 1)), n_samples_per_point=0)
    with pytest.raises(LssError, match="not fitted"):
        CWGANDecoder(1, 3).decode(np.zeros((2, 1)))
    with pytest.raises(LssError, match="coordinates must have shape"):
        model.validation_score((psi, x[:, :2]))
    with pytest.raises(LssError, match="paired frame by frame"):
        DecoderDataset(psi[:10], x)
    bad = x.copy()
    bad[3, 1, 2] = np.nan
    with pytest.raises(NonFiniteError, match="frame 3"):
        DecoderDataset(psi, bad)
    with pytest.raises(LssError, match=r"\(n_frames, n_atoms, 3\)"):
        DecoderDataset(psi, x[:, :, :2])
    with pytest.raises(LssError, match="constant"):
        CWGANDecoder(1, 3).fit_normalization((np.zeros((20, 1)), x))
    with pytest.raises(LssError, match="n_atoms"):
        CWGANDecoder(1, 0)
    data = DecoderDataset(psi, x)
    with pytest.raises(LssError, match="grad_clip"):
        fit(lambda seed: CWGANDecoder(1, 3, **SMALL).fit_normalization(data), data, data, cfg(grad_clip=1.0))
