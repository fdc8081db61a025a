r"""Equilibrium estimates from adaptive-sampling walkers: a reversible MSM on latent clusters.

Why the raw frames are biased
-----------------------------
An adaptive-sampling campaign restarts many short walkers from frames it
chose (rare states, cluster edges, ...).  Walker :math:`k` starts from a
distribution :math:`ρ_0^{(k)}` and its frame at time :math:`t` is distributed
as :math:`ρ_t^{(k)}(x) = \int ρ_0^{(k)}(y)\, p_t(y \to x)\, dy`, which equals the
Boltzmann density :math:`μ(x) ∝ e^{-βU(x)}` only for :math:`t` much longer
than the slowest relaxation time.  The walkers are short by design, so the
pooled histogram :math:`\sum_k ρ^{(k)}` remembers where the campaign put the
walkers, not the equilibrium populations: free energies, state populations
and rates taken from it are biased (by several kT for walkers seeded in a
metastable well).

Markov reweighting
------------------
The *transition probabilities* are not biased: a pair :math:`(x_t, x_{t+τ})`
inside a walker samples :math:`p_τ(x_t \to \cdot)` whatever :math:`x_t`'s
distribution.  So the pooled latent coordinates are clustered by k-means into
:math:`n` microstates, the sliding-window counts
:math:`c_{ij}(τ)` (no pair crosses two walkers) give the reversible maximum
likelihood transition matrix on the largest strongly connected set
(:func:`lss_engine.kinetics.msm.estimate_msm`; detailed balance
:math:`π_i T_{ij} = π_j T_{ji}` holds for equilibrium dynamics), and its
stationary vector :math:`π` (:math:`π^\top T = π^\top`) is the equilibrium
probability of each microstate.  It is correct when the frames *inside* each
microstate are locally equilibrated (small clusters, lag longer than the
intra-cluster relaxation); the walkers' starting distribution over the
microstates does not matter.

Each frame :math:`t` in microstate :math:`s_t` gets the weight

.. math:: w_t = \frac{π_{s_t}}{N_{s_t}}, \qquad
          N_i = \#\{t : s_t = i\}\ (\text{all frames of all walkers}),

and :math:`w_t = 0` outside the active set, so :math:`\sum_t w_t = 1` and
:math:`\sum_{t: s_t = i} w_t = π_i`.  The equilibrium expectation of any
observable :math:`A` is :math:`\langle A \rangle ≈ \sum_t w_t A(x_t)`: within
a microstate the frames are averaged uniformly, across microstates by
:math:`π`.  Free-energy profiles are weighted histograms
(:func:`lss_engine.kinetics.fes.free_energy` with these weights); the
population of a set of frames :math:`A` is
:math:`P(A) = \sum_t w_t 1[x_t ∈ A] = \sum_i π_i f_i(A)` with :math:`f_i(A)`
the fraction of microstate :math:`i`'s frames in :math:`A`.

Kinetics: implied timescales :math:`t_k = -τΔt / \ln λ_k` of :math:`T`, and
mean first-passage times between frame sets mapped onto microstates by
majority (:func:`lss_engine.kinetics.msm.mfpt_msm`).

Errors: a bootstrap over walkers (whole walkers are resampled with
replacement; fewer than 10 walkers are cut into pieces,
:func:`lss_engine.kinetics._util.bootstrap_units`) re-estimates the MSM on the
*same* clusters; standard errors are the standard deviation (ddof=1) of the
bootstrap estimates.  Clustering uncertainty is not included.  With
explorers (:func:`tram_estimate`) each bootstrap sample draws the unbiased
walkers among themselves and the explorers among themselves and refits TRAM.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LssError
from ..kinetics._util import as_trajectories, bootstrap_units, check_dt, jsonify
from ..kinetics.cluster import KMeans, kmeans
from ..kinetics.fes import FreeEnergyProfile, free_energy, free_energy_1d
from ..kinetics.msm import (MSM, count_matrix, estimate_msm, largest_connected_set, stationary_distribution,
                            transition_matrix_reversible)

__all__ = ["MarkovEstimate", "campaign_estimate", "frame_weights", "majority_states", "markov_estimate",
           "set_fractions", "tram_estimate"]

#: Masks or observables given per walker (one array per trajectory).
PerTrajectory = Sequence[np.ndarray]


# ----------------------------------------------------------------------- helpers
def frame_weights(labels: PerTrajectory, stationary: np.ndarray) -> list[np.ndarray]:
    r"""Per-frame equilibrium weights :math:`w_t = π_{s_t} / N_{s_t}`.

    Parameters
    ----------
    labels
        Microstate label per frame, one integer array per trajectory.
    stationary
        :math:`π` over all ``n`` microstates (zero outside the active set).

    Returns
    -------
    list of ndarray
        Weights per trajectory; they sum to :math:`\sum_i π_i` (1) over all
        frames; frames of microstates with :math:`π_i = 0` weigh 0.
    """
    pi = np.asarray(stationary, dtype=float)
    N = np.bincount(np.concatenate(labels), minlength=len(pi)).astype(float)
    per_state = np.divide(pi, N, out=np.zeros_like(pi), where=N > 0)
    return [per_state[np.asarray(lab)] for lab in labels]


def _as_masks(masks: PerTrajectory, labels: PerTrajectory, name: str) -> np.ndarray:
    """Concatenated boolean mask, checked frame for frame against ``labels``."""
    if isinstance(masks, np.ndarray) and len(labels) == 1 and masks.ndim == 1:
        masks = [masks]
    masks = list(masks)
    if len(masks) != len(labels):
        raise LssError(f"{name}: {len(masks)} arrays for {len(labels)} trajectories")
    out = []
    for i, (m, lab) in enumerate(zip(masks, labels)):
        m = np.asarray(m)
        if m.shape != lab.shape:
            raise LssError(f"{name}[{i}] has shape {m.shape}, trajectory {i} has {lab.shape[0]} frames")
        out.append(m.astype(bool))
    return np.concatenate(out)


def set_fractions(labels: PerTrajectory, masks: PerTrajectory, n_states: int,
                  weights: PerTrajectory | None = None) -> np.ndarray:
    r"""Fraction :math:`f_i(A) = \#\{t: s_t = i, x_t ∈ A\} / N_i` of each microstate's frames in a set.

    With frame ``weights`` :math:`w_t`, the weighted fraction
    :math:`\sum_{t: s_t = i, x_t ∈ A} w_t / \sum_{t: s_t = i} w_t` (the
    same for weights constant in each microstate, as the MSM's; TRAM's vary
    with each frame's bias); microstates of zero weight fall back to the
    frame count.  Microstates without frames get 0.
    """
    labels = [np.asarray(lab) for lab in labels]
    m = _as_masks(masks, labels, "masks").astype(float)
    s = np.concatenate(labels)
    N = np.bincount(s, minlength=n_states).astype(float)
    out = np.divide(np.bincount(s, weights=m, minlength=n_states), N, out=np.zeros(n_states), where=N > 0)
    if weights is not None:
        w = np.concatenate([np.asarray(x, dtype=float) for x in weights])
        W = np.bincount(s, weights=w, minlength=n_states)
        out = np.where(W > 0, np.bincount(s, weights=w * m, minlength=n_states) / np.where(W > 0, W, 1.0), out)
    return out


def majority_states(labels: PerTrajectory, masks: PerTrajectory, n_states: int,
                    weights: PerTrajectory | None = None) -> np.ndarray:
    """Microstates most of whose frames (or weight, see :func:`set_fractions`) lie in the set (:math:`f_i(A) > 1/2`)."""
    return np.flatnonzero(set_fractions(labels, masks, n_states, weights) > 0.5)


def _boot_se(samples: np.ndarray) -> np.ndarray:
    """Bootstrap standard error: std (ddof=1) over the finite samples (axis 0); NaN below two."""
    v = np.asarray(samples, dtype=float)
    if v.ndim == 0 or v.shape[0] == 0:
        return np.full(v.shape[1:], np.nan)
    ok = np.isfinite(v)
    n = ok.sum(axis=0)
    mean = np.where(ok, v, 0.0).sum(axis=0) / np.maximum(n, 1)
    var = np.where(ok, (v - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n - 1, 1)
    return np.where(n >= 2, np.sqrt(var), np.nan)


def _msm_from_counts(C: np.ndarray, lag: int, dt: float, tol: float = 1e-10) -> MSM | None:
    """Reversible MLE MSM of a full count matrix (largest strongly connected set).

    ``tol`` (relative change of :math:`π` per iteration) is looser than
    :func:`estimate_msm`'s 1e-12: bootstrap spreads are many orders larger.
    """
    if C.sum() == 0:
        return None
    active = largest_connected_set(C, directed=True)
    Ca = C[np.ix_(active, active)]
    T = transition_matrix_reversible(Ca, tol=tol)
    return MSM(T, stationary_distribution(T), Ca, active, C.shape[0], lag, dt, True)


def _bootstrap_msms(labels: list[np.ndarray], lag: int, dt: float, n_states: int, n_boot: int,
                    seed: int) -> list[MSM]:
    r"""MSMs of ``n_boot`` bootstrap samples of the walkers (same clusters).

    Each unit's transition pairs are coded once as :math:`i n + j`; a sample
    with multiplicities :math:`m_u` has counts
    :math:`c_{ij} = \sum_u m_u c^{(u)}_{ij}` (one weighted ``bincount``).
    """
    if n_boot <= 0:
        return []
    units = bootstrap_units(labels, min_units=10)
    codes, owner = [], []
    for u, d in enumerate(units):
        if len(d) > lag:
            a, b = d[:-lag], d[lag:]
            codes.append(a * n_states + b)
            owner.append(np.full(len(a), u))
    if not codes:
        return []
    codes_all, owner_all = np.concatenate(codes), np.concatenate(owner)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n_boot)):
        mult = np.bincount(rng.integers(0, len(units), len(units)), minlength=len(units))
        C = np.bincount(codes_all, weights=mult[owner_all].astype(float),
                        minlength=n_states * n_states).reshape(n_states, n_states)
        msm = _msm_from_counts(C, lag, dt)
        if msm is not None:
            out.append(msm)
    return out


def _padded_timescales(msm: MSM, k: int) -> np.ndarray:
    ts = msm.timescales(min(k, msm.n_active - 1)) if msm.n_active > 1 else np.zeros(0)
    out = np.full(k, np.nan)
    out[:len(ts)] = ts
    return out


def _tram_msm(T: np.ndarray, states: np.ndarray, C: np.ndarray | None, n_states: int, lag: int, dt: float) -> MSM:
    """An :class:`MSM` of TRAM's unbiased transition matrix (rows: Markov ``states``), on its largest connected set."""
    keep = largest_connected_set((T > 0).astype(float), directed=True)
    T = T[np.ix_(keep, keep)]
    T = T / T.sum(axis=1, keepdims=True)  # a reversible T has no weight leaving its connected set: a no-op
    C = np.zeros_like(T) if C is None else np.asarray(C, dtype=float)[np.ix_(keep, keep)]
    return MSM(T, stationary_distribution(T), C, np.asarray(states)[keep], n_states, lag, dt, True)


# ------------------------------------------------------------------------ result
@dataclass
class MarkovEstimate:
    r"""Equilibrium and kinetic estimates of a walker ensemble from a reversible MSM.

    Attributes
    ----------
    msm
        The reversible MLE :class:`~lss_engine.kinetics.msm.MSM` on the
        latent microstates.
    clustering
        The k-means centres in latent space (:meth:`KMeans.assign` labels new frames).
    labels
        Microstate label of every frame, one array per trajectory.
    weights
        Equilibrium weight :math:`w_t = π_{s_t}/N_{s_t}` of every frame, one
        array per trajectory (0 outside the active set; all sum to 1).
    timescales_ps
        Leading implied timescales :math:`-τΔt/\ln λ_k`, ps.
    timescales_se_ps
        Bootstrap standard errors of ``timescales_ps`` (NaN without bootstrap).
    stationary
        :math:`π` over all microstates (0 outside the active set).
    stationary_se
        Bootstrap standard error of ``stationary``.
    active_set
        Microstates of the largest strongly connected set.
    method
        ``"reversible MSM on k latent clusters, lag τ"``.
    lag, dt
        Lag in frames and frame interval in ps.
    fes
        Free-energy profiles of the observables passed to :func:`markov_estimate`.
    bootstrap
        The bootstrap MSMs (same clusters, walkers resampled): kinetics.
    bootstrap_stationary
        :math:`π` over all microstates of each bootstrap sample (the MSM's
        own for :func:`markov_estimate`; from the sample's frame weights for
        :func:`tram_estimate`): populations.
    """

    msm: MSM
    clustering: KMeans
    labels: list[np.ndarray]
    weights: list[np.ndarray]
    timescales_ps: np.ndarray
    timescales_se_ps: np.ndarray
    stationary: np.ndarray
    stationary_se: np.ndarray
    active_set: np.ndarray
    method: str
    lag: int
    dt: float
    fes: dict[str, FreeEnergyProfile] = field(default_factory=dict)
    bootstrap: list[MSM] = field(default_factory=list, repr=False)
    bootstrap_stationary: list[np.ndarray] = field(default_factory=list, repr=False)

    # --------------------------------------------------------------- basics
    @property
    def n_clusters(self) -> int:
        return len(self.stationary)

    @property
    def lag_time_ps(self) -> float:
        return self.lag * self.dt

    @property
    def n_frames(self) -> int:
        return int(sum(len(lab) for lab in self.labels))

    @property
    def active_fraction(self) -> float:
        """Fraction of frames in active microstates (the others weigh 0)."""
        s = np.concatenate(self.labels)
        return float(np.isin(s, self.active_set).mean())

    # ------------------------------------------------------------ estimates
    def free_energy(self, values: PerTrajectory, bins: Any = 50, range: Any = None, *,
                    n_blocks: int = 5, kT: float = 1.0) -> FreeEnergyProfile:
        r"""Equilibrium free-energy profile :math:`F = -\ln p` (kT) of an observable.

        A histogram of ``values`` weighted by :attr:`weights`
        (:func:`lss_engine.kinetics.fes.free_energy`):
        :math:`p_b ∝ \sum_{t: x_t ∈ b} w_t / V_b`.

        Parameters
        ----------
        values
            One array per trajectory, ``(frames,)`` for 1-D or ``(frames, 2)``
            for 2-D profiles.
        bins
            Number of bins or edges (1-D: an edge array).
        range
            1-D: ``(lo, hi)``; 2-D: ``[(lo, hi), (lo, hi)]``; default: data extent.
        n_blocks, kT
            As in :func:`~lss_engine.kinetics.fes.free_energy`.  The block
            errors are the histogram's only (weights held fixed).
        """
        vals = as_trajectories(list(values) if not isinstance(values, np.ndarray) else [values],
                               dtype=float, name="values")
        if len(vals) != len(self.labels) or any(len(v) != len(lab) for v, lab in zip(vals, self.labels)):
            raise LssError("values must hold one array per trajectory with one row per frame")
        if all(v.ndim == 1 for v in vals):
            return free_energy_1d(vals, bins, range=range, weights=self.weights,
                                  n_blocks=n_blocks, kT=kT)
        return free_energy(vals, bins, range=range, weights=self.weights, n_blocks=n_blocks, kT=kT)

    def populations(self, masks: Mapping[str, PerTrajectory]) -> dict[str, float]:
        r"""Equilibrium populations :math:`P(A) = \sum_t w_t 1[x_t ∈ A]` of frame sets.

        For the MSM's weights this is :math:`\sum_i π_i f_i(A)`.
        ``masks``: name → one boolean array per trajectory (frames in the set).
        """
        w = np.concatenate(self.weights)
        return {name: float(w @ _as_masks(m, self.labels, name)) for name, m in masks.items()}

    def populations_se(self, masks: Mapping[str, PerTrajectory]) -> dict[str, float]:
        r"""Bootstrap standard errors of :meth:`populations`: spread of :math:`\sum_i π^{(b)}_i f_i(A)` (NaN without bootstrap)."""
        out = {}
        for name, m in masks.items():
            f = set_fractions(self.labels, m, self.n_clusters, self.weights)
            samples = np.array([p @ f for p in self.bootstrap_stationary])
            out[name] = float(_boot_se(samples)) if self.bootstrap_stationary else float("nan")
        return out

    def _sets(self, source: PerTrajectory, target: PerTrajectory) -> tuple[np.ndarray, np.ndarray]:
        a = majority_states(self.labels, source, self.n_clusters, self.weights)
        b = majority_states(self.labels, target, self.n_clusters, self.weights)
        if np.intersect1d(a, b).size:
            raise LssError("source and target sets share microstates (overlapping masks)")
        return a, b

    def mfpt(self, source: PerTrajectory, target: PerTrajectory) -> float:
        r"""Mean first-passage time (ps) from frame set A to frame set B.

        A microstate belongs to a set when most of its frames (by weight) do
        (:func:`majority_states`); then :func:`~lss_engine.kinetics.msm.mfpt_msm`
        solves :math:`(I - T_{\bar B\bar B}) m = 1` and averages :math:`m` over
        A's microstates with weights :math:`π`.

        Parameters
        ----------
        source, target
            One boolean array per trajectory: frames in A, frames in B.
        """
        a, b = self._sets(source, target)
        return self.msm.mfpt(a, b)

    def mfpt_se(self, source: PerTrajectory, target: PerTrajectory) -> float:
        """Bootstrap standard error of :meth:`mfpt` (same microstate sets; NaN without bootstrap).

        Infinite when a bootstrap sample loses every source or every target
        microstate from its connected set: that resample has no path, its
        MFPT is unbounded, and the data hold too few transitions to bound
        the estimate.  (Leaving such samples out would report the spread of
        the samples that happen to keep the path: with the few walkers cut
        into pieces that carry the only transitions, nearly zero.)
        """
        a, b = self._sets(source, target)
        samples = []
        for msm in self.bootstrap:
            try:
                samples.append(msm.mfpt(a, b))
            except LssError:  # no source or no target state in this sample's connected set
                return float("inf")
        return float(_boot_se(np.array(samples))) if samples else float("nan")

    def to_dict(self) -> dict:
        """Strict-JSON summary (per-frame labels and weights are left out)."""
        return jsonify({
            "method": self.method, "lag": self.lag, "dt": self.dt, "lag_time_ps": self.lag_time_ps,
            "n_clusters": self.n_clusters, "n_trajectories": len(self.labels),
            "n_frames": self.n_frames, "active_fraction": self.active_fraction,
            "active_set": self.active_set, "stationary": self.stationary,
            "stationary_se": self.stationary_se, "timescales_ps": self.timescales_ps,
            "timescales_se_ps": self.timescales_se_ps, "n_bootstrap": len(self.bootstrap),
            "cluster_centers": self.clustering.centers, "msm": self.msm.to_dict(),
            "fes": {k: v.to_dict() for k, v in self.fes.items()},
        })


# --------------------------------------------------------------------- estimator
def markov_estimate(latent: list[np.ndarray], lag: int, dt: float, *, n_clusters: int = 100,
                    seed: int = 0, observables: dict[str, list[np.ndarray]] | None = None,
                    n_timescales: int = 5, n_boot: int = 20, fes_bins: Any = 50) -> MarkovEstimate:
    r"""Reversible-MSM reweighting of walker frames in a learned latent space.

    1. k-means (k-means++ seeding, :func:`lss_engine.kinetics.cluster.kmeans`)
       on the pooled latent frames gives microstate labels :math:`s_t`.
    2. Sliding-window counts :math:`c_{ij}(τ)` within each walker (a walker is
       its own trajectory; no pair crosses two walkers) and the reversible MLE

       .. math:: \max_T \sum_{ij} c_{ij} \ln T_{ij}
                 \quad\text{s.t.}\quad π_i T_{ij} = π_j T_{ji},

       on the largest strongly connected set (:func:`~lss_engine.kinetics.msm.estimate_msm`),
       whose stationary vector :math:`π` is the equilibrium probability of
       each microstate, independent of where the walkers were started.
    3. Frame weights :math:`w_t = π_{s_t} / N_{s_t}` (:math:`N_i` frames in
       microstate :math:`i`; 0 outside the active set), so that weighted
       averages/histograms of any observable are equilibrium estimates, while
       the raw (unweighted) histogram of restarted walkers reflects the
       campaign's choice of starting frames.
    4. Implied timescales :math:`t_k = -τΔt/\ln λ_k` (ps) and, with
       ``n_boot`` > 0, bootstrap errors over walkers (same clusters).

    See the module docstring for why this removes the restart bias and when
    it holds (local equilibrium inside microstates at lag τ).

    Parameters
    ----------
    latent
        Latent coordinates, one ``(n_i, d)`` (or ``(n_i,)``) array per walker.
    lag
        Lag τ in frames (>= 1).
    dt
        Frame interval Δt in ps.
    n_clusters
        k-means microstates (capped at the number of frames).
    seed
        k-means and bootstrap seed.
    observables
        name → one array per walker; a weighted free-energy profile of each
        is stored in :attr:`MarkovEstimate.fes` (``fes_bins`` bins).
    n_timescales
        How many implied timescales to report.
    n_boot
        Bootstrap samples over walkers (0: no errors).
    fes_bins
        Bins of the observables' profiles.

    Returns
    -------
    MarkovEstimate
    """
    X = as_trajectories(list(latent) if not isinstance(latent, np.ndarray) else [latent],
                        dtype=float, ndim=2, name="latent")
    if any(len(x) == 0 for x in X):
        raise LssError("latent: every walker needs at least one frame")
    dt = check_dt(dt)
    lag = int(lag)
    if lag < 1:
        raise LssError(f"lag must be >= 1 frame, got {lag}")
    if int(n_clusters) < 1:
        raise LssError(f"n_clusters must be >= 1, got {n_clusters}")
    clustering = kmeans(X, int(n_clusters), seed=seed)
    k = len(clustering.centers)
    labels = np.split(clustering.assign(np.concatenate(X)), np.cumsum([len(x) for x in X])[:-1])
    msm = estimate_msm(labels, lag, reversible=True, n_states=k, dt=dt)
    pi = msm.full_stationary_distribution()
    boots = _bootstrap_msms(labels, lag, dt, k, n_boot, seed)
    ts = _padded_timescales(msm, int(n_timescales))
    ts_se = _boot_se(np.array([_padded_timescales(b, int(n_timescales)) for b in boots])) \
        if boots else np.full(int(n_timescales), np.nan)
    boot_pi = [b.full_stationary_distribution() for b in boots]
    pi_se = _boot_se(np.array(boot_pi)) if boot_pi else np.full(k, np.nan)
    est = MarkovEstimate(
        msm=msm, clustering=clustering, labels=labels, weights=frame_weights(labels, pi),
        timescales_ps=ts, timescales_se_ps=ts_se, stationary=pi, stationary_se=pi_se,
        active_set=msm.active_set.copy(), lag=lag, dt=dt, bootstrap=boots, bootstrap_stationary=boot_pi,
        method=f"reversible MSM on {k} latent clusters, lag {lag} frames ({lag * dt:g} ps)")
    for name, values in (observables or {}).items():
        est.fes[name] = est.free_energy(values, fes_bins)
    return est


def tram_estimate(latent: list[np.ndarray], bias_kn: np.ndarray, run_of_frame: np.ndarray, lag: int, dt: float, *,
                  kT: float, n_clusters: int = 100, seed: int = 0, n_timescales: int = 5,
                  n_boot: int = 20) -> MarkovEstimate:
    r"""Multi-ensemble estimate: TRAM over unbiased walkers and biased explorers, on latent clusters.

    Explorers sample under static biases :math:`b_k(x)` (their frames are
    not the system's equilibrium dynamics), the unbiased walkers under
    none; TRAM (Wu et al., PNAS 2016; deeptime, through
    :func:`lss_engine.bias.tram_weights`) combines the transition counts
    :math:`c^k_{ij}(τ)` of every ensemble :math:`k` with the Boltzmann
    reweighting of all their frames, each ensemble's transition matrix
    reversible with respect to its biased equilibrium
    :math:`π^k_i ∝ e^{f_i - f^k_i}`.

    1. k-means on the pooled latent frames (unbiased and biased) gives the
       microstates, as in :func:`markov_estimate`.
    2. TRAM gives every frame its unbiased weight :math:`w_t`
       (:math:`\sum_t w_t = 1`): :attr:`MarkovEstimate.weights`; the
       equilibrium probability of a microstate is
       :math:`π_i = \sum_{t: s_t = i} w_t` (:attr:`~MarkovEstimate.stationary`),
       free-energy profiles and populations follow from the weights.
    3. Kinetics (timescales, mean first-passage times) come from TRAM's
       transition matrix of the unbiased ensemble :math:`T^0`: estimated
       from the unbiased walkers' counts alone (biased pairs are not the
       system's dynamics) but reversible with respect to the π that all
       ensembles determine, on the largest connected set of its graph
       (:attr:`MarkovEstimate.msm`).  This is why the unbiased walkers need
       not connect every state both ways themselves, as the plain MSM
       (:func:`markov_estimate`) requires.

    Parameters
    ----------
    latent
        Latent coordinates, one ``(n_t, d)`` array per walker (unbiased and biased).
    bias_kn
        ``(K, frames)`` bias energies of every ensemble on every pooled frame
        (kJ/mol); row 0 the unbiased ensemble (zeros), e.g.
        :meth:`lss_engine.campaign.driver.Campaign.bias_energies`.
    run_of_frame
        ``(frames,)`` ensemble of the walker that sampled each frame.
    lag, dt
        Lag τ in frames (every walker needs more frames) and frame interval (ps).
    kT
        :math:`k_BT` in kJ/mol.
    n_clusters, seed, n_timescales
        As in :func:`markov_estimate`.
    n_boot
        Bootstrap samples (0: no errors): whole walkers drawn with
        replacement, unbiased among unbiased and explorers among explorers,
        and TRAM refitted on each (:func:`lss_engine.bias.tram_bootstrap`);
        kinetics from each sample's unbiased transition matrix, populations
        from its frame weights.  Each costs one TRAM fit.
        A TRAM fit that did not converge says so in ``method`` (and warns).
    """
    from ..bias import tram_bootstrap, tram_weights

    X = as_trajectories(list(latent), dtype=float, ndim=2, name="latent")
    lengths = [len(x) for x in X]
    dt = check_dt(dt)
    clustering = kmeans(X, int(n_clusters), seed=seed)
    k = len(clustering.centers)
    pooled = clustering.assign(np.concatenate(X))
    result = tram_weights(bias_kn, run_of_frame, pooled, kT=kT, lag=int(lag), trajectory_lengths=lengths)
    if result.unbiased_transition_matrix is None:
        raise LssError("tram_estimate needs one unbiased ensemble (a row of bias_kn that is all zero)")
    splits = np.cumsum(lengths)[:-1]
    labels = np.split(pooled, splits)
    unbiased = [lab for lab, r in zip(labels, np.split(result.run_of_frame, splits)) if r[0] == result.unbiased_run]
    C = count_matrix([u for u in unbiased if len(u) > lag], int(lag), n_states=k) if unbiased else np.zeros((k, k))
    states = result.unbiased_markov_states
    msm = _tram_msm(result.unbiased_transition_matrix, states, C[np.ix_(states, states)], k, int(lag), dt)
    w = np.asarray(result.weights, dtype=float)
    pi = np.bincount(pooled, weights=w, minlength=k)
    replicates = tram_bootstrap(result, int(n_boot), seed=seed)  # each has T0: the unbiased run exists
    boots = [_tram_msm(Tb, sb, Cb, k, int(lag), dt) for _, Tb, sb, Cb in replicates]
    boot_pi = [np.bincount(pooled, weights=wb, minlength=k) for wb, *_ in replicates]
    n_ts = int(n_timescales)
    return MarkovEstimate(
        msm=msm, clustering=clustering, labels=labels, weights=np.split(w, splits),
        timescales_ps=_padded_timescales(msm, n_ts),
        timescales_se_ps=_boot_se(np.array([_padded_timescales(b, n_ts) for b in boots])) if boots
        else np.full(n_ts, np.nan),
        stationary=pi, stationary_se=_boot_se(np.array(boot_pi)) if boot_pi else np.full(k, np.nan),
        active_set=msm.active_set.copy(), lag=int(lag), dt=dt, bootstrap=boots, bootstrap_stationary=boot_pi,
        method=(f"TRAM on {k} latent clusters over {result.n_runs} ensembles (unbiased walkers + "
                f"{result.n_runs - 1} biased explorers), lag {int(lag)} frames ({int(lag) * dt:g} ps); kinetics: "
                f"TRAM's unbiased transition matrix"
                + ("" if result.converged else f"; TRAM did not converge in {result.iterations} iterations "
                                               f"(last change {result.max_change:.3g} kT)")))


def campaign_estimate(campaign: Any, *, n_clusters: int = 100, seed: int | None = None,
                      model_round: int | None = None, n_boot: int = 20) -> tuple[MarkovEstimate, list[dict]]:
    """The equilibrium estimate of a campaign from its final (or ``model_round``'s) model.

    Without explorers: :func:`markov_estimate` (reversible MSM) over the
    unbiased walkers.  With explorers: :func:`tram_estimate` over every
    committed walker, each explorer its own ensemble
    (:meth:`~lss_engine.campaign.driver.Campaign.bias_energies`).  Returns
    the estimate and the committed walker records, one per trajectory of
    ``estimate.labels`` (in that order); ``estimate.method`` says which.  ``n_boot``: bootstrap
    samples of the errors (0: none; with explorers each costs one TRAM fit).
    """
    from openmm import unit

    state = campaign.state
    r = max(state.models) if model_round is None else int(model_round)
    seed = campaign.config.seed if seed is None else int(seed)
    encoder = campaign.encoder(r)
    walkers = state.committed(r)
    biased = any(c.get("bias") for c in walkers)
    features = campaign.features(walkers)
    latent = np.split(campaign.latent_of(r, features=np.concatenate(features)),
                      np.cumsum([len(f) for f in features])[:-1])
    n = min(int(n_clusters), sum(len(z) for z in latent))
    if not biased:
        return markov_estimate(latent, encoder.lag_frames, encoder.frame_interval_ps, n_clusters=n,
                               seed=seed, n_boot=n_boot), walkers
    bias_kn, run_of_frame, _ = campaign.bias_energies(walkers)
    kT = (unit.MOLAR_GAS_CONSTANT_R * campaign.resolved["temperature_K"] * unit.kelvin).value_in_unit(
        unit.kilojoule_per_mole)
    return tram_estimate(latent, bias_kn, run_of_frame, encoder.lag_frames, encoder.frame_interval_ps, kT=kT,
                         n_clusters=n, seed=seed, n_boot=n_boot), walkers
