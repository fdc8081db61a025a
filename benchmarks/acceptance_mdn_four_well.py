r"""Acceptance run of the MDN propagator on the 1-D four-well potential (LSS paper, Sec. 3.1), not CI.

System
    Prinz's four-well potential :math:`V(x) = a(x^8 + 0.8e^{-80x^2} + 0.2e^{-80(x-0.5)^2}
    + 0.5e^{-40(x+0.5)^2})` in kT (``lss_engine.systems.get_system("four-well")``),
    one particle, OpenMM ``BrownianIntegrator`` with D = 1 nm²/ps and kT = 1
    (reduced units = nm, ps, kT), recorded with ``ZarrReporter`` and the
    ``positions`` featurizer; the MDN is trained directly on x, as in the paper.

Choices (defaults)
    * a = 4 (``four_well``'s default; the paper used 2 in another gauge):
      barriers of 1.8 / 3.0 / 0.8 kT between the wells, so an outer-to-outer
      passage takes ~2–3 ps and 5e6 steps hold on the order of a thousand of
      them each way, while the wells are still clearly metastable.
    * Δt = 1e-3 ps: the drift moves at most ~0.03 nm per step in the steepest
      parts (well widths ~0.1 nm), a frame every 10 steps (0.01 ps).
    * Training MD: 5e6 steps (5000 ps); reference MD: 10× longer
      (5e7 steps), run in a second process while the first is analysed.
    * MDN: lag τ = 5 frames = 0.05 ps (diffusion length √(2Dτ) ≈ 0.3 nm,
      comparable to a well, so transition densities are non-Gaussian and
      several steps cross barriers), C = 8 Gaussians, two hidden layers of
      100 ReLU units (the paper's network), Adam with early stopping on the
      validation NLL (contiguous 20 % blocks).

Targets (for each formulation, default ``bounded=False`` and the reference ``bounded=True``)
    * A synthetic trajectory as long as the training data (5000 ps / τ = 1e5
      steps): Jensen–Shannon divergence (base 2) of its 100-bin histogram on
      [-1.1, 1.1] from the analytic Boltzmann density exp(-V(x)) integrated
      over each bin ≤ 0.01.  The divergence from the MD histogram is printed
      too (the MD's own divergence from exp(-V) shows the integrator bias).
    * Mean first-passage times between cored states around the outer minima,
      A = |x + 0.739| < 0.1 and B = |x - 0.673| < 0.1 (``assign_states`` with
      coring, ``first_passage_times``), A→B and B→A, within 20 % of those of
      the reference MD observed at the same interval τ (the MD at its full
      frame rate is printed for comparison).
    * Default formulation: fraction of synthetic frames at or beyond the
      training range < 0.1 %; for ``bounded=True`` the fraction clipped onto a
      bound is reported.

    python benchmarks/acceptance_mdn_four_well.py                  # ~5-10 min on 2 cores
    python benchmarks/acceptance_mdn_four_well.py --workdir runs/mdn4w --lag 5 --components 8

MD stores are kept under --workdir and reused when their parameters match.
Prints each figure, its target and PASS/FAIL, and writes ``acceptance.json``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

CORE_HALF_WIDTH = 0.1
LEFT_MIN, RIGHT_MIN = -0.739, 0.673
HIST_RANGE = (-1.1, 1.1)
N_BINS = 100


# ------------------------------------------------------------------------------ MD


def md_params(args: argparse.Namespace, steps: int, seed: int) -> dict:
    return {"a": args.a, "timestep_ps": args.dt, "steps": steps, "report_interval": args.report, "seed": seed}


def run_md(path: str, params: dict) -> float:
    """One Brownian run into a store (skipped when a store with these parameters exists); returns seconds."""
    from lss_engine.reporters import ZarrReporter
    from lss_engine.store import open_store
    from lss_engine.systems import get_system

    path = Path(path)
    record = path.with_suffix(".json")
    if path.exists() and record.exists() and json.loads(record.read_text()).get("params") == params:
        if open_store(path).n_frames == params["steps"] // params["report_interval"]:
            return json.loads(record.read_text())["seconds"]
    system = get_system("four-well", a=params["a"], timestep=params["timestep_ps"])
    sim = system.make_simulation(platform="Reference", seed=params["seed"])
    t0 = time.perf_counter()
    with ZarrReporter(path, params["report_interval"], featurizer="positions", atoms="none",
                      flush_interval=20_000, overwrite=True, seed=params["seed"]) as rep:
        sim.reporters.append(rep)
        sim.step(params["steps"])
    seconds = time.perf_counter() - t0
    record.write_text(json.dumps({"params": params, "seconds": seconds}))
    return seconds


def load_x(path: Path) -> tuple[np.ndarray, float]:
    from lss_engine.store import open_store

    store = open_store(path)
    return store.observable("positions")[:, 0].astype(np.float64), store.frame_interval_ps


# ------------------------------------------------------------------------------ analysis


def potential(x: np.ndarray, a: float) -> np.ndarray:
    return a * (x**8 + 0.8 * np.exp(-80 * x**2) + 0.2 * np.exp(-80 * (x - 0.5) ** 2)
                + 0.5 * np.exp(-40 * (x + 0.5) ** 2))


def edges() -> np.ndarray:
    return np.linspace(*HIST_RANGE, N_BINS + 1)


def histogram(x: np.ndarray) -> np.ndarray:
    """Bin probabilities; samples outside the range count in the edge bins."""
    e = edges()
    idx = np.clip(np.searchsorted(e, x, side="right") - 1, 0, N_BINS - 1)
    counts = np.bincount(idx, minlength=N_BINS).astype(float)
    return counts / counts.sum()


def boltzmann_bins(a: float) -> np.ndarray:
    """∫ exp(-V) over each bin (tails beyond the range added to the edge bins), normalised."""
    x = np.linspace(-1.6, 1.6, 640_001)
    w = np.exp(-potential(x, a))
    return histogram_weights(x, w)


def histogram_weights(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    e = edges()
    idx = np.clip(np.searchsorted(e, x, side="right") - 1, 0, N_BINS - 1)
    p = np.bincount(idx, weights=w, minlength=N_BINS)
    return p / p.sum()


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    r""":math:`\mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m)`, :math:`m = (p+q)/2`, in bits."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def mfpts(x: np.ndarray, dt: float) -> dict:
    from lss_engine import kinetics

    states = [kinetics.MetastableState("A", {0: (LEFT_MIN - CORE_HALF_WIDTH, LEFT_MIN + CORE_HALF_WIDTH)}),
              kinetics.MetastableState("B", {0: (RIGHT_MIN - CORE_HALF_WIDTH, RIGHT_MIN + CORE_HALF_WIDTH)})]
    labels = kinetics.assign_states([x[:, None]], states, core=True)
    out = {}
    for name, (src, dst) in (("A->B", (0, 1)), ("B->A", (1, 0))):
        fpt = kinetics.first_passage_times(labels, src, dst, dt=dt)
        mean = float(fpt.times.mean()) if len(fpt.times) else float("nan")
        lo, hi = kinetics.mfpt_confidence_interval(mean, len(fpt.times))
        out[name] = {"mfpt": mean, "n": int(len(fpt.times)), "ci95": [lo, hi]}
    return out


