"""Acceptance run of issue 4 on alanine dipeptide (vacuum, 450 K): an MDN in the SRV latent space.

Takes an SRV model directory (e.g. from ``benchmarks/acceptance_encoders.py``)
and the MD store it was trained on; trains an MDN propagator at the encoder's
lag (``lss train --stages propagator``), generates synthetic latent
trajectories (``lss sample-latent``), and compares with MD:

* autocorrelation (relaxation) times of ψ1 and ψ2: within 20 % of MD's, or
  within two of MD's 5-block standard errors where those are wider;
* the free-energy profile along ψ1 (50 bins): RMSE ≤ 0.5 kT over the populated
  bins, those holding ≥ 10 MD frames (MD's own counting error there is
  ≤ 0.3 kT; bins with 1-3 frames are noise at the 1 kT level).  The RMSE over
  every bin visited by both is printed too.

The MDN works in the quantile-blend coordinates by default (``--transform``,
``--linear-weight``; see ``MDNPropagator``): the SRV's ψ1 is close to an
indicator of the two basins, with hard edges and an empty gap, which standard
scores leave to Gaussian components that spill over the edges.

MD's ψ is read at the propagator's time step (every lag-th frame), so both
series have the same sampling interval and MD's 5 blocks are contiguous in time.

    python benchmarks/acceptance_mdn_ala2.py --model runs/acceptance_encoders/ala2_srv \\
        --store runs/ala2_450K_100ns.zarr
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


MIN_COUNT = 10  # MD frames in a bin for it to count as populated


class _scalar:
    """Relaxation times of a single coordinate as plain floats."""

    def __init__(self, result):
        self.tau_fit = float(np.ravel(result.tau_fit)[0])
        self.tau_fit_errors = float(np.ravel(result.tau_fit_errors)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/acceptance_encoders/ala2_srv")
    parser.add_argument("--store", default="runs/ala2_450K_100ns.zarr")
    parser.add_argument("--workdir", default="runs/acceptance_mdn_ala2")
    parser.add_argument("--lag", default=None, help="propagator lag (default: the encoder's)")
    parser.add_argument("--walkers", type=int, default=10)
    parser.add_argument("--components", type=int, default=24, help="(default: %(default)s, as PropagatorSettings)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--transform", default="quantile", choices=["quantile", "standard"],
                        help="coordinates of the MDN (default: %(default)s)")
    parser.add_argument("--linear-weight", type=float, default=0.5,
                        help="share of standard scores in the quantile transform (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="keep a propagator already trained in --workdir")
    args = parser.parse_args()

    from lss_engine import kinetics
    from lss_engine.pipeline import PropagatorSettings, load_encoder, sample_latent, train_propagator
    from lss_engine.store import open_store, open_stores

    workdir = Path(args.workdir)
    model = workdir / "model"
    store = open_store(args.store)
    train_seconds = 0.0
    if args.reuse and (model / "propagator.safetensors").exists():
        from lss_engine.bundle import ModelBundle

        meta = ModelBundle.load(model)["propagator"].meta
    else:
        if model.exists():
            shutil.rmtree(model)
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(args.model, model, ignore=shutil.ignore_patterns("checkpoints"))
        t0 = time.perf_counter()
        meta = train_propagator(model, [store], PropagatorSettings(kind="mdn", n_components=args.components,
                                                                    lag=args.lag, epochs=args.epochs, transform=args.transform,
                                                                    linear_weight=args.linear_weight,
                                                                    seed=args.seed, progress=False))
        train_seconds = time.perf_counter() - t0
    encoder = load_encoder(model)
    lag = meta["lag_frames"]
    dt = meta["lag_ps"]
    psi_md = encoder.latent(store.features())
    md = [psi_md[::lag]]  # MD at the propagator's time step (one series: blocks are contiguous in time)
    n_steps = len(psi_md) // lag
    t0 = time.perf_counter()
    synth_dir = workdir / "latent"
    if synth_dir.exists():
        shutil.rmtree(synth_dir)
    sample_latent(model, n_steps, args.walkers, synth_dir, seed=args.seed, progress=False)
    sample_seconds = time.perf_counter() - t0
    synth = [s.features() for s in open_stores(synth_dir)]

    report: dict = {"lag_ps": dt, "train_seconds": train_seconds, "sample_seconds": sample_seconds,
                    "md_ns": len(psi_md) * store.frame_interval_ps / 1000,
                    "synthetic_ns": args.walkers * n_steps * dt / 1000, "components": args.components}
    ok = True
    for i in range(2):
        max_lag = min(len(m) for m in md) // 10
        r_md = kinetics.relaxation_times([m[:, i] for m in md], dt=dt, max_lag=max_lag)
        r_lss = kinetics.relaxation_times([s[:, i] for s in synth], dt=dt, max_lag=max_lag)
        r_md, r_lss = _scalar(r_md), _scalar(r_lss)
        diff = abs(r_lss.tau_fit / r_md.tau_fit - 1)
        tol = max(0.2 * r_md.tau_fit, 2 * r_md.tau_fit_errors)
        passed = abs(r_lss.tau_fit - r_md.tau_fit) <= tol
        ok &= passed
        report[f"psi{i + 1}"] = {"md_tau_ps": r_md.tau_fit, "md_tau_se_ps": r_md.tau_fit_errors,
                                 "lss_tau_ps": r_lss.tau_fit, "lss_tau_se_ps": r_lss.tau_fit_errors,
                                 "relative_difference": diff, "tolerance_ps": tol, "pass": bool(passed)}
        print(f"ψ{i + 1} relaxation time: MD {r_md.tau_fit:.1f} ± {r_md.tau_fit_errors:.1f} ps, "
              f"LSS {r_lss.tau_fit:.1f} ± {r_lss.tau_fit_errors:.1f} ps ({100 * (r_lss.tau_fit / r_md.tau_fit - 1):+.1f} %; "
              f"allowed ±{tol:.1f} ps) {'PASS' if passed else 'FAIL'}")
    lo = min(np.concatenate(md)[:, 0].min(), np.concatenate(synth)[:, 0].min())
    hi = max(np.concatenate(md)[:, 0].max(), np.concatenate(synth)[:, 0].max())
    # the FES is a static property: MD's reference uses every frame
    f_md = kinetics.free_energy_1d(psi_md[:, 0], bins=50, range=(lo, hi))
    f_lss = kinetics.free_energy_1d([s[:, 0] for s in synth], bins=50, range=(lo, hi))
    # populated bins: ≥ 10 MD frames, where MD's own counting error of F is ≤ 1/sqrt(10) ≈ 0.3 kT
    counts_md = np.histogram(psi_md[:, 0], bins=50, range=(lo, hi))[0]
    populated = counts_md >= MIN_COUNT
    rmse = float(kinetics.fes_rmse(f_md, f_lss, populated))
    rmse_all = float(kinetics.fes_rmse(f_md, f_lss))
    passed = rmse <= 0.5
    ok &= passed
    report["fes_psi1_rmse_kT"] = rmse
    report["fes_psi1_populated_bins"] = int(populated.sum())
    report["fes_psi1_rmse_kT_all_shared_bins"] = rmse_all
    print(f"FES along ψ1: RMSE {rmse:.3f} kT over the {int(populated.sum())} bins with ≥ {MIN_COUNT} MD frames "
          f"(target ≤ 0.5 kT) {'PASS' if passed else 'FAIL'}; over every bin visited by both: {rmse_all:.3f} kT")
    outside = float(np.mean((np.concatenate(synth) < np.concatenate(md).min(0)) |
                            (np.concatenate(synth) > np.concatenate(md).max(0))))
    report["fraction_outside_md_range"] = outside
    print(f"synthetic frames outside MD's range of ψ: {100 * outside:.3f} %; MDN training {train_seconds:.0f} s, "
          f"sampling {args.walkers} × {n_steps} steps in {sample_seconds:.1f} s")
    report["pass"] = bool(ok)
    from lss_engine.kinetics import plots

    plots.save_figure(plots.plot_free_energy([f_md, f_lss], labels=["MD", "LSS"], xlabel="ψ1"), workdir / "fes_psi1.png")
    (workdir / "acceptance.json").write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
