"""Equilibrium numbers from adaptive data: a campaign vs plain MD of the same total length, alanine dipeptide 450 K.

For each seed:

* campaign: ``lss campaign`` (ranker ``--ranker``), ``--walkers`` walkers ×
  ``--walker-ps`` per round until ``--budget-ns`` of total MD;
* plain MD: ``--plain-walkers`` walkers of ``budget / plain_walkers`` each, run
  through the same machinery (one campaign round, ranker ``continue``), so the
  encoder is trained the same way;

then from each final model the Markovian estimate
(``lss_engine.campaign.estimates.markov_estimate``: a reversible MSM on
``--clusters`` k-means cells of the SRV latent space, frame weights π_i/N_i):
the FES along φ and the C7eq↔C7ax mean first-passage times between the cored
states (C7eq: φ < −1.0 or φ > 2.6; C7ax: 0.5 < φ < 1.8), against the shared
2 × 250 ns reference (``../shared/data/ala2_vacuum_450K``; its FES from the
frames' histogram, its MFPTs from lss_engine/resources/ala2_450K_reference.json).
Errors: FES RMSE in kT over bins populated in both (and, per seed, over the
bins populated in the reference and in both estimates: a run that never
reached C7ax is otherwise scored on C7eq alone); MFPT error
|ln(estimate / reference)| (infinite without an estimate); the free-energy difference
ΔF = −ln(P(C7ax)/P(C7eq)) of the cored states from the MSM's populations,
error |ΔF − ΔF_ref| in kT (infinite for a run that never reached C7ax).  The
table gives each seed and the median over seeds.

Both runs use the same features (default: sin/cos of φ, ψ and the
heavy-atom distances; raw angles jump by 2π inside C7eq, where φ wraps).
``--explorers N`` adds N flood explorers per campaign round
(``[explore] mode = "flood"``, :mod:`lss_engine.bias`): their biased frames
only seed walkers and count toward the MD budget, never toward the MSM;
``--mts n`` has them evaluate their bias every n steps (``[explore] mts``).
With explorers the campaign also gets a multi-ensemble estimate: TRAM
(``lss_engine.bias.tram_weights``, deeptime) over every committed walker,
each explorer its own thermodynamic state under its static bias
(``Campaign.bias_energies``), the unbiased walkers the reference state, on
the same k-means cells of the final latent space; it gives FES(φ) and ΔF
(MFPTs stay the MSM's).

Run:  OMP_NUM_THREADS=1 python benchmarks/adaptive_equilibrium_ala2.py --seeds 3 --budget-ns 8 --workdir runs/adaptive_eq
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from adaptive_ala2 import phi_indices, store_phi  # noqa: E402  (the one φ rule of the benchmarks)

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
cells = 100
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
    else:
        walkers, walker_ps, ranker, explorers = (args.plain_walkers, args.budget_ns * 1000 / args.plain_walkers,
                                                 "continue", 0)
    directory = Path(args.workdir) / kind / f"seed{seed}"
    text = CONFIG.format(seed=seed, walkers=walkers, walker_ps=f"{walker_ps:g}", ranker=ranker,
                         budget_ns=args.budget_ns, features=args.features, explorers=explorers, height=args.height,
                         mts=args.mts)
    config = CampaignConfig.from_mapping(tomllib.loads(text))
    if (directory / "campaign.json").exists():  # a finished run of the same config is reused
        done = Campaign(directory)
        if done.config == config and done.state.stopped is not None:
            return directory
    shutil.rmtree(directory, ignore_errors=True)
    campaign = Campaign(init_campaign(directory, config))
    campaign.run(executor=executor, progress=False)
    return directory


def estimate(directory: Path, quartet: np.ndarray, clusters: int, seed: int) -> dict:
    from lss_engine.campaign.driver import Campaign
    from lss_engine.campaign.estimates import markov_estimate
    from lss_engine.errors import LssError
    from lss_engine.store import TrajectoryStore

    campaign = Campaign(directory)
    state = campaign.state
    last = max(state.models)
    stores = [TrajectoryStore(campaign.dir / c["folder"] / "md.zarr") for c in state.unbiased()]
    features = [s.features() for s in stores]
    latent = np.split(campaign.latent_of(last, features=np.concatenate(features)),
                      np.cumsum([len(f) for f in features])[:-1])
    phi = [store_phi(s, quartet) for s in stores]
    encoder = campaign.encoder(last)
    est = markov_estimate(latent, encoder.lag_frames, encoder.frame_interval_ps, n_clusters=clusters, seed=seed,
                          n_boot=0)
    fes = est.free_energy(phi, bins=EDGES)
    eq, ax = [C7EQ(p) for p in phi], [C7AX(p) for p in phi]
    raw = np.histogram(np.concatenate(phi), EDGES)[0]

    def mfpt(a, b) -> float:
        try:
            return est.mfpt(a, b) / 1000.0
        except LssError:  # a state never visited (or outside the active set): no estimate
            return float("nan")

    pops = est.populations({"C7eq": eq, "C7ax": ax})
    out = {"fes": fes, "raw_counts": raw, "populations": pops,
           "mfpt_ns": {"C7eq->C7ax": mfpt(eq, ax), "C7ax->C7eq": mfpt(ax, eq)},
           "md_ns": state.md_steps() * campaign.resolved["timestep_ps"] / 1000.0, "rounds": len(state.models),
           "method": est.method}
    if any(c.get("bias") for c in state.committed()):
        out["tram"] = tram_estimate(campaign, last, quartet, clusters, seed)
    return out


def tram_estimate(campaign, last: int, quartet: np.ndarray, clusters: int, seed: int) -> dict:
    """TRAM over every committed walker: the unbiased ones and each explorer as its own biased ensemble.

    Microstates: k-means on the final model's latent of all frames; biases:
    ``Campaign.bias_energies`` (each explorer's static bias on every frame);
    lag: the model's.  Gives frame weights, hence FES(φ) and the cored
    populations (no MFPTs: those stay the unbiased MSM's).
    """
    from openmm import unit

    from lss_engine.bias import tram_weights
    from lss_engine.kinetics import free_energy_1d, kmeans
    from lss_engine.store import TrajectoryStore

    committed = campaign.state.committed()
    bias_kn, run_of_frame, lengths = campaign.bias_energies(committed)
    latent = campaign.latent_of(last, features=np.concatenate(campaign.features(committed)))
    dtraj = kmeans(latent, clusters, seed=seed).assign(latent)
    kT = (unit.MOLAR_GAS_CONSTANT_R * campaign.resolved["temperature_K"] * unit.kelvin).value_in_unit(
        unit.kilojoule_per_mole)
    result = tram_weights(bias_kn, run_of_frame, dtraj, kT=kT, lag=campaign.encoder(last).lag_frames,
                          trajectory_lengths=lengths)
    phi = [store_phi(TrajectoryStore(campaign.dir / c["folder"] / "md.zarr"), quartet) for c in committed]
    w, allphi = np.asarray(result.weights), np.concatenate(phi)
    return {"fes": free_energy_1d(phi, bins=EDGES, weights=np.split(w, np.cumsum(lengths)[:-1])),
            "populations": {"C7eq": float(w[C7EQ(allphi)].sum()), "C7ax": float(w[C7AX(allphi)].sum())},
            "explorers": int(bias_kn.shape[0] - 1), "converged": bool(result.converged)}


def delta_f(populations: dict) -> float:
    """ΔF = −ln(P(C7ax)/P(C7eq)) in kT; infinite when either core is outside the estimate (an infinite error)."""
    ax, eq = populations["C7ax"], populations["C7eq"]
    return float(-np.log(ax / eq)) if ax > 0 and eq > 0 else float("inf")


def as_profile(values: list) -> np.ndarray:
    """A stored FES list as an array (empty bins, None once through JSON, as NaN)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


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
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default="runs/adaptive_eq")
    args = parser.parse_args()

    from lss_engine.campaign.executors import ProcessPoolExecutor
    from lss_engine.kinetics import fes_rmse, free_energy_1d

    reference_phi = [np.load(f)[:, 0] for f in sorted(REFERENCE.glob("phi_psi_seed*.npy"))]
    ref_fes = free_energy_1d(reference_phi, bins=EDGES)
    ref_mfpt = json.loads((Path(__file__).resolve().parents[1] / "lss_engine" / "resources" /
                           "ala2_450K_reference.json").read_text())["mfpt_ns"]
    ref_all = np.concatenate(reference_phi)
    ref_dF = float(-np.log(C7AX(ref_all).mean() / C7EQ(ref_all).mean()))  # F(C7ax) − F(C7eq), kT
    quartet = phi_indices()
    rows, t0 = [], time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for seed in range(args.seeds):
            for kind in ("campaign", "plain"):
                result = estimate(run(kind, seed, args, pool), quartet, args.clusters, seed)
                populated = np.isfinite(result["fes"].free_energy) & np.isfinite(ref_fes.free_energy)
                row = {"seed": seed, "kind": kind, "md_ns": result["md_ns"], "rounds": result["rounds"],
                       "fes_rmse_kT": float(fes_rmse(result["fes"], ref_fes, populated)),
                       "bins_compared": int(populated.sum()),
                       "mfpt_ns": result["mfpt_ns"],
                       "mfpt_log_error": {k: float(abs(np.log(v / ref_mfpt[k])))
                                          if v and np.isfinite(v) else float("inf")
                                          for k, v in result["mfpt_ns"].items()},
                       "method": result["method"]}
                p = result["populations"]
                row["dF_kT"] = delta_f(p)
                row["dF_error_kT"] = abs(row["dF_kT"] - ref_dF)
                row["fes_kT"] = result["fes"].free_energy.tolist()
                if "tram" in result:
                    t = result["tram"]
                    ok = np.isfinite(t["fes"].free_energy) & np.isfinite(ref_fes.free_energy)
                    p = t["populations"]
                    dF = delta_f(p)
                    row["tram"] = {"fes_rmse_kT": float(fes_rmse(t["fes"], ref_fes, ok)), "bins_compared": int(ok.sum()),
                                   "dF_kT": dF, "dF_error_kT": abs(dF - ref_dF), "explorers": t["explorers"],
                                   "converged": t["converged"], "fes_kT": t["fes"].free_energy.tolist()}
                    print(f"seed {seed} {kind:8s}: TRAM over unbiased walkers + {t['explorers']} explorers: FES(φ) "
                          f"RMSE {row['tram']['fes_rmse_kT']:.2f} kT ({int(ok.sum())} bins), ΔF(C7ax−C7eq) {dF:.2f} kT",
                          flush=True)
                rows.append(row)
                print(f"seed {seed} {kind:8s}: {row['md_ns']:.2f} ns MD, FES(φ) RMSE {row['fes_rmse_kT']:.2f} kT "
                      f"({row['bins_compared']} bins), MFPT C7eq→C7ax {row['mfpt_ns']['C7eq->C7ax']:.3g} ns, "
                      f"C7ax→C7eq {row['mfpt_ns']['C7ax->C7eq']:.3g} ns, ΔF(C7ax−C7eq) {row['dF_kT']:.2f} kT "
                      f"({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    print(f"\nalanine dipeptide 450 K, {args.budget_ns:g} ns of total MD each; Markovian estimates "
          f"({rows[0]['method']}); reference 2 × 250 ns: MFPT C7eq→C7ax {ref_mfpt['C7eq->C7ax']} ns, "
          f"C7ax→C7eq {ref_mfpt['C7ax->C7eq']} ns, ΔF(C7ax−C7eq) {ref_dF:.2f} kT")
    for kind in ("campaign", "plain"):
        sel = [r for r in rows if r["kind"] == kind]

        def med(values):  # a seed without an estimate (C7ax never reached) counts as an infinite error
            return f"{np.median(values):.3g}"

        print(f"  {kind:8s} median over {len(sel)} seeds: FES(φ) RMSE {med([r['fes_rmse_kT'] for r in sel])} kT; "
              f"|ln MFPT error| C7eq→C7ax {med([r['mfpt_log_error']['C7eq->C7ax'] for r in sel])}, "
              f"C7ax→C7eq {med([r['mfpt_log_error']['C7ax->C7eq'] for r in sel])}; "
              f"|ΔF error| {med([r['dF_error_kT'] for r in sel])} kT")
    tram = [r["tram"] for r in rows if "tram" in r]
    if tram:
        print(f"  campaign TRAM (unbiased walkers + explorers) median over {len(tram)} seeds: FES(φ) RMSE "
              f"{np.median([t['fes_rmse_kT'] for t in tram]):.3g} kT; |ΔF error| "
              f"{np.median([t['dF_error_kT'] for t in tram]):.3g} kT")
    # the same bins for both: those populated in the reference and in both estimates of a seed
    print("  FES(φ) RMSE over the bins populated in the reference, the campaign's and the plain estimate of a seed:")
    for seed in range(args.seeds):
        a, b = [as_profile(r["fes_kT"]) for r in rows if r["seed"] == seed]
        common = np.isfinite(a) & np.isfinite(b) & np.isfinite(ref_fes.free_energy)
        line = (f"    seed {seed}: {int(common.sum())} bins; campaign {fes_rmse(a, ref_fes, common):.2f} kT, plain "
                f"{fes_rmse(b, ref_fes, common):.2f} kT")
        t = next((r["tram"] for r in rows if r["seed"] == seed and "tram" in r), None)
        if t is not None:  # TRAM against plain MD on the bins both (and the reference) populate
            c = as_profile(t["fes_kT"])
            both = np.isfinite(c) & np.isfinite(b) & np.isfinite(ref_fes.free_energy)
            line += (f"; TRAM vs plain on their {int(both.sum())} common bins: {fes_rmse(c, ref_fes, both):.2f} vs "
                     f"{fes_rmse(b, ref_fes, both):.2f} kT")
        print(line)
    from lss_engine._helpers import jsonable

    (Path(args.workdir) / "results.json").write_text(json.dumps(jsonable({"args": vars(args), "rows": rows}),
                                                                indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
