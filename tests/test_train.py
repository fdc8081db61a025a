"""The training loop on a tiny linear model x0 -> xt of an AR(1) process.

The data go through the real :class:`lss_engine.data.TimeLaggedDataset`; the
model, written here, implements the :class:`lss_engine.train.Trainable`
protocol with an MSE loss and ``validation_score = -MSE``.  Hooks on the
model (scripted scores, NaN at a given step, an interrupt at a given step)
drive the loop into each of its branches.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from lss_engine.data import TimeLaggedDataset
from lss_engine.errors import LssError, NonFiniteError
from lss_engine.train import TrainConfig, TrainingWarning, TrainResult, fit, save_history

A = np.array([[0.5, 0.3], [-0.2, 0.7]])
NOISE = 0.1
BATCH = 200


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.zeros((2000, 2))
    for t in range(1, len(x)):
        x[t] = A @ x[t - 1] + rng.normal(0.0, 1.0, 2)
    x *= 1.0  # unit-ish scale
    dataset = TimeLaggedDataset(x.astype(np.float32), lag=1)
    return dataset.split(0.2, seed=0)


def steps_per_epoch(train) -> int:
    return len(train) // BATCH  # drop_last


class Linear(nn.Module):
    """x0 -> xt by one linear layer; hooks make it fail on purpose."""

    def __init__(self, seed: int, *, dropout: float = 0.0, offset: float = 0.0, scripted=None,
                 nan_at=None, nan_kind="loss", nan_after=None, interrupt_at=None):
        super().__init__()
        self.seed, self.dropout_p, self.offset = seed, dropout, offset
        self.lin = nn.Linear(2, 2)
        self.drop = nn.Dropout(dropout)
        self.scripted, self.snapshots = scripted, []
        self.nan_at, self.nan_kind, self.nan_after = nan_at, nan_kind, nan_after
        self.interrupt_at = interrupt_at
        self.steps = self.val_calls = 0
        self.tf32_seen = []

    def forward(self, x):
        return self.lin(self.drop(x))

    def training_loss(self, batch):
        x0, xt = batch
        self.steps += 1
        if self.interrupt_at == self.steps:
            raise KeyboardInterrupt
        loss = ((self(x0) - xt) ** 2).mean()
        if (self.nan_at == self.steps and self.nan_kind == "loss") or (
            self.nan_after is not None and self.steps > self.nan_after
        ):
            loss = loss * float("nan")
        if self.nan_at == self.steps and self.nan_kind == "grad":
            loss = loss.clone()
            loss.register_hook(lambda g: g * float("nan"))  # finite loss, NaN gradients
        return loss

    def validation_score(self, dataset):
        self.val_calls += 1
        self.tf32_seen.append(torch.backends.cuda.matmul.allow_tf32)
        assert not torch.is_grad_enabled() and not self.training
        if self.scripted is not None:
            self.snapshots.append(self.lin.weight.detach().clone())
            return self.scripted[self.val_calls - 1]
        if self.nan_at == self.val_calls and self.nan_kind == "val":
            return float("nan")
        x0, xt = dataset[:]
        device = self.lin.weight.device
        return -float(((self(x0.to(device)) - xt.to(device)) ** 2).mean()) + self.offset

    def config(self):
        return {"seed": self.seed, "dropout": self.dropout_p}


def factory(**kwargs):
    def make(seed):
        return Linear(seed, **kwargs)

    return make


def cfg(**kwargs) -> TrainConfig:
    base = dict(epochs=6, batch_size=BATCH, lr=1e-2, patience=None, lr_patience=None, progress=False)
    base.update(kwargs)
    return TrainConfig(**base)


@torch.no_grad()
def mse_score(dataset, predict) -> float:
    x0, xt = dataset[:]
    return -float(((predict(x0) - xt) ** 2).mean())


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    sa, sb = weights(a), weights(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


def strip_times(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def snapshot_dir(path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------


def test_loss_decreases_and_beats_baselines(data):
    train, val = data
    result = fit(factory(), train, val, cfg(epochs=25, lr=5e-2, patience=5, lr_patience=2))
    assert isinstance(result, TrainResult)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    persistence = mse_score(val, lambda x0: x0)  # x_t ~ x_0
    mean_only = mse_score(val, lambda x0: torch.zeros_like(x0))
    assert result.best_score > max(persistence, mean_only) + 0.2
    assert result.best_score > -1.0 * 1.15  # the noise variance is 1: close to optimal
    np.testing.assert_allclose(result.model.lin.weight.detach().numpy(), A, atol=0.1)
    # the returned model: on the CPU, in eval mode, and its score is the best score
    assert next(result.model.parameters()).device.type == "cpu" and not result.model.training
    assert math.isclose(mse_score(val, result.model), result.best_score, rel_tol=1e-5)
    assert result.best_score == max(h["val_score"] for h in result.history)
    assert result.history[result.best_epoch]["improved"] and result.scores == [result.best_score]
    assert result.device == "cpu" and result.stage == "train"


def test_early_stopping_restores_best_epoch_and_lr_drops_on_plateau(data):
    train, val = data
    models = []

    def make(seed):
        models.append(Linear(seed, scripted=[1.0, 2.0, 3.0, 2.5, 2.0, 1.0, 0.0, -1.0]))
        return models[-1]

    result = fit(make, train, val, cfg(epochs=8, patience=2, lr_patience=1, lr=1e-2, lr_factor=0.5))
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4]
    assert [h["stop"] for h in result.history] == [None, None, None, None, "patience"]
    assert [h["improved"] for h in result.history] == [True, True, True, False, False]
    assert result.best_epoch == 2 and result.best_score == 3.0
    # the weights of epoch 2, not those of the last epoch
    torch.testing.assert_close(result.model.lin.weight, models[0].snapshots[2], rtol=0, atol=0)
    assert not torch.equal(models[0].snapshots[2], models[0].snapshots[4])
    # one epoch without improvement halves the learning rate for the next epoch
    assert [h["lr"] for h in result.history] == [1e-2, 1e-2, 1e-2, 1e-2, 5e-3]


def test_a_callback_can_end_a_restart(data):
    train, val = data
    seen = []

    def callback(record, model):
        seen.append((record["restart"], record["epoch"], isinstance(model, Linear)))
        return record["epoch"] == 1

    result = fit(factory(), train, val, cfg(epochs=5, restarts=2), callbacks=[callback])
    assert seen == [(0, 0, True), (0, 1, True), (1, 0, True), (1, 1, True)]
    assert [h["stop"] for h in result.history] == [None, "callback", None, "callback"]


def test_restarts_keep_the_best_seed(data):
    train, val = data
    seeds = []

    def make(seed):
        seeds.append(seed)
        return Linear(seed, offset=-100.0 if seed == 10 else 0.0)  # restart 0 is bad

    result = fit(make, train, val, cfg(restarts=3, seed=10, epochs=4))
    assert seeds == [10, 11, 12]
    assert len(result.scores) == 3 and result.scores[0] < -50
    assert result.best_restart == int(np.argmax(result.scores)) != 0
    assert result.best_score == max(result.scores)
    assert result.model.seed == 10 + result.best_restart and result.model.offset == 0.0
    assert [h["restart"] for h in result.history] == [0] * 4 + [1] * 4 + [2] * 4
    assert {h["seed"] for h in result.history if h["restart"] == 1} == {11}
    # different seeds give different models
    assert result.scores[1] != result.scores[2]


@pytest.mark.parametrize("kind, at", [("loss", 5), ("grad", 5), ("val", 2)])
def test_non_finite_values_restore_and_halve_the_learning_rate(data, kind, at):
    train, val = data
    config = cfg(epochs=6, lr=4e-2)
    with pytest.warns(TrainingWarning, match="restored the state at the start of the epoch and halved"):
        result = fit(factory(nan_at=at, nan_kind=kind), train, val, config)
    restores = [h["nan_restores"] for h in result.history]
    hit = 1 if kind == "val" else 0  # val call 2 is epoch 1; step 5 is in epoch 0
    assert restores == [1 if i == hit else 0 for i in range(6)]
    assert [h["lr"] for h in result.history] == [4e-2] * hit + [2e-2] * (6 - hit)
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_score"]) for h in result.history)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    # recovered and trained on
    assert result.best_score > result.history[0]["val_score"] + 0.1
    assert result.best_score > mse_score(val, lambda x0: x0)


def test_repeated_non_finite_values_end_the_restart(data):
    train, val = data
    nb = steps_per_epoch(train)
    # NaN from epoch 2 on: two restores, then the restart ends with its best epoch (0 or 1)
    with pytest.warns(TrainingWarning) as caught:
        result = fit(factory(nan_after=2 * nb), train, val, cfg(epochs=6, max_nan_restores=2))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 and "halved the learning rate to 0.005" in messages[0]
    assert "0.0025 (restore 2 of 2)" in messages[1] and "gave up on this restart" in messages[2]
    assert result.history[-1]["stop"] == "non_finite" and result.history[-1]["val_score"] is None
    assert result.history[-1]["nan_restores"] == 3
    assert len(result.history) == 3 and result.best_epoch in (0, 1)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    # a restart that never completes an epoch scores NaN; another restart wins
    with pytest.warns(TrainingWarning):
        mixed = fit(lambda seed: Linear(seed, nan_after=0 if seed == 0 else None), train, val,
                    cfg(epochs=2, restarts=2, max_nan_restores=0))
    assert math.isnan(mixed.scores[0]) and mixed.best_restart == 1 and math.isfinite(mixed.scores[1])
    assert [(h["restart"], h["stop"]) for h in mixed.history] == [(0, "non_finite"), (1, None), (1, "epochs")]
    # when no restart completes an epoch there is no model
    with pytest.warns(TrainingWarning), pytest.raises(NonFiniteError, match="none of the 2 restarts"):
        fit(factory(nan_after=0), train, val, cfg(restarts=2, max_nan_restores=1))


def test_deterministic_for_a_seed(data):
    train, val = data
    config = cfg(epochs=4, restarts=2, patience=2, lr_patience=1)
    one = fit(factory(dropout=0.2), train, val, config)
    two = fit(factory(dropout=0.2), train, val, config)
    assert_same_weights(one.model, two.model)
    assert strip_times(one.history) == strip_times(two.history)
    other = fit(factory(dropout=0.2), train, val, cfg(epochs=4, restarts=2, patience=2, lr_patience=1, seed=7))
    assert not torch.equal(one.model.lin.weight, other.model.lin.weight)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after fit


@pytest.mark.parametrize("restart, epoch", [(0, 3), (1, 2)])
def test_interrupted_run_resumes_to_the_same_weights(data, tmp_path, restart, epoch):
    """6 epochs straight == interrupted in (restart, epoch) + a second fit() that resumes."""
    train, val = data
    config = cfg(epochs=6, restarts=2, patience=4, lr_patience=1, seed=3)
    straight = fit(factory(dropout=0.2), train, val, config)

    plan = {"seed": 3 + restart, "step": epoch * steps_per_epoch(train) + 2, "on": True}

    def make(seed):
        interrupt = plan["step"] if plan["on"] and seed == plan["seed"] else None
        return Linear(seed, dropout=0.2, interrupt_at=interrupt)

    with pytest.raises(KeyboardInterrupt):
        fit(make, train, val, config, checkpoint_dir=tmp_path)
    assert not torch.are_deterministic_algorithms_enabled()
    record = json.loads((tmp_path / "train" / "checkpoint.json").read_text())
    assert record["schema_version"] == 1 and record["stage"] == "train"
    assert (record["progress"]["restart"], record["progress"]["epoch"]) == (restart, epoch)
    assert len(record["progress"]["history"]) == restart * 6 + epoch
    files = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert files == ["checkpoint.json", record["state_file"]]  # older tensor files are gone

    plan["on"] = False
    resumed = fit(make, train, val, config, checkpoint_dir=tmp_path)
    assert_same_weights(straight.model, resumed.model)
    assert strip_times(straight.history) == strip_times(resumed.history)
    assert straight.scores == resumed.scores and straight.best_restart == resumed.best_restart
    assert (tmp_path / "train" / "history.json").exists()


def interrupted_checkpoint(data, path, config):
    train, val = data
    with pytest.raises(KeyboardInterrupt):
        fit(factory(interrupt_at=2 * steps_per_epoch(train) + 1), train, val, config, checkpoint_dir=path)
    return path / "train"


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing", "json", "schema", "kind"])
def test_damaged_checkpoint_is_refused_and_left_alone(data, tmp_path, damage):
    train, val = data
    config = cfg(epochs=4)
    stage_dir = interrupted_checkpoint(data, tmp_path, config)
    record_path = stage_dir / "checkpoint.json"
    record = json.loads(record_path.read_text())
    state = stage_dir / record["state_file"]
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "flip":
        blob = bytearray(state.read_bytes())
        blob[-3] ^= 0xFF
        state.write_bytes(bytes(blob))
    elif damage == "missing":
        state.unlink()
    elif damage == "json":
        record_path.write_text(record_path.read_text()[:100])
    elif damage == "schema":
        record["schema_version"] = 99
        record_path.write_text(json.dumps(record))
    elif damage == "kind":
        record_path.write_text("[1, 2]")
    before = snapshot_dir(tmp_path)
    with pytest.raises(LssError) as info:
        fit(factory(), train, val, config, checkpoint_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(record_path) in message
    assert ("upgrade lss_engine" if damage == "schema" else "resume=False") in message
    assert snapshot_dir(tmp_path) == before  # nothing overwritten
    # explicit resume=False starts over (and says so)
    with pytest.warns(TrainingWarning, match="deleting the checkpoint"):
        fresh = fit(factory(), train, val, config, checkpoint_dir=tmp_path, resume=False)
    assert len(fresh.history) == 4
    assert json.loads(record_path.read_text())["progress"]["done"] is True


def test_resume_with_other_settings_is_refused(data, tmp_path):
    train, val = data
    config = cfg(epochs=4)
    interrupted_checkpoint(data, tmp_path, config)
    before = snapshot_dir(tmp_path)
    with pytest.raises(LssError, match=r"written with lr=0\.01, this call has lr=0\.001") as info:
        fit(factory(), train, val, cfg(epochs=4, lr=1e-3), checkpoint_dir=tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(LssError, match="val_items"):
        fit(factory(), train, train, config, checkpoint_dir=tmp_path)
    with pytest.raises(LssError, match="model differs"):
        fit(factory(dropout=0.5), train, val, config, checkpoint_dir=tmp_path)
    assert snapshot_dir(tmp_path) == before
    # progress may change; the run then resumes and completes
    result = fit(factory(), train, val, cfg(epochs=4, progress=True), checkpoint_dir=tmp_path)
    assert len(result.history) == 4


def test_stages_chain_and_a_finished_stage_is_not_retrained(data, tmp_path):
    train, val = data
    first = fit(factory(), train, val, cfg(epochs=5), checkpoint_dir=tmp_path, stage="pre")
    built = []

    def make(seed):
        built.append(Linear(seed))
        return built[-1]

    # a second stage starts from the first stage's weights (lr ~ 0: they stay put)
    second = fit(make, train, val, cfg(epochs=1, lr=1e-12), checkpoint_dir=tmp_path, stage="main",
                 initial_state=first.model)
    torch.testing.assert_close(second.model.lin.weight, first.model.lin.weight, rtol=0, atol=1e-9)
    assert math.isclose(second.best_score, first.best_score, rel_tol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main", "pre"]
    # calling the finished first stage again returns its result without training
    built.clear()
    again = fit(make, train, val, cfg(epochs=5), checkpoint_dir=tmp_path, stage="pre")
    assert len(built) == 1 and built[0].steps == 0  # rebuilt once, not trained
    assert_same_weights(again.model, first.model)
    assert again.best_score == first.best_score and strip_times(again.history) == strip_times(first.history)
    # a different initial state is another run
    with pytest.raises(LssError, match="initial state"):
        fit(make, train, val, cfg(epochs=1, lr=1e-12), checkpoint_dir=tmp_path, stage="main",
            initial_state=again.model.state_dict() | {"lin.bias": torch.ones(2)})
    with pytest.raises(LssError, match="initial_state does not fit"):
        fit(make, train, val, cfg(epochs=1), initial_state={"lin.weight": torch.zeros(3, 3)})


def test_history_json(data, tmp_path):
    train, val = data
    result = fit(factory(), train, val, cfg(epochs=3, restarts=2), checkpoint_dir=tmp_path)

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    written = strict((tmp_path / "train" / "history.json").read_text())
    assert written["schema_version"] == 1 and written["kind"] == "lss_engine.train.history"
    assert written["best_score"] == result.best_score and written["scores"] == result.scores
    assert written["config"]["epochs"] == 3 and "packages" in written["provenance"]
    assert written["history"] == result.history
    path = save_history(result.history, tmp_path / "h.json")
    assert strict(path.read_text())["history"] == result.history
    assert set(result.history[0]) == {"restart", "seed", "epoch", "train_loss", "val_score", "lr", "seconds",
                                      "nan_restores", "improved", "stop"}
    assert not [p for p in tmp_path.rglob(".tmp-*")]


class EmptyDataset:
    def __len__(self):
        return 0

    def batches(self, batch_size, **kwargs):
        return iter(())


def test_bad_arguments_are_one_line_errors(data):
    train, val = data
    for bad in [dict(epochs=0), dict(lr=-1.0), dict(lr_factor=1.5), dict(patience=-1), dict(device="banana"),
                dict(restarts=1.5), dict(grad_clip=0.0), dict(progress="yes")]:
        with pytest.raises(LssError):
            TrainConfig(**bad)
    assert TrainConfig(epochs=np.int64(3)).to_dict()["epochs"] == 3
    with pytest.raises(LssError, match="stage"):
        fit(factory(), train, val, cfg(), stage="../x")
    with pytest.raises(LssError, match="not a torch.nn.Module"):
        fit(lambda seed: object(), train, val, cfg())
    with pytest.raises(LssError, match="empty"):
        fit(factory(), train, EmptyDataset(), cfg())
    if not torch.cuda.is_available():
        with pytest.raises(LssError, match="CUDA is not available"):
            fit(factory(), train, val, cfg(device="cuda"))


def test_validation_without_tf32_and_flags_restored(data, capsys):
    train, val = data
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        result = fit(factory(), train, val, cfg(epochs=2, grad_clip=0.01, progress=True))
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert result.model.tf32_seen == [False, False]
    assert "train" in capsys.readouterr().err  # the progress bar
