"""Matplotlib figures of the kinetic analyses.

Every function returns a :class:`matplotlib.figure.Figure` drawn on the Agg
canvas (no pyplot state, no display needed; safe in threads and on clusters)
and accepts one result or, where overlays make sense, a list of results with
``labels`` (e.g. MD vs synthetic).  :func:`save_figure` writes a PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import LssError
from .ck import CKTest
from .correlation import RelaxationTimes
from .fes import FreeEnergyProfile
from .timescales import ImpliedTimescales
from .transitions import FirstPassageTimes, TransitionCounts

__all__ = [
    "plot_implied_timescales",
    "plot_ck_test",
    "plot_free_energy",
    "plot_autocorrelation",
    "plot_transition_counts",
    "plot_first_passage_times",
    "save_figure",
]


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_list(obj, cls) -> list:
    if isinstance(obj, cls):
        return [obj]
    items = list(obj)
    if not items or not all(isinstance(o, cls) for o in items):
        raise LssError(f"expected a {cls.__name__} or a list of them")
    return items


def _labels(labels: Sequence[str] | None, n: int) -> list[str | None]:
    if labels is None:
        return [None] * n
    if len(labels) != n:
        raise LssError(f"{len(labels)} labels for {n} results")
    return list(labels)


def save_figure(fig: Figure, path: Union[str, Path], *, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_implied_timescales(its: ImpliedTimescales, *, title: str | None = None,
                            log: bool = True) -> Figure:
    """Implied timescales (ps) vs lag time (ps) with bootstrap error bands; the
    grey region below ``t = τ`` holds processes faster than the lag time."""
    fig = _figure((5.5, 4.0))
    ax = fig.add_subplot()
    x = its.lag_times
    for i in range(its.k):
        y = its.timescales[:, i]
        line, = ax.plot(x, y, "o-", ms=3, label=f"$t_{{{i + 1}}}$")
        if its.errors is not None:
            e = its.errors[:, i]
            ax.fill_between(x, y - e, y + e, color=line.get_color(), alpha=0.25, lw=0)
    lo = min(x.min(), np.nanmin(its.timescales) if np.any(np.isfinite(its.timescales)) else x.min())
    ax.fill_between(x, np.full_like(x, lo * 0.5 if log else 0.0), x, color="0.85", zorder=0)
    ax.set_xlabel("lag time τ (ps)")
    ax.set_ylabel("implied timescale (ps)")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small", ncol=2)
    ax.set_title(title or f"Implied timescales ({its.kind})")
    return fig


def plot_ck_test(ck: CKTest, *, title: str | None = None,
                 set_names: Sequence[str] | None = None) -> Figure:
    """Grid of ``P(A_i → A_j)`` vs lag time: prediction ``P(τ)^k`` (line) and
    estimate ``P(kτ)`` (markers, with bootstrap error bars)."""
    m = ck.n_sets
    names = list(set_names) if set_names is not None else [str(i) for i in range(m)]
    fig = _figure((2.0 * m + 1.0, 1.8 * m + 0.8))
    axes = fig.subplots(m, m, sharex=True, sharey=True, squeeze=False)
    x = np.concatenate([[0.0], ck.lag_times])
    for i in range(m):
        for j in range(m):
            ax = axes[i, j]
            start = 1.0 if i == j else 0.0
            ax.plot(x, np.concatenate([[start], ck.predicted[:, i, j]]), "-", color="C0", label="predict")
            err = None if ck.estimated_errors is None else ck.estimated_errors[:, i, j]
            ax.errorbar(ck.lag_times, ck.estimated[:, i, j], yerr=err, fmt="o", ms=3, color="C1",
                        label="estimate")
            ax.set_ylim(-0.05, 1.05)
            ax.text(0.95, 0.9 if i != j else 0.1, f"{names[i]}→{names[j]}", transform=ax.transAxes,
                    ha="right", va="center", fontsize="small")
            if i == m - 1:
                ax.set_xlabel("lag time (ps)")
            if j == 0:
                ax.set_ylabel("probability")
    axes[0, 0].legend(fontsize="x-small", loc="center right")
    fig.suptitle(title or f"Chapman–Kolmogorov test (max dev. {ck.max_deviation:.3f})")
    return fig


def plot_free_energy(profiles: Union[FreeEnergyProfile, Sequence[FreeEnergyProfile]],
                     labels: Sequence[str] | None = None, *, title: str | None = None,
                     xlabel: str = "x", ylabel: str = "y", vmax: float | None = None) -> Figure:
    """1-D profiles (several overlaid, with ±1 SE bands) or one 2-D surface (filled contours)."""
    items = _as_list(profiles, FreeEnergyProfile)
    unit = "kT" if items[0].kT == 1.0 else "energy"
    if items[0].ndim == 1:
        fig = _figure((5.5, 4.0))
        ax = fig.add_subplot()
        for prof, lab in zip(items, _labels(labels, len(items))):
            if prof.ndim != 1:
                raise LssError("cannot overlay 1-D and 2-D profiles")
            x, F, e = prof.centers[0], prof.free_energy, prof.errors
            line, = ax.plot(x, F, "-", label=lab)
            ax.fill_between(x, F - e, F + e, color=line.get_color(), alpha=0.25, lw=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"free energy ({unit})")
        if labels is not None:
            ax.legend(fontsize="small")
    else:
        fig = _figure((5.5 * len(items), 4.5))
        axes = fig.subplots(1, len(items), squeeze=False)[0]
        top = vmax if vmax is not None else max(np.nanmax(p.free_energy) for p in items)
        for ax, prof, lab in zip(axes, items, _labels(labels, len(items))):
            cx, cy = prof.centers
            levels = np.linspace(0.0, top, 21)
            cs = ax.contourf(cx, cy, np.clip(prof.free_energy, None, top).T, levels=levels, cmap="viridis")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if lab:
                ax.set_title(lab)
            fig.colorbar(cs, ax=ax, label=f"free energy ({unit})")
    fig.suptitle(title or "Free energy")
    return fig


def plot_autocorrelation(results: Union[RelaxationTimes, Sequence[RelaxationTimes]],
                         labels: Sequence[str] | None = None, *, columns: Sequence[int] | None = None,
                         title: str | None = None) -> Figure:
    """ACFs (±1 block SE) with their fitted ``exp(-s/t)``; one panel per column."""
    items = _as_list(results, RelaxationTimes)
    cols = list(range(items[0].acf.shape[1])) if columns is None else list(columns)
    fig = _figure((4.0 * len(cols), 3.6))
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    for ax, j in zip(axes, cols):
        for k, (res, lab) in enumerate(zip(items, _labels(labels, len(items)))):
            s, C, e = res.lag_times, res.acf[:, j], res.acf_errors[:, j]
            color = f"C{k}"
            name = (lab + ": " if lab else "") + f"t = {res.tau_fit[j]:.4g} ± {res.tau_fit_errors[j]:.2g} ps"
            ax.plot(s, C, "-", color=color, label=name)
            ax.fill_between(s, C - e, C + e, color=color, alpha=0.25, lw=0)
            if np.isfinite(res.tau_fit[j]):
                ax.plot(s, np.exp(-s / res.tau_fit[j]), "--", color=color, lw=1)
        ax.axhline(0.0, color="0.6", lw=0.5)
        ax.set_xlabel("lag s (ps)")
        ax.set_ylabel(f"C(s), column {j}")
        ax.legend(fontsize="x-small")
    fig.suptitle(title or "Autocorrelation")
    return fig


def plot_transition_counts(results: Union[TransitionCounts, Sequence[TransitionCounts]],
                           labels: Sequence[str] | None = None, *,
                           pairs: Sequence[tuple[int, int]] | None = None,
                           title: str | None = None) -> Figure:
    """Per state pair: transition counts vs commitment time (top) and mean
    transition times ``T_i / N_ij`` with 95 % chi-square intervals (bottom)."""
    items = _as_list(results, TransitionCounts)
    m = items[0].n_states
    if pairs is None:
        pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
    names = items[0].state_names or [str(i) for i in range(m)]
    fig = _figure((3.6 * max(len(pairs), 1), 6.0))
    axes = fig.subplots(2, max(len(pairs), 1), squeeze=False, sharex="col")
    for c, (i, j) in enumerate(pairs):
        for k, (res, lab) in enumerate(zip(items, _labels(labels, len(items)))):
            color = f"C{k}"
            x = res.commit_times
            axes[0, c].plot(x, res.counts[:, i, j], "o-", ms=3, color=color, label=lab)
            tau = res.mean_transition_times()[:, i, j]
            ci = res.intervals()[:, i, j]
            axes[1, c].plot(x, tau, "o-", ms=3, color=color, label=lab)
            axes[1, c].fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.2, lw=0)
        axes[0, c].set_title(f"{names[i]} → {names[j]}")
        axes[0, c].set_ylabel("transitions")
        axes[1, c].set_ylabel("mean transition time (ps)")
        axes[1, c].set_xlabel("commitment time (ps)")
        if np.any([np.nanmax(r.mean_transition_times()[:, i, j], initial=0) > 0 for r in items]):
            axes[1, c].set_yscale("log")
        if labels is not None:
            axes[0, c].legend(fontsize="x-small")
    fig.suptitle(title or "Transitions vs commitment time")
    return fig


def plot_first_passage_times(results: Union[FirstPassageTimes, Sequence[FirstPassageTimes]],
                             labels: Sequence[str] | None = None, *,
                             reference: Sequence[float] | None = None,
                             title: str | None = None) -> Figure:
    """Left: histograms of the first-passage times.  Right: MFPTs with ±1 SE
    (thick) and 95 % chi-square intervals (thin); optional ``reference`` values
    (e.g. MSM MFPTs) as crosses."""
    items = _as_list(results, FirstPassageTimes)
    names = [lab or f"{r.source}→{r.target}" for r, lab in zip(items, _labels(labels, len(items)))]
    fig = _figure((9.0, 3.8))
    ax_h, ax_m = fig.subplots(1, 2)
    for k, (res, name) in enumerate(zip(items, names)):
        if res.n:
            ax_h.hist(res.times, bins=min(40, max(5, res.n // 5)), histtype="step", color=f"C{k}",
                      label=f"{name} (n={res.n})")
        lo, hi = res.interval()
        ax_m.errorbar([k], [res.mean], yerr=[[res.mean - lo], [hi - res.mean]] if res.n else None,
                      fmt="none", color=f"C{k}", lw=1, capsize=4)
        ax_m.errorbar([k], [res.mean], yerr=res.sem if res.n > 1 else None, fmt="o", color=f"C{k}", lw=3)
        if reference is not None:
            ax_m.plot([k], [reference[k]], "kx", ms=8)
    ax_h.set_xlabel("first-passage time (ps)")
    ax_h.set_ylabel("count")
    ax_h.legend(fontsize="x-small")
    ax_m.set_xticks(range(len(items)), names, rotation=20, fontsize="small")
    ax_m.set_ylabel("MFPT (ps)")
    fig.suptitle(title or "First-passage times")
    return fig
