r"""Metastable states, first-passage times and transition counts vs commitment time.

States
------
* **Boxes on coordinates** (:class:`MetastableState`): a state is a union of
  boxes; a box bounds some columns by open intervals ``lo < x < hi`` (``None``
  = unbounded).  Frames in no state are *unassigned*; with ``core=True`` (the
  default of :func:`assign_states`) they keep the label of the last state
  visited — *coring* / milestoning — so a label only changes when the
  trajectory reaches the core of another state.  Frames before the first core
  visit of a trajectory stay ``-1``.  Example: alanine dipeptide
  (:func:`alanine_dipeptide_states`): C7eq = φ < −1.0 or φ > 2.6, C7ax =
  0.5 < φ < 1.8 (radians).
* **From a model**: :func:`states_from_memberships` (argmax of soft
  memberships, optionally only where the largest membership exceeds a
  threshold, then cored) or :func:`~lss_engine.kinetics.msm.pcca` sets of an
  MSM mapped onto microstate trajectories with :func:`map_microstates`.

First-passage times (cored MFPT)
--------------------------------
For label trajectories (cored, so labels change only at core entries) and
disjoint label sets A, B: every stretch of frames between two visits of B
(or from the trajectory start to the first B visit) in which A occurs yields
one first passage, from the **first frame in A after the last B visit** to the
**first frame in B** after it:

.. math:: τ_{A→B} = (t_{\text{hit }B} - t_{\text{enter }A})\,Δt.

Its mean is the mean first-passage time (MFPT) A→B, the quantity an MSM
gives by :func:`~lss_engine.kinetics.msm.mfpt_msm`; its standard error is
:math:`\operatorname{std}(τ)/\sqrt n` (ddof = 1), and
:func:`mfpt_confidence_interval` gives the exact interval for exponential
waiting times.  A passage whose start coincides with the trajectory start (the
trajectory *begins* in A; the entry was not observed) is left out unless
``include_initial=True``; a passage that has not reached B when the
trajectory ends is censored (counted in ``n_censored``, not in the mean).

Transitions vs commitment time (LSTM paper, Tsai et al. 2020)
-------------------------------------------------------------
A *visit* is a maximal run of frames with the same label ``>= 0``; a run of
``n`` frames lasts ``n Δt``.  For a commitment time :math:`t_c` a visit is
*committed* if it lasts at least :math:`t_c` (a visit cut by the trajectory
end counts if its observed part does).  Uncommitted visits are ignored,
consecutive committed visits with the same label are merged, and every change
of label between consecutive committed visits is one transition
:math:`i → j`, so :math:`N_{ij}(t_c)` counts transitions into ``j`` after which
the trajectory stays in ``j`` for at least :math:`t_c`.  The *residence time*
:math:`T_i(t_c)` sums, over committed visits of ``i``, the time from their
start to the start of the next committed visit (or the trajectory end).  The
mean transition time (inverse rate, the LSTM paper's kinetics table) is

.. math:: \bar τ_{i→j}(t_c) = T_i(t_c) / N_{ij}(t_c).

For two states it equals the mean first-passage time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from ..errors import LssError
from ._util import Trajectories, as_trajectories, check_dt, jsonify

__all__ = [
    "MetastableState",
    "alanine_dipeptide_states",
    "state_indicator",
    "core_labels",
    "assign_states",
    "states_from_memberships",
    "map_microstates",
    "FirstPassageTimes",
    "first_passage_times",
    "mfpt_confidence_interval",
    "TransitionCounts",
    "transition_counts",
]

Bound = Union[float, None]
Box = Mapping[int, tuple[Bound, Bound]]


# ---------------------------------------------------------------------------- states
@dataclass
class MetastableState:
    """A state: the union of boxes in coordinate space.

    Parameters
    ----------
    name
        Label for reports and plots.
    boxes
        One box or a list of boxes.  A box maps a column index to an open
        interval ``(lo, hi)``; ``None`` means unbounded; columns not named are
        unconstrained.  ``MetastableState("C7eq", [{0: (None, -1.0)}, {0: (2.6, None)}])``
        is φ < −1 or φ > 2.6 when column 0 holds φ.
    """

    name: str
    boxes: Any = field(default_factory=list)

    def __post_init__(self) -> None:
        boxes = [self.boxes] if isinstance(self.boxes, Mapping) else list(self.boxes)
        clean = []
        for box in boxes:
            b = {}
            for col, (lo, hi) in dict(box).items():
                lo = -np.inf if lo is None else float(lo)
                hi = np.inf if hi is None else float(hi)
                if not lo < hi:
                    raise LssError(f"state {self.name!r}: empty interval ({lo}, {hi}) on column {col}")
                b[int(col)] = (lo, hi)
            clean.append(b)
        if not clean:
            raise LssError(f"state {self.name!r} has no boxes")
        self.boxes = clean

    def contains(self, x: np.ndarray) -> np.ndarray:
        """Boolean ``(frames,)``: which rows of ``x`` (``(frames,)`` or ``(frames, d)``) lie in the state."""
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        out = np.zeros(len(x), dtype=bool)
        for box in self.boxes:
            inside = np.ones(len(x), dtype=bool)
            for col, (lo, hi) in box.items():
                if col >= x.shape[1]:
                    raise LssError(f"state {self.name!r} bounds column {col}, data have {x.shape[1]}")
                inside &= (x[:, col] > lo) & (x[:, col] < hi)
            out |= inside
        return out

    def to_dict(self) -> dict:
        return jsonify({"name": self.name,
                        "boxes": [{str(c): [lo, hi] for c, (lo, hi) in b.items()} for b in self.boxes]})


def alanine_dipeptide_states(phi_column: int = 0) -> list[MetastableState]:
    """Cored C7eq / C7ax of alanine dipeptide on φ (radians) in column ``phi_column``.

    C7eq (label 0): φ < −1.0 or φ > 2.6; C7ax (label 1): 0.5 < φ < 1.8.
    """
    return [MetastableState("C7eq", [{phi_column: (None, -1.0)}, {phi_column: (2.6, None)}]),
            MetastableState("C7ax", [{phi_column: (0.5, 1.8)}])]


def state_indicator(x: np.ndarray, states: Sequence[MetastableState]) -> np.ndarray:
    """Raw state label per frame of one trajectory: index of the first state containing it, else -1."""
    x = np.asarray(x, dtype=float)
    labels = np.full(len(x), -1, dtype=np.int64)
    for k in range(len(states) - 1, -1, -1):
        labels[states[k].contains(x)] = k
    return labels


def _core_one(lab: np.ndarray) -> np.ndarray:
    idx = np.where(lab >= 0, np.arange(len(lab)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, lab[np.maximum(idx, 0)], -1)


def core_labels(labels: Trajectories) -> list[np.ndarray]:
    """Coring: unassigned frames (label < 0) take the last assigned label of their
    trajectory; frames before the first assignment stay -1."""
    return [_core_one(lab) for lab in as_trajectories(labels, dtype=int, ndim=1, name="labels")]


def assign_states(trajs: Trajectories, states: Sequence[MetastableState], *,
                  core: bool = True) -> list[np.ndarray]:
    """State labels (indices into ``states``) per frame of each trajectory.

    ``core=True`` applies :func:`core_labels`; otherwise frames in no state are -1.
    """
    X = as_trajectories(trajs, dtype=float, ndim=2)
    raw = [state_indicator(x, states) for x in X]
    return [_core_one(r) for r in raw] if core else raw


def states_from_memberships(memberships: Trajectories, *, threshold: float | None = None,
                            core: bool = True) -> list[np.ndarray]:
    """Crisp states from soft memberships ``(frames, m)``: ``argmax`` per frame.

    With ``threshold``, frames whose largest membership is below it are
    unassigned (-1) and, with ``core=True``, take the previous state's label.
    """
    M = as_trajectories(memberships, dtype=float, ndim=2, name="memberships")
    out = []
    for m in M:
        lab = np.argmax(m, axis=1).astype(np.int64)
        if threshold is not None:
            lab[m.max(axis=1) < threshold] = -1
            if core:
                lab = _core_one(lab)
        out.append(lab)
    return out


def map_microstates(dtrajs: Trajectories, assignments: np.ndarray,
                    active_set: np.ndarray | None = None) -> list[np.ndarray]:
    """Map microstate trajectories to macrostates, e.g. ``pcca(msm.transition_matrix, 2).assignments``.

    ``assignments[i]`` is the macrostate of the ``i``-th active state; labels
    outside ``active_set`` (default: ``0..len(assignments)-1``) and negative
    labels become -1.
    """
    assignments = np.asarray(assignments, dtype=np.int64)
    active = np.arange(len(assignments)) if active_set is None else np.asarray(active_set, dtype=np.int64)
    if len(active) != len(assignments):
        raise LssError("assignments and active_set differ in length")
    out = []
    for d in as_trajectories(dtrajs, dtype=int, ndim=1, name="dtrajs"):
        lut = np.full(max(int(d.max(initial=-1)), int(active.max(initial=-1))) + 1, -1, dtype=np.int64)
        lut[active] = assignments
        out.append(np.where(d >= 0, lut[np.maximum(d, 0)], -1))
    return out


# ---------------------------------------------------------------- first passages
def mfpt_confidence_interval(mean: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    r"""Exact interval for a mean waiting time from ``n`` exponential waiting times.

    If the waiting times are exponential with mean :math:`τ`, their sum
    :math:`n\bar T` satisfies :math:`2n\bar T/τ \sim χ^2_{2n}`, so with
    :math:`α = 1 - ` ``confidence``

    .. math:: τ ∈ \left[\frac{2n\bar T}{χ^2_{2n,\,1-α/2}},\;
                         \frac{2n\bar T}{χ^2_{2n,\,α/2}}\right].

    ``n = 0`` gives ``(nan, nan)``.
    """
    from scipy.stats import chi2

    n = int(n)
    if n <= 0 or not math.isfinite(mean):
        return (float("nan"), float("nan"))
    a = 1.0 - confidence
    total = 2.0 * n * mean
    return (float(total / chi2.ppf(1 - a / 2, 2 * n)), float(total / chi2.ppf(a / 2, 2 * n)))


def _as_label_set(states: Union[int, Iterable[int]]) -> np.ndarray:
    return np.unique(np.atleast_1d(np.asarray(list(states) if not np.isscalar(states) else [states],
                                              dtype=np.int64)))


@dataclass
class FirstPassageTimes:
    """First-passage times A → B from trajectories.

    Attributes
    ----------
    source, target
        Label sets A and B.
    times
        ``(n,)`` individual first-passage times in ps.
    dt
        Frame interval in ps.
    n_censored
        Passages started in A that had not reached B when their trajectory ended.
    """

    source: list[int]
    target: list[int]
    times: np.ndarray
    dt: float = 1.0
    n_censored: int = 0

    @property
    def n(self) -> int:
        return int(len(self.times))

    @property
    def mean(self) -> float:
        """MFPT in ps (NaN without passages)."""
        return float(self.times.mean()) if self.n else float("nan")

    @property
    def sem(self) -> float:
        """Standard error ``std(ddof=1)/sqrt(n)`` in ps (NaN for n < 2)."""
        return float(self.times.std(ddof=1) / math.sqrt(self.n)) if self.n >= 2 else float("nan")

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Chi-square interval of the MFPT (:func:`mfpt_confidence_interval`)."""
        return mfpt_confidence_interval(self.mean, self.n, confidence)

    def to_dict(self) -> dict:
        return jsonify({"source": self.source, "target": self.target, "dt": self.dt, "n": self.n,
                        "mean": self.mean, "sem": self.sem, "ci95": list(self.interval()),
                        "n_censored": self.n_censored, "times": self.times})


