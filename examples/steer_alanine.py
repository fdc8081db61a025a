"""Steer alanine dipeptide (vacuum, 300 K) from C7eq into the φ > 0 basin along the slowest SRV coordinate.

At 300 K alanine dipeptide almost never leaves C7eq (plain MD: ~0.02 % of
frames at φ > 0 in 50 ns).  An SRV trained at 450 K, where φ flips every
~13 ns, finds the φ flip as its slowest coordinate ψ1; a harmonic restraint
on ψ1 (``lss_engine.bias.latent_bias_force``, openmm-torch ``TorchForce`` in
its own force group) whose centre is moved with ``Context.setParameter``
drags the molecule over the barrier within 1 ns of 300 K MD.

1. Without ``--model``: 450 K MD of ``--walkers`` walkers in spawned
   processes (``run_md_walkers``), features sin/cos of φ and ψ
   (``backbone-torsions-sincos``: smooth everywhere, unlike raw angles that
   jump at ±π), extended until the cored C7ax basin (0.5 < φ < 1.8 rad) holds
   ``--min-basin-ps`` of frames; an SRV (lag ``--lag``) into
   ``WORKDIR/model``.  With ``--model DIR``: that SRV, and the 450 K stores it
   was trained on (its provenance) or ``--stores``.
2. Target: the mean ψ1 of the 450 K frames with 0.5 < φ < 1.8; start: ψ1 of
   the minimised C7eq structure.  Flat-bottom walls keep ψ1 inside the 450 K
   range (+10 %).
3. 300 K, 2 fs, LangevinMiddleIntegrator (Reference platform by default),
   the centre moved linearly from start to target over ``--steer-ps``
   (updated every frame, 1 ps), then held until ``--time-ps``.  With
   ``--mts N``: ``MTSLangevinIntegrator`` with outer step N × 2 fs and groups
   ``[(0, N), (bias_group, 1)]`` (a tuple is (force group, evaluations per
   outer step): the system's forces every 2 fs, the bias every N × 2 fs).

Prints when φ first enters the cored basin, the fraction of frames at φ > 0
and the steps/s (2 fs steps); writes ``WORKDIR/steer[_mtsN].json`` and
``.npz`` (φ, ψ1 and the centre per frame).

Seen on 2 busy cores (seed 1, κ = 100, the default model: 10 ns at 450 K,
1536 frames in the basin): φ entered the basin at 333 ps (plain), 311 ps
(``--mts 2``), 335 ps (``--mts 4``), and stayed (71-72 % of frames at φ > 0);
1.5k, 2.4k and 5.2k steps/s.  ``--mts 8`` (bias impulses every 16 fs) blew up
at ~190 ps where ψ1 is steep (the barrier) at κ = 100, and reached the basin at
241 ps with ``--kappa 50`` (8.1k steps/s).

Run (~7.5 minutes on 2 shared cores; ``OMP_NUM_THREADS=1``: one torch thread):

    OMP_NUM_THREADS=1 python examples/steer_alanine.py --workdir runs/steer_alanine
    OMP_NUM_THREADS=1 python examples/steer_alanine.py --workdir runs/steer_alanine \\
        --model runs/steer_alanine/model --mts 4
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

BASIN = (0.5, 1.8)  # cored C7ax (rad), as ../shared/data/ala2_vacuum_450K/README.md
C7EQ = (-1.0, 2.6)  # cored C7eq: φ < -1.0 or φ > 2.6
PHI = (4, 6, 8, 14)  # C-N-CA-C, zero-based atoms of the shipped PDB
FEATURES = "backbone-torsions-sincos"


def fail(message: str) -> None:
    print(f"steer_alanine.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        fail(message)


def in_basin(phi: np.ndarray) -> np.ndarray:
    return (phi > BASIN[0]) & (phi < BASIN[1])


def dihedral(x: np.ndarray, quartet=PHI) -> np.ndarray:
    """The dihedral (rad, IUPAC/mdtraj sign) of frames ``(n, n_atoms, 3)`` or one frame, by the package's kernel."""
    import torch

    from lss_engine.features.geometry import dihedrals

    xyz = torch.as_tensor(np.asarray(x, dtype=np.float64))
    single = xyz.dim() == 2
    phi = dihedrals(xyz[None] if single else xyz, torch.as_tensor([list(quartet)], dtype=torch.long))[:, 0].numpy()
    return float(phi[0]) if single else phi