# ------------------------------------------------------------------------------ MDN


def train_mdn(x: np.ndarray, dt_frame: float, args: argparse.Namespace, bounded: bool, workdir: Path):
    from lss_engine.bundle import ModelBundle
    from lss_engine.data import TimeLaggedDataset
    from lss_engine.models import MDNPropagator
    from lss_engine.train import TrainConfig, fit

    data = TimeLaggedDataset([x[:, None].astype(np.float32)], lag=args.lag, frame_interval_ps=dt_frame)
    train, val = data.split(0.2, seed=args.seed)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                         lr_patience=max(1, args.patience // 2), restarts=args.restarts, seed=args.seed,
                         progress=args.progress, device="cpu")

    def factory(seed: int) -> MDNPropagator:
        return MDNPropagator(1, args.components, hidden=tuple(args.hidden), activation="relu", bounded=bounded,
                             min_std=args.min_std).fit_normalization(train)

    t0 = time.perf_counter()
    result = fit(factory, train, val, config)
    seconds = time.perf_counter() - t0
    name = "bounded" if bounded else "default"
    bundle = ModelBundle()
    bundle.add("propagator", result.model, lag_frames=args.lag, lag_ps=args.lag * dt_frame)
    bundle.save(workdir / f"mdn_{name}")
    return result, seconds


# ------------------------------------------------------------------------------ throughput


