"""The fully connected lobe shared by the VAMPNet and SRV encoders.

A lobe maps ``n_in`` features to ``n_out`` outputs through hidden layers::

    Linear(n_in, h1) -> act [-> BatchNorm1d(h1)] [-> Dropout] -> ... -> Linear(h_k, n_out)

The output layer is linear; the model adds its own output non-linearity (a
softmax for VAMPNet memberships, none for SRV eigenfunction bases).  Batch
normalisation follows the activation, as in the SRV reference implementation
(hsidky/srv), where it sits between the dense layers.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .._helpers import positive_int
from ..errors import LssError, SpecError

__all__ = ["make_mlp", "ACTIVATIONS", "parse_dtype", "dtype_name"]

#: activation names accepted by :func:`make_mlp` (config files name them)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_dtype(dtype: "str | torch.dtype | None") -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype, or ``None`` for torch's default) as a torch dtype."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise SpecError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise SpecError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """Inverse of :func:`parse_dtype`: ``torch.float64`` -> ``"float64"``."""
    return str(dtype).replace("torch.", "")


def make_mlp(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    activation: str = "elu",
    batchnorm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A fully connected network with a linear output layer.

    Parameters
    ----------
    n_in, n_out
        Input and output widths.
    hidden
        Widths of the hidden layers (may be empty: then one linear layer).
    activation
        Name of the hidden activation, a key of :data:`ACTIVATIONS`.
    batchnorm
        Add ``BatchNorm1d`` after each hidden activation.
    dropout
        Dropout probability after each hidden layer (0: none).

    Returns
    -------
    torch.nn.Sequential

    Raises
    ------
    SpecError
        On a non-positive width, an unknown activation or a dropout outside [0, 1).
    """
    n_in = positive_int(n_in, "n_in", error=SpecError)
    n_out = positive_int(n_out, "n_out", error=SpecError)
    hidden = [positive_int(h, "hidden width", error=SpecError) for h in hidden]
    if activation not in ACTIVATIONS:
        raise SpecError(f"unknown activation {activation!r}; choose from {', '.join(sorted(ACTIVATIONS))}")
    if not 0.0 <= float(dropout) < 1.0:
        raise SpecError(f"dropout must be in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        if dropout > 0:
            layers.append(nn.Dropout(float(dropout)))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------
# helpers shared by the lobe models (VAMPNet, SRV)

#: pairs (or frames) evaluated per forward pass when scoring whole data sets
EVAL_CHUNK = 1 << 16


def as_input(x: Any, like: torch.Tensor) -> torch.Tensor:
    """``x`` (numpy or torch) as a tensor with the dtype and device of ``like``."""
    if isinstance(x, torch.Tensor):
        return x.to(device=like.device, dtype=like.dtype)
    array = np.asarray(x)
    if not np.issubdtype(array.dtype, np.number):
        raise LssError(f"expected numeric features, got dtype {array.dtype}")
    return torch.as_tensor(array, device=like.device).to(like.dtype)


def iter_frames(x: Any, chunk_size: int = EVAL_CHUNK) -> Iterator[Any]:
    """Chunks of an ``(n_frames, n_features)`` array or tensor."""
    if isinstance(x, (list, tuple)) or (hasattr(x, "batches") and hasattr(x, "pair_indices")):
        raise LssError("expected an (n_frames, n_features) array of frames, not a dataset or a list")
    if getattr(x, "ndim", None) != 2:
        raise LssError(f"expected (n_frames, n_features) frames, got shape {getattr(x, 'shape', None)}")
    for a in range(0, x.shape[0], chunk_size):
        yield x[a : a + chunk_size]


def iter_pairs(data: Any, chunk_size: int = EVAL_CHUNK) -> Iterator[tuple[Any, Any]]:
    """Chunks ``(x0, xt)`` of all pairs of a data set, in order.

    ``data`` is a :class:`~lss_engine.data.TimeLaggedDataset` (anything with
    ``batches`` and ``pair_indices``; its normaliser is applied) or a tuple
    ``(x0, xt)`` of equally long ``(n_pairs, n_features)`` arrays or tensors.
    """
    if hasattr(data, "batches") and hasattr(data, "pair_indices"):
        if len(data) == 0:
            raise LssError("the data set holds no pairs")
        yield from data.batches(chunk_size, shuffle=False)
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x0, xt = data
        if getattr(x0, "ndim", None) != 2 or getattr(xt, "ndim", None) != 2 or x0.shape != xt.shape:
            raise LssError(
                f"x0 and xt must be (n_pairs, n_features) of equal shape, got "
                f"{getattr(x0, 'shape', None)} and {getattr(xt, 'shape', None)}"
            )
        if x0.shape[0] == 0:
            raise LssError("no pairs given")
        for a in range(0, x0.shape[0], chunk_size):
            yield x0[a : a + chunk_size], xt[a : a + chunk_size]
        return
    raise LssError(
        f"expected a TimeLaggedDataset or a tuple (x0, xt) of arrays, got {type(data).__name__}"
    )


def lag_of(data: Any, lag: float | None) -> tuple[float, str]:
    """The lag of ``data`` for timescales, as ``(value, unit)``.

    A data set gives its lag in ps when it knows ``lag_ps``, else in frames
    (``lag`` must then be ``None``).  For arrays ``(x0, xt)``, ``lag`` is the
    lag in frames; without it timescales come in units of the lag (``"lags"``).
    """
    if hasattr(data, "lag") and hasattr(data, "pair_indices"):
        if lag is not None:
            raise LssError("lag= is for (x0, xt) arrays; a data set has its own lag")
        lag_ps = getattr(data, "lag_ps", None)
        return (float(lag_ps), "ps") if lag_ps is not None else (float(data.lag), "frames")
    if lag is None:
        return 1.0, "lags"
    value = float(lag)
    if not (np.isfinite(value) and value > 0):
        raise LssError(f"lag must be a positive number, got {lag!r}")
    return value, "frames"


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and ``no_grad`` for the block; the previous mode is restored."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def model_from_config(cls: type, config: Any) -> Any:
    """``cls(**config)`` for a network's ``from_config``; a malformed config is a one-line :class:`LssError`."""
    if not isinstance(config, dict):
        raise LssError(f"a {cls.__name__} config is a dict, got {type(config).__name__}")
    try:
        return cls(**config)
    except TypeError as exc:
        raise LssError(f"bad {cls.__name__} config: {exc}") from None