def first_passage_times(labels: Trajectories, source: Union[int, Iterable[int]],
                        target: Union[int, Iterable[int]], *, dt: float = 1.0,
                        include_initial: bool = False) -> FirstPassageTimes:
    """First-passage times from A (``source``) to B (``target``); see the module docstring.

    Parameters
    ----------
    labels
        Integer (preferably cored) state trajectories.
    source, target
        A label or a collection of labels; the sets must be disjoint.
    dt
        Frame interval in ps.
    include_initial
        Also count a passage whose trajectory starts in A (entry time unknown).
    """
    dt = check_dt(dt)
    A, B = _as_label_set(source), _as_label_set(target)
    if np.intersect1d(A, B).size:
        raise LssError("source and target sets overlap")
    times: list[np.ndarray] = []
    censored = 0
    for lab in as_trajectories(labels, dtype=int, ndim=1, name="labels"):
        inB = np.isin(lab, B)
        inA = np.isin(lab, A)
        b_idx = np.flatnonzero(inB)
        seg = np.cumsum(inB)  # number of B frames up to and including t
        a_idx = np.flatnonzero(inA)
        if a_idx.size == 0:
            continue
        s, first = np.unique(seg[a_idx], return_index=True)
        starts = a_idx[first]
        if not include_initial:
            keep = starts != 0
            s, starts = s[keep], starts[keep]
        done = s < len(b_idx)
        censored += int(np.sum(~done))
        times.append((b_idx[s[done]] - starts[done]) * dt)
    t = np.concatenate(times) if times else np.zeros(0)
    return FirstPassageTimes(A.tolist(), B.tolist(), t.astype(float), dt, censored)


