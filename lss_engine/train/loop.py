"""The training loop: Adam, early stopping, LR on plateau, restarts, NaN recovery, checkpoints."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._helpers import atomic_write_json, derive_seed, first_line, jsonable, resolve_device
from ..errors import LssError, NonFiniteError
from ..provenance import provenance
from . import checkpoint as ck

__all__ = ["Trainable", "TrainConfig", "TrainResult", "TrainingWarning", "fit", "save_history", "to_device"]

Callback = Callable[[dict, nn.Module], Optional[bool]]
_STAGE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: config fields that may differ when a checkpoint is resumed
_RESUME_FREE = ("progress",)
#: name of the loop's own Adam (models without configure_optimizers)
_DEFAULT_OPTIMIZER = "default"
_OPTIMIZER_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


@runtime_checkable
class Trainable(Protocol):
    """What :func:`fit` needs of a model (an ``nn.Module``).

    ``training_loss(batch)``
        A scalar tensor to minimise; ``batch`` is what ``train.batches(...)``
        yields, already moved to the training device.
    ``validation_score(dataset)``
        A float, higher is better (VAMP-2, -NLL, ...).  Called under
        ``torch.no_grad()``, in ``eval()`` mode and with TF32 off.  It gets
        the validation dataset as given: move what it gathers to the model's
        device (:func:`to_device`).
    ``config()``
        JSON-serialisable constructor arguments (recorded in checkpoints and
        compared on resume).

    Models trained by several optimisers (GANs: a critic and a generator)
    implement instead of ``training_loss``

    ``configure_optimizers(lr, weight_decay)``
        A dict ``name -> torch.optim.Optimizer`` (names of letters, digits
        and ``_``), built from the config's ``lr`` and ``weight_decay``.
        Learning-rate changes of the loop (plateau, NaN recovery) scale every
        group of every optimiser by the same factor; ``TrainConfig.lr`` is the
        learning rate of the first group of the first optimiser.  All their
        states are checkpointed and restored.
    ``training_step(batch, optimizers)``
        Does its own ``zero_grad``/``backward``/``step`` with the optimisers
        of ``configure_optimizers`` (the dict ``{"default": Adam}`` when the
        model has no ``configure_optimizers``) and returns a dict of floats
        that holds ``"loss"`` (the epoch's ``train_loss`` is its mean); the
        means of the other entries are the history's ``train_metrics``.  A
        non-finite value in the dict counts as a non-finite loss.  Draw
        random numbers from torch's global RNG (checkpointed) or keep their
        state in buffers, so that a resumed run equals an uninterrupted one.
        ``TrainConfig.grad_clip`` does not apply (clip inside the step).
    """

    def training_loss(self, batch: Any) -> torch.Tensor: ...

    def validation_score(self, dataset: Any) -> float: ...

    def config(self) -> dict: ...


class TrainingWarning(RuntimeWarning):
    """A non-finite loss, gradient or score was met and recovered from (or given up on)."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LssError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)


@dataclass
class TrainConfig:
    """Settings of :func:`fit`.

    Attributes
    ----------
    epochs
        Maximum epochs per restart.
    batch_size
        Items per training batch.
    lr, weight_decay
        Of the Adam optimiser.
    patience
        Early stopping: a restart ends after ``patience`` consecutive epochs
        without a new best validation score (``0``: at the first epoch that
        does not improve), and its best epoch's weights are restored.
        ``None``: run all ``epochs`` (the best epoch's weights are still
        returned).
    lr_patience, lr_factor, min_lr
        Learning rate on plateau: after ``lr_patience`` consecutive epochs
        without a new best score (counted anew after each reduction) the
        learning rate is multiplied by ``lr_factor``, but not below
        ``min_lr``.  ``None``: constant learning rate.
    restarts
        Independent runs with seeds ``seed, seed + 1, ...``; the one with the
        best validation score wins.
    seed
        Seed of restart 0.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ...
    grad_clip
        Clip the gradients' total 2-norm to this value (``None``: no clipping).
    max_nan_restores
        Non-finite losses, gradients or validation scores a restart may
        recover from (each restores the state at the start of the epoch and
        halves the learning rate); the next one ends the restart.
    progress
        Show a tqdm progress bar (on stderr).
    deterministic
        On the CPU, switch on ``torch.use_deterministic_algorithms``
        (``warn_only``) during training, so that one seed gives one result; on
        CUDA set cuDNN to deterministic (results may still vary in the last
        bits there).
    drop_last
        Drop the last, incomplete training batch of every epoch when there is
        at least one full batch (a few items make noisy or singular estimates
        for covariance-based losses such as VAMP scores).  The batch order is
        new each epoch, so every item is still used.
    """

    epochs: int = 100
    batch_size: int = 1000
    lr: float = 5e-4
    weight_decay: float = 0.0
    patience: int | None = 10
    lr_patience: int | None = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    restarts: int = 1
    seed: int = 0
    device: str = "auto"
    grad_clip: float | None = None
    max_nan_restores: int = 3
    progress: bool = True
    deterministic: bool = True
    drop_last: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # numpy scalars -> Python numbers (JSON)
            value = getattr(self, f.name)
            if isinstance(value, np.integer):
                setattr(self, f.name, int(value))
            elif isinstance(value, np.floating):
                setattr(self, f.name, float(value))
        for name in ("epochs", "batch_size", "restarts"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, f"TrainConfig.{name} must be a positive integer, got {value!r}")
        for name in ("patience", "lr_patience"):
            value = getattr(self, name)
            _check(value is None or (_is_int(value) and value >= 0),
                   f"TrainConfig.{name} must be a non-negative integer or None, got {value!r}")
        _check(_is_int(self.seed) and self.seed >= 0,
               f"TrainConfig.seed must be a non-negative integer, got {self.seed!r}")
        _check(_is_int(self.max_nan_restores) and self.max_nan_restores >= 0,
               f"TrainConfig.max_nan_restores must be a non-negative integer, got {self.max_nan_restores!r}")
        _check(_is_number(self.lr) and self.lr > 0, f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        _check(_is_number(self.weight_decay) and self.weight_decay >= 0,
               f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        _check(_is_number(self.lr_factor) and 0 < self.lr_factor < 1,
               f"TrainConfig.lr_factor must be between 0 and 1, got {self.lr_factor!r}")
        _check(_is_number(self.min_lr) and self.min_lr >= 0, f"TrainConfig.min_lr must be >= 0, got {self.min_lr!r}")
        _check(self.grad_clip is None or (_is_number(self.grad_clip) and self.grad_clip > 0),
               f"TrainConfig.grad_clip must be a positive number or None, got {self.grad_clip!r}")
        _check(isinstance(self.device, str), f"TrainConfig.device must be a string, got {self.device!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise LssError(f"TrainConfig.device {self.device!r} is not 'auto' or a torch device") from None
        for name in ("progress", "deterministic", "drop_last"):
            _check(isinstance(getattr(self, name), bool), f"TrainConfig.{name} must be True or False")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model
        The model of the best restart with the weights of its best epoch, **on
        the CPU and in eval mode** (move it with ``.to(device)``).
    best_score, best_restart, best_epoch
        Its validation score, restart index and epoch index (both from 0).
    history
        One dict per epoch, in order: ``restart``, ``seed``, ``epoch`` (from 0
        within the restart), ``train_loss`` (mean over the epoch's batches),
        ``val_score``, ``lr`` (used in that epoch), ``seconds``,
        ``nan_restores`` (recoveries during that epoch), ``improved`` (new best
        of the restart) and ``stop`` (``None``, or on a restart's last record
        why it ended: ``"patience"``, ``"epochs"``, ``"callback"`` or
        ``"non_finite"`` - that record has ``train_loss`` and ``val_score``
        ``None``).  For a model with ``training_step`` also ``train_metrics``:
        the epoch means of the step's other entries (``None`` when it failed).
    scores
        Best validation score of each restart (NaN for a restart that gave up
        before completing an epoch).
    stage, device, config
        As passed to / used by :func:`fit`.
    """

    model: nn.Module
    best_score: float
    best_restart: int
    best_epoch: int
    history: list[dict]
    scores: list[float]
    stage: str = "train"
    device: str = "cpu"
    config: TrainConfig | None = None


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` (a tensor, or tuples/lists/dicts of them) on ``device``."""
    if isinstance(batch, torch.Tensor):
        # non_blocking only towards CUDA: a non-blocking copy to the CPU could be read too early
        return batch.to(device, non_blocking=torch.device(device).type == "cuda")
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """Full float32 matmuls and convolutions (no TF32) inside; previous flags restored after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    if not enabled:
        yield
        return
    if device.type == "cpu":
        previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    else:
        previous = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous


def _batch_seed(seed: int) -> int:
    """Seed of the batch-order generator, independent of the model's init stream."""
    return derive_seed(seed, 0xBA7C4)


def _state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _json_roundtrip(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (unserialisable parts as their ``repr``)."""
    return json.loads(json.dumps(jsonable(obj), default=repr))


def _has_training_step(model: Any) -> bool:
    return callable(getattr(model, "training_step", None))


def _optimizer_prefix(name: str) -> str:
    """Checkpoint tensor prefix of an optimiser: ``optim`` for the default one, ``optim.<name>`` else."""
    return "optim" if name == _DEFAULT_OPTIMIZER else f"optim.{name}"


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class _Progress:
    """The loop's counters: everything in a checkpoint that is not a tensor."""

    restart: int = 0  # current restart
    epoch: int = 0  # epochs completed in the current restart
    done: bool = False
    best_score: float | None = None  # of the current restart
    best_epoch: int | None = None
    since_best: int = 0  # epochs since the current restart's best (early stopping)
    since_lr: int = 0  # ... since the best or the last LR reduction (plateau)
    nan_restores: int = 0  # of the current restart
    model_config: Any = None  # of the current restart's model
    scores: list = field(default_factory=list)  # best score of each completed restart (None: failed)
    best: dict | None = None  # restart, seed, epoch, score, model_config of the best completed restart
    history: list = field(default_factory=list)

    def start_restart(self) -> None:
        self.epoch, self.best_score, self.best_epoch = 0, None, None
        self.since_best = self.since_lr = self.nan_restores = 0
        self.model_config = None


class _Trainer:
    def __init__(self, factory, train, val, config: TrainConfig, device: torch.device, stage: str,
                 store: ck.CheckpointStore | None, callbacks: Sequence[Callback], initial_state, fingerprint):
        self.factory, self.train, self.val = factory, train, val
        self.config, self.device, self.stage = config, device, stage
        self.store, self.callbacks = store, list(callbacks)
        self.initial_state, self.fingerprint = initial_state, fingerprint
        self.p = _Progress()
        self.model: nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}  # name -> optimiser ("default": the loop's Adam)
        self.params: list[torch.nn.Parameter] = []
        self.generator: torch.Generator | None = None
        self.optimizer_meta: dict | None = None  # name -> optimiser metadata of a checkpoint being resumed
        self.train_metrics: dict[str, float] | None = None  # of the last epoch (training_step models)
        self.best_state: dict[str, torch.Tensor] | None = None  # current restart, on the device
        self.overall_state: dict[str, torch.Tensor] | None = None  # best completed restart, CPU
        self.best_model: nn.Module | None = None  # its model object, when built in this call
        self.provenance = provenance(seed=config.seed, stage=stage)
        self.trained = False

    # -- models -----------------------------------------------------------------
    def seed(self, restart: int) -> int:
        return self.config.seed + restart

    def build(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = self.factory(seed)
        if not isinstance(model, nn.Module):
            raise LssError(f"model_factory({seed}) returned {type(model).__name__}, not a torch.nn.Module")
        name = type(model).__name__
        if not callable(getattr(model, "validation_score", None)):
            raise LssError(f"{name} has no validation_score() method (see lss_engine.train.Trainable)")
        if not (callable(getattr(model, "training_loss", None)) or _has_training_step(model)):
            raise LssError(f"{name} has neither training_loss() nor training_step() (see lss_engine.train.Trainable)")
        if _has_training_step(model) and self.config.grad_clip is not None:
            raise LssError(f"TrainConfig.grad_clip does not apply to {name}, which steps its own optimisers "
                           "(training_step); set grad_clip=None")
        if self.initial_state is not None:
            try:
                model.load_state_dict(self.initial_state)
            except RuntimeError as exc:
                raise LssError(f"initial_state does not fit {type(model).__name__}: {first_line(exc)}") from None
        return model.to(self.device)

    def model_config(self, model: nn.Module) -> Any:
        config = getattr(model, "config", None)
        return _json_roundtrip(config()) if callable(config) else None

    def begin_restart(self, tensors: Mapping[str, torch.Tensor] | None = None) -> None:
        """Build restart ``p.restart``'s model and optimiser; from ``tensors`` when resuming."""
        seed = self.seed(self.p.restart)
        self.model = self.build(seed)
        model_config = self.model_config(self.model)
        if tensors is None:
            self.p.model_config = model_config
        elif model_config != self.p.model_config:
            raise LssError(
                f"the factory's model differs from the checkpointed one (config {model_config!r} != "
                f"{self.p.model_config!r}); use the same model, another checkpoint_dir, or resume=False"
            )
        self.params = [q for q in self.model.parameters() if q.requires_grad]
        if not self.params:
            raise LssError(f"{type(self.model).__name__} has no trainable parameters")
        self.optimizers = self.make_optimizers()
        self.generator = torch.Generator().manual_seed(_batch_seed(seed))
        self.best_state = None
        if tensors is not None:
            self.load_tensors(tensors)

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The loop's Adam, or the model's ``configure_optimizers(lr, weight_decay)``."""
        cfg, model = self.config, self.model
        configure = getattr(model, "configure_optimizers", None)
        if not callable(configure):
            return {_DEFAULT_OPTIMIZER: torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)}
        optimizers = configure(cfg.lr, cfg.weight_decay)
        what = f"{type(model).__name__}.configure_optimizers"
        if not isinstance(optimizers, Mapping) or not optimizers:
            raise LssError(f"{what} must return a non-empty dict name -> torch.optim.Optimizer")
        for name, optimizer in optimizers.items():
            if not (isinstance(name, str) and _OPTIMIZER_NAME_RE.match(name)):
                raise LssError(f"{what}: optimiser names are letters, digits and '_', got {name!r}")
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise LssError(f"{what}: {name!r} is a {type(optimizer).__name__}, not a torch.optim.Optimizer")
        return dict(optimizers)

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        model_state = ck.unprefixed("model", tensors)
        try:
            self.model.load_state_dict(model_state)
            if set(self.optimizer_meta) != set(self.optimizers):
                raise KeyError(f"optimisers {sorted(self.optimizer_meta)} != {sorted(self.optimizers)}")
            for name, optimizer in self.optimizers.items():
                prefix = _optimizer_prefix(name)
                optimizer.load_state_dict(ck.unflatten_optimizer(tensors, self.optimizer_meta[name], prefix))
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise LssError(
                f"the checkpoint does not fit the factory's model ({first_line(exc)}); use the same model, "
                "another checkpoint_dir, or resume=False"
            ) from None
        best = ck.unprefixed("best", tensors)
        self.best_state = {k: v.to(self.device) for k, v in best.items()} if best else None
        self.generator.set_state(tensors["rng/batches"])
        torch.set_rng_state(tensors["rng/cpu"])
        if self.device.type == "cuda" and "rng/cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)

    # -- learning rate ------------------------------------------------------------
    def lr(self) -> float:
        """The learning rate of the first group of the first optimiser."""
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        """Set :meth:`lr` to ``lr``; other groups with other rates are scaled by the same factor."""
        old = self.lr()
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr if group["lr"] == old else group["lr"] * (lr / old)

    # -- one epoch ----------------------------------------------------------------
    def train_epoch(self) -> tuple[float | None, str | None]:
        """Mean training loss, or ``(None, what went wrong)`` at the first non-finite value."""
        if _has_training_step(self.model):
            return self.train_epoch_steps()
        cfg, model, optimizer = self.config, self.model, self.optimizers[_DEFAULT_OPTIMIZER]
        model.train()
        drop_last = cfg.drop_last and len(self.train) >= cfg.batch_size
        total, count = 0.0, 0
        for batch in self.train.batches(cfg.batch_size, shuffle=True, generator=self.generator, drop_last=drop_last):
            batch = to_device(batch, self.device)
            try:
                loss = model.training_loss(batch)
            except torch.linalg.LinAlgError as exc:
                return None, f"the training loss failed ({first_line(exc)})"
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise LssError(f"{type(model).__name__}.training_loss must return a scalar tensor")
            value = float(loss.detach())
            if not math.isfinite(value):
                return None, f"the training loss is {value}"
            optimizer.zero_grad(set_to_none=True)
            loss.reshape(()).backward()
            grads = [q.grad for q in self.params if q.grad is not None]
            if grads:
                norm = torch.nn.utils.get_total_norm(grads)
                if not math.isfinite(float(norm)):
                    return None, "a gradient is not finite"
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grads_with_norm_(self.params, cfg.grad_clip, norm)
            optimizer.step()
            total += value
            count += 1
        return total / count, None

    def train_epoch_steps(self) -> tuple[float | None, str | None]:
        """:meth:`train_epoch` for a model with ``training_step``; the other means go to ``train_metrics``."""
        cfg, model = self.config, self.model
        model.train()
        drop_last = cfg.drop_last and len(self.train) >= cfg.batch_size
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        what = f"{type(model).__name__}.training_step"
        for batch in self.train.batches(cfg.batch_size, shuffle=True, generator=self.generator, drop_last=drop_last):
            batch = to_device(batch, self.device)
            try:
                metrics = model.training_step(batch, self.optimizers)
            except torch.linalg.LinAlgError as exc:
                return None, f"the training step failed ({first_line(exc)})"
            if not isinstance(metrics, Mapping) or "loss" not in metrics:
                raise LssError(f"{what} must return a dict of floats with a 'loss' entry")
            for key, value in metrics.items():
                try:
                    value = float(value.item() if isinstance(value, torch.Tensor) else value)
                except (TypeError, ValueError, RuntimeError):
                    raise LssError(f"{what} returned {key}={value!r}, not a number") from None
                if not math.isfinite(value):
                    return None, f"the training step's {key} is {value}"
                sums[str(key)] = sums.get(str(key), 0.0) + value
                counts[str(key)] = counts.get(str(key), 0) + 1
        self.train_metrics = {k: sums[k] / counts[k] for k in sums if k != "loss"}
        return sums["loss"] / counts["loss"], None

    def validate(self) -> tuple[float | None, str | None]:
        """The validation score, or ``(None, what went wrong)``."""
        self.model.eval()
        try:
            with torch.no_grad(), _no_tf32():
                score = self.model.validation_score(self.val)
        except torch.linalg.LinAlgError as exc:
            return None, f"the validation score failed ({first_line(exc)})"
        finally:
            self.model.train()
        score = float(score.item() if isinstance(score, torch.Tensor) else score)
        if not math.isfinite(score):
            return None, f"the validation score is {score}"
        return score, None

    def where(self) -> str:
        return f"{self.stage}: restart {self.p.restart} (seed {self.seed(self.p.restart)}), epoch {self.p.epoch}"

    def run_epoch(self) -> str | None:
        """Train and score one epoch, recovering from non-finite values; the stop reason or ``None``."""
        cfg, p = self.config, self.p
        t0 = time.perf_counter()
        snapshot = _clone_state(self.model), {k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers.items()}
        restores = 0
        while True:
            loss, problem = self.train_epoch()
            if problem is None:
                score, problem = self.validate()
            if problem is None:
                break
            p.nan_restores += 1
            restores += 1
            lr = self.lr()
            self.model.load_state_dict(snapshot[0])
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(copy.deepcopy(snapshot[1][name]))  # load_state_dict may alias tensors
            if p.nan_restores > cfg.max_nan_restores:
                warnings.warn(
                    f"{self.where()}: {problem}; gave up on this restart after {cfg.max_nan_restores} "
                    "restores (its best epoch so far is kept)", TrainingWarning, stacklevel=4)
                self.record(None, None, lr, t0, restores, improved=False, stop="non_finite", callbacks=False)
                return "non_finite"
            self.set_lr(lr * 0.5)
            warnings.warn(
                f"{self.where()}: {problem}; restored the state at the start of the epoch and halved the "
                f"learning rate to {lr * 0.5:.3g} (restore {p.nan_restores} of {cfg.max_nan_restores})",
                TrainingWarning, stacklevel=4)
        lr = self.lr()
        improved = p.best_score is None or score > p.best_score
        if improved:
            p.best_score, p.best_epoch = score, p.epoch
            p.since_best = p.since_lr = 0
            self.best_state = _clone_state(self.model)
        else:
            p.since_best += 1
            p.since_lr += 1
            if cfg.lr_patience is not None and p.since_lr >= cfg.lr_patience:
                new = max(lr * cfg.lr_factor, cfg.min_lr)
                if new < lr:
                    self.set_lr(new)
                p.since_lr = 0
        stop = None
        if cfg.patience is not None and p.since_best >= cfg.patience and not improved:
            stop = "patience"
        elif p.epoch + 1 >= cfg.epochs:
            stop = "epochs"
        return self.record(loss, score, lr, t0, restores, improved=improved, stop=stop, callbacks=True)

    def record(self, loss: float | None, score: float | None, lr: float, t0: float, restores: int, *,
               improved: bool, stop: str | None, callbacks: bool) -> str | None:
        """Append the epoch's history record (after the callbacks); the stop reason."""
        p = self.p
        entry = {
            "restart": p.restart, "seed": self.seed(p.restart), "epoch": p.epoch,
            "train_loss": loss, "val_score": score, "lr": lr,
            "seconds": round(time.perf_counter() - t0, 6), "nan_restores": restores,
            "improved": improved, "stop": stop,
        }
        if _has_training_step(self.model):
            entry["train_metrics"] = dict(self.train_metrics) if loss is not None and self.train_metrics else None
        if callbacks:
            for callback in self.callbacks:
                if callback(dict(entry), self.model) is True and stop is None:
                    stop = "callback"
        entry["stop"] = stop
        p.history.append(entry)
        p.epoch += 1
        return stop

    def end_restart(self) -> None:
        """Restore the restart's best weights, keep them if they beat the other restarts, move on."""
        p = self.p
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        p.scores.append(p.best_score)
        if p.best_score is not None and (p.best is None or p.best_score > p.best["score"]):
            p.best = {"restart": p.restart, "seed": self.seed(p.restart), "epoch": p.best_epoch,
                      "score": p.best_score, "model_config": p.model_config}
            self.overall_state = {k: v.detach().to("cpu", copy=True) for k, v in self.best_state.items()}
            self.best_model = self.model
        p.restart += 1
        p.start_restart()
        p.done = p.restart >= self.config.restarts
        self.model = self.generator = self.best_state = None
        self.optimizers, self.params = {}, []

    # -- checkpoints ------------------------------------------------------------------
    def save(self) -> None:
        if self.store is None:
            return
        tensors: dict[str, torch.Tensor] = {"rng/cpu": torch.get_rng_state()}
        optimizer_meta, optimizers_meta = None, None
        if self.model is not None:
            tensors.update(ck.prefixed("model", self.model.state_dict()))
            metas = {}
            for name, optimizer in self.optimizers.items():
                optim_tensors, metas[name] = ck.flatten_optimizer(optimizer.state_dict(), _optimizer_prefix(name))
                tensors.update(optim_tensors)
            if set(metas) == {_DEFAULT_OPTIMIZER}:
                optimizer_meta = metas[_DEFAULT_OPTIMIZER]
            else:
                optimizers_meta = metas
            if self.best_state is not None:
                tensors.update(ck.prefixed("best", self.best_state))
            tensors["rng/batches"] = self.generator.get_state()
            if self.device.type == "cuda":
                tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        if self.overall_state is not None:
            tensors.update(ck.prefixed("overall", self.overall_state))
        record = {
            "stage": self.stage,
            "config": self.config.to_dict(),
            "fingerprint": self.fingerprint,
            "device": str(self.device),
            "provenance": self.provenance,
            "progress": dataclasses.asdict(self.p),
            "has_model": self.model is not None,
            "optimizer": optimizer_meta,
        }
        if optimizers_meta is not None:
            record["optimizers"] = optimizers_meta
        self.store.save(record, tensors)

    def resume(self, record: dict, tensors: Mapping[str, torch.Tensor]) -> None:
        """Continue from a loaded checkpoint (already checked to match this call)."""
        store = self.store
        try:
            self.p = _Progress(**record["progress"])
            has_model = bool(record["has_model"])
            metas = record.get("optimizers")
            self.optimizer_meta = {_DEFAULT_OPTIMIZER: record["optimizer"]} if metas is None else metas
            if has_model and not (isinstance(self.optimizer_meta, dict)
                                  and all(isinstance(m, dict) for m in self.optimizer_meta.values())):
                raise TypeError("no optimiser state")
            if not (0 <= self.p.restart <= self.config.restarts and len(self.p.scores) == self.p.restart):
                raise ValueError(f"restart {self.p.restart} of {self.config.restarts}")
            if has_model and "rng/batches" not in tensors:
                raise KeyError("rng/batches")
            if self.p.best is not None:
                float(self.p.best["score"]), int(self.p.best["restart"]), int(self.p.best["seed"])
        except (KeyError, TypeError, ValueError) as exc:
            raise store.corrupt(f"malformed record: {exc.__class__.__name__} {exc}") from None
        overall = ck.unprefixed("overall", tensors)
        self.overall_state = overall or None
        if (self.p.best is None) != (self.overall_state is None):
            raise store.corrupt("the best weights and the record disagree")
        if record.get("device") != str(self.device):
            warnings.warn(f"{self.stage}: the checkpoint was written on {record.get('device')}, resuming on "
                          f"{self.device}: the result will not match an uninterrupted run bit for bit",
                          TrainingWarning, stacklevel=3)
        if has_model:
            self.begin_restart(tensors)

    # -- the whole run -------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, p = self.config, self.p
        bar = tqdm(total=cfg.restarts * cfg.epochs, initial=min(p.restart, cfg.restarts) * cfg.epochs + p.epoch,
                   disable=not cfg.progress, desc=self.stage, unit="epoch", dynamic_ncols=True, file=sys.stderr)
        try:
            while not self.p.done:
                if self.model is None:
                    self.begin_restart()
                self.trained = True
                stop = self.run_epoch()
                p = self.p
                last = p.history[-1]
                bar.set_postfix({"restart": f"{p.restart + 1}/{cfg.restarts}", "loss": _fmt(last["train_loss"]),
                                 "val": _fmt(last["val_score"]), "best": _fmt(p.best_score),
                                 "lr": f"{last['lr']:.2g}"}, refresh=False)
                bar.update(1 if stop is None else cfg.epochs - p.epoch + 1)
                if stop is not None:
                    self.end_restart()
                self.save()
        except KeyboardInterrupt:
            if self.store is not None:
                bar.write(f"{self.stage}: interrupted; the checkpoint in {self.store.directory} keeps the last "
                          "completed epoch - call fit() again with the same arguments to resume", file=sys.stderr)
            raise
        finally:
            bar.close()
        return self.result()

    def result(self) -> TrainResult:
        p = self.p
        if p.best is None:
            raise NonFiniteError(
                f"{self.stage}: none of the {self.config.restarts} restarts produced a finite validation score "
                f"(non-finite losses, gradients or scores more than {self.config.max_nan_restores} times); "
                "lower the learning rate, set grad_clip, or check the data and model"
            )
        model = self.best_model
        if model is None:  # the best restart was completed before a resume: rebuild it
            with torch.random.fork_rng(devices=[]):
                model = self.build(int(p.best["seed"]))
            if self.model_config(model) != p.best.get("model_config"):
                raise LssError(
                    f"the factory's model differs from the checkpointed one (config {self.model_config(model)!r} "
                    f"!= {p.best.get('model_config')!r}); use the same model, another checkpoint_dir, or resume=False"
                )
            try:
                model.load_state_dict(self.overall_state)
            except RuntimeError as exc:
                raise LssError(
                    f"the checkpointed best weights do not fit the factory's model: {first_line(exc)}"
                ) from None
        model = model.to("cpu").eval()
        return TrainResult(
            model=model, best_score=float(p.best["score"]), best_restart=int(p.best["restart"]),
            best_epoch=int(p.best["epoch"]), history=copy.deepcopy(p.history),
            scores=[math.nan if s is None else float(s) for s in p.scores],
            stage=self.stage, device=str(self.device), config=self.config,
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _check_dataset(data: Any, name: str) -> None:
    if not callable(getattr(data, "batches", None)) or not hasattr(data, "__len__"):
        raise LssError(
            f"{name} must be a dataset with batches() and len() (lss_engine.data), got {type(data).__name__}"
        )
    if len(data) == 0:
        raise LssError(f"the {name} set is empty")


def _check_resumable(
    record: dict, config: TrainConfig, stage: str, fingerprint: dict, store: ck.CheckpointStore
) -> None:
    """Refuse a checkpoint written with other settings (one-line :class:`LssError`)."""
    hint = "use the same settings, another checkpoint_dir, or resume=False to start over"
    if record.get("stage") != stage:
        raise LssError(f"checkpoint {store.record_path} is of stage {record.get('stage')!r}, not {stage!r}; {hint}")
    old, new = record.get("config"), config.to_dict()
    if not isinstance(old, dict):
        raise store.corrupt("no config in the record")
    for key in sorted(set(old) | set(new)):
        if key not in _RESUME_FREE and old.get(key) != new.get(key):
            raise LssError(f"checkpoint {store.record_path} was written with {key}={old.get(key)!r}, "
                           f"this call has {key}={new.get(key)!r}; {hint}")
    saved = record.get("fingerprint")
    if not isinstance(saved, dict):
        raise store.corrupt("no fingerprint in the record")
    for key in sorted(set(saved) | set(fingerprint)):
        if saved.get(key) != fingerprint.get(key):
            raise LssError(f"checkpoint {store.record_path} was written with other data or initial state "
                           f"({key}: {saved.get(key)!r} != {fingerprint.get(key)!r}); {hint}")


def fit(
    model_factory: Callable[[int], nn.Module],
    train: Any,
    val: Any,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    stage: str = "train",
    callbacks: Sequence[Callback] | None = None,
    initial_state: Mapping[str, torch.Tensor] | nn.Module | None = None,
) -> TrainResult:
    """Train models made by ``model_factory`` with Adam (or their own optimisers); keep the best restart's best epoch.

    For each restart ``r`` (seed ``s = config.seed + r``) the loop seeds
    torch's global RNG with ``s``, calls ``model_factory(s)``, loads
    ``initial_state`` if given, and trains with batches from
    ``train.batches(batch_size, shuffle=True, generator=g)``, where ``g`` is a
    CPU generator seeded from ``s``.  After each epoch ``val`` is scored
    (:class:`Trainable`); early stopping and learning-rate reduction follow
    the score (see :class:`TrainConfig`).  A non-finite loss, gradient
    (total norm), value returned by ``training_step``, or validation score -
    or a ``torch.linalg.LinAlgError``
    from either method - restores the model and optimiser state of the start
    of the epoch (all optimisers), halves the learning rate, warns (:class:`TrainingWarning`)
    and counts in the epoch's ``nan_restores``; after
    ``config.max_nan_restores`` restores the restart ends with the best epoch
    it has.

    Parameters
    ----------
    model_factory
        ``seed -> nn.Module`` implementing :class:`Trainable`; called once
        per restart (and once more, when a resumed run's best restart
        finished before the interruption, to rebuild it).  Must build the
        same architecture for the same seed.
    train, val
        Datasets with ``batches()`` and ``len()`` (:mod:`lss_engine.data`).
    config
        :class:`TrainConfig` (default settings if ``None``).
    checkpoint_dir
        Save a checkpoint after every epoch in ``checkpoint_dir/<stage>/``
        (layout: :mod:`lss_engine.train.checkpoint`); ``history.json`` is
        written there at the end.  ``None``: no files.
    resume
        ``True``: continue from a checkpoint in that directory if there is
        one - from the last completed epoch of the current restart, with the
        completed restarts' results kept; on the CPU the outcome equals an
        uninterrupted run bit for bit.  A finished checkpoint returns its
        result without training.  A checkpoint written with other settings
        (any :class:`TrainConfig` field but ``progress``), another stage,
        other data sizes or another ``initial_state``, and an unreadable,
        truncated or newer-schema checkpoint, raise :class:`LssError` and
        are left untouched.  ``False``: delete an existing checkpoint there
        (with a warning) and start over.
    stage
        Name of this training stage (letters, digits, ``_.-``); a
        sub-directory of ``checkpoint_dir``, so the stages of a multi-stage
        run (e.g. ``"vamp1"`` then ``"vamp2"``) share one ``checkpoint_dir``
        and each resumes on its own.
    callbacks
        Callables ``(record, model) -> bool | None`` run after each completed
        epoch with a copy of its history record (before the checkpoint);
        returning ``True`` ends the current restart.
    initial_state
        A state dict, or a module whose ``state_dict()`` is taken, loaded
        (strictly) into every restart's model after the factory built it: a
        later stage continues from an earlier stage's weights, e.g.
        ``fit(..., stage="vamp2", initial_state=vamp1_result.model)``.

    Returns
    -------
    TrainResult
        With the model on the CPU, in eval mode.

    Raises
    ------
    LssError
        Bad arguments, a bad or incompatible checkpoint, a model that does not
        fit the protocol.
    NonFiniteError
        No restart completed an epoch with finite values.
    KeyboardInterrupt
        Re-raised after the progress bar is closed and global torch settings
        are restored; the checkpoint of the last completed epoch stays in
        ``checkpoint_dir`` (the interrupted epoch is lost) and calling
        :func:`fit` again with the same arguments resumes from it.

    Notes
    -----
    The loop sets torch's global RNG (``torch.manual_seed``) and, while it
    runs, deterministic algorithms on the CPU (``config.deterministic``);
    validation runs with TF32 off.  One process should use a checkpoint
    directory at a time.
    """
    if config is None:
        config = TrainConfig()
    if not isinstance(config, TrainConfig):
        raise LssError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(stage, str) or not _STAGE_RE.match(stage):
        raise LssError(f"stage must be a name of letters, digits, '_', '.' and '-', got {stage!r}")
    if not callable(model_factory):
        raise LssError("model_factory must be a callable seed -> nn.Module")
    _check_dataset(train, "training")
    _check_dataset(val, "validation")
    callbacks = list(callbacks or [])
    if not all(callable(c) for c in callbacks):
        raise LssError("callbacks must be callables (record, model) -> bool | None")
    device = resolve_device(config.device)
    if isinstance(initial_state, nn.Module):
        initial_state = initial_state.state_dict()
    if initial_state is not None:
        if not isinstance(initial_state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in initial_state.values()
        ):
            raise LssError("initial_state must be a state dict (names -> tensors) or an nn.Module")
        initial_state = {k: v.detach().to("cpu", copy=True) for k, v in initial_state.items()}
    fingerprint = {
        "train_items": len(train),
        "val_items": len(val),
        "initial_state_sha256": None if initial_state is None else _state_sha256(initial_state),
    }
    store = None if checkpoint_dir is None else ck.CheckpointStore(Path(checkpoint_dir) / stage)
    loaded = None
    if store is not None and store.exists():
        if resume:
            loaded = store.load()
            _check_resumable(loaded[0], config, stage, fingerprint, store)
        else:
            warnings.warn(f"{stage}: resume=False: deleting the checkpoint in {store.directory}",
                          TrainingWarning, stacklevel=2)
            store.clear()
    trainer = _Trainer(model_factory, train, val, config, device, stage, store, callbacks, initial_state, fingerprint)
    with _determinism(config.deterministic, device):
        if loaded is not None:
            trainer.resume(*loaded)
        result = trainer.run()
    if store is not None and trainer.trained:
        save_history(result, store.directory / ck.HISTORY)
    return result


def save_history(result_or_history: TrainResult | Sequence[dict], path: str | os.PathLike) -> Path:
    """Write a training history as strict JSON (atomically); returns the path.

    Parameters
    ----------
    result_or_history
        A :class:`TrainResult` (its summary, config and history are written)
        or a list of history records.
    path
        The JSON file; its directory must exist.

    The file holds ``schema_version``, ``kind`` (``"lss_engine.train.history"``),
    ``provenance`` and ``history``, plus ``stage``, ``device``, ``config``,
    ``best_score``, ``best_restart``, ``best_epoch`` and ``scores`` for a
    result.  Non-finite numbers are written as ``null``.
    """
    doc: dict[str, Any] = {"schema_version": 1, "kind": "lss_engine.train.history"}
    if isinstance(result_or_history, TrainResult):
        r = result_or_history
        doc["provenance"] = provenance(stage=r.stage, seed=None if r.config is None else r.config.seed)
        doc.update(stage=r.stage, device=r.device, config=None if r.config is None else r.config.to_dict(),
                   best_score=r.best_score, best_restart=r.best_restart, best_epoch=r.best_epoch,
                   scores=list(r.scores), history=list(r.history))
    else:
        history = list(result_or_history)
        if not all(isinstance(h, Mapping) for h in history):
            raise LssError("save_history takes a TrainResult or a list of history dicts")
        doc["provenance"] = provenance()
        doc["history"] = history
    path = Path(path)
    atomic_write_json(path, doc)
    return path
