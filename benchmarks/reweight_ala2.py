"""Reweighting: umbrella windows along ψ1 of a 450 K SRV vs plain MD of the same length, alanine dipeptide 450 K.

The acceptance run of issue 12 ("the reweighted FES along φ within 0.5 kT
RMSE of the shared 2 × 250 ns reference, biased runs totalling ≤ 20 ns, next
to plain MD of the same total length").

1. The SRV (skipped with ``--model DIR``): two 450 K walkers of
   ``--train-ns`` each, one from the minimised C7eq structure, one from C7ax
   (reached by a ``CustomTorsionForce`` restraint on φ, 20 ps, then
   released), so the training data hold the φ flip whatever the luck of a
   short run; features sin/cos of the backbone torsions
   (``backbone-torsions-sincos``: smooth, unlike raw angles that jump at ±π),
   all atom positions saved (window starting frames); an SRV (lag 10 ps, 2
   latent coordinates) by ``lss_engine.pipeline.train_encoder``.
2. Umbrella windows along ψ1 (the slowest SRV coordinate): ``--windows``
   centres evenly spaced over the 1 %-99.9 % range of ψ1 on the training
   frames (both basins' values included: C7ax is the minority), stiffness κ = ``--kappa-factor`` ×
   kT / Δ² (Δ the centre spacing; a window's width (kT/κ)^½ is Δ /
   ``kappa_factor``^½, so neighbours overlap), one fixed bias per window
   (one thermodynamic state): ``lss_engine.bias.latent_bias_force``, a
   harmonic restraint on ψ1 alone (``dim=1``), openmm-torch, force group 30.
   Dynamics: ``openmm.MTSLangevinIntegrator(450 K, 1/ps, N × 2 fs, [(0, N),
   (30, 1)])`` (its step size is the outer step; a group with n substeps is
   evaluated n times per outer step: the system's forces every 2 fs, the
   bias every N × 2 fs, N = ``--mts``, default 2), Reference platform.  N = 4
   is not stable at the default κ: at the window on the steep side of the
   barrier (ψ1 ≈ 0.65, κ ≈ 99 kJ/mol) two of three 200 ps runs blew up
   (positions → inf) within 70-100 ps, where N = 2 and N = 3 and every step
   did not (the impulse every 8 fs of a stiff learned restraint); the MTS
   check below runs N = 4 beside N = 2 each time and reports it.  Each window
   starts from the training frame whose ψ1 is nearest its centre (with
   ``--model`` and stores without positions: the minimised C7eq structure),
   is steered (centre moved from the start's ψ1) for half of ``--equil-ps``
   and held for the other half, unrecorded; then ``--window-ns`` of
   production through ``lss_engine.md.run_md`` with a ``ZarrReporter`` (φ
   atoms' positions) and a ``LatentReporter`` (ψ1 read back from the force,
   bias energy, centre and κ) every ``--report-ps``.
3. MTS check: the window at the sparsest ψ1 of the training data (the
   barrier, where the restraint works hardest) for ``--check-ps`` with the
   bias every step (LangevinMiddleIntegrator), every ``--mts`` steps and
   every ``--check-mts`` steps: mean ± block error, standard deviation and
   histogram total-variation distance of ψ1 and φ, and whether it blew up.
4. Plain MD: two walkers of half the windows' total production each, same
   machinery (``run_md``, ``ZarrReporter``, a ``LatentReporter`` of ψ1 from
   the encoder), LangevinMiddleIntegrator 2 fs.
5. Reweighting: ``bias_kn[k, n]`` = window k's bias of frame n
   (``LatentRecord.bias_energy_of`` on the recorded ψ1: ½ κ_k (ψ1 − c_k)²),
   ``lss_engine.bias.mbar_weights``, ``reweighted_fes`` along φ on the bins of
   ``benchmarks/adaptive_equilibrium_ala2.py`` (``EDGES``) with bootstrap
   errors (``resample="blocks"``: blocks resampled within each window).  Plain
   MD goes through the same functions with zero bias.  RMSE (kT, constants
   aligned; ``lss_engine.kinetics.fes_rmse``) against the reference FES over
   the bins populated in both, and over the bins populated in all three.

The MD runs go to a pool of ``--workers`` spawned processes (one torch
thread each); a task gets and returns JSON text.  A finished run whose
configuration matches is reused on a rerun (``WORKDIR/**/done.json``).
Writes ``WORKDIR/results.json``.

Run (about 30 minutes on 2 shared cores at the defaults: 16 windows × 0.75 ns, MTS N = 2):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reweight_ala2.py --workdir runs/reweight_ala2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in the spawned workers

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from adaptive_ala2 import phi_indices, store_phi  # the one φ rule of the benchmarks
from adaptive_equilibrium_ala2 import EDGES, REFERENCE  # the reference's bins and files

FEATURES = "backbone-torsions-sincos"
TEMPERATURE_K = 450.0
BIAS_GROUP = 30
KB_KJ_MOL_K = 0.0083144626  # Boltzmann constant, kJ/mol/K
C7AX_PHI = 1.0  # rad: where the φ restraint puts the second training walker


def kT_kjmol() -> float:
    return KB_KJ_MOL_K * TEMPERATURE_K


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def finished(directory: Path, config: dict) -> dict | None:
    """The recorded result of a finished run in ``directory`` with this exact ``config``, else ``None``."""
    done = directory / "done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("config") == config:
            return record["result"]
    return None


def mark_done(directory: Path, config: dict, result: dict) -> None:
    (directory / "done.json").write_text(json.dumps({"config": config, "result": result}, indent=1))


# --------------------------------------------------------------------------
# tasks run in the spawned workers: JSON text in, JSON text out


def _worker_init() -> None:
    from lss_engine._helpers import configure_threads

    configure_threads(1)


def _c7ax_positions(test, quartet, seed: int):
    """Positions in C7ax: minimised with a φ restraint at C7AX_PHI, 20 ps of restrained 450 K MD."""
    import openmm
    from openmm import app

    from lss_engine.systems import choose_platform

    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(test.system))
    restraint = openmm.CustomTorsionForce("0.5*k*d^2; d = min(a, 6.283185307179586 - a); a = abs(theta - phi0)")
    restraint.addGlobalParameter("k", 500.0)
    restraint.addGlobalParameter("phi0", C7AX_PHI)
    restraint.addTorsion(*[int(a) for a in quartet], [])
    system.addForce(restraint)
    sim = app.Simulation(test.topology, system, test.make_integrator(seed), choose_platform("Reference", test))
    sim.context.setPositions(test.positions)
    sim.minimizeEnergy()
    sim.context.setVelocitiesToTemperature(test.temperature, seed)
    sim.step(10_000)
    return sim.context.getState(getPositions=True).getPositions(asNumpy=True)


def task_train_walker(text: str) -> str:
    """A 450 K training walker (features sin/cos of the torsions, all positions) from C7eq or C7ax."""
    t = json.loads(text)
    from lss_engine.md import run_md
    from lss_engine.systems import get_system

    t0 = time.perf_counter()
    test = get_system("alanine-dipeptide", temperature=TEMPERATURE_K)
    sim = test.make_simulation(platform="Reference", seed=t["seed"])
    if t["start"] == "c7ax":
        sim.context.setPositions(_c7ax_positions(test, t["quartet"], t["seed"]))
        sim.context.setVelocitiesToTemperature(test.temperature, t["seed"])
    result = run_md(sim, t["store"], steps=f"{t['ns']}ns", report_interval="1ps", featurizer=FEATURES, atoms="all",
                    seed=t["seed"], overwrite=True, equilibrate="20ps", progress=False)
    return json.dumps({"frames": result.frames, "wall_s": time.perf_counter() - t0})


def task_window(text: str) -> str:
    """One run: an umbrella window (``kappa`` set) or plain MD (``kappa`` null); see the module docstring."""
    t = json.loads(text)
    import openmm
    import torch
    from openmm import app, unit

    from lss_engine.bias import HarmonicRestraint, latent_bias_force
    from lss_engine.errors import NonFiniteError
    from lss_engine.md import run_md
    from lss_engine.reporters import LatentReporter
    from lss_engine.store import TrajectoryStore
    from lss_engine.systems import choose_platform, get_system

    t0 = time.perf_counter()
    out = Path(t["dir"])
    out.mkdir(parents=True, exist_ok=True)
    seed, n = int(t["seed"]), int(t["mts"])
    test = get_system("alanine-dipeptide", temperature=TEMPERATURE_K)
    system = test.system
    bias = None
    if t["kappa"] is not None:
        force, bias = latent_bias_force(t["model"], restraint=HarmonicRestraint([t["centre"]], [t["kappa"]]), dim=1,
                                        force_group=BIAS_GROUP, backend="torch")
        system.addForce(force)
    if bias is not None and n > 1:
        integrator = openmm.MTSLangevinIntegrator(test.temperature, test.friction, n * test.timestep,
                                                  [(0, n), (BIAS_GROUP, 1)])
        integrator.setRandomNumberSeed(seed)
    else:
        n = 1
        integrator = test.make_integrator(seed)
    sim = app.Simulation(test.topology, system, integrator, choose_platform("Reference", test))
    ctx = sim.context
    start = t.get("start")
    if start is not None:
        ctx.setPositions(TrajectoryStore(start["store"]).positions(start["frame"], start["frame"] + 1)[0])
    else:
        ctx.setPositions(test.positions)

    def psi1_now() -> float:
        x = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        with torch.no_grad():
            return float(bias.module.latent(torch.as_tensor(np.asarray(x, dtype=np.float64)))[0])

    dt_outer = n * test.timestep.value_in_unit(unit.picosecond)
    equil_steps = round(t["equil_ps"] / dt_outer)
    if bias is not None:
        s_start = psi1_now()
        bias.set_centre(ctx, [s_start])
        if start is None:
            sim.minimizeEnergy()
        ctx.setVelocitiesToTemperature(test.temperature, seed)
        chunks, steer_steps = 50, equil_steps // 2
        for i in range(chunks):  # steer from the start's ψ1 to the centre, then hold
            bias.set_centre(ctx, [s_start + (t["centre"] - s_start) * (i + 1) / chunks])
            integrator.step(steer_steps // chunks)
        bias.set_centre(ctx, [t["centre"]])
        integrator.step(equil_steps - chunks * (steer_steps // chunks))
    else:
        s_start = None
        sim.minimizeEnergy()
        ctx.setVelocitiesToTemperature(test.temperature, seed)
        integrator.step(equil_steps)
    t_prod = time.perf_counter()
    report = round(t["report_ps"] / dt_outer)
    steps = round(t["ns"] * 1000.0 / dt_outer)
    if bias is not None:
        latent = LatentReporter(out / "latent.zarr", report, bias, overwrite=True, seed=seed)
    else:
        latent = LatentReporter(out / "latent.zarr", report, encoder=t["model"], dim=1, overwrite=True, seed=seed)
    error = None
    try:
        run_md(sim, out / "md.zarr", steps=steps, report_interval=report, featurizer=None,
               atoms=[int(a) for a in t["quartet"]], seed=seed, overwrite=True, progress=False, reporters=[latent])
    except (NonFiniteError, openmm.OpenMMException) as exc:  # the integration blew up: say so, keep the frames
        error = " ".join(str(exc).split())[:200]
        steps = int(sim.currentStep)
    finally:
        try:
            latent.close()
        except NonFiniteError:
            pass
    end = time.perf_counter()
    return json.dumps({"start_psi1": s_start, "outer_steps": steps, "steps_2fs": steps * n, "error": error,
                       "wall_s": end - t0, "production_s": end - t_prod,
                       "steps_2fs_per_s": steps * n / (end - t_prod)})


# --------------------------------------------------------------------------
# the main process


def run_pool(pool, tasks: list[tuple[str, dict, Path, object]], log) -> dict[str, dict]:
    """Run (name, config, directory, function) tasks not already finished; returns name → result."""
    results, futures = {}, {}
    for name, config, directory, fn in tasks:
        done = finished(directory, config)
        if done is not None:
            results[name] = done
            log(f"  {name}: reused ({directory})")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "done.json").unlink(missing_ok=True)
        futures[pool.submit(fn, json.dumps(config))] = (name, config, directory)
    for future in as_completed(futures):
        name, config, directory = futures[future]
        result = json.loads(future.result())
        mark_done(directory, config, result)
        results[name] = result
        log(f"  {name}: done in {result['wall_s']:.0f} s"
            + (f" ({result['steps_2fs_per_s']:.0f} steps/s of 2 fs)" if "steps_2fs_per_s" in result else "")
            + (f"; BLEW UP: {result['error']}" if result.get("error") else ""))
    return results


def make_model(args, pool, quartet, log) -> tuple[Path, list[Path]]:
    from lss_engine.pipeline import EncoderSettings, train_encoder

    workdir = Path(args.workdir) / "srv"
    walkers = []
    for k, start in enumerate(("c7eq", "c7ax")):
        d = workdir / f"walker{k}"
        walkers.append((f"450 K training walker {k} from {start}",
                        {"start": start, "ns": args.train_ns, "seed": args.seed + 100 + k,
                         "quartet": [int(a) for a in quartet], "store": str(d / "md.zarr")}, d, task_train_walker))
    log(f"SRV training data: 2 walkers × {args.train_ns:g} ns at 450 K (from C7eq and from C7ax), a frame per ps")
    run_pool(pool, walkers, log)
    stores = [Path(c["store"]) for _, c, _, _ in walkers]
    model_dir = workdir / "model"
    config = {"stores": [str(s) for s in stores], "lag": "10ps", "dim": 2, "hidden": [32, 32], "epochs": args.epochs,
              "seed": args.seed, "walkers": [json.loads((d / "done.json").read_text())["config"]
                                             for _, _, d, _ in walkers]}
    if finished(model_dir, config) is None or not (model_dir / "model.json").is_file():
        t0 = time.perf_counter()
        settings = EncoderSettings(kind="srv", lag="10ps", dim=2, hidden=(32, 32), epochs=args.epochs, restarts=1,
                                   seed=args.seed, threads=1, progress=False)
        encoder = train_encoder([str(s) for s in stores], settings, model_dir, analyze=False)
        its = encoder.extra.get("implied_timescales_ps", [])
        mark_done(model_dir, config, {"implied_timescales_ps": its, "wall_s": time.perf_counter() - t0})
        log(f"SRV trained in {time.perf_counter() - t0:.0f} s: implied timescales "
            + ", ".join(f"{x:.0f}" for x in its) + " ps")
    else:
        log(f"SRV: reused {model_dir}")
    return model_dir, stores


def model_stores(model_dir: Path, given: list[str] | None) -> list[Path]:
    if given:
        return [Path(s) for s in given]
    manifest = json.loads((model_dir / "model.json").read_text())
    stores = [Path(s) for s in manifest.get("provenance", {}).get("stores", [])]
    if not stores or not all(s.exists() for s in stores):
        raise SystemExit(f"reweight_ala2.py: error: the training stores of {model_dir} are not found; pass --stores")
    return stores


def training_latent(model_dir: Path, stores: list[Path], quartet) -> dict:
    """ψ1 and φ of the training frames, and where each frame's positions can be read (if saved)."""
    from lss_engine.bundle import ModelBundle
    from lss_engine.encoder import Encoder
    from lss_engine.store import TrajectoryStore

    encoder = Encoder.from_bundle(ModelBundle.load(model_dir))
    if encoder.kind != "srv":
        raise SystemExit(f"reweight_ala2.py: error: {model_dir} holds a {encoder.kind}, not an SRV")
    psi1, phi, where = [], [], []
    for path in stores:
        store = TrajectoryStore(path)
        encoder.matches(store)
        psi1.append(encoder.latent(store.features())[:, 0])
        saved = {int(a) for a in store.atom_indices}
        has_all = len(saved) == store.n_atoms_system
        phi.append(store_phi(store, quartet) if all(int(a) in saved for a in quartet)
                   else np.full(len(store), np.nan))
        where += [(str(path), i) if has_all else None for i in range(len(store))]
    return {"psi1": np.concatenate(psi1), "phi": np.concatenate(phi), "where": where}