# ------------------------------------------------------- transitions vs commitment
@dataclass
class TransitionCounts:
    """Transition counts and mean transition times vs commitment time.

    Attributes
    ----------
    commit_times
        ``(n_c,)`` commitment times in ps.
    counts
        ``(n_c, m, m)`` committed transitions ``i → j``.
    residence_times
        ``(n_c, m)`` time (ps) attributed to each state (see module docstring).
    dt
        Frame interval in ps.
    total_time
        Total trajectory time in ps.
    state_names
        Optional names of the ``m`` states.
    """

    commit_times: np.ndarray
    counts: np.ndarray
    residence_times: np.ndarray
    dt: float = 1.0
    total_time: float = 0.0
    state_names: list[str] | None = None

    @property
    def n_states(self) -> int:
        return int(self.counts.shape[1])

    def mean_transition_times(self) -> np.ndarray:
        r"""``(n_c, m, m)`` :math:`T_i / N_{ij}` in ps (NaN where no transition or ``i == j``)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = self.residence_times[:, :, None] / self.counts
        tau[self.counts == 0] = np.nan
        idx = np.arange(self.n_states)
        tau[:, idx, idx] = np.nan
        return tau

    def intervals(self, confidence: float = 0.95) -> np.ndarray:
        """``(n_c, m, m, 2)`` chi-square intervals of the mean transition times."""
        tau = self.mean_transition_times()
        out = np.full(tau.shape + (2,), np.nan)
        for idx in zip(*np.nonzero(np.isfinite(tau))):
            out[idx] = mfpt_confidence_interval(tau[idx], int(self.counts[idx]), confidence)
        return out

    def to_dict(self) -> dict:
        return jsonify({"commit_times": self.commit_times, "counts": self.counts,
                        "residence_times": self.residence_times, "dt": self.dt,
                        "total_time": self.total_time, "state_names": self.state_names,
                        "mean_transition_times": self.mean_transition_times(),
                        "intervals95": self.intervals()})


def _runs(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if lab.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    change = np.flatnonzero(np.diff(lab)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(lab)]]))
    values = lab[starts]
    keep = values >= 0
    return starts[keep], lengths[keep], values[keep]


def transition_counts(labels: Trajectories, commit_times: Sequence[float], *, dt: float = 1.0,
                      n_states: int | None = None,
                      state_names: Sequence[str] | None = None) -> TransitionCounts:
    """Transition counts :math:`N_{ij}(t_c)` and residence times vs commitment time.

    Parameters
    ----------
    labels
        Integer (preferably cored) state trajectories; negative labels are unassigned.
    commit_times
        Commitment times in ps (a visit of ``n`` frames lasts ``n * dt``; a
        commitment time ``<= dt`` keeps every visit).
    dt
        Frame interval in ps.
    n_states
        Number of states (default ``max label + 1``).
    state_names
        Optional names for plots.

    See the module docstring for the definitions.
    """
    dt = check_dt(dt)
    L = as_trajectories(labels, dtype=int, ndim=1, name="labels")
    top = max((int(lab.max(initial=-1)) for lab in L), default=-1)
    m = top + 1 if n_states is None else int(n_states)
    if top >= m:
        raise LssError(f"label {top} found but n_states={m}")
    tcs = np.atleast_1d(np.asarray(commit_times, dtype=float))
    counts = np.zeros((len(tcs), m, m), dtype=np.int64)
    resid = np.zeros((len(tcs), m))
    runs = [(len(lab),) + _runs(lab) for lab in L]
    for c, tc in enumerate(tcs):
        min_frames = max(math.ceil(tc / dt - 1e-9), 0)
        for n_frames, starts, lengths, values in runs:
            ok = lengths >= min_frames
            cs, cv = starts[ok], values[ok]
            if cs.size == 0:
                continue
            first = np.concatenate([[True], cv[1:] != cv[:-1]])
            cs, cv = cs[first], cv[first]
            np.add.at(counts[c], (cv[:-1], cv[1:]), 1)
            span = np.diff(np.concatenate([cs, [n_frames]])) * dt
            np.add.at(resid[c], cv, span)
    return TransitionCounts(tcs, counts, resid, dt, float(sum(len(lab) for lab in L) * dt),
                            None if state_names is None else list(state_names))
