r"""Character-level LSTM language model of discretised trajectories (Tsai, Kuo & Tiwary 2020).

Tsai, Kuo & Tiwary, *Learning molecular dynamics with simple language model
built upon long short-term memory neural network*, Nat. Commun. 11, 5115
(2020) - "the LSTM paper".  A trajectory of a low-dimensional order parameter
is discretised into labels :math:`s(t) \in \{0, \dots, N-1\}`
(:mod:`lss_engine.discretize`) and modelled as a sequence of characters:

.. math::
    x(t) &= \Lambda\, s(t) &&\text{embedding, } \Lambda \in \mathbb R^{M\times N} \text{ (Eq. 1)}\\
    h(t), c(t) &= \mathrm{LSTM}\bigl(x(t), h(t-1), c(t-1)\bigr) &&\text{Eqs. 2-7, } h \in \mathbb R^{L}\\
    \hat y(t) &= \mathrm{softmax}\bigl(D_d\, h(t) + b_d\bigr) &&\text{Eq. 8}

and trained on the cross-entropy of the next label (Eq. 9),

.. math:: J = -\sum_{t} s(t+1) \cdot \ln \hat y(t),

averaged over the tokens of windows of 100 transitions: a batch holds
``(B, 101)`` label windows (:class:`lss_engine.data.SequenceDataset` with
``length=101``); inputs are ``[:, :-1]``, targets ``[:, 1:]``, and every
window starts from a zero LSTM state.  The paper uses :math:`M = 8`,
:math:`L = 64` for the model potentials and :math:`M = 128`, :math:`L = 1024`
for alanine dipeptide, one LSTM layer, sequences of 100 and batches of 64.
Minimising :math:`J` learns the path probabilities of the label dynamics
(the paper's path-entropy argument, Eqs. 10-16).

Sampling (:meth:`LSTMLanguageModel.generate`) draws
:math:`s(t+1) \sim \mathrm{softmax}\bigl((D_d h(t) + b_d)/T\bigr)` with a
temperature :math:`T` (:math:`T \to 0`: the most probable label; large
:math:`T`: uniform), for many sequences at once: one batched ``nn.LSTM``
step per time step advances all of them.

The embedding gives the paper's kinetic distance (:func:`kinetic_distance`,
Eqs. 20-21).
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._helpers import positive_int
from ..errors import LssError
from .base import Network
from .mlp import dtype_name, evaluating, parse_dtype

__all__ = ["LSTMLanguageModel", "embedding_transition_matrix", "kinetic_distance"]

#: windows scored per forward pass in :meth:`LSTMLanguageModel.validation_score`
_VAL_CHUNK = 2048
#: time steps of random numbers drawn per block in :meth:`LSTMLanguageModel.generate`
_RNG_BLOCK = 1024

SeedLike = Union[int, np.random.SeedSequence, Sequence[Union[int, np.random.SeedSequence]], None]


class LSTMLanguageModel(Network):
    r"""Embedding → LSTM → dense → softmax over ``n_labels`` (the LSTM paper's language model).

    Parameters
    ----------
    n_labels
        Number of labels :math:`N` (vocabulary size).
    embedding_dim
        :math:`M` (paper: 8 for model potentials, 128 for alanine dipeptide).
    hidden
        LSTM units :math:`L` (paper: 64, resp. 1024).
    layers
        Stacked LSTM layers (paper: 1).
    dropout
        Dropout between stacked LSTM layers (``nn.LSTM``'s; needs ``layers > 1``).
    dtype
        ``"float32"`` or ``"float64"`` parameters (default: torch's default).

    Notes
    -----
    Implements the training-loop protocol (:class:`lss_engine.train.Trainable`):
    ``training_loss(batch)`` with ``batch`` a ``(B, T+1)`` int64 tensor of
    labels, ``validation_score(dataset)`` = minus the mean cross-entropy per
    token (nats) over the whole validation set, ``config()`` /
    :meth:`from_config` for :class:`lss_engine.bundle.ModelBundle`.
    """

    def __init__(self, n_labels: int, embedding_dim: int = 8, hidden: int = 64, layers: int = 1,
                 dropout: float = 0.0, dtype: "str | torch.dtype | None" = None):
        super().__init__()
        self.n_labels = positive_int(n_labels, "n_labels")
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim")
        self.hidden = positive_int(hidden, "hidden")
        self.layers = positive_int(layers, "layers")
        dropout = float(dropout)
        if not 0.0 <= dropout < 1.0:
            raise LssError(f"dropout must be in [0, 1), got {dropout!r}")
        if dropout > 0 and self.layers == 1:
            raise LssError("dropout acts between LSTM layers; it needs layers > 1")
        self.dropout = dropout
        self.embedding = nn.Embedding(self.n_labels, self.embedding_dim)
        self.lstm = nn.LSTM(self.embedding_dim, self.hidden, num_layers=self.layers, batch_first=True,
                            dropout=self.dropout)
        self.output = nn.Linear(self.hidden, self.n_labels)
        self.to(parse_dtype(dtype))

    # -- network ---------------------------------------------------------------------------
    def reference_tensor(self) -> torch.Tensor:
        """The output layer's weight: its dtype and device are the model's."""
        return self.output.weight

    def _tokens(self, tokens: Any) -> torch.Tensor:
        t = tokens if isinstance(tokens, torch.Tensor) else torch.as_tensor(np.asarray(tokens))
        if t.dtype in (torch.float16, torch.float32, torch.float64, torch.bool) or t.is_complex():
            raise LssError(f"labels must be integers, got {t.dtype}")
        t = t.to(device=self.reference_tensor().device, dtype=torch.int64)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.n_labels):
            raise LssError(f"labels must lie in 0..{self.n_labels - 1}, got {int(t.min())}..{int(t.max())}")
        return t

    def forward(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits of the next label after each input label.

        Parameters
        ----------
        tokens
            ``(B, T)`` int64 labels.
        state
            ``(h, c)``, each ``(layers, B, hidden)``; ``None``: zeros.

        Returns
        -------
        logits, state
            ``(B, T, n_labels)`` un-normalised log-probabilities :math:`D_d h(t) + b_d`
            and the LSTM state after the last input.
        """
        out, state = self.lstm(self.embedding(tokens), state)
        return self.output(out), state

    def training_loss(self, batch: torch.Tensor) -> torch.Tensor:
        r"""Mean cross-entropy (Eq. 9) per token of a ``(B, T+1)`` window batch.

        .. math:: J = -\frac{1}{B T} \sum_{b, t} \ln \hat y_b(t)_{s_b(t+1)}

        with inputs ``batch[:, :-1]`` and targets ``batch[:, 1:]``.
        """
        batch = self._tokens(batch)
        if batch.ndim != 2 or batch.shape[1] < 2:
            raise LssError(f"a batch is (B, T+1) label windows with T >= 1, got shape {tuple(batch.shape)}")
        logits, _ = self(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, self.n_labels), batch[:, 1:].reshape(-1))

    def _iter_windows(self, data: Any, chunk_size: int) -> Iterator[torch.Tensor]:
        if callable(getattr(data, "batches", None)):
            if len(data) == 0:
                raise LssError("the validation set holds no windows")
            yield from data.batches(chunk_size, shuffle=False)
            return
        windows = self._tokens(data)
        if windows.ndim != 2 or windows.shape[0] == 0:
            raise LssError(f"expected (n_windows, T+1) label windows, got shape {tuple(windows.shape)}")
        yield from windows.split(chunk_size)

    def validation_score(self, dataset: Any, chunk_size: int = _VAL_CHUNK) -> float:
        """Minus the mean cross-entropy per token (nats) over all windows of ``dataset`` (higher is better).

        ``dataset`` is a :class:`~lss_engine.data.SequenceDataset` of label
        windows (scored in chunks of ``chunk_size`` windows, in order) or an
        ``(n_windows, T+1)`` integer array.
        """
        total, count = 0.0, 0
        with evaluating(self):
            for windows in self._iter_windows(dataset, positive_int(chunk_size, "chunk_size")):
                windows = self._tokens(windows)
                logits, _ = self(windows[:, :-1])
                total += float(F.cross_entropy(logits.reshape(-1, self.n_labels), windows[:, 1:].reshape(-1),
                                               reduction="sum"))
                count += windows[:, 1:].numel()
        if count == 0:
            raise LssError("the validation set holds no transitions")
        return -total / count

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-compatible values (``dtype``: the current parameters')."""
        return {"n_labels": self.n_labels, "embedding_dim": self.embedding_dim, "hidden": self.hidden,
                "layers": self.layers, "dropout": self.dropout, "dtype": dtype_name(self.reference_tensor().dtype)}

    # -- sampling ----------------------------------------------------------------------------
    @property
    def embedding_vectors(self) -> np.ndarray:
        r"""``(n_labels, embedding_dim)`` float64: row :math:`l` is :math:`x_l = \Lambda s_l` (Eq. 1)."""
        return self.embedding.weight.detach().to("cpu", torch.float64).numpy().copy()

    def generate(self, n_steps: int, *, n_sequences: int = 1, start: Any = None, temperature: float = 1.0,
                 seed: SeedLike = None, device: "str | torch.device | None" = None,
                 num_threads: int | None = None) -> np.ndarray:
        r"""Sample label sequences from the model, all sequences in one batch.

        Each step feeds the current labels of all ``S`` sequences through one
        ``nn.LSTM`` call (state carried over) and draws the next labels from
        :math:`\mathrm{softmax}(\mathrm{logits}/T)` by inverting the cumulative
        distribution with one uniform number per sequence and step.

        Parameters
        ----------
        n_steps
            Labels to generate per sequence.
        n_sequences
            ``S``, the number of sequences (batch size).
        start
            What the sequences begin with (not part of the output):
            ``None`` - a label drawn uniformly at random per sequence;
            an ``int`` - that label for all; a 1-D array ``(S,)`` - one label
            per sequence; a 2-D array ``(S, T0)`` - a prefix per sequence
            (e.g. windows of real data) run through the LSTM first, so the
            state is "warmed up".  A start with one row is used for all
            ``n_sequences``; with ``n_sequences=1`` (the default) the rows of
            ``start`` set ``S``.
        temperature
            :math:`T \ge 0`; ``0`` takes the most probable label (greedy).
        seed
            ``int``/``SeedSequence``: sequence ``s`` draws from
            ``np.random.default_rng(SeedSequence(seed).spawn(S)[s])``; a list of
            ``S`` ints/``SeedSequence``\ s gives each sequence its own stream
            ``np.random.default_rng(seed[s])``, so a sequence does not depend on
            the batch it is generated in (up to floating-point differences of
            batched matrix products); ``None``: fresh entropy.
        device
            Where to run (default: the model's device; the model is moved there
            for the call and back afterwards).
        num_threads
            Temporarily set ``torch.set_num_threads`` for the call (CPU); on a
            CPU shared with other work one thread is often fastest.

        Returns
        -------
        ndarray of int64, shape (S, n_steps)
        """
        n_steps = positive_int(n_steps, "n_steps")
        n_sequences = positive_int(n_sequences, "n_sequences")
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature >= 0):
            raise LssError(f"temperature must be a finite number >= 0, got {temperature!r}")
        prefix, n_sequences = self._start_prefix(start, n_sequences)
        streams = _streams(seed, n_sequences)
        home = self.reference_tensor().device
        device = home if device is None else torch.device(device)
        threads = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(positive_int(num_threads, "num_threads"))
        try:
            self.to(device)
            with evaluating(self), torch.inference_mode():
                return self._generate(n_steps, n_sequences, prefix, temperature, streams, device)
        finally:
            self.to(home)
            torch.set_num_threads(threads)

    def _start_prefix(self, start: Any, n_sequences: int) -> tuple[np.ndarray | None, int]:
        """``(rows, T0)`` int64 prefix (``None``: draw random labels) and the number of sequences."""
        if start is None:
            return None, n_sequences
        arr = np.asarray(start.detach().cpu().numpy() if isinstance(start, torch.Tensor) else start)
        if not np.issubdtype(arr.dtype, np.integer):
            raise LssError(f"start must be integer labels, got dtype {arr.dtype}")
        if arr.ndim == 0:
            arr = np.full((n_sequences, 1), int(arr))
        elif arr.ndim == 1:
            arr = arr[:, None]
        elif arr.ndim != 2:
            raise LssError(f"start must be a label, (S,) labels or an (S, T0) prefix, got shape {arr.shape}")
        if arr.shape[1] == 0 or arr.shape[0] == 0:
            raise LssError("start is empty")
        if arr.min() < 0 or arr.max() >= self.n_labels:
            raise LssError(f"start labels must lie in 0..{self.n_labels - 1}")
        rows = arr.shape[0]
        if rows != n_sequences:
            if rows == 1:
                arr = np.repeat(arr, n_sequences, axis=0)
            elif n_sequences == 1:
                n_sequences = rows
            else:
                raise LssError(f"start has {rows} rows but n_sequences={n_sequences}")
        return arr.astype(np.int64), n_sequences

    def _generate(self, n_steps: int, n_seq: int, prefix: np.ndarray | None, temperature: float,
                  streams: list[np.random.Generator], device: torch.device) -> np.ndarray:
        block = min(_RNG_BLOCK, n_steps)
        dtype = self.reference_tensor().dtype

        def draw(k: int) -> torch.Tensor:  # (S, k) uniforms, each sequence from its own stream, in order
            u = np.empty((n_seq, k))
            for s, g in enumerate(streams):
                u[s] = g.random(k)
            return torch.from_numpy(u).to(device=device, dtype=dtype)

        if prefix is None:
            first = np.array([g.integers(self.n_labels) for g in streams], dtype=np.int64)[:, None]
        else:
            first = prefix
        tokens = torch.from_numpy(first).to(device)
        out = torch.empty((n_seq, n_steps), dtype=torch.int64, device=device)
        logits_seq, state = self(tokens)  # warm-up over the prefix: one call
        logits = logits_seq[:, -1]
        for a in range(0, n_steps, block):
            k = min(block, n_steps - a)
            u = draw(k)
            for j in range(k):
                if temperature == 0.0:
                    nxt = logits.argmax(dim=1)
                else:
                    # inverse CDF of softmax(z): first k with sum_{i<=k} e^{z_i - max z} > u * sum_i e^{z_i - max z}
                    z = logits if temperature == 1.0 else logits / temperature
                    cum = (z - z.amax(dim=1, keepdim=True)).exp_().cumsum_(dim=1)
                    nxt = (cum < u[:, j : j + 1] * cum[:, -1:]).sum(dim=1)
                out[:, a + j] = nxt
                if a + j + 1 < n_steps:
                    o, state = self.lstm(self.embedding(nxt.unsqueeze(1)), state)
                    logits = self.output(o[:, 0])
        return out.cpu().numpy()

    def extra_repr(self) -> str:
        return f"n_labels={self.n_labels}, M={self.embedding_dim}, L={self.hidden}, layers={self.layers}"


def _streams(seed: SeedLike, n: int) -> list[np.random.Generator]:
    if isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != n:
            raise LssError(f"{len(seed)} seeds for {n} sequences")
        return [np.random.default_rng(s if isinstance(s, np.random.SeedSequence) else int(s)) for s in seed]
    if seed is None:
        root = np.random.SeedSequence()
    elif isinstance(seed, np.random.SeedSequence):
        root = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        root = np.random.SeedSequence(int(seed))
    else:
        raise LssError(f"seed must be a non-negative int, a SeedSequence, a list of them or None, got {seed!r}")
    return [np.random.default_rng(child) for child in root.spawn(n)]


# ----------------------------------------------------------------------- embedding analysis
def _embedding_of(model: Any) -> np.ndarray:
    if isinstance(model, LSTMLanguageModel):
        return model.embedding_vectors
    e = model.detach().cpu().numpy() if isinstance(model, torch.Tensor) else np.asarray(model)
    if e.ndim != 2:
        raise LssError(f"expected an LSTMLanguageModel or an (N, M) embedding matrix, got shape {e.shape}")
    return e.astype(np.float64)


def embedding_transition_matrix(model: "LSTMLanguageModel | np.ndarray") -> np.ndarray:
    r"""The LSTM paper's embedding ansatz for transition probabilities (Eq. 20).

    .. math:: Q_{lm} = Q(x_m \mid x_l) = \frac{\exp(x_m \cdot x_l)}{\sum_k \exp(x_k \cdot x_l)}

    with :math:`x_l = \Lambda s_l` the embedding vector of label :math:`l`.

    Parameters
    ----------
    model
        A trained :class:`LSTMLanguageModel`, or its ``(N, M)`` embedding matrix.

    Returns
    -------
    ndarray, shape (N, N)
        Row-stochastic :math:`Q_{lm}`.
    """
    e = _embedding_of(model)
    g = e @ e.T
    g -= g.max(axis=1, keepdims=True)
    q = np.exp(g)
    return q / q.sum(axis=1, keepdims=True)


def kinetic_distance(model: "LSTMLanguageModel | np.ndarray", stationary: Any, *,
                     normalize: bool = False) -> np.ndarray:
    r"""Embedding-based kinetic time between labels (LSTM paper, Eqs. 20-21).

    With the embedding ansatz :math:`Q_{lm}` (Eq. 20,
    :func:`embedding_transition_matrix`) and the model's stationary label
    probabilities :math:`Q_l`, the interconversion rate and LSTM-kinetic time
    of labels :math:`l \ne m` are (Eq. 21)

    .. math:: k_{lm} = Q_l Q_{lm} + Q_m Q_{ml}, \qquad t_{lm} = 1 / k_{lm}.

    The paper compares :math:`t_{lm}` with the commute times
    :math:`\tau_{lm} = T / \langle N_{lm}\rangle` of the data (Eq. 22) after
    rescaling both to :math:`[0, 1]` (``normalize=True``).

    Parameters
    ----------
    model
        A trained :class:`LSTMLanguageModel`, or its ``(N, M)`` embedding matrix.
    stationary
        ``(N,)`` non-negative label probabilities :math:`Q_l` (e.g. label
        frequencies of sequences generated by the model); normalised to sum 1.
    normalize
        Rescale the off-diagonal times linearly to :math:`[0, 1]`
        (:math:`(t - t_\min)/(t_\max - t_\min)`).

    Returns
    -------
    ndarray, shape (N, N)
        Symmetric :math:`t_{lm}` in units of the frame interval (``inf`` where
        :math:`k_{lm} = 0`); the diagonal is NaN (not a kinetic distance).
    """
    q = embedding_transition_matrix(model)
    p = np.asarray(stationary, dtype=np.float64)
    if p.shape != (q.shape[0],):
        raise LssError(f"stationary must have shape ({q.shape[0]},), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise LssError("stationary must be finite, non-negative and not all zero")
    p = p / p.sum()
    flux = p[:, None] * q
    k = flux + flux.T
    with np.errstate(divide="ignore"):
        t = 1.0 / k
    np.fill_diagonal(t, np.nan)
    if normalize:
        off = ~np.eye(len(t), dtype=bool)
        vals = t[off]
        finite = vals[np.isfinite(vals)]
        if finite.size and finite.max() > finite.min():
            t = (t - finite.min()) / (finite.max() - finite.min())
        else:
            t = np.where(off, 0.0, np.nan)
    return t