def store_phi(store) -> np.ndarray:
    """φ of every frame of a store: from sin/cos or angle features, else from saved positions."""
    names = list(store.feature_names)
    if "sin(phi ALA2)" in names and "cos(phi ALA2)" in names:
        f = store.features()
        return np.arctan2(f[:, names.index("sin(phi ALA2)")], f[:, names.index("cos(phi ALA2)")])
    if "phi ALA2" in names:
        return np.asarray(store.features()[:, names.index("phi ALA2")], dtype=np.float64)
    where = {int(a): i for i, a in enumerate(store.atom_indices)}
    if not all(a in where for a in PHI):
        fail(f"{store.path} has neither φ features nor the φ atoms' positions")
    x = store.positions()
    return dihedral(x, [where[a] for a in PHI])


# --------------------------------------------------------------------------
# 1. the SRV at 450 K


def make_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, list[Path]]:
    """450 K walkers until the C7ax basin is visited, then an SRV; returns the model dir and the stores."""
    from lss_engine.md import run_md_walkers, walker_stores
    from lss_engine.pipeline import EncoderSettings, train_encoder
    from lss_engine.store import TrajectoryStore

    model_dir = workdir / "model"
    if (model_dir / "model.json").exists() and not args.overwrite:
        fail(f"{model_dir} exists: pass --model {model_dir} to reuse it, or --overwrite to remake it")
    out = workdir / "md450" / "md.zarr"
    out.parent.mkdir(parents=True, exist_ok=True)
    stores = walker_stores(out, args.walkers)
    ns = args.ns
    common = {"report_interval": "1ps", "system_kwargs": {"temperature": 450.0}, "seed": args.seed,
                  "featurizer": FEATURES, "atoms": "none"}
    print(f"450 K MD: {args.walkers} walkers x {ns:g} ns, features sin/cos(φ, ψ), a frame per ps")
    run_md_walkers("alanine-dipeptide", out, args.walkers, steps=f"{ns}ns", equilibrate="100ps",
                   overwrite=args.overwrite, **common)
    while True:
        phis = [store_phi(TrajectoryStore(s)) for s in stores]
        n_basin = int(sum(in_basin(p).sum() for p in phis))
        print(f"  {args.walkers} x {ns:g} ns: {n_basin} frames in the basin {BASIN[0]} < φ < {BASIN[1]}, "
              f"{100 * np.mean(np.concatenate(phis) > 0):.2f} % at φ > 0")
        if n_basin >= args.min_basin_ps or ns >= args.max_ns:
            break
        ns = min(ns + args.ns, args.max_ns)
        print(f"  extending every walker to {ns:g} ns (the basin needs {args.min_basin_ps} frames)")
        run_md_walkers("alanine-dipeptide", out, args.walkers, steps=f"{ns}ns", resume=True, **common)
    if n_basin == 0:
        fail(f"no 450 K frame reached {BASIN[0]} < φ < {BASIN[1]} in {args.walkers} x {ns:g} ns; "
             f"raise --max-ns or change --seed")
    settings = EncoderSettings(kind="srv", lag=args.lag, dim=2, hidden=(32, 32), epochs=args.epochs, restarts=1,
                               seed=args.seed, threads=1)
    print(f"SRV: lag {args.lag}, 2 latent coordinates -> {model_dir}")
    encoder = train_encoder([str(s.resolve()) for s in stores], settings, model_dir, analyze=False)
    its = encoder.extra.get("implied_timescales_ps", [])
    print("  implied timescales (ps):", ", ".join(f"{t:.0f}" for t in its))
    return model_dir, stores


