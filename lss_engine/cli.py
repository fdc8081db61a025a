"""The ``lss`` command: parses arguments, calls the library, prints.

Bad input ends in one line on stderr (``lss: error: ...``) and exit status 2
(usage) or 1 (a run that could not proceed); never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import LssError
from .units import format_time_ps, parse_time_ps


class _OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _system_names() -> list[str]:
    from .systems import list_systems

    return list_systems()


def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="lss",
        description="lss_engine: learn kinetic models from live OpenMM molecular dynamics.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"lss_engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True

    sim = sub.add_parser(
        "simulate",
        help="run OpenMM MD of a test system and stream featurized frames into a zarr store",
        description=(
            "Run OpenMM MD of one of lss_engine's test systems and stream featurized frames into a "
            "zarr trajectory store (see docs/store.md). Ctrl-C stops cleanly; --resume continues."
        ),
    )
    sim.add_argument("--system", default="alanine-dipeptide", metavar="NAME",
                     help="test system: " + ", ".join(_system_names()) + " (default: %(default)s)")
    sim.add_argument("--temperature", type=float, default=None, metavar="K",
                     help="temperature in kelvin (default: the system's own, e.g. 300 K)")
    length = sim.add_mutually_exclusive_group()
    length.add_argument("--ns", type=float, default=None,
                        help="simulated time in ns (default 1; toy systems: 1 reduced time unit = 1 ps)")
    length.add_argument("--steps", type=int, default=None, help="number of integration steps instead of --ns")
    sim.add_argument("--report-interval", default="1ps", metavar="TIME|STEPS",
                     help="time between frames ('1ps', '500fs') or a number of steps (default: %(default)s)")
    sim.add_argument("--features", default="auto", metavar="LIST",
                     help="comma-separated features: backbone-torsions, backbone-torsions-sincos, chi-torsions, "
                          "ca-distances, heavy-atom-distances, contacts, aligned-positions, positions, or 'none' "
                          "(default 'auto': backbone-torsions,heavy-atom-distances for peptides, positions for toys)")
    sim.add_argument("--save-atoms", default="all", metavar="SEL",
                     help="atoms whose positions are stored: all, heavy, ca, backbone, none, or an mdtraj "
                          "selection (default: %(default)s)")
    sim.add_argument("--out", required=True, metavar="STORE", help="output store directory, e.g. runs/ala2.zarr")
    sim.add_argument("--seed", type=int, default=None, help="random seed for velocities and the integrator")
    sim.add_argument("--platform", default="auto",
                     help="OpenMM platform: auto (fastest for this system), Reference, CPU, CUDA, OpenCL")
    sim.add_argument("--equilibrate", default="10ps", metavar="TIME",
                     help="unrecorded MD after minimisation (default: %(default)s)")
    sim.add_argument("--flush-interval", type=int, default=100, metavar="FRAMES",
                     help="frames buffered before writing; a crash loses at most this many (default: %(default)s)")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    sim.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from its checkpoint (STORE.state.xml) up to --ns")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")

    tr = sub.add_parser(
        "train", help="train a latent space simulator on stores (encoder, propagator, decoder)",
        description="Train the stages of a latent space simulator on trajectory stores: an encoder (SRV, or a "
                    "VAMPNet for kinetic analysis), a latent propagator (MDN, or an LSTM language model) and a "
                    "cWGAN decoder back to the saved atoms. Writes a model directory with model.json, weights "
                    "(safetensors), metrics.json and PNG figures (implied timescales, CK test, FES); with all "
                    "three stages, a validation report in MODEL_DIR/validation (FES and autocorrelations of MD "
                    "vs LSS, decoded structure quality). Run again with the same arguments to resume.")
    tr.add_argument("stores", nargs="+", metavar="STORE", help="trajectory stores (paths or glob patterns)")
    tr.add_argument("--stages", default="encoder,propagator,decoder",
                    help="comma-separated stages: encoder, propagator, decoder; later stages alone add to an "
                         "existing --out model (default: %(default)s)")
    tr.add_argument("--encoder", choices=["srv", "vampnet"], default="srv", help="encoder type (default: %(default)s)")
    tr.add_argument("--lag", default="10ps", help="lag time, e.g. 10ps, or frames as '25frames' (default: %(default)s)")
    tr.add_argument("--dim", default="2", help="SRV latent dimension ('auto': largest timescale gap) or VAMPNet "
                                               "number of states (default: %(default)s)")
    tr.add_argument("--hidden", default=None, help="hidden layer widths, e.g. 100,100 (default: SRV 100,100; "
                                                   "VAMPNet 64,32,16)")
    tr.add_argument("--epochs", type=int, default=100, help="maximum epochs per restart (default: %(default)s)")
    tr.add_argument("--pretrain-epochs", type=int, default=0, help="VAMPNet: VAMP-1 epochs before VAMP-2")
    tr.add_argument("--batch-size", type=int, default=1000, help="pairs per batch (default: %(default)s)")
    tr.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default: %(default)s)")
    tr.add_argument("--restarts", type=int, default=3, help="independent restarts; the best is kept (default: %(default)s)")
    tr.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (default: %(default)s)")
    tr.add_argument("--val-fraction", type=float, default=0.2, help="validation share (default: %(default)s)")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    tr.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda")
    tr.add_argument("--propagator", choices=["mdn", "lstm"], default="mdn",
                    help="latent propagator: mdn (mixture density network on the SRV latent space) or lstm "
                         "(language model on the binned first slow coordinate) (default: %(default)s)")
    tr.add_argument("--propagator-lag", default=None, help="propagator time step (default: the encoder's lag)")
    tr.add_argument("--components", type=int, default=8, help="MDN mixture components (default: %(default)s)")
    tr.add_argument("--mdn-transform", choices=["quantile", "standard"], default="quantile",
                    help="coordinates the MDN works in: quantile (marginal Gaussianisation; suits latent "
                         "coordinates with sharp edges and gaps) or standard scores (default: %(default)s)")
    tr.add_argument("--labels", type=int, default=32, help="LSTM: number of bins/labels (default: %(default)s)")
    tr.add_argument("--propagator-epochs", type=int, default=100, help="propagator epochs (default: %(default)s)")
    tr.add_argument("--decoder-epochs", type=int, default=60, help="decoder (cWGAN) epochs (default: %(default)s)")
    tr.add_argument("--decoder-stride", type=int, default=1,
                    help="train the decoder on every n-th frame (default: %(default)s)")
    tr.add_argument("--no-validation", action="store_true", help="skip the MD-vs-LSS validation report")
    tr.add_argument("--out", required=True, metavar="MODEL_DIR", help="output model directory")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    gen = sub.add_parser(
        "generate", help="generate synthetic trajectories with a trained latent space simulator",
        description="Run a latent space simulator: propagate in the latent space, decode to structures and write "
                    "them with OpenMM's own reporters (.dcd, .xtc, .pdb; a PDB topology is written beside) or "
                    "as zarr stores (.zarr, with the latent coordinates). Several walkers give one file each: "
                    "OUT_0.dcd, OUT_1.dcd, ... Streams in chunks: memory does not grow with the length.")
    gen.add_argument("model", metavar="MODEL_DIR")
    glen = gen.add_mutually_exclusive_group(required=True)
    glen.add_argument("--ns", type=float, help="simulated time per walker in ns")
    glen.add_argument("--steps", type=int, help="propagator steps (each one lag time) per walker")
    gen.add_argument("--walkers", type=int, default=1, help="independent walkers (default: %(default)s)")
    gen.add_argument("--out", required=True, metavar="FILE", help="output trajectory: .dcd, .xtc, .pdb or .zarr")
    gen.add_argument("--report-interval", type=int, default=1, metavar="STEPS",
                     help="propagator steps between written frames (default: %(default)s)")
    gen.add_argument("--start", default=None, metavar="STORE[:FRAME]|PDB",
                     help="start from a frame of a store or from a PDB of the whole system (default: points "
                          "drawn from the training data)")
    gen.add_argument("--seed", type=int, default=None, help="random seed")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")

    demo = sub.add_parser(
        "demo", help="simulate alanine dipeptide, train a simulator, generate and report (about 10 min)",
        description="The whole latent space simulator on alanine dipeptide in vacuum at 450 K: MD with lss "
                    "simulate (--ns), lss train (SRV, MDN, cWGAN), lss generate (--generate-ns per walker), "
                    "and a report of MD vs LSS in OUT/model/validation.")
    demo.add_argument("--out", default="runs/demo", metavar="DIR", help="working directory (default: %(default)s)")
    demo.add_argument("--ns", type=float, default=20.0, help="MD for training, ns (default: %(default)s)")
    demo.add_argument("--generate-ns", type=float, default=100.0,
                      help="synthetic time per walker, ns (default: %(default)s)")
    demo.add_argument("--walkers", type=int, default=2, help="synthetic walkers (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    sl = sub.add_parser("sample-latent", help="generate synthetic latent trajectories with a model's propagator",
                        description="Run the propagator of a trained model: one observables-only store per "
                                    "walker (OUT/walker_000.zarr, ...), streamed in chunks.")
    sl.add_argument("model", metavar="MODEL_DIR")
    sl.add_argument("--steps", type=int, required=True, help="propagator steps (each one lag time) per walker")
    sl.add_argument("--walkers", type=int, default=1, help="independent walkers (default: %(default)s)")
    sl.add_argument("--out", required=True, metavar="DIR", help="output directory of walker stores")
    sl.add_argument("--seed", type=int, default=None, help="random seed")
    sl.add_argument("--no-progress", action="store_true", help="no progress bar")

    an = sub.add_parser("analyze", help="redraw a model's kinetic analysis on any stores",
                        description="Implied timescales, CK test and FES of a trained encoder on the given stores.")
    an.add_argument("model", metavar="MODEL_DIR")
    an.add_argument("stores", nargs="+", metavar="STORE")
    an.add_argument("--out", default=None, metavar="DIR", help="where figures and metrics.json go "
                                                             "(default: MODEL_DIR/analysis)")

    info = sub.add_parser("info", help="summarise one or more stores",
                          description="Print frames, time span, features, saved atoms and schema version of stores.")
    info.add_argument("stores", nargs="+", metavar="STORE")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


# ---------------------------------------------------------------------------
# lss simulate
# ---------------------------------------------------------------------------
def _report_interval_steps(text: str, timestep_ps: float) -> int:
    text = text.strip()
    if text.isdigit() or text.endswith("steps"):
        steps = int(text.removesuffix("steps").strip())
    else:
        ratio = parse_time_ps(text) / timestep_ps
        steps = round(ratio)
        if steps < 1 or abs(ratio - steps) > 1e-6 * ratio:
            raise LssError(
                f"--report-interval {text} is not a whole number of {timestep_ps:g} ps steps"
            )
    if steps < 1:
        raise LssError("--report-interval must be at least one step")
    return steps


def _checkpoint_path(store: Path) -> Path:
    return store.with_name(store.name + ".state.xml")


def _save_checkpoint(simulation, path: Path) -> None:
    """OpenMM state XML (no pickle), written atomically."""
    tmp = path.with_name(path.name + ".partial")
    simulation.saveState(str(tmp))
    os.replace(tmp, path)


def _default_features(test_system) -> str:
    residues = [r.name for r in test_system.topology.residues()]
    return "backbone-torsions,heavy-atom-distances" if "ALA" in residues or len(residues) > 1 else "positions"


def cmd_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .features import build_featurizer, select_atoms
    from .reporters import ZarrReporter
    from .systems import get_system

    kwargs = {} if args.temperature is None else {"temperature": args.temperature}
    test_system = get_system(args.system, **kwargs)
    timestep_ps = test_system.timestep._value
    interval = _report_interval_steps(args.report_interval, timestep_ps)
    if args.steps is not None:
        total_steps = args.steps
    else:
        ns = 1.0 if args.ns is None else args.ns
        total_steps = round(ns * 1000.0 / timestep_ps)
    if total_steps < 1:
        raise LssError("nothing to simulate: --ns/--steps must be positive")
    out = Path(args.out)
    checkpoint = _checkpoint_path(out)
    if args.resume and not checkpoint.exists():
        raise LssError(f"--resume: no checkpoint {checkpoint} (was the run started with this lss?)")
    if out.exists() and not (args.overwrite or args.resume):
        raise LssError(f"{out} exists; use --resume to continue it or --overwrite to replace it")

    features = _default_features(test_system) if args.features == "auto" else args.features
    featurizer = None
    if features.strip().lower() != "none":  # resolved now, so a bad name fails before any MD
        featurizer = build_featurizer(features, test_system.topology,
                                      reference_positions=test_system.positions._value)
    atoms = None if args.save_atoms == "all" else args.save_atoms
    if atoms is not None:
        select_atoms(test_system.topology, atoms)

    simulation = test_system.make_simulation(platform=args.platform, seed=args.seed)
    if args.resume:
        simulation.loadState(str(checkpoint))
        state = simulation.context.getState()
        simulation.currentStep = int(round(state.getTime()._value / timestep_ps))
    else:
        equil = round(parse_time_ps(args.equilibrate) / timestep_ps)
        if equil > 0:
            simulation.step(equil)
        simulation.currentStep = 0
        simulation.context.setTime(0.0)
        simulation.context.setStepCount(0)

    reporter = ZarrReporter(out, interval, featurizer=featurizer, atoms=atoms, append=args.resume,
                            flush_interval=args.flush_interval, overwrite=args.overwrite and not args.resume,
                            seed=args.seed)
    simulation.reporters.append(reporter)
    platform = simulation.context.getPlatform().getName()
    remaining = total_steps - simulation.currentStep
    print(f"lss simulate: {test_system.name} at {test_system.temperature._value:g} K on {platform}, "
          f"{format_time_ps(total_steps * timestep_ps)} ({total_steps} steps), a frame every {interval} steps "
          f"-> {out}", flush=True)
    chunk = interval * args.flush_interval  # checkpoints coincide with committed frames
    bar = tqdm(total=total_steps, initial=simulation.currentStep, unit="step", unit_scale=True,
               disable=args.no_progress, dynamic_ncols=True, desc="MD")
    start_wall, start_step = time.perf_counter(), simulation.currentStep
    try:
        while simulation.currentStep < total_steps:
            n = min(chunk - simulation.currentStep % chunk, total_steps - simulation.currentStep)
            simulation.step(n)
            reporter.flush()
            _save_checkpoint(simulation, checkpoint)
            bar.update(n)
            elapsed = time.perf_counter() - start_wall
            ns_day = (simulation.currentStep - start_step) * timestep_ps * 1e-3 / max(elapsed, 1e-9) * 86400
            bar.set_postfix_str(f"{ns_day:.3g} ns/day, {reporter.frames_committed} frames")
    except KeyboardInterrupt:
        reporter.close()
        _save_checkpoint(simulation, checkpoint)  # the state matches the last committed frame's step or later
        bar.close()
        print(f"\ninterrupted at step {simulation.currentStep}: {reporter.frames_committed} frames are safe in "
              f"{out}; continue with the same command plus --resume", file=sys.stderr)
        return 130
    finally:
        reporter.close()
        bar.close()
    if remaining <= 0:
        print("lss simulate: the run was already complete")
    store = reporter.open()
    print(f"lss simulate: {store.n_frames} frames, {store.n_features} features in {out} (details: lss info {out})")
    return 0


# ---------------------------------------------------------------------------
# lss info
# ---------------------------------------------------------------------------
def _format_info(info: dict) -> str:
    span = (
        f"{format_time_ps(info['time_start_ps'])} – {format_time_ps(info['time_end_ps'])}"
        if info["frames"] else "empty"
    )
    obs = ", ".join(f"{name} ({n})" for name, n in info["observables"].items()) or "none"
    atoms = (f"{info['saved_atoms']} of {info['n_atoms_system']} (particles/{info['particles_group']})"
             if info["saved_atoms"] else f"none of {info['n_atoms_system']}")
    temp = "n/a" if info["temperature_K"] is None else f"{info['temperature_K']:g} K"
    lines = [
        f"store          {info['path']}",
        f"schema         {info['schema_version']}",
        f"frames         {info['frames']}",
        f"time span      {span}",
        f"frame interval {format_time_ps(info['frame_interval_ps'])} "
        f"({info['report_interval']} steps of {format_time_ps(info['timestep_ps'])})",
        f"temperature    {temp}",
        f"features       {info['n_features']}: {obs}",
        f"saved atoms    {atoms}",
        f"periodic       {'yes' if info['periodic'] else 'no'}",
        f"created        {info['created']}",
    ]
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from .store import open_stores

    infos = [store.info() for store in open_stores(args.stores)]
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
    else:
        print("\n\n".join(_format_info(i) for i in infos))
    return 0


def _positive_int(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LssError(f"{option} must be an integer, got {text!r}") from None
    if value < 1:
        raise LssError(f"{option} must be positive, got {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import (DecoderSettings, EncoderSettings, PropagatorSettings, train_decoder, train_encoder,
                           train_propagator, validate_simulator)

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - {"encoder", "propagator", "decoder"})
    if unknown or not stages:
        raise LssError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; stages are: encoder, propagator, decoder")
    progress = not args.no_progress
    if "encoder" in stages:
        dim = None if args.dim == "auto" else _positive_int(args.dim, "--dim")
        hidden = None if args.hidden is None else [_positive_int(h, "--hidden") for h in args.hidden.split(",")]
        settings = EncoderSettings(kind=args.encoder, lag=args.lag, dim=dim, hidden=hidden, epochs=args.epochs,
                                   pretrain_epochs=args.pretrain_epochs, batch_size=args.batch_size, lr=args.lr,
                                   restarts=args.restarts, patience=args.patience, seed=args.seed,
                                   val_fraction=args.val_fraction, device=args.device, progress=progress)
        encoder = train_encoder(args.stores, settings, args.out)
        timescales = encoder.extra.get("implied_timescales_ps") or []
        shown = ", ".join(format_time_ps(t) for t in timescales[:3] if t is not None and math.isfinite(t))
        print(f"lss train: {encoder.kind} at lag {format_time_ps(encoder.lag_ps)}, validation score "
              f"{encoder.extra['validation_score']:.4f}, slowest implied timescales {shown} -> {args.out} "
              f"(figures and metrics.json there)")
    if "propagator" in stages:
        settings = PropagatorSettings(kind=args.propagator, lag=args.propagator_lag, n_components=args.components,
                                      transform=args.mdn_transform, n_labels=args.labels,
                                      epochs=args.propagator_epochs, seed=args.seed, val_fraction=args.val_fraction,
                                      device=args.device, progress=progress)
        meta = train_propagator(args.out, args.stores, settings)
        print(f"lss train: {meta['kind']} propagator at lag {format_time_ps(meta['lag_ps'])}, validation score "
              f"{meta['validation_score']:.4f} -> {args.out}")
    if "decoder" in stages:
        settings = DecoderSettings(epochs=args.decoder_epochs, stride=args.decoder_stride, seed=args.seed,
                                   val_fraction=args.val_fraction, device=args.device, progress=progress)
        meta = train_decoder(args.out, args.stores, settings)
        print(f"lss train: cWGAN decoder of {len(meta['atom_indices'])} atoms, structure score "
              f"{meta['validation_score']:.4g} -> {args.out}")
    if "decoder" in stages and not args.no_validation:
        from .errors import NonFiniteError

        try:
            metrics = validate_simulator(args.out, args.stores)
        except NonFiniteError as exc:  # the model is saved; say why it cannot be validated
            print(f"lss train: warning: no validation report: {exc}", file=sys.stderr)
        else:
            print(_validation_summary(metrics, Path(args.out) / "validation"))
    return 0


def _validation_summary(metrics: dict, where: Path) -> str:
    st = metrics["structures"]
    tau = metrics["relaxation_times_ps"]
    parts = [f"FES(ψ1) RMSE {metrics['fes_psi1_rmse_kT']:.2f} kT",
             "relaxation ψ1 MD {:.4g} / LSS {:.4g} ps".format(tau["md"][0], tau["lss"][0])]
    if "bond_mae_nm" in st:
        parts.append(f"bond MAE {st['bond_mae_nm']:.4f} nm")
    parts.append(f"Rg {st['rg_mean_nm']:.3f} vs MD {st['reference_rg_mean_nm']:.3f} nm")
    if "ramachandran_js" in st:
        floor = metrics.get("structures_md_first_vs_second_half", {}).get("ramachandran_js")
        parts.append(f"Ramachandran JS {st['ramachandran_js']:.3f}"
                     + ("" if floor is None else f" (MD half vs half {floor:.3f})"))
    return f"lss train: validation (MD vs LSS): {'; '.join(parts)}; figures and metrics.json in {where}"


def _parse_start(text: str | None) -> Any:
    if text is None:
        return None
    path = Path(text)
    if path.suffix.lower() == ".pdb":
        import numpy as np
        from openmm import unit
        from openmm.app import PDBFile

        pdb = PDBFile(str(path))
        return np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    store, _, frame = text.rpartition(":") if ":" in text and not Path(text).exists() else (text, "", "0")
    try:
        return (store, int(frame or 0))
    except ValueError:
        raise LssError(f"--start must be STORE[:FRAME] or a PDB file, got {text!r}") from None


def cmd_generate(args: argparse.Namespace) -> int:
    import time

    from .simulator import LatentSpaceSimulator

    sim = LatentSpaceSimulator.load(args.model)
    n_steps = args.steps if args.steps is not None else int(round(args.ns * 1000.0 / sim.lag_ps))
    if n_steps < 1:
        raise LssError(f"--ns {args.ns} is shorter than one lag time ({format_time_ps(sim.lag_ps)})")
    t0 = time.perf_counter()
    paths = sim.generate(n_steps, args.walkers, args.out, start=_parse_start(args.start), seed=args.seed,
                         report_interval=args.report_interval, overwrite=args.overwrite,
                         progress=not args.no_progress)
    wall = time.perf_counter() - t0
    frames = args.walkers * (n_steps // args.report_interval)
    simulated_ns = args.walkers * n_steps * sim.lag_ps / 1000.0
    print(f"lss generate: {args.walkers} × {format_time_ps(n_steps * sim.lag_ps)} ({frames} frames) in {wall:.1f} s "
          f"({frames / wall:,.0f} frames/s, {simulated_ns / wall:,.3g} ns per second) -> "
          f"{', '.join(str(p) for p in paths[:3])}{' ...' if len(paths) > 3 else ''}")
    return 0


#: what ``lss demo`` runs (documented in the README): alanine dipeptide in vacuum at 450 K
DEMO_SIMULATE = ["--system", "alanine-dipeptide", "--temperature", "450", "--report-interval", "1ps",
                 "--features", "backbone-torsions,heavy-atom-distances", "--save-atoms", "heavy",
                 "--equilibrate", "100ps"]
DEMO_TRAIN = ["--lag", "10ps", "--dim", "2", "--epochs", "30", "--restarts", "1", "--components", "24",
              "--propagator-epochs", "40", "--decoder-epochs", "60"]


def cmd_demo(args: argparse.Namespace) -> int:
    """MD → train → generate → report, each step an ordinary ``lss`` command (printed as it runs)."""
    from .store import open_store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store, model = out / "md.zarr", out / "model"
    quiet = ["--no-progress"] if args.no_progress else []
    md_frames = int(round(args.ns * 1000))  # DEMO_SIMULATE reports every 1 ps
    have = None
    if store.exists():
        try:
            have = open_store(store)
        except LssError:
            have = None
    commands: list[list[str]] = []
    if have is None or len(have) < md_frames:
        commands.append(["simulate", *DEMO_SIMULATE, "--ns", f"{args.ns:g}", "--seed", str(args.seed),
                         "--out", str(store), "--overwrite", *quiet])
    commands.append(["train", str(store), "--out", str(model), *DEMO_TRAIN, "--seed", str(args.seed), *quiet])
    commands.append(["generate", str(model), "--ns", f"{args.generate_ns:g}", "--walkers", str(args.walkers),
                     "--out", str(out / "synth.dcd"), "--seed", str(args.seed), "--overwrite", *quiet])
    t0 = time.perf_counter()
    for command in commands:
        print("$ lss " + " ".join(command), flush=True)
        status = main(command)
        if status:
            return status
    print(f"lss demo: done in {time.perf_counter() - t0:.0f} s. MD store {store}; model and training figures "
          f"{model}; MD-vs-LSS report {model / 'validation'} (fes_md_vs_lss.png, autocorrelation.png, "
          f"ramachandran_md_vs_lss.png, metrics.json); synthetic trajectories {out}/synth_*.dcd with "
          f"{out}/synth_topology.pdb")
    return 0


def cmd_sample_latent(args: argparse.Namespace) -> int:
    from .pipeline import sample_latent

    if args.steps < 1 or args.walkers < 1:
        raise LssError("--steps and --walkers must be positive")
    paths = sample_latent(args.model, args.steps, args.walkers, args.out, seed=args.seed,
                          progress=not args.no_progress)
    print(f"lss sample-latent: {len(paths)} walker store(s) of {args.steps} steps in {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .pipeline import analyze_encoder, load_encoder

    out = Path(args.out) if args.out else Path(args.model) / "analysis"
    metrics = analyze_encoder(load_encoder(args.model), args.stores, out)
    print(f"lss analyze: {metrics['frames']} frames; CK max deviation {metrics['ck_test']['max_deviation']:.3f}; "
          f"figures {', '.join(metrics['figures'])} in {out}")
    return 0


_COMMANDS = {"simulate": cmd_simulate, "train": cmd_train, "analyze": cmd_analyze, "generate": cmd_generate,
             "demo": cmd_demo, "sample-latent": cmd_sample_latent, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lss``; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except LssError as exc:
        print(f"lss {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lss {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
