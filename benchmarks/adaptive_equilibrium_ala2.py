"""Equilibrium numbers from adaptive data: a campaign vs plain MD of the same total length, alanine dipeptide 450 K.

For each seed:

* campaign: ``lss campaign`` (ranker ``--ranker``), ``--walkers`` walkers ×
  ``--walker-ps`` per round until ``--budget-ns`` of total MD;
* plain MD: ``--plain-walkers`` walkers of ``budget / plain_walkers`` each, run
  through the same machinery (one campaign round, ranker ``continue``), so the
  encoder is trained the same way;

then from each final model the campaign's equilibrium estimate
(``lss_engine.campaign.estimates.campaign_estimate``): without explorers a
reversible MSM on ``--clusters`` k-means cells of the SRV latent space over
the unbiased walkers (frame weights π_i/N_i), with explorers TRAM over every
walker on those cells (frame weights from all ensembles; kinetics from TRAM's
unbiased transition matrix): the FES along φ and the C7eq↔C7ax mean
first-passage times between the cored
states (C7eq: φ < −1.0 or φ > 2.6; C7ax: 0.5 < φ < 1.8), against the shared
2 × 250 ns reference (``../shared/data/ala2_vacuum_450K``; its FES from the
frames' histogram, its MFPTs from lss_engine/resources/ala2_450K_reference.json).
Errors: FES RMSE in kT over bins populated in both (and, per seed, over the
bins populated in the reference and in both estimates: a run that never
reached C7ax is otherwise scored on C7eq alone); MFPT error
|ln(estimate / reference)| (infinite without an estimate); the free-energy difference
ΔF = −ln(P(C7ax)/P(C7eq)) of the cored states from the estimate's populations,
error |ΔF − ΔF_ref| in kT (infinite for a run that never reached C7ax).  The
table gives each seed and the median over seeds.

Both runs use the same features (default: sin/cos of φ, ψ and the
heavy-atom distances; raw angles jump by 2π inside C7eq, where φ wraps).
``--explorers N`` adds N flood explorers per campaign round
(``[explore] mode = "flood"``, :mod:`lss_engine.bias`): each is its own TRAM
ensemble under its static bias (``Campaign.bias_energies``); the reversible
MSM of the unbiased walkers alone is printed beside it.  ``--mts n`` has them
evaluate their bias every n steps (``[explore] mts``); ``--seed-from
unbiased`` sets ``[ranker] seed_from``.

A diagnostic of the seeds (``seed_exits``): the campaign's restarted
unbiased walkers whose first frame is in C7ax, how many reach C7eq within the
walker, against how many equilibrium frames of the same 24 × 24 (φ, ψ) cells
of the reference do within as many frames.

The shared reference has 36 passages each way (its MFPTs' exact 95 %
intervals are printed); ``--more-reference STORE ...`` pools more long MD
of its set-up (``lss simulate --system alanine-dipeptide --temperature 450
--ns 250 --features backbone-torsions --save-atoms none --equilibrate 100ps
--seed 303 --walkers 2 --out runs/ala2_450K_ref/md.zarr``) into a second,
tighter reference, and every error is also given against it.
``--rescore RESULTS_JSON`` scores an earlier run's estimates again (no MD,
no estimates), e.g. against such a pooled reference.

Run:  OMP_NUM_THREADS=1 python benchmarks/adaptive_equilibrium_ala2.py --seeds 3 --budget-ns 8 --workdir runs/adaptive_eq

The run of docs/campaign.md whose campaign errors are below plain MD's on every metric (10 seeds, ~100 min on
2 cores): ``--seeds 10 --budget-ns 20 --features backbone-torsions-sincos --explorers 1 --height 2.5 --mts 2
--ranker timescales``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from adaptive_ala2 import phi_indices, phi_of, store_phi  # noqa: E402  (the one φ rule of the benchmarks)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ala2_vacuum_450K"
C7EQ = lambda phi: (phi < -1.0) | (phi > 2.6)  # noqa: E731
C7AX = lambda phi: (phi > 0.5) & (phi < 1.8)  # noqa: E731
EDGES = np.linspace(-np.pi, np.pi, 37)

CONFIG = """
seed = {seed}
[system]
name = "alanine-dipeptide"
[system.parameters]
temperature = 450
[md]
walkers = {walkers}
steps = "{walker_ps}ps"
report_interval = "1ps"
features = "{features}"
atoms = "heavy"
[model]
lag = 10
dim = 2
epochs = 30
[ranker]
name = "{ranker}"
cells = 100{seed_from}
[stop]
max_rounds = 1000
md_budget = "{budget_ns}ns"
[explore]
walkers = {explorers}
mode = "flood"
height = {height}
mts = {mts}
"""


def run(kind: str, seed: int, args, executor) -> Path:
    from lss_engine.campaign.config import CampaignConfig
    from lss_engine.campaign.driver import Campaign, init_campaign
    import tomllib

    if kind == "campaign":
        walkers, walker_ps, ranker, explorers = args.walkers, args.walker_ps, args.ranker, args.explorers
        seed_from = f'\nseed_from = "{args.seed_from}"' if args.seed_from != "any" else ""
    else:
        walkers, walker_ps, ranker, explorers = (args.plain_walkers, args.budget_ns * 1000 / args.plain_walkers,
                                                 "continue", 0)
        seed_from = ""
    directory = Path(args.workdir) / kind / f"seed{seed}"
    text = CONFIG.format(seed=seed, walkers=walkers, walker_ps=f"{walker_ps:g}", ranker=ranker,
                         budget_ns=args.budget_ns, features=args.features, explorers=explorers, height=args.height,
                         mts=args.mts, seed_from=seed_from)
    config = CampaignConfig.from_mapping(tomllib.loads(text))
    if (directory / "campaign.json").exists():  # a finished run of the same config is reused
        done = Campaign(directory)
        if done.config == config and done.state.stopped is not None:
            return directory
    shutil.rmtree(directory, ignore_errors=True)
    campaign = Campaign(init_campaign(directory, config))
    campaign.run(executor=executor, progress=False)
    return directory


def estimate(directory: Path, quartet: np.ndarray, clusters: int, seed: int, n_boot: int = 0) -> dict:
    """The campaign's equilibrium estimate (``campaign_estimate``: TRAM with explorers, else the MSM), and with
    explorers also the reversible MSM of the unbiased walkers alone (what the estimate was before TRAM)."""
    from lss_engine.campaign.driver import Campaign
    from lss_engine.campaign.estimates import campaign_estimate, markov_estimate
    from lss_engine.store import TrajectoryStore

    campaign = Campaign(directory)
    state = campaign.state
    est, walkers = campaign_estimate(campaign, n_clusters=clusters, seed=seed, n_boot=n_boot)
    phi = [store_phi(TrajectoryStore(campaign.dir / c["folder"] / "md.zarr"), quartet) for c in walkers]
    out = {**summary(est, phi), "md_ns": state.md_steps() * campaign.resolved["timestep_ps"] / 1000.0,
           "rounds": len(state.models), "raw_counts": np.histogram(np.concatenate(phi), EDGES)[0]}
    if any(c.get("bias") for c in walkers):
        keep = [i for i, c in enumerate(walkers) if not c.get("bias")]
        last = max(state.models)
        features = campaign.features([walkers[i] for i in keep])
        latent = np.split(campaign.latent_of(last, features=np.concatenate(features)),
                          np.cumsum([len(f) for f in features])[:-1])
        encoder = campaign.encoder(last)
        unbiased = markov_estimate(latent, encoder.lag_frames, encoder.frame_interval_ps, n_clusters=clusters,
                                   seed=seed, n_boot=0)
        out["unbiased_msm"] = summary(unbiased, [phi[i] for i in keep])
    return out


def summary(est, phi: list) -> dict:
    """FES(φ), cored populations and MFPTs (ns; NaN where a core is outside the estimate) of an estimate."""
    from lss_engine.errors import LssError

    eq, ax = [C7EQ(p) for p in phi], [C7AX(p) for p in phi]

    def mfpt(a, b, rule=est.mfpt) -> float:
        try:
            return rule(a, b) / 1000.0
        except LssError:  # a state never visited (or outside the active set): no estimate
            return float("nan")

    return {"fes": est.free_energy(phi, bins=EDGES), "populations": est.populations({"C7eq": eq, "C7ax": ax}),
            "mfpt_ns": {"C7eq->C7ax": mfpt(eq, ax), "C7ax->C7eq": mfpt(ax, eq)},
            "mfpt_se_ns": {"C7eq->C7ax": mfpt(eq, ax, est.mfpt_se), "C7ax->C7eq": mfpt(ax, eq, est.mfpt_se)},
            "method": est.method}


def reach_table(reference: list, window: int, cells: int = 24) -> np.ndarray:
    """P(a C7eq frame within the next ``window`` frames | (φ, ψ) cell of a frame), from the reference trajectories.

    ``cells`` × ``cells`` cells on (φ, ψ); NaN where the reference has fewer than 20 frames.
    """
    hits, total = np.zeros(cells * cells), np.zeros(cells * cells)
    for x in reference:
        start = np.arange(len(x) - window)
        in_eq = np.concatenate([[0], np.cumsum(C7EQ(x[:, 0]))])
        np.add.at(hits, phi_psi_cell(x[start], cells), (in_eq[start + window + 1] - in_eq[start + 1]) > 0)
        np.add.at(total, phi_psi_cell(x[start], cells), 1)
    return np.divide(hits, total, out=np.full(cells * cells, np.nan), where=total >= 20)


def phi_psi_cell(x: np.ndarray, cells: int) -> np.ndarray:
    """Cell index of (φ, ψ) rows on a ``cells`` × ``cells`` grid over [−π, π)²."""
    i = np.clip(((x[..., 0] + np.pi) / (2 * np.pi) * cells).astype(int), 0, cells - 1)
    j = np.clip(((x[..., 1] + np.pi) / (2 * np.pi) * cells).astype(int), 0, cells - 1)
    return i * cells + j


def seed_exits(directory: Path, quartet: np.ndarray, table: np.ndarray, cells: int = 24) -> dict:
    """Restarted unbiased walkers whose first frame is in C7ax: how many reach C7eq, and how many equilibrium
    frames of the same (φ, ψ) cells would (``reach_table``).  A ratio above 1: these walkers are not an
    equilibrium sample of exits from C7ax (the first frame is 1 ps after the seed, so it does not say why)."""
    from lss_engine.campaign.driver import Campaign
    from lss_engine.store import TrajectoryStore
    from lss_engine.systems import ALANINE_PSI_INDICES

    campaign = Campaign(directory)
    observed, expected, variance, walkers, untested = 0, 0.0, 0.0, 0, 0
    for c in campaign.state.unbiased():
        if c["round"] == 0:
            continue
        phi = store_phi(TrajectoryStore(campaign.dir / c["folder"] / "md.zarr"), quartet)
        if not C7AX(phi[:1])[0]:
            continue
        first = TrajectoryStore(campaign.dir / c["folder"] / "restarts.zarr").positions(0, 1)
        psi = phi_of(first, np.asarray(ALANINE_PSI_INDICES))[0]
        p = table[phi_psi_cell(np.array([phi[0], psi]), cells)]
        if not np.isfinite(p):
            untested += 1
            continue
        walkers += 1
        observed += int(C7EQ(phi[1:]).any())
        expected += float(p)
        variance += float(p * (1.0 - p))  # of the count if the walkers were equilibrium frames (Poisson-binomial)
    return {"walkers": walkers, "reached_C7eq": observed, "expected": expected, "variance": variance,
            "cells_without_reference": untested}


def reference_summary(phi_psi: list) -> dict:
    """A long-MD reference from (φ, ψ) trajectories (one frame per ps): FES(φ), cored MFPTs and ΔF.

    MFPTs, their exact 95 % intervals and the slowest timescale from
    :func:`lss_engine.pipeline.torsion_kinetics` (the rule of ``ala2_450K_reference.json``).
    """
    from lss_engine.kinetics import free_energy_1d
    from lss_engine.pipeline import torsion_kinetics

    phi = [np.asarray(x, dtype=float)[:, 0] for x in phi_psi]
    kinetics = torsion_kinetics(phi, [np.asarray(x, dtype=float)[:, 1] for x in phi_psi], dt=1.0)
    allphi = np.concatenate(phi)
    return {"fes": free_energy_1d(phi, bins=EDGES), "ns": kinetics["time_ns"],
            "mfpt_ns": {k: v["mean"] / 1000.0 for k, v in kinetics["mfpt_ps"].items()},
            "mfpt_ci95_ns": {k: [c / 1000.0 for c in v["ci95"]] for k, v in kinetics["mfpt_ps"].items()},
            "transitions": {k: v["n"] for k, v in kinetics["mfpt_ps"].items()},
            "slowest_timescale_ps": kinetics["slowest_timescale_ps"],
            "dF_kT": float(-np.log(C7AX(allphi).mean() / C7EQ(allphi).mean()))}  # F(C7ax) − F(C7eq), kT


def delta_f(populations: dict) -> float:
    """ΔF = −ln(P(C7ax)/P(C7eq)) in kT; infinite when either core is outside the estimate (an infinite error)."""
    ax, eq = populations["C7ax"], populations["C7eq"]
    return float(-np.log(ax / eq)) if ax > 0 and eq > 0 else float("inf")


def paired_median_difference(a, b, n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """median(a) − median(b) of per-seed errors, with a 95 % bootstrap interval that draws seeds (pairs) with
    replacement; an infinite error (no estimate) stays infinite, a sample whose difference is undefined is left
    out.  The bounds are order statistics of the samples (no interpolation, which would turn an infinite
    neighbour into NaN)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    with np.errstate(invalid="ignore"):
        d = np.median(a[idx], axis=1) - np.median(b[idx], axis=1)
        lo, hi = np.nanpercentile(d, 2.5, method="lower"), np.nanpercentile(d, 97.5, method="higher")
        return float(np.median(a) - np.median(b)), float(lo), float(hi)


