"""What a campaign has done: the ``lss campaign status`` table and the ``lss campaign report`` figures.

Everything here is read from the campaign directory (the event log and the
models), never from a running driver.  Equilibrium estimates come from the
Markovian model (:mod:`.estimates`: a reversible MSM on latent clusters whose
stationary distribution reweights every frame, or TRAM when explorers ran
under biases), not from raw histograms of
the restarted walkers, which over-weight the regions the rankers chose.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._helpers import atomic_write_json

__all__ = ["round_rows", "status_table", "write_report"]


def round_rows(campaign: Any) -> list[dict]:
    """One dict per started round: walkers done/running/failed, MD so far, discovery, VAMP-2, timescales."""
    state = campaign.state
    dt_ns = campaign.resolved["timestep_ps"] * 1e-3
    rows, total_steps = [], 0
    for r in sorted(set(state.rounds_started)):
        walkers = state.round_walkers(r)
        total_steps += sum(w.committed["steps"] for w in walkers if w.committed)
        model = state.models.get(r, {})
        seeds = state.seeds.get(r + 1, {})
        rows.append({
            "round": r,
            "committed": sum(1 for w in walkers if w.committed),
            "running": sum(1 for w in walkers if not w.resolved),
            "failed_attempts": sum(len(w.failures) for w in walkers),
            "abandoned": sum(1 for w in walkers if w.abandoned),
            "md_ns": total_steps * dt_ns,
            "discovered": model.get("discovered"),
            "vamp2": model.get("vamp2"), "vamp2_error": model.get("vamp2_error"),
            "timescales_ps": model.get("timescales_block_ps"),
            "timescales_error_ps": model.get("timescales_error_ps"),
            "ranker": seeds.get("ranker"),
            "warm_walkers": sum(1 for w in walkers if w.committed and w.committed.get("warm")),
            "setup_s": [w.committed["setup_s"] for w in walkers if w.committed],
        })
    return rows


def _pm(x: Any, e: Any, fmt: str = ".3g") -> str:
    if x is None:
        return "-"
    return f"{x:{fmt}}" + ("" if e is None or not np.isfinite(e) else f" ± {e:{fmt}}")


def status_table(campaign: Any) -> str:
    """The table of ``lss campaign status``."""
    rows = round_rows(campaign)
    state = campaign.state
    head = ("round", "walkers done/running/failed", "MD ns", "cells", "VAMP-2", "t1 (ps)", "t2 (ps)", "next seeds")
    lines = [head]
    for row in rows:
        ts, te = row["timescales_ps"] or [], row["timescales_error_ps"] or []
        lines.append((str(row["round"]),
                      f"{row['committed']}/{row['running']}/{row['failed_attempts']}"
                      + (f" ({row['abandoned']} abandoned)" if row["abandoned"] else ""),
                      f"{row['md_ns']:.4g}", "-" if row["discovered"] is None else str(row["discovered"]),
                      _pm(row["vamp2"], row["vamp2_error"]),
                      _pm(ts[0] if ts else None, te[0] if te else None),
                      _pm(ts[1] if len(ts) > 1 else None, te[1] if len(te) > 1 else None),
                      row["ranker"] or "-"))
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = [f"campaign {campaign.dir}: {campaign.config.md.walkers} walkers × "
            f"{campaign.resolved['steps']} steps per round, ranker {campaign.config.ranker.name}"]
    text += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines]
    text.append("  stopped: " + state.stopped["reason"] if state.stopped else "  not stopped (lss campaign resume "
                                                                                 "continues it)")
    return "\n".join(text)


def write_report(campaign: Any, out: str | Path | None = None, *, n_clusters: int = 50, n_boot: int = 20) -> dict:
    """PNGs (latent coverage per round, discovered cells vs MD ns, timescales vs round) and ``metrics.json``.

    The final model's Markovian estimate (:func:`.estimates.campaign_estimate`:
    a reversible MSM on ``n_clusters`` latent clusters of the unbiased
    walkers, or TRAM over them and the explorers) gives the equilibrium
    numbers in the metrics (``markov_estimate``; its ``method`` says which),
    with ``n_boot`` bootstrap samples for their errors (with explorers each
    is a TRAM fit).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..kinetics.plots import save_figure

    out = Path(out) if out is not None else campaign.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    state = campaign.state
    rows = round_rows(campaign)
    trained = sorted(state.models)
    metrics: dict[str, Any] = {"rounds": rows, "figures": []}
    if not trained:
        atomic_write_json(out / "metrics.json", metrics)
        return metrics
    last = trained[-1]
    committed = state.committed(last)
    features = campaign.features(committed)
    latent = np.split(campaign.latent_of(last, features=np.concatenate(features)),
                      np.cumsum([len(f) for f in features])[:-1])
    rounds = np.array([c["round"] for c in committed])

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("viridis", max(len(trained), 2))
    for r in sorted(set(rounds.tolist())):
        z = np.concatenate([latent[i] for i in np.flatnonzero(rounds == r)])
        ax.scatter(z[:, 0], z[:, 1] if z.shape[1] > 1 else np.zeros(len(z)), s=2, color=cmap(r), label=f"round {r}")
    ax.set_xlabel("ψ1 (final model)")
    ax.set_ylabel("ψ2" if latent[0].shape[1] > 1 else "")
    ax.legend(markerscale=4, fontsize=7)
    ax.set_title("latent coverage per round")
    metrics["figures"].append(save_figure(fig, out / "coverage.png").name)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["md_ns"] for r in rows if r["discovered"] is not None],
            [r["discovered"] for r in rows if r["discovered"] is not None], "o-")
    ax.set_xlabel("total MD (ns)")
    ax.set_ylabel("occupied latent cells")
    ax.set_title("discovery")
    metrics["figures"].append(save_figure(fig, out / "discovery.png").name)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k in range(2):
        xs = [r["round"] for r in rows if r["timescales_ps"] and len(r["timescales_ps"]) > k]
        ys = [r["timescales_ps"][k] for r in rows if r["timescales_ps"] and len(r["timescales_ps"]) > k]
        es = [r["timescales_error_ps"][k] for r in rows if r["timescales_ps"] and len(r["timescales_ps"]) > k]
        if xs:
            ax.errorbar(xs, ys, yerr=np.nan_to_num(np.array(es, float)), marker="o", capsize=3, label=f"t{k + 1}")
    ax.set_xlabel("round")
    ax.set_ylabel("implied timescale (ps)")
    ax.set_yscale("log")
    ax.legend()
    metrics["figures"].append(save_figure(fig, out / "timescales.png").name)
    plt.close("all")

    from .estimates import campaign_estimate

    # the Markovian model: the unbiased walkers' MSM, or TRAM over them and the explorers (each its own ensemble)
    estimate, walkers = campaign_estimate(campaign, n_clusters=n_clusters, model_round=last, n_boot=n_boot)
    metrics["markov_estimate"] = estimate.to_dict()
    position = {c["folder"]: i for i, c in enumerate(committed)}
    latent = [latent[position[c["folder"]]] for c in walkers]
    # show the difference: the walkers' raw histogram over-weights what the rankers chose
    from ..kinetics import free_energy_1d
    from ..kinetics.plots import plot_free_energy

    psi1 = [z[:, 0] for z in latent]
    edges = np.linspace(min(p.min() for p in psi1), max(p.max() for p in psi1), 41)
    msm = estimate.free_energy(psi1, bins=edges)
    raw = free_energy_1d(psi1, bins=edges)
    fig = plot_free_energy([msm, raw], [f"Markovian estimate ({estimate.method})", "raw histogram of the walkers"],
                           title="free energy along ψ1 of the final model", xlabel="ψ1")
    metrics["figures"].append(save_figure(fig, out / "fes_psi1.png").name)
    metrics["fes_psi1"] = {"markov": msm.to_dict(), "raw_walkers": raw.to_dict()}
    plt.close("all")
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