def model_stores(args: argparse.Namespace, model_dir: Path) -> list[Path]:
    """The 450 K stores of a given model: ``--stores``, else those recorded in its provenance."""
    if args.stores:
        stores = [Path(s) for s in args.stores]
    else:
        manifest = json.loads((model_dir / "model.json").read_text())
        stores = [Path(s) for s in manifest.get("provenance", {}).get("stores", [])]
        if not stores:
            fail(f"{model_dir} records no training stores; pass --stores with its 450 K stores")
    missing = [str(s) for s in stores if not s.exists()]
    if missing:
        fail(f"stores not found: {', '.join(missing)} (pass --stores)")
    return stores


# --------------------------------------------------------------------------
# 2. start and target in latent space


def latent_targets(model_dir: Path, stores: list[Path]) -> tuple[float, float, np.ndarray]:
    """Mean ψ1 in the C7ax basin and in C7eq of the 450 K frames, and all their ψ1."""
    from lss_engine.bundle import ModelBundle
    from lss_engine.encoder import Encoder
    from lss_engine.errors import LssError
    from lss_engine.store import open_stores

    encoder = Encoder.from_bundle(ModelBundle.load(model_dir))
    if encoder.kind != "srv":
        fail(f"{model_dir} holds a {encoder.kind}; the steering example needs an SRV")
    psi1, phi = [], []
    for store in open_stores([str(s) for s in stores]):
        try:
            encoder.matches(store)
        except LssError as exc:
            fail(str(exc))
        psi1.append(encoder.latent(store.features())[:, 0])
        phi.append(store_phi(store))
    psi1, phi = np.concatenate(psi1), np.concatenate(phi)
    basin = in_basin(phi)
    if not basin.any():
        fail(f"no frame of the stores lies in {BASIN[0]} < φ < {BASIN[1]}: no target for ψ1")
    c7eq = (phi < C7EQ[0]) | (phi > C7EQ[1])
    return float(psi1[basin].mean()), float(psi1[c7eq].mean()), psi1


# --------------------------------------------------------------------------
# 3. steering at 300 K