def as_number(value, missing: float = float("nan")) -> float:
    """A stored number (None once through JSON) as a float."""
    return missing if value is None else float(value)


def as_profile(values: list) -> np.ndarray:
    """A stored FES list as an array (empty bins, None once through JSON, as NaN)."""
    return np.array([as_number(v) for v in values], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-ns", type=float, default=8.0)
    parser.add_argument("--walkers", type=int, default=8)
    parser.add_argument("--walker-ps", type=float, default=100.0)
    parser.add_argument("--plain-walkers", type=int, default=2)
    parser.add_argument("--ranker", default="counts")
    parser.add_argument("--features", default="backbone-torsions-sincos,heavy-atom-distances",
                        help="campaign and plain-MD features (sin/cos torsions: no jump where φ wraps at ±π)")
    parser.add_argument("--explorers", type=int, default=0,
                        help="flood explorers per campaign round (lss_engine.bias; their frames only seed walkers)")
    parser.add_argument("--height", type=float, default=2.0, help="flood explorers' hill height per ln(1 + N_c)")
    parser.add_argument("--mts", type=int, default=1,
                        help="explorers evaluate their bias every MTS steps (MTSLangevinIntegrator)")
    parser.add_argument("--seed-from", default="any", choices=("any", "unbiased"),
                        help="campaign [ranker] seed_from: 'unbiased' seeds from explorers' frames only in cells "
                             "no unbiased walker reached")
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--boot", type=int, default=0,
                        help="bootstrap samples of the estimates' errors (MFPT ± SE; with explorers one TRAM fit each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default="runs/adaptive_eq")
    parser.add_argument("--rescore", metavar="RESULTS_JSON",
                        help="score the estimates of an earlier run's results.json again (no MD, no estimates)")
    parser.add_argument("--more-reference", nargs="*", default=[], metavar="STORE",
                        help="stores of more long MD of the reference's set-up (lss simulate --system "
                             "alanine-dipeptide --temperature 450 --features backbone-torsions ...), pooled with the "
                             "shared reference into a second, tighter one; the errors against it are printed too")
    args = parser.parse_args()

    from lss_engine.campaign.executors import ProcessPoolExecutor
    from lss_engine.kinetics import fes_rmse

    reference = [np.load(f) for f in sorted(REFERENCE.glob("phi_psi_seed*.npy"))]
    shared = reference_summary(reference)
    ref_fes, ref_mfpt, ref_dF = shared["fes"], shared["mfpt_ns"], shared["dF_kT"]
    stored = json.loads((Path(__file__).resolve().parents[1] / "lss_engine" / "resources" /
                         "ala2_450K_reference.json").read_text())["mfpt_ns"]
    if any(abs(ref_mfpt[k] - v) > 0.01 * v for k, v in stored.items()):  # the JSON rounds to 3 digits
        raise SystemExit(f"the shared reference's MFPTs {ref_mfpt} differ from ala2_450K_reference.json's {stored}")
    references = {"shared": shared}
    if args.more_reference:
        from lss_engine.store import TrajectoryStore

        more = [TrajectoryStore(p).features()[:, :2] for p in args.more_reference]  # φ, ψ (backbone-torsions)
        references["pooled"] = reference_summary(reference + more)
    for name, ref in references.items():
        print(f"reference {name} ({ref['ns']:g} ns): " + ", ".join(
            f"MFPT {k.replace('->', '→')} {v:.3g} ns [{ref['mfpt_ci95_ns'][k][0]:.3g}, "
            f"{ref['mfpt_ci95_ns'][k][1]:.3g}] (n={ref['transitions'][k]})" for k, v in ref["mfpt_ns"].items())
              + f"; ΔF(C7ax−C7eq) {ref['dF_kT']:.2f} kT; slowest timescale {ref['slowest_timescale_ps']:.0f} ps",
              flush=True)
    quartet = phi_indices()
    rows, t0 = [], time.perf_counter()
    table = reach_table(reference, int(round(args.walker_ps)) - 1)  # frames 1 ps apart; a walker's first at 1 ps

    def score(values: dict, ref: dict = shared) -> dict:
        """Errors of one estimate (``values_of``, or a row of a results file) against a reference."""
        fes = as_profile(values["fes_kT"])
        populated = np.isfinite(fes) & np.isfinite(ref["fes"].free_energy)
        mfpt = {k: as_number(v) for k, v in values["mfpt_ns"].items()}
        dF = as_number(values["dF_kT"], float("inf"))
        return {"fes_rmse_kT": float(fes_rmse(fes, ref["fes"], populated)),
                "bins_compared": int(populated.sum()), "mfpt_ns": mfpt,
                "mfpt_se_ns": {k: as_number((values.get("mfpt_se_ns") or {}).get(k)) for k in mfpt},  # older: none
                "mfpt_log_error": {k: float(abs(np.log(v / ref["mfpt_ns"][k]))) if v and np.isfinite(v)
                                   else float("inf") for k, v in mfpt.items()},
                "dF_kT": dF, "dF_error_kT": abs(dF - ref["dF_kT"]), "fes_kT": fes.tolist(),
                "method": values["method"]}

    def values_of(result: dict) -> dict:
        """What ``score`` needs of an estimate (``estimate``)."""
        return {"fes_kT": result["fes"].free_energy, "dF_kT": delta_f(result["populations"]),
                "mfpt_ns": result["mfpt_ns"], "mfpt_se_ns": result["mfpt_se_ns"], "method": result["method"]}

    def line(row: dict) -> str:
        m, se = row["mfpt_ns"], row["mfpt_se_ns"]
        err = {k: "" if np.isnan(se[k]) else f" ± {se[k]:.2g}" for k in m}  # bootstrap SE (--boot; inf: unbounded)
        return (f"FES(φ) RMSE {row['fes_rmse_kT']:.2f} kT ({row['bins_compared']} bins), MFPT C7eq→C7ax "
                f"{m['C7eq->C7ax']:.3g}{err['C7eq->C7ax']} ns, C7ax→C7eq {m['C7ax->C7eq']:.3g}{err['C7ax->C7eq']} "
                f"ns, ΔF(C7ax−C7eq) {row['dF_kT']:.2f} kT")

    if args.rescore:  # the estimates of an earlier run, scored again (e.g. against a pooled reference)
        earlier = json.loads(Path(args.rescore).read_text())
        rows, args.budget_ns = earlier["rows"], earlier["args"]["budget_ns"]
        for row in rows:
            row.update(score(row))
            directory = Path(earlier["args"]["workdir"]) / row["kind"] / f"seed{row['seed']}"
            if row["kind"] == "campaign" and directory.is_dir():  # the seeds' diagnostic, recomputed (cheap)
                row["seed_exits"] = seed_exits(directory, quartet, table)
            if "unbiased_msm" in row:
                row["unbiased_msm"] = score(row["unbiased_msm"])
            if "pooled" in references:
                row["pooled_reference"] = score(row, references["pooled"])
            print(f"seed {row['seed']} {row['kind']:8s}: {row['md_ns']:.2f} ns MD, {line(row)}", flush=True)
        args.seeds = 1 + max(r["seed"] for r in rows)
    with contextlib.nullcontext() if args.rescore else ProcessPoolExecutor(args.workers) as pool:
        for seed in range(0 if args.rescore else args.seeds):
            for kind in ("campaign", "plain"):
                result = estimate(run(kind, seed, args, pool), quartet, args.clusters, seed, args.boot)
                row = {"seed": seed, "kind": kind, "md_ns": result["md_ns"], "rounds": result["rounds"],
                       **score(values_of(result))}
                if "pooled" in references:
                    row["pooled_reference"] = score(values_of(result), references["pooled"])
                if kind == "campaign":
                    row["seed_exits"] = seed_exits(Path(args.workdir) / kind / f"seed{seed}", quartet, table)
                    e = row["seed_exits"]
                    print(f"seed {seed} {kind:8s}: restarted walkers starting in C7ax that reach C7eq: "
                          f"{e['reached_C7eq']} of {e['walkers']}, equilibrium frames of their (φ, ψ) cells: "
                          f"{e['expected']:.1f} ({e['cells_without_reference']} in cells the reference "
                          f"hardly visits)", flush=True)
                if "unbiased_msm" in result:
                    row["unbiased_msm"] = score(values_of(result["unbiased_msm"]))
                    print(f"seed {seed} {kind:8s}: unbiased walkers' MSM alone: {line(row['unbiased_msm'])}",
                          flush=True)
                rows.append(row)
                print(f"seed {seed} {kind:8s}: {row['md_ns']:.2f} ns MD, {line(row)} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\nalanine dipeptide 450 K, {args.budget_ns:g} ns of total MD each; shared reference 2 × 250 ns: MFPT "
          f"C7eq→C7ax {ref_mfpt['C7eq->C7ax']:.3g} ns, C7ax→C7eq {ref_mfpt['C7ax->C7eq']:.3g} ns, ΔF(C7ax−C7eq) "
          f"{ref_dF:.2f} kT")

    def medians(label: str, sel: list) -> None:  # a seed without an estimate counts as an infinite error
        print(f"  {label} ({sel[0]['method']}), median over {len(sel)} seeds: FES(φ) RMSE "
              f"{np.median([r['fes_rmse_kT'] for r in sel]):.3g} kT; |ln MFPT error| C7eq→C7ax "
              f"{np.median([r['mfpt_log_error']['C7eq->C7ax'] for r in sel]):.3g}, C7ax→C7eq "
              f"{np.median([r['mfpt_log_error']['C7ax->C7eq'] for r in sel]):.3g}; |ΔF error| "
              f"{np.median([r['dF_error_kT'] for r in sel]):.3g} kT")

    def differences(sel_campaign: list, sel_plain: list) -> None:
        metrics = {"FES(φ) RMSE": lambda r: r["fes_rmse_kT"],
                   "|ln MFPT error| C7eq→C7ax": lambda r: r["mfpt_log_error"]["C7eq->C7ax"],
                   "C7ax→C7eq": lambda r: r["mfpt_log_error"]["C7ax->C7eq"],
                   "|ΔF error|": lambda r: r["dF_error_kT"]}
        parts = []
        for name, get in metrics.items():
            d, lo, hi = paired_median_difference([get(r) for r in sel_campaign], [get(r) for r in sel_plain])
            parts.append(f"{name} {d:+.3g} [{lo:+.3g}, {hi:+.3g}]")
        print("  campaign − plain, difference of the medians [95 % interval, seeds drawn with replacement]: "
              + "; ".join(parts))

    by_seed = lambda sel: sorted(sel, key=lambda r: r["seed"])  # noqa: E731  (pairs line up by seed)
    for kind in ("campaign", "plain"):
        medians(kind, [r for r in rows if r["kind"] == kind])
    differences(*[[r for r in by_seed(rows) if r["kind"] == kind] for kind in ("campaign", "plain")])
    exits = [r["seed_exits"] for r in rows if "seed_exits" in r]
    if exits:
        observed, expected = sum(e["reached_C7eq"] for e in exits), sum(e["expected"] for e in exits)
        sd = np.sqrt(sum(e.get("variance", np.nan) for e in exits))
        print(f"  restarted walkers starting in C7ax, all seeds: {observed} of {sum(e['walkers'] for e in exits)} "
              f"reach C7eq; equilibrium frames of their (φ, ψ) cells: {expected:.1f} ± {sd:.1f} "
              f"(z = {(observed - expected) / sd:.1f})")
    alone = [r["unbiased_msm"] for r in rows if "unbiased_msm" in r]
    if alone:
        medians("campaign, unbiased walkers' MSM alone", alone)
    if "pooled" in references:
        print(f"  against the pooled reference ({references['pooled']['ns']:g} ns):")
        for kind in ("campaign", "plain"):
            medians(kind, [r["pooled_reference"] for r in rows if r["kind"] == kind])
        differences(*[[r["pooled_reference"] for r in by_seed(rows) if r["kind"] == kind]
                      for kind in ("campaign", "plain")])
    # the same bins for both: those populated in the reference and in both estimates of a seed
    print("  FES(φ) RMSE over the bins populated in the reference, the campaign's and the plain estimate of a seed:")
    common_rmse = []
    for seed in range(args.seeds):
        a, b = [as_profile(r["fes_kT"]) for r in by_seed(rows) if r["seed"] == seed]  # campaign, plain
        common = np.isfinite(a) & np.isfinite(b) & np.isfinite(ref_fes.free_energy)
        common_rmse.append((fes_rmse(a, ref_fes, common), fes_rmse(b, ref_fes, common)))
        print(f"    seed {seed}: {int(common.sum())} bins; campaign {common_rmse[-1][0]:.2f} kT, plain "
              f"{common_rmse[-1][1]:.2f} kT")
    d, lo, hi = paired_median_difference(*np.array(common_rmse).T)
    print(f"    medians: campaign {np.median([c for c, _ in common_rmse]):.3g} kT, plain "
          f"{np.median([p for _, p in common_rmse]):.3g} kT; difference {d:+.3g} [{lo:+.3g}, {hi:+.3g}]; campaign "
          f"lower in {sum(c < p for c, p in common_rmse)} of {len(common_rmse)} seeds")
    from lss_engine._helpers import jsonable

    summaries = {name: {k: v for k, v in ref.items() if k != "fes"} for name, ref in references.items()}
    out = Path(args.workdir) / ("rescored.json" if args.rescore else "results.json")
    out.write_text(json.dumps(jsonable({"args": vars(args), "rows": rows, "references": summaries}), indent=1,
                              allow_nan=False))


if __name__ == "__main__":
    main()
