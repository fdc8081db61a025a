"""Acceptance runs of issue 3 (kinetic encoders), too long for CI.

1. Asymmetric double well U = x⁴ − 6x² + 2x (Brownian dynamics in OpenMM via
   ``lss_engine.systems``, kT = 2 i.e. β = 0.5, D = 1, Δt = 0.005): a VAMPNet with
   5 softmax outputs vs a 100-bin reversible MSM on the same trajectory, slowest
   implied timescale at the same lag. Target: within 10 %.
2. Alanine dipeptide in vacuum at 450 K (a store from ``lss simulate``, ≥ 50 ns):
   an SRV on heavy-atom distances; ψ1 must separate φ < 0 from φ > 0 frames
   with ≥ 95 % accuracy at one threshold, and its leading implied timescale must
   be within 20 % of a reversible MSM on a 24 × 24 (φ, ψ) grid of the same data
   at the same lag.

    python benchmarks/acceptance_encoders.py --store runs/ala2_450K_100ns.zarr
    # the store is made first when missing:
    # lss simulate --system alanine-dipeptide --temperature 450 --ns 100 --report-interval 1ps \\
    #     --features backbone-torsions,heavy-atom-distances --save-atoms heavy --seed 11 --out STORE

Prints each figure, the target and PASS/FAIL; writes the trained models under --workdir.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def double_well(workdir: Path, steps: int, seed: int) -> dict:
    from lss_engine import kinetics
    from lss_engine.pipeline import EncoderSettings, train_encoder
    from lss_engine.reporters import ZarrReporter
    from lss_engine.store import open_store
    from lss_engine.systems import get_system

    system = get_system("double-well", beta=0.5, timestep=0.005)
    sim = system.make_simulation(seed=seed)
    path = workdir / "double_well.zarr"
    t0 = time.perf_counter()
    with ZarrReporter(path, 20, featurizer="positions", atoms="none", flush_interval=5000, overwrite=True) as rep:
        sim.reporters.append(rep)
        sim.step(steps)
    md_seconds = time.perf_counter() - t0
    store = open_store(path)
    x = store.features()[:, 0]
    lag = 20  # frames = 2 reduced time units
    edges = np.linspace(x.min(), x.max(), 101)
    dtraj = np.clip(np.digitize(x, edges) - 1, 0, 99)
    msm = kinetics.estimate_msm([dtraj], lag, dt=store.frame_interval_ps, n_states=100)
    t_msm = float(msm.timescales(1)[0])
    t0 = time.perf_counter()
    settings = EncoderSettings(kind="vampnet", lag=lag, dim=5, hidden=(32, 32), epochs=200, lr=1e-3,
                               batch_size=500, patience=30, restarts=3, seed=seed, progress=False)
    encoder = train_encoder([store], settings, workdir / "double_well_vampnet", analyze=True)
    t_net = float(encoder.extra["implied_timescales_ps"][0])
    return {
        "frames": len(x), "md_seconds": md_seconds, "train_seconds": time.perf_counter() - t0,
        "msm_100_bins_its": t_msm, "vampnet_its": t_net, "relative_difference": t_net / t_msm - 1,
        "pass": abs(t_net / t_msm - 1) <= 0.10,
    }


def alanine(workdir: Path, store_path: str, lag_ps: float, seed: int) -> dict:
    from lss_engine import kinetics
    from lss_engine.pipeline import EncoderSettings, train_encoder
    from lss_engine.store import open_store

    store = open_store(store_path)
    torsions = store.observable("backbone_torsions")
    phi, psi = torsions[:, 0], torsions[:, 1]
    lag = int(round(lag_ps / store.frame_interval_ps))
    t0 = time.perf_counter()
    settings = EncoderSettings(kind="srv", lag=lag, dim=2, epochs=60, restarts=3, seed=seed, progress=False)
    encoder = train_encoder([store], settings, workdir / "ala2_srv", analyze=True)
    train_seconds = time.perf_counter() - t0
    psi1 = encoder.latent(store.features())[:, 0]
    positive = phi > 0
    # the best single threshold on ψ1, either orientation
    order = np.argsort(psi1)
    below_pos = np.concatenate([[0], np.cumsum(positive[order])])  # φ>0 frames at or below each cut
    n = len(psi1)
    cut = np.arange(n + 1)
    acc_a = (cut - below_pos + (positive.sum() - below_pos)) / n  # below: φ<0, above: φ>0
    acc_b = (below_pos + (n - cut) - (positive.sum() - below_pos)) / n
    accuracy = float(max(acc_a.max(), acc_b.max()))
    bins = np.linspace(-np.pi, np.pi, 25)
    grid = (np.clip(np.digitize(phi, bins) - 1, 0, 23) * 24 + np.clip(np.digitize(psi, bins) - 1, 0, 23))
    msm = kinetics.estimate_msm([grid], lag, dt=store.frame_interval_ps, n_states=576)
    t_msm = float(msm.timescales(1)[0])
    t_srv = float(encoder.extra["implied_timescales_ps"][0])
    return {
        "frames": int(n), "simulated_ns": n * store.frame_interval_ps / 1000, "phi_positive_fraction": float(positive.mean()),
        "train_seconds": train_seconds, "lag_ps": lag * store.frame_interval_ps,
        "psi1_threshold_accuracy": accuracy, "srv_its_ps": t_srv, "msm_phi_psi_24x24_its_ps": t_msm,
        "relative_difference": t_srv / t_msm - 1,
        "pass": accuracy >= 0.95 and abs(t_srv / t_msm - 1) <= 0.20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/ala2_450K_100ns.zarr", help="alanine dipeptide 450 K store")
    parser.add_argument("--workdir", default="runs/acceptance_encoders")
    parser.add_argument("--double-well-steps", type=int, default=5_000_000)
    parser.add_argument("--lag-ps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", choices=["double-well", "alanine"], action="append", default=[])
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    if "double-well" not in args.skip:
        results["double_well"] = r = double_well(workdir, args.double_well_steps, args.seed)
        print(f"double well: {r['frames']} frames; slowest ITS VAMPNet(5) {r['vampnet_its']:.2f} vs 100-bin MSM "
              f"{r['msm_100_bins_its']:.2f} (reduced time) -> {100 * r['relative_difference']:+.1f} % "
              f"(target ±10 %) {'PASS' if r['pass'] else 'FAIL'}")
    if "alanine" not in args.skip:
        if not Path(args.store).exists():
            raise SystemExit(f"{args.store} is missing; make it with lss simulate (see this script's docstring)")
        results["alanine"] = r = alanine(workdir, args.store, args.lag_ps, args.seed)
        print(f"alanine dipeptide: {r['simulated_ns']:.0f} ns, φ>0 in {100 * r['phi_positive_fraction']:.1f} % of "
              f"frames; ψ1 threshold accuracy {100 * r['psi1_threshold_accuracy']:.2f} % (target ≥ 95 %); "
              f"leading ITS SRV {r['srv_its_ps']:.0f} ps vs (φ,ψ) 24×24 MSM {r['msm_phi_psi_24x24_its_ps']:.0f} ps "
              f"at lag {r['lag_ps']:g} ps -> {100 * r['relative_difference']:+.1f} % (target ±20 %) "
              f"{'PASS' if r['pass'] else 'FAIL'}")
    (workdir / "acceptance.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