def window_plan(args, train: dict) -> tuple[np.ndarray, float, int]:
    """Centres over ψ1's range, κ, and the index of the window at the sparsest ψ1 (the barrier)."""
    psi1 = train["psi1"]
    lo, hi = np.quantile(psi1, [0.01, 0.999])
    centres = np.linspace(lo, hi, args.windows)
    spacing = centres[1] - centres[0]
    kappa = args.kappa_factor * kT_kjmol() / spacing ** 2
    counts = np.array([np.sum(np.abs(psi1 - c) < spacing / 2) for c in centres])
    inner = np.arange(1, args.windows - 1)
    barrier = int(inner[np.argmin(counts[inner])])
    return centres, float(kappa), barrier


def start_frame(train: dict, centre: float) -> dict | None:
    i = int(np.argmin(np.abs(train["psi1"] - centre)))
    where = train["where"][i]
    return None if where is None else {"store": where[0], "frame": int(where[1])}


def load_run(directory: Path, quartet):
    """(LatentRecord, φ) of a run, frames matched by step."""
    from lss_engine.reporters import read_latent_store
    from lss_engine.store import TrajectoryStore

    record = read_latent_store(directory / "latent.zarr")
    store = TrajectoryStore(directory / "md.zarr")
    if not np.array_equal(record.steps, store.steps()):
        raise SystemExit(f"reweight_ala2.py: error: {directory}: the latent and position stores have other steps")
    return record, store_phi(store, quartet)