def steer(args: argparse.Namespace, model_dir: Path, target: float, psi1_450: np.ndarray) -> dict:
    import openmm
    import torch
    from openmm import app, unit
    from tqdm.auto import tqdm

    from lss_engine._helpers import configure_threads
    from lss_engine.bias import FlatBottomWalls, HarmonicRestraint, latent_bias_force
    from lss_engine.systems import choose_platform, get_system

    configure_threads(1)
    test = get_system("alanine-dipeptide", temperature=300.0)
    system = test.system
    others = sorted({f.getForceGroup() for f in system.getForces()})
    if others != [0] or args.group == 0:
        fail(f"the system's forces must all be in group 0 and the bias in another (--group), got {others} "
             f"and {args.group}")
    walls = FlatBottomWalls.from_latent(psi1_450[:, None])
    restraint = HarmonicRestraint([target], args.kappa)  # centre moved to the start below
    force, bias = latent_bias_force(model_dir, restraint=restraint, walls=walls, dim=1, force_group=args.group,
                                    backend="torch")
    system.addForce(force)
    dt_ps = test.timestep.value_in_unit(unit.picosecond)
    n = args.mts
    if n > 1:
        integrator = openmm.MTSLangevinIntegrator(test.temperature, test.friction, n * test.timestep,
                                                  [(0, n), (args.group, 1)])
    else:
        integrator = test.make_integrator()
    integrator.setRandomNumberSeed(args.seed)
    sim = app.Simulation(test.topology, system, integrator, choose_platform(args.platform, test))
    ctx = sim.context
    ctx.setPositions(test.positions)

    def latent_now() -> float:
        x = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        with torch.no_grad():
            return float(bias.module.latent(torch.as_tensor(np.asarray(x, dtype=np.float64)))[0])

    bias.set_centre(ctx, [latent_now()])
    sim.minimizeEnergy()
    start = latent_now()
    bias.set_centre(ctx, [start])
    ctx.setVelocitiesToTemperature(test.temperature, args.seed)

    outer = max(1, math.ceil(round(args.frame_ps / dt_ps) / n))  # integrator steps per frame
    frame_ps = outer * n * dt_ps
    n_frames = math.ceil(args.time_ps / frame_ps - 1e-9)
    platform = ctx.getPlatform().getName()
    how = (f"MTSLangevinIntegrator, bias every {n} x {dt_ps * 1000:g} fs" if n > 1
           else f"LangevinMiddleIntegrator {dt_ps * 1000:g} fs, bias every step")
    print(f"300 K from C7eq, {platform}, {how}; restraint κ = {args.kappa:g} kJ/mol on ψ1 (group {args.group}), "
          f"centre {start:+.3f} -> {target:+.3f} over {args.steer_ps:g} ps, then held; "
          f"{n_frames} frames of {frame_ps:g} ps")
    phi = np.empty(n_frames)
    psi1 = np.empty(n_frames)
    centre = np.empty(n_frames)
    first_ps = None
    step_time = 0.0
    bar = tqdm(range(n_frames), unit="ps" if abs(frame_ps - 1) < 1e-9 else "frame", dynamic_ncols=True,
               desc="steering")
    try:
        for i in bar:
            t_end = (i + 1) * frame_ps
            centre[i] = start + (target - start) * min(1.0, t_end / args.steer_ps)
            bias.set_centre(ctx, [centre[i]])
            t0 = time.perf_counter()
            integrator.step(outer)
            step_time += time.perf_counter() - t0
            state = ctx.getState(getPositions=True, getParameters=True, getParameterDerivatives=True)
            phi[i] = dihedral(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
            psi1[i] = bias.latent_from_state(state)[0]  # from the restraint's parameter derivative
            if not (np.isfinite(phi[i]) and np.isfinite(psi1[i])):
                bar.close()
                fail(f"the simulation blew up at {t_end:g} ps (NaN positions): lower --kappa, steer more slowly "
                     f"(--steer-ps) or use a smaller --mts")
            if first_ps is None and in_basin(phi[i:i + 1])[0]:
                first_ps = round(t_end, 6)
                bar.write(f"  φ entered the basin {BASIN[0]} < φ < {BASIN[1]} at {t_end:g} ps "
                          f"(φ = {phi[i]:+.2f}, ψ1 = {psi1[i]:+.3f}, centre {centre[i]:+.3f})")
            bar.set_postfix_str(f"φ {phi[i]:+.2f} ψ1 {psi1[i]:+.2f} centre {centre[i]:+.2f}", refresh=False)
    except openmm.OpenMMException as exc:
        bar.close()
        fail(f"the simulation blew up ({' '.join(str(exc).split())[:120]}): lower --kappa or use --mts 1")
    bar.close()
    steps = n_frames * outer * n
    held = (np.arange(n_frames) + 1) * frame_ps > args.steer_ps  # frames with the centre at the target
    result = {
        "mts": n, "kappa": args.kappa, "platform": platform, "start_psi1": start, "target_psi1": target,
        "time_ps": round(n_frames * frame_ps, 6), "frame_ps": frame_ps, "first_basin_ps": first_ps,
        "fraction_phi_positive": float(np.mean(phi > 0)), "fraction_in_basin": float(np.mean(in_basin(phi))),
        "fraction_in_basin_after_steering": float(np.mean(in_basin(phi[held]))) if held.any() else None,
        "steps_2fs": steps, "steps_per_s": steps / step_time,
        "final_psi1": float(psi1[-1]), "final_phi": float(phi[-1]),
    }
    np.savez(args.workdir / f"steer{'' if n == 1 else f'_mts{n}'}.npz", time_ps=(np.arange(n_frames) + 1) * frame_ps,
             phi=phi, psi1=psi1, centre=centre)
    return result


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/steer_alanine"),
                        help="450 K stores, model, results (default runs/steer_alanine)")
    parser.add_argument("--model", type=Path, help="an SRV model directory (skips the 450 K MD and training)")
    parser.add_argument("--stores", nargs="+", help="with --model: its 450 K stores (default: its provenance's)")
    parser.add_argument("--overwrite", action="store_true", help="remake WORKDIR's 450 K stores and model")
    parser.add_argument("--walkers", type=int, default=4, help="450 K walkers (default 4)")
    parser.add_argument("--ns", type=float, default=2.5, help="450 K ns per walker, and per extension (2.5)")
    parser.add_argument("--max-ns", type=float, default=10.0, help="extend 450 K walkers up to this (10)")
    parser.add_argument("--min-basin-ps", type=int, default=100,
                        help="450 K frames (ps) in the C7ax basin before training (100)")
    parser.add_argument("--lag", default="10ps", help="SRV lag time (10ps)")
    parser.add_argument("--epochs", type=int, default=30, help="SRV epochs (30)")
    parser.add_argument("--kappa", type=float, default=100.0,
                        help="restraint stiffness, kJ/mol per (whitened ψ1 unit)^2 (100)")
    parser.add_argument("--steer-ps", type=float, default=500.0, help="ps over which the centre moves (500)")
    parser.add_argument("--time-ps", type=float, default=1000.0, help="300 K MD length, ps (1000)")
    parser.add_argument("--frame-ps", type=float, default=1.0, help="ps between centre updates and frames (1)")
    parser.add_argument("--mts", type=int, default=1,
                        help="evaluate the bias every N 2-fs steps with MTSLangevinIntegrator (default 1: "
                             "LangevinMiddleIntegrator, every step)")
    parser.add_argument("--group", type=int, default=30, help="the bias's force group (30)")
    parser.add_argument("--platform", default="auto", help="OpenMM platform (auto: Reference)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    if args.mts < 1:
        fail(f"--mts must be at least 1, got {args.mts}")
    if not 1 <= args.group <= 31:
        fail(f"--group must be 1 to 31 (group 0 holds the system's forces), got {args.group}")
    for name in ("kappa", "steer_ps", "time_ps", "frame_ps", "ns", "max_ns"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            fail(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.walkers < 1 or args.epochs < 1 or args.min_basin_ps < 1:
        fail("--walkers, --epochs and --min-basin-ps must be at least 1")
    if args.steer_ps > args.time_ps:
        fail(f"--steer-ps ({args.steer_ps:g}) must not exceed --time-ps ({args.time_ps:g})")
    if args.stores and args.model is None:
        fail("--stores goes with --model")

    from lss_engine.errors import LssError

    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        if args.model is None:
            model_dir, stores = make_model(args, args.workdir)
        else:
            model_dir = args.model
            if not (model_dir / "model.json").is_file():
                fail(f"{model_dir} is not a model directory (no model.json)")
            stores = model_stores(args, model_dir)
        target, c7eq, psi1_450 = latent_targets(model_dir, stores)
        print(f"ψ1 at 450 K: C7eq mean {c7eq:+.3f}, basin {BASIN[0]} < φ < {BASIN[1]} mean {target:+.3f} "
              f"(range {psi1_450.min():+.3f} to {psi1_450.max():+.3f})")
        result = steer(args, model_dir, target, psi1_450)
    except LssError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    result["model"] = str(model_dir)
    out = args.workdir / f"steer{'' if args.mts == 1 else f'_mts{args.mts}'}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    first = result["first_basin_ps"]
    print(f"\nφ first in {BASIN[0]} < φ < {BASIN[1]}: "
          + (f"{first:g} ps" if first is not None else f"never in {result['time_ps']:g} ps"))
    print(f"frames at φ > 0: {100 * result['fraction_phi_positive']:.1f} % "
          f"(in the basin: {100 * result['fraction_in_basin']:.1f} %; plain 300 K MD: ~0.02 % in 50 ns)")
    print(f"speed: {result['steps_per_s']:.0f} steps/s of 2 fs "
          f"({result['steps_per_s'] * 0.002 * 86400 / 1000:.1f} ns/day), {result['platform']}"
          + (f", bias every {args.mts} steps (MTS)" if args.mts > 1 else ", bias every step"))
    print(f"final φ {result['final_phi']:+.2f} rad, ψ1 {result['final_psi1']:+.3f} (target {target:+.3f}); "
          f"summary in {out}")


if __name__ == "__main__":
    main()