def throughput(workdir: Path, n_walkers: int = 1000, n_steps: int = 2000, repeats: int = 3) -> dict:
    """Latent steps/s (walkers x steps per second) of ``propagate`` for 2- and 3-D MDNs (C = 8, hidden
    100-100; random weights with the mean and width outputs made constant so that the walk stays finite:
    the cost does not depend on the weights), best of ``repeats``, with 1 torch thread (the default) and
    with torch's thread setting; and of ``sample_to_stores`` end to end (store creation and zarr writes
    included) for ``n_walkers`` walkers x 20,000 steps in chunks of 10,000."""
    import shutil

    import torch

    from lss_engine.latent_sampling import sample_to_stores
    from lss_engine.models import MDNPropagator

    out = {"torch_threads": torch.get_num_threads(), "walkers": n_walkers}
    for d in (2, 3):
        torch.manual_seed(d)
        model = MDNPropagator(d, 8, hidden=(100, 100))
        with torch.no_grad():
            model.net[-1].weight[8:].zero_()
            model.net[-1].bias[8:].mul_(0.1)
        model.fit_normalization(np.random.default_rng(0).standard_normal((1000, d)))
        for threads in (1, None):
            model.propagate(np.zeros(d), 50, n_walkers=n_walkers, seed=0, device="cpu", threads=threads)  # warm-up
            rates = []
            for r in range(repeats):
                t0 = time.perf_counter()
                model.propagate(np.zeros(d), n_steps, n_walkers=n_walkers, seed=r, device="cpu", threads=threads)
                rates.append(n_walkers * n_steps / (time.perf_counter() - t0))
            key = f"propagate_{d}d_{'1thread' if threads == 1 else 'torch_threads'}"
            out[key] = max(rates)
            out[key + "_all"] = rates
        if d == 2:
            target = workdir / "throughput_stores"
            shutil.rmtree(target, ignore_errors=True)
            t0 = time.perf_counter()
            sample_to_stores(model, np.zeros(d), 20_000, n_walkers, out_dir=target, frame_interval_ps=1.0,
                             seed=0, chunk_steps=10_000, progress=False)
            out["sample_to_stores_2d_seconds"] = seconds = time.perf_counter() - t0
            out["sample_to_stores_2d_steps_per_s"] = n_walkers * 20_000 / seconds
            shutil.rmtree(target, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ main


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/acceptance_mdn_four_well")
    parser.add_argument("--a", type=float, default=4.0, help="four-well prefactor (kT)")
    parser.add_argument("--dt", type=float, default=1e-3, help="Brownian time step (ps = reduced time)")
    parser.add_argument("--report", type=int, default=10, help="steps between frames")
    parser.add_argument("--train-steps", type=int, default=5_000_000)
    parser.add_argument("--reference-factor", type=int, default=10)
    parser.add_argument("--lag", type=int, default=5, help="MDN lag in frames")
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    parser.add_argument("--min-std", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formulations", nargs="+", default=["default", "bounded"], choices=["default", "bounded"])
    parser.add_argument("--progress", action="store_true", help="training progress bars")
    parser.add_argument("--skip-throughput", action="store_true", help="skip the sampling speed measurement")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch threads for training (default: torch's; 1 is faster on a shared machine)")
    args = parser.parse_args()
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    train_params = md_params(args, args.train_steps, seed=1001 + args.seed)
    ref_params = md_params(args, args.train_steps * args.reference_factor, seed=2002 + args.seed)
    # the long reference run goes on in another process while the training data are used
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(1)
    ref_job = pool.apply_async(run_md, (str(workdir / "md_reference.zarr"), ref_params))
    md_seconds = run_md(str(workdir / "md_train.zarr"), train_params)
    x_train, dt_frame = load_x(workdir / "md_train.zarr")
    tau = args.lag * dt_frame
    n_synth = int(round(len(x_train) * dt_frame / tau))
    print(f"four-well a={args.a:g} kT, Brownian D=1, dt={args.dt:g} ps, frame {dt_frame:g} ps; training MD "
          f"{args.train_steps:.3g} steps = {len(x_train) * dt_frame:g} ps ({md_seconds:.0f} s); reference MD "
          f"{args.reference_factor}x longer; MDN lag {args.lag} frames = {tau:g} ps, C={args.components}, "
          f"hidden {args.hidden}; synthetic trajectories of {n_synth} steps (= training length)")

    p_boltzmann = boltzmann_bins(args.a)
    p_md_train = histogram(x_train)
    results: dict = {"settings": vars(args), "md_train_seconds": md_seconds, "tau_ps": tau, "synthetic_steps": n_synth}
    results["md_train_js_vs_boltzmann"] = js_divergence(p_md_train, p_boltzmann)
    results["md_train_mfpt"] = mfpts(x_train[:: args.lag], tau)

    for name in args.formulations:
        bounded = name == "bounded"
        result, train_seconds = train_mdn(x_train, dt_frame, args, bounded, workdir)
        model = result.model
        t0 = time.perf_counter()
        synth = model.propagate([x_train[0]], n_synth, seed=args.seed + 7, device="cpu")[0, :, 0].astype(np.float64)
        gen_seconds = time.perf_counter() - t0
        p_syn = histogram(synth)
        results[name] = {
            "train_seconds": train_seconds, "epochs": len(result.history), "val_loglik": result.best_score,
            "generate_seconds": gen_seconds,
            "js_vs_boltzmann": js_divergence(p_syn, p_boltzmann),
            "js_vs_md_train": js_divergence(p_syn, p_md_train),
            "at_bound_fraction": model.at_bound_fraction(synth[:, None]),
            "mfpt": mfpts(synth, tau),
            "range": [float(synth.min()), float(synth.max())],
        }
        print(f"  [{name}] trained {len(result.history)} epochs in {train_seconds:.0f} s, validation "
              f"log-likelihood {result.best_score:.4f}/pair; {n_synth} steps generated in {gen_seconds:.1f} s")

    ref_seconds = ref_job.get()
    pool.close()
    pool.join()
    x_ref, _ = load_x(workdir / "md_reference.zarr")
    results["md_reference_seconds"] = ref_seconds
    results["md_reference_js_vs_boltzmann"] = js_divergence(histogram(x_ref), p_boltzmann)
    ref_tau = mfpts(x_ref[:: args.lag], tau)
    ref_full = mfpts(x_ref, dt_frame)
    results["md_reference_mfpt_at_tau"] = ref_tau
    results["md_reference_mfpt_full_rate"] = ref_full

    print(f"MD: training run JS vs exp(-V) {results['md_train_js_vs_boltzmann']:.5f} bits; reference run "
          f"({len(x_ref) * dt_frame:g} ps, {ref_seconds:.0f} s) JS vs exp(-V) "
          f"{results['md_reference_js_vs_boltzmann']:.5f} bits")
    for key in ("A->B", "B->A"):
        print(f"MD reference MFPT {key}: {ref_tau[key]['mfpt']:.3f} ps at interval τ (n={ref_tau[key]['n']}, "
              f"95% CI {ref_tau[key]['ci95'][0]:.3f}-{ref_tau[key]['ci95'][1]:.3f}); at the full frame rate "
              f"{ref_full[key]['mfpt']:.3f} ps; training MD {results['md_train_mfpt'][key]['mfpt']:.3f} ps "
              f"(n={results['md_train_mfpt'][key]['n']})")

    header = f"{'figure':<44}{'target':<20}" + "".join(f"{n:<26}" for n in args.formulations)
    print(header)

    def row(label: str, target: str, cells: list[str]) -> None:
        print(f"{label:<44}{target:<20}" + "".join(f"{c:<26}" for c in cells))

    js_cells, js_md_cells, bound_cells = [], [], []
    for name in args.formulations:
        r = results[name]
        ok = r["js_vs_boltzmann"] <= 0.01
        r["pass_js"] = ok
        js_cells.append(f"{r['js_vs_boltzmann']:.5f} {verdict(ok)}")
        js_md_cells.append(f"{r['js_vs_md_train']:.5f}")
        frac = r["at_bound_fraction"]
        if name == "default":
            r["pass_bound"] = frac < 1e-3
            bound_cells.append(f"{100 * frac:.4f} % {verdict(r['pass_bound'])}")
        else:
            bound_cells.append(f"{100 * frac:.4f} % (reported)")
    row("JS(synthetic, analytic exp(-V)) [bits]", "<= 0.01", js_cells)
    row("JS(synthetic, MD training histogram) [bits]", "(printed)", js_md_cells)
    for key in ("A->B", "B->A"):
        cells = []
        for name in args.formulations:
            r = results[name]
            m, ref = r["mfpt"][key]["mfpt"], ref_tau[key]["mfpt"]
            rel = m / ref - 1
            ok = abs(rel) <= 0.20
            r[f"pass_mfpt_{key}"] = ok
            r[f"mfpt_rel_{key}"] = rel
            cells.append(f"{m:.3f} ps ({100 * rel:+.1f} %) {verdict(ok)}")
        row(f"MFPT {key} vs MD {ref_tau[key]['mfpt']:.3f} ps", "within ±20 %", cells)
    row("frames at/beyond training range", "< 0.1 % (default)", bound_cells)
    for name in args.formulations:
        r = results[name]
        r["pass"] = all(v for k, v in r.items() if k.startswith("pass_"))
    row("overall", "", [verdict(results[n]["pass"]) for n in args.formulations])
    if not args.skip_throughput:
        tp = results["throughput"] = throughput(workdir)
        print(f"sampling throughput, {tp['walkers']} walkers, C=8, hidden 100-100 (target >= 1e6 latent steps/s): "
              f"propagate 2-D {tp['propagate_2d_1thread']:.3g}, 3-D {tp['propagate_3d_1thread']:.3g} with 1 torch "
              f"thread (default); {tp['propagate_2d_torch_threads']:.3g} / {tp['propagate_3d_torch_threads']:.3g} "
              f"with {tp['torch_threads']} threads; sample_to_stores 2-D, 20,000 steps into {tp['walkers']} "
              f"stores: {tp['sample_to_stores_2d_steps_per_s']:.3g} end to end "
              f"({tp['sample_to_stores_2d_seconds']:.0f} s, store creation and commits included)")
    results["total_seconds"] = time.perf_counter() - t_start
    print(f"total {results['total_seconds']:.0f} s")
    (workdir / "acceptance.json").write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