def block_se(x: np.ndarray, n_blocks: int = 10) -> float:
    means = [b.mean() for b in np.array_split(x, n_blocks)]
    return float(np.std(means, ddof=1) / math.sqrt(n_blocks))


def distribution_distance(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    """Total-variation distance of the histograms of ``a`` and ``b`` on ``edges`` (0: same, 1: disjoint)."""
    pa = np.histogram(a, edges)[0] / len(a)
    pb = np.histogram(b, edges)[0] / len(b)
    return float(0.5 * np.abs(pa - pb).sum())


def fes_row(name: str, phi: np.ndarray, result, ref_fes, args, total_ns: float) -> dict:
    from lss_engine.bias import reweighted_fes
    from lss_engine.kinetics import fes_rmse

    prof = reweighted_fes(phi, result, bins=EDGES, n_boot=args.n_boot, seed=args.seed, resample="blocks",
                          n_blocks=args.n_blocks)
    F = prof.free_energy
    populated = np.isfinite(F) & np.isfinite(ref_fes.free_energy)
    return {"method": name, "total_ns": total_ns, "frames": len(phi),
            "fes_rmse_kT": float(fes_rmse(F, ref_fes.free_energy, populated)),
            "bins_compared": int(populated.sum()),
            "bins_reference": int(np.isfinite(ref_fes.free_energy).sum()),
            "effective_sample_size": float(result.effective_sample_size),
            "p_phi_positive": float(result.expectation((phi > 0).astype(float))),
            "mean_error_kT": float(np.nanmean(prof.errors[populated])) if populated.any() else float("nan"),
            # the RMSE that the two profiles' own statistical errors alone would give (offset ignored)
            "noise_floor_kT": float(np.sqrt(np.nanmean(prof.errors[populated] ** 2
                                                       + ref_fes.errors[populated] ** 2)))
            if populated.any() else float("nan"),
            "fes_kT": F, "errors_kT": prof.errors, "converged": bool(result.converged)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="runs/reweight_ala2")
    parser.add_argument("--model", type=Path, help="a 450 K SRV model directory on sin/cos torsions (skips step 1)")
    parser.add_argument("--stores", nargs="+", help="with --model: its training stores (default: its provenance's)")
    parser.add_argument("--train-ns", type=float, default=2.0, help="ns per 450 K training walker (2 walkers)")
    parser.add_argument("--epochs", type=int, default=30, help="SRV epochs")
    parser.add_argument("--windows", type=int, default=16, help="umbrella windows along ψ1")
    parser.add_argument("--window-ns", type=float, default=0.75, help="production ns per window")
    parser.add_argument("--equil-ps", type=float, default=50.0, help="unrecorded ps per run (windows: half steered)")
    parser.add_argument("--kappa-factor", type=float, default=3.0, help="κ = factor × kT / (centre spacing)²")
    parser.add_argument("--mts", type=int, default=2, help="bias every N 2-fs steps (MTSLangevinIntegrator)")
    parser.add_argument("--check-mts", type=int, nargs="*", default=[4],
                        help="MTS check: further N to compare with every step besides --mts (default 4)")
    parser.add_argument("--report-ps", type=float, default=0.4, help="ps between frames")
    parser.add_argument("--check-ps", type=float, default=200.0, help="MTS check: ps with bias every N / every step"
                                                                       " (0: no check)")
    parser.add_argument("--n-boot", type=int, default=100, help="bootstrap samples of the FES errors")
    parser.add_argument("--n-blocks", type=int, default=10, help="blocks per run in the bootstrap")
    parser.add_argument("--workers", type=int, default=2, help="MD processes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.windows < 3 or args.mts < 1 or args.window_ns <= 0 or args.workers < 1:
        parser.error("need --windows >= 3, --mts >= 1, --window-ns > 0, --workers >= 1")
    for n in {args.mts, *args.check_mts}:
        if n < 1 or abs(args.report_ps / (0.002 * n) - round(args.report_ps / (0.002 * n))) > 1e-9:
            parser.error(f"--report-ps must be a multiple of every outer step ({0.002 * n * 1000:g} fs for N = {n})")

    from lss_engine._helpers import configure_threads, jsonable
    from lss_engine.bias import mbar_weights, run_labels
    from lss_engine.kinetics import fes_rmse, free_energy_1d

    configure_threads(1)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {message}", flush=True)

    quartet = phi_indices()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_worker_init) as pool:
        # 1. the SRV
        if args.model is None:
            model_dir, stores = make_model(args, pool, quartet, log)
        else:
            model_dir, stores = args.model, model_stores(args.model, args.stores)
        model_sha = hashlib.sha256((model_dir / "model.json").read_bytes()).hexdigest()
        train = training_latent(model_dir, stores, quartet)
        basin = (train["phi"] > 0.5) & (train["phi"] < 1.8)
        centres, kappa, barrier = window_plan(args, train)
        log(f"ψ1 on {len(train['psi1'])} training frames: {train['psi1'].min():+.2f} .. {train['psi1'].max():+.2f}; "
            f"C7ax (0.5 < φ < 1.8) {basin.sum()} frames, ψ1 {np.mean(train['psi1'][basin]) if basin.any() else np.nan:+.2f}; "
            f"φ < 0 ψ1 {np.mean(train['psi1'][train['phi'] < 0]):+.2f}")
        log(f"{args.windows} windows, centres {centres[0]:+.3f} .. {centres[-1]:+.3f} (spacing "
            f"{centres[1] - centres[0]:.3f}), κ = {kappa:.1f} kJ/mol per ψ1², width (kT/κ)^½ = "
            f"{math.sqrt(kT_kjmol() / kappa):.3f}; MTS N = {args.mts} (bias every {2 * args.mts} fs), "
            f"{args.window_ns:g} ns each + {args.equil_ps:g} ps unrecorded")

        # 2.-4. windows, the MTS check and plain MD in one pool
        common = {"model": str(model_dir), "model_sha256": model_sha, "quartet": [int(a) for a in quartet],
                  "report_ps": args.report_ps, "equil_ps": args.equil_ps}
        tasks = []
        check_ns = sorted({args.mts, *args.check_mts} - {1})
        if args.check_ps > 0:
            c = float(centres[barrier])
            for n in [1, *check_ns]:  # every step first: the longest task
                d = workdir / "mts_check" / f"mts{n}"
                tasks.append((f"MTS check, bias every {n} step(s)",
                              dict(common, centre=c, kappa=kappa, mts=n, ns=args.check_ps / 1000.0,
                                   seed=args.seed + 500, start=start_frame(train, c), dir=str(d)), d, task_window))
        for k, c in enumerate(centres):
            d = workdir / "windows" / f"w{k:02d}"
            tasks.append((f"window {k} (ψ1 = {c:+.3f})",
                          dict(common, centre=float(c), kappa=kappa, mts=args.mts, ns=args.window_ns,
                               seed=args.seed + 1000 + k, start=start_frame(train, float(c)), dir=str(d)),
                          d, task_window))
        total_ns = args.windows * args.window_ns
        for k in range(2):
            d = workdir / "plain" / f"walker{k}"
            tasks.append((f"plain MD walker {k}", dict(common, centre=None, kappa=None, mts=1, ns=total_ns / 2,
                                                       seed=args.seed + 2000 + k, start=None, dir=str(d)),
                          d, task_window))
        log(f"MD: {len(tasks)} runs on {args.workers} processes")
        runs = run_pool(pool, tasks, log)
    failed = [name for name, result in runs.items() if result.get("error") and not name.startswith("MTS check")]
    if failed:
        raise SystemExit(f"reweight_ala2.py: error: the integration blew up in {', '.join(failed)} (see the "
                         f"done.json files under {workdir}); lower --mts or --kappa-factor, then rerun")

    # 5. reweighting
    kT = kT_kjmol()
    reference_phi = [np.load(f)[:, 0] for f in sorted(REFERENCE.glob("phi_psi_seed*.npy"))]
    ref_fes = free_energy_1d(reference_phi, bins=EDGES)
    p_ref = float(np.mean(np.concatenate(reference_phi) > 0))

    window_dirs = [workdir / "windows" / f"w{k:02d}" for k in range(args.windows)]
    loaded = [load_run(d, quartet) for d in window_dirs]
    records = [r for r, _ in loaded]
    latent = np.concatenate([r.latent for r in records])
    phi_u = np.concatenate([p for _, p in loaded])
    bias_kn = np.stack([r.bias_energy_of(latent) for r in records])
    lengths = [len(r.steps) for r in records]
    own = np.concatenate([bias_kn[k, sum(lengths[:k]):sum(lengths[:k + 1])] for k in range(len(records))])
    recorded = np.concatenate([r.bias_energy for r in records])
    bias_check = float(np.max(np.abs(own - recorded)))
    umbrella = mbar_weights(bias_kn, run_labels(lengths), kT=kT)
    windows = []
    for k, (r, p) in enumerate(loaded):
        s = r.latent[:, 0]
        windows.append({"centre": float(centres[k]), "kappa": kappa, "frames": len(s), "psi1_mean": float(s.mean()),
                        "psi1_std": float(s.std()), "phi_mean": float(np.mean(p)),
                        "p_phi_positive": float(np.mean(p > 0)), "f_k_kT": float(umbrella.f_k[k]),
                        **runs[f"window {k} (ψ1 = {centres[k]:+.3f})"]})

    plain_loaded = [load_run(workdir / "plain" / f"walker{k}", quartet) for k in range(2)]
    phi_p = np.concatenate([p for _, p in plain_loaded])
    plain_lengths = [len(p) for _, p in plain_loaded]
    plain = mbar_weights(np.zeros((2, len(phi_p))), run_labels(plain_lengths), kT=kT)

    rows = [fes_row("umbrella + MBAR", phi_u, umbrella, ref_fes, args, total_ns),
            fes_row("plain MD", phi_p, plain, ref_fes, args, total_ns)]
    rows[0]["wall_s"] = sum(w["wall_s"] for w in windows)
    rows[1]["wall_s"] = sum(runs[f"plain MD walker {k}"]["wall_s"] for k in range(2))
    common_bins = np.isfinite(ref_fes.free_energy) & np.isfinite(rows[0]["fes_kT"]) & np.isfinite(rows[1]["fes_kT"])
    for row in rows:
        row["fes_rmse_common_kT"] = float(fes_rmse(row["fes_kT"], ref_fes.free_energy, common_bins))

    check = None
    if args.check_ps > 0:
        check = {"centre": float(centres[barrier]), "window": barrier, "ps": args.check_ps, "runs": {}}
        for n in [1, *check_ns]:
            record, phi_n = load_run(workdir / "mts_check" / f"mts{n}", quartet)
            finite = np.isfinite(phi_n) & np.isfinite(record.latent[:, 0])
            if record.bias_energy.size:
                finite &= record.bias_energy < 1e3  # frames of a blow-up in progress
            s_n, p_n = record.latent[finite, 0], phi_n[finite]
            result = runs[f"MTS check, bias every {n} step(s)"]
            check["runs"][n] = {"frames": len(s_n), "ps": float(result["steps_2fs"] * 0.002),
                                "error": result.get("error"), "steps_2fs_per_s": result["steps_2fs_per_s"],
                                "psi1": s_n, "phi": p_n}
        for n, r in check["runs"].items():
            s_n, p_n = r.pop("psi1"), r.pop("phi")
            if n == 1:
                s1, p1 = s_n, p_n
            r.update(psi1_mean=float(s_n.mean()), psi1_mean_se=block_se(s_n), psi1_std=float(s_n.std()),
                     phi_mean=float(p_n.mean()), phi_mean_se=block_se(p_n))
            if n != 1 and len(s_n) > 10:
                e_psi = np.linspace(min(s1.min(), s_n.min()), max(s1.max(), s_n.max()), 21)
                r.update(psi1_tv_distance=distribution_distance(s1, s_n, e_psi),
                         phi_tv_distance=distribution_distance(p1, p_n, EDGES))

    # report
    print(f"\nalanine dipeptide 450 K, FES along φ ({len(EDGES) - 1} bins) vs the shared 2 × 250 ns reference "
          f"(P(φ>0) = {100 * p_ref:.1f} %); umbrella: {args.windows} windows × {args.window_ns:g} ns along ψ1, "
          f"κ = {kappa:.1f} kJ/mol, MTS N = {args.mts}; MBAR {'converged' if umbrella.converged else 'NOT converged'} "
          f"in {umbrella.iterations} iterations")
    print(f"{'method':18s} {'total ns':>8s} {'RMSE kT':>8s} {'bins':>5s} {'common':>7s} {'ESS':>9s} "
          f"{'P(φ>0) %':>9s} {'±err kT':>8s} {'noise kT':>8s} {'CPU s':>7s}")
    for row in rows:
        print(f"{row['method']:18s} {row['total_ns']:8.2f} {row['fes_rmse_kT']:8.2f} {row['bins_compared']:5d} "
              f"{row['fes_rmse_common_kT']:7.2f} {row['effective_sample_size']:9.0f} "
              f"{100 * row['p_phi_positive']:9.2f} {row['mean_error_kT']:8.2f} {row['noise_floor_kT']:8.2f} "
              f"{row['wall_s']:7.0f}")
    print(f"  bins: populated in the estimate and the reference (of {rows[0]['bins_reference']} in the "
          f"reference); common: RMSE over the {int(common_bins.sum())} bins populated in all three; ESS: Kish's "
          f"effective frames of the weights; ±err: mean bootstrap error (blocks) over the compared bins; noise: "
          f"the RMSE the estimate's and the reference's errors alone would give, √mean(σ² + σ_ref²); CPU s: the "
          f"runs' wall time summed")
    print(f"  biased MD: {total_ns:g} ns recorded + {args.windows * args.equil_ps / 1000:g} ns equilibration"
          + (f" + {len(check['runs']) * args.check_ps / 1000:g} ns MTS check" if check else "")
          + f"; recorded vs recomputed bias energy: max |Δ| {bias_check:.2e} kJ/mol")
    print("  windows: centre, ψ1 mean ± std, P(φ>0), f_k (kT), steps/s of 2 fs")
    for w in windows:
        print(f"    {w['centre']:+7.3f}  {w['psi1_mean']:+7.3f} ± {w['psi1_std']:.3f}  {100 * w['p_phi_positive']:6.2f} %"
              f"  {w['f_k_kT']:8.2f}  {w['steps_2fs_per_s']:7.0f}")
    if check:
        print(f"  MTS check at window {barrier} (ψ1 = {check['centre']:+.3f}, κ = {kappa:.1f}), {args.check_ps:g} ps "
              f"each; histogram TV distance to every step (0: same; two independent every-step runs of this "
              f"length differ by sampling noise too):")
        for n, r in check["runs"].items():
            how = "every step (LangevinMiddle)" if n == 1 else f"every {n} steps (MTS {2 * n} fs)"
            tv = (f"TV ψ1 {r['psi1_tv_distance']:.3f}, φ {r['phi_tv_distance']:.3f}; " if "psi1_tv_distance" in r
                  else "")
            print(f"    bias {how:28s}: ψ1 {r['psi1_mean']:+.3f} ± {r['psi1_mean_se']:.3f} (std {r['psi1_std']:.3f}),"
                  f" φ {r['phi_mean']:+.3f} ± {r['phi_mean_se']:.3f}; {tv}{r['steps_2fs_per_s']:.0f} steps/s"
                  + (f"; BLEW UP after {r['ps']:g} ps ({r['error'][:60]})" if r["error"] else ""))
    print(f"  target RMSE ≤ 0.5 kT: {'met' if rows[0]['fes_rmse_kT'] <= 0.5 else 'NOT met'} "
          f"({rows[0]['fes_rmse_kT']:.2f} kT); total wall {time.perf_counter() - t_start:.0f} s")
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "model": str(model_dir), "kT_kjmol": kT, "edges": EDGES, "reference_fes_kT": ref_fes.free_energy,
           "reference_p_phi_positive": p_ref, "kappa": kappa, "centres": centres, "rows": rows, "windows": windows,
           "mbar": umbrella.to_dict(), "bias_energy_check_kjmol": bias_check, "mts_check": check,
           "common_bins": int(common_bins.sum()), "wall_s": time.perf_counter() - t_start}
    (workdir / "results.json").write_text(json.dumps(jsonable(out), indent=1, allow_nan=False))
    print(f"  results: {workdir / 'results.json'}")


if __name__ == "__main__":
    main()
