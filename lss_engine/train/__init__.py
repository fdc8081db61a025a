"""The one training loop of lss_engine, used by every model.

Models implement :class:`Trainable` (``training_loss``, ``validation_score``,
``config``; GANs ``configure_optimizers`` and ``training_step`` instead of
``training_loss``); :func:`fit` trains them with Adam (or the model's own
optimisers), early stopping, learning-rate
reduction on plateau, restarts with different seeds, recovery from NaN/Inf,
a progress bar and resumable checkpoints::

    from lss_engine.train import TrainConfig, fit

    result = fit(lambda seed: VAMPNet(...), train, val,
                 TrainConfig(epochs=100, restarts=5), checkpoint_dir="runs/vamp")
    result.model, result.best_score, result.history

The checkpoint format (JSON + safetensors, no pickle) is described in
:mod:`lss_engine.train.checkpoint`.
"""
from __future__ import annotations

from .loop import Trainable, TrainConfig, TrainingWarning, TrainResult, fit, save_history, to_device

__all__ = ["Trainable", "TrainConfig", "TrainResult", "TrainingWarning", "fit", "save_history", "to_device"]
