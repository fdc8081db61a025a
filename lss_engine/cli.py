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
from typing import Sequence

from ._helpers import first_line, positive_int
from .errors import LssError, OutputExistsError
from .units import format_time_ps


class _OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _system_names() -> list[str]:
    from .systems import list_systems

    return list_systems()


def _add_skip_damaged(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-damaged", action="store_true",
                        help="treat damaged frame ranges of the stores as trajectory breaks (each store is "
                             "verified first, reading every chunk) instead of refusing them")


def _build_parser() -> argparse.ArgumentParser:
    from .settings import DecoderSettings as Dec
    from .settings import EncoderSettings as Enc
    from .settings import PropagatorSettings as Prop

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
        help="run OpenMM MD of a test system or your own (System XML + PDB) into a zarr store",
        description=(
            "Run OpenMM MD of one of lss_engine's test systems (--system) or of your own OpenMM System "
            "(--system-xml with --pdb, optionally --state-xml) and stream featurized frames into a "
            "zarr trajectory store (see docs/store.md). Ctrl-C stops cleanly; --resume continues."
        ),
    )
    source = sim.add_mutually_exclusive_group()
    source.add_argument("--system", default=None, metavar="NAME",
                        help="test system: " + ", ".join(_system_names()) + " (default: alanine-dipeptide)")
    source.add_argument("--system-xml", default=None, metavar="FILE",
                        help="your own system: an OpenMM System serialized as XML (XmlSerializer); needs --pdb")
    sim.add_argument("--pdb", default=None, metavar="FILE",
                     help="with --system-xml: PDB file with the topology and (without --state-xml) the positions")
    sim.add_argument("--state-xml", default=None, metavar="FILE",
                     help="with --system-xml: OpenMM State XML with the positions, box and velocities to start from")
    sim.add_argument("--temperature", type=float, default=None, metavar="K",
                     help="temperature in kelvin (default: the system's own, e.g. 300 K; --system-xml: 300 K)")
    sim.add_argument("--timestep", default=None, metavar="PS",
                     help="integration step in ps, or a time such as 2fs (default: the system's own; "
                          "--system-xml: 0.002)")
    sim.add_argument("--friction", type=float, default=None, metavar="PER_PS",
                     help="Langevin collision rate (Brownian: friction) in 1/ps (default: the system's own; "
                          "--system-xml: 1)")
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
    sim.add_argument("--seed", type=int, default=None,
                     help="random seed for velocities and the integrator (walker k: SEED + k)")
    sim.add_argument("--walkers", type=int, default=1, metavar="N",
                     help="independent walkers, each --ns long with its own seed, run in parallel processes "
                          "(one per core): STORE md.zarr gives md_0.zarr, md_1.zarr, ... (default: %(default)s)")
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
    _add_skip_damaged(tr)
    tr.add_argument("--stages", default="encoder,propagator,decoder",
                    help="comma-separated stages: encoder, propagator, decoder; later stages alone add to an "
                         "existing --out model (default: %(default)s)")
    tr.add_argument("--encoder", choices=["srv", "vampnet"], default=Enc.kind, help="encoder type (default: %(default)s)")
    tr.add_argument("--lag", default=Enc.lag, help="lag time, e.g. 10ps, or frames as '25frames' (default: %(default)s)")
    tr.add_argument("--dim", default=str(Enc.dim), help="SRV latent dimension ('auto': largest timescale gap) or VAMPNet "
                                               "number of states (default: %(default)s)")
    tr.add_argument("--hidden", default=None, help="hidden layer widths, e.g. 100,100 (default: SRV 100,100; "
                                                   "VAMPNet 64,32,16)")
    tr.add_argument("--epochs", type=int, default=Enc.epochs, help="maximum encoder epochs per restart (default: %(default)s)")
    tr.add_argument("--pretrain-epochs", type=int, default=Enc.pretrain_epochs, help="VAMPNet: VAMP-1 epochs before VAMP-2")
    tr.add_argument("--batch-size", type=int, default=Enc.batch_size, help="pairs per batch (default: %(default)s)")
    tr.add_argument("--lr", type=float, default=Enc.lr, help="Adam learning rate (default: %(default)s)")
    tr.add_argument("--restarts", type=int, default=Enc.restarts, help="independent restarts; the best is kept (default: %(default)s)")
    tr.add_argument("--patience", type=int, default=Enc.patience, help="early-stopping patience in epochs (default: %(default)s)")
    tr.add_argument("--val-fraction", type=float, default=Enc.val_fraction, help="validation share (default: %(default)s)")
    tr.add_argument("--val-split", choices=["auto", "blocks", "interleaved", "trajectories"], default=Enc.val_split,
                    help="how the encoder's and propagator's validation part is chosen: auto (whole trajectories "
                         "when there are 5 or more, else interleaved), interleaved (every 5th of 100 blocks: a "
                         "rarely visited state lands in both parts), blocks (10 blocks at random) "
                         "(default: %(default)s)")
    tr.add_argument("--seed", type=int, default=Enc.seed, help="random seed (default: %(default)s)")
    tr.add_argument("--device", default=Enc.device, help="auto (GPU when present), cpu, cuda")
    tr.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: OMP_NUM_THREADS if set, else half the cores, 1 to 4: "
                        "stays fast when other processes share the cores)")
    tr.add_argument("--propagator", choices=["mdn", "lstm"], default=Prop.kind,
                    help="latent propagator: mdn (mixture density network on the SRV latent space) or lstm "
                         "(language model on the binned first slow coordinate) (default: %(default)s)")
    tr.add_argument("--propagator-lag", default=None, help="propagator time step (default: the encoder's lag)")
    tr.add_argument("--components", type=int, default=Prop.n_components, help="MDN mixture components (default: %(default)s)")
    tr.add_argument("--mdn-transform", choices=["quantile", "standard"], default=Prop.transform,
                    help="coordinates the MDN works in: quantile (marginal Gaussianisation; suits latent "
                         "coordinates with sharp edges and gaps) or standard scores (default: %(default)s)")
    tr.add_argument("--labels", type=int, default=Prop.n_labels, help="LSTM: number of bins/labels (default: %(default)s)")
    tr.add_argument("--propagator-epochs", type=int, default=Prop.epochs, help="propagator epochs (default: %(default)s)")
    tr.add_argument("--decoder-epochs", type=int, default=Dec.epochs, help="decoder (cWGAN) epochs (default: %(default)s)")
    tr.add_argument("--decoder-stride", type=int, default=Dec.stride,
                    help="train the decoder on every n-th frame (default: %(default)s)")
    tr.add_argument("--decoder-alignment", choices=["auto", "kabsch", "none"], default=Dec.alignment,
                    help="superpose the decoder's training frames (kabsch) or keep absolute positions (none); "
                         "auto: none for fewer than 3 saved atoms, systems with external forces (fields, "
                         "restraints, toy potentials) or particles without bonds or standard residues, kabsch "
                         "for molecules (default: %(default)s)")
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
    gen.add_argument("--threads", type=int, default=None, metavar="N",
                    help="torch CPU threads (default: OMP_NUM_THREADS if set, else half the cores, 1 to 4: "
                         "stays fast when other processes share the cores)")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")

    demo = sub.add_parser(
        "demo", help="simulate alanine dipeptide, train a simulator, generate and report (under 10 min on 2 cores)",
        description="The whole latent space simulator on alanine dipeptide in vacuum at 450 K: MD with lss "
                    "simulate (--ns), lss train (SRV, MDN, cWGAN), lss generate (--generate-ns per walker), "
                    "and a report of MD vs LSS in OUT/model/validation.")
    demo.add_argument("--out", default="runs/demo", metavar="DIR", help="working directory (default: %(default)s)")
    demo.add_argument("--ns", type=float, default=10.0,
                      help="MD for training per MD walker, ns (default: %(default)s)")
    demo.add_argument("--md-walkers", type=int, default=2,
                      help="MD walkers, run in parallel processes (default: %(default)s)")
    demo.add_argument("--generate-ns", type=float, default=100.0,
                      help="synthetic time per walker, ns (default: %(default)s)")
    demo.add_argument("--walkers", type=int, default=2, help="synthetic walkers (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    demo.add_argument("--threads", type=int, default=None, metavar="N",
                      help="torch CPU threads of lss train and lss generate (default: theirs)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    sl = sub.add_parser("sample-latent", help="generate synthetic latent trajectories with a model's propagator",
                        description="Run the propagator of a trained model: one observables-only store per "
                                    "walker (OUT/walker_000.zarr, ...), streamed in chunks.")
    sl.add_argument("model", metavar="MODEL_DIR")
    sl.add_argument("--steps", type=int, required=True, help="propagator steps (each one lag time) per walker")
    sl.add_argument("--walkers", type=int, default=1, help="independent walkers (default: %(default)s)")
    sl.add_argument("--out", required=True, metavar="DIR", help="output directory of walker stores")
    sl.add_argument("--seed", type=int, default=None, help="random seed")
    sl.add_argument("--overwrite", action="store_true", help="replace the walker stores of an earlier run in --out")
    sl.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: OMP_NUM_THREADS if set, else half the cores, 1 to 4: "
                        "stays fast when other processes share the cores)")
    sl.add_argument("--no-progress", action="store_true", help="no progress bar")

    an = sub.add_parser("analyze", help="redraw a model's kinetic analysis on any stores",
                        description="Implied timescales, CK test and FES of a trained encoder on the given stores.")
    an.add_argument("model", metavar="MODEL_DIR")
    an.add_argument("stores", nargs="+", metavar="STORE")
    _add_skip_damaged(an)
    an.add_argument("--out", default=None, metavar="DIR", help="where figures and metrics.json go "
                                                             "(default: MODEL_DIR/analysis)")

    info = sub.add_parser("info", help="summarise one or more stores",
                          description="Print frames, time span, features, saved atoms and schema version of stores.")
    info.add_argument("stores", nargs="+", metavar="STORE")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--verify", action="store_true", help="also read every chunk and report damage (as lss verify)")

    ver = sub.add_parser("verify", help="read every chunk of stores and report damaged frame ranges",
                         description="Check every committed chunk of each store (files present, checksums, "
                                     "step order). Exit status 1 if any store is damaged.")
    ver.add_argument("stores", nargs="+", metavar="STORE")
    ver.add_argument("--json", action="store_true", help="print JSON instead of text")
    rw = sub.add_parser("reweight", help="unbiased FES from biased runs (LatentReporter stores), by MBAR",
                        description="Each store is one run under one fixed bias; every frame is weighed by MBAR "
                                    "over all runs' biases; prints and plots the FES along a latent coordinate.")
    rw.add_argument("stores", nargs="+", metavar="BIAS_STORE")
    rw.add_argument("--coordinate", type=int, default=1, help="latent coordinate (1 = ψ1, the slowest)")
    rw.add_argument("--bins", type=int, default=40)
    rw.add_argument("--temperature", type=float, default=None, help="K (default: the runs' recorded one)")
    rw.add_argument("--resample", choices=("blocks", "runs"), default="blocks",
                    help="bootstrap: blocks within each run (umbrella windows) or whole runs (exchangeable runs)")
    rw.add_argument("--out", default=None, metavar="DIR", help="fes.png and metrics.json go here")
    from .campaign.commands import add_parser as add_campaign_parser

    add_campaign_parser(sub)
    return parser


# ---------------------------------------------------------------------------
# lss simulate
# ---------------------------------------------------------------------------
def _simulate_system(args: argparse.Namespace):
    """The system of ``lss simulate``: ``--system`` NAME or ``--system-xml`` + ``--pdb`` (+ ``--state-xml``)."""
    from .systems import make_system

    if args.system_xml is None:
        given = [flag for flag, value in (("--pdb", args.pdb), ("--state-xml", args.state_xml)) if value is not None]
        if given:
            raise LssError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'} with --system-xml")
    elif args.pdb is None:
        raise LssError("--system-xml needs --pdb (the topology)")
    return make_system(args.system or "alanine-dipeptide", xml=args.system_xml, pdb=args.pdb,
                       state_xml=args.state_xml, temperature=args.temperature, timestep=args.timestep,
                       friction=args.friction)


def cmd_simulate(args: argparse.Namespace) -> int:
    from openmm import unit

    from .md import MDInterrupted, MDRun, to_steps

    test_system = _simulate_system(args)
    dt = test_system.timestep
    steps = args.steps if args.steps is not None else (1.0 if args.ns is None else args.ns) * unit.nanosecond
    if (args.steps if args.steps is not None else args.ns if args.ns is not None else 1) <= 0:
        raise LssError("nothing to simulate: --ns/--steps must be positive")
    if args.walkers != 1:
        return _simulate_walkers(args, test_system, steps)
    run = MDRun(test_system, args.out, steps=steps,
                report_interval=to_steps(args.report_interval, dt, "--report-interval"),
                equilibrate=to_steps(args.equilibrate, dt, "--equilibrate", exact=False),
                featurizer=args.features, atoms=args.save_atoms, platform=args.platform, seed=args.seed,
                resume=args.resume, overwrite=args.overwrite, flush_interval=args.flush_interval)
    print(f"lss simulate: {run.name} at {run.temperature_K:g} K on {run.platform}, "
          f"{format_time_ps(run.total_steps * run.timestep_ps)} ({run.total_steps} steps), a frame every "
          f"{run.report_interval} steps -> {run.store}", flush=True)
    try:
        result = run.run(progress=not args.no_progress)
    except MDInterrupted as exc:
        print(f"\ninterrupted at step {exc.result.step}: {exc.result.frames} frames are safe in {exc.result.store}; "
              f"continue with the same command plus --resume", file=sys.stderr)
        return 130
    if args.resume and result.steps_run == 0:
        print("lss simulate: the run was already complete")
    print(f"lss simulate: {result.frames} frames, {result.n_features} features in {result.store} "
          f"(details: lss info {result.store})")
    return 0


def _simulate_walkers(args: argparse.Namespace, test_system, steps) -> int:
    """``lss simulate --walkers N``: N walkers in parallel processes (:func:`lss_engine.md.run_md_walkers`),
    each rebuilding ``test_system`` from its spec (:func:`lss_engine.systems.system_spec`)."""
    from openmm import unit

    from .md import MDInterrupted, run_md_walkers, to_steps, walker_stores
    from .systems import system_spec

    if args.walkers < 1:
        raise LssError(f"--walkers must be at least 1, got {args.walkers}")
    dt = test_system.timestep
    total = to_steps(steps, dt, "--ns", exact=False)
    paths = walker_stores(args.out, args.walkers)
    print(f"lss simulate: {test_system.name} at {test_system.temperature.value_in_unit(unit.kelvin):g} K, "
          f"{args.walkers} walkers × {format_time_ps(total * dt._value)} ({total} steps each) in parallel "
          f"processes -> {paths[0]} ... {paths[-1]}", flush=True)
    try:
        results = run_md_walkers(system_spec(test_system), args.out, args.walkers, steps=total,
                                 report_interval=to_steps(args.report_interval, dt, "--report-interval"),
                                 equilibrate=to_steps(args.equilibrate, dt, "--equilibrate", exact=False),
                                 featurizer=args.features, atoms=args.save_atoms, platform=args.platform,
                                 seed=args.seed, resume=args.resume, overwrite=args.overwrite,
                                 flush_interval=args.flush_interval, progress=not args.no_progress)
    except MDInterrupted as exc:
        done = [r for r in getattr(exc, "results", [exc.result]) if r is not None]
        print(f"\ninterrupted: {sum(r.frames for r in done)} frames are safe in {len(done)} walker store(s); "
              f"continue with the same command plus --resume", file=sys.stderr)
        return 130
    ns_day = sum(r.ns_per_day for r in results)
    print(f"lss simulate: {args.walkers} walkers, {sum(r.frames for r in results)} frames, "
          f"{results[0].n_features} features, {ns_day:.3g} ns/day together "
          f"-> {', '.join(str(r.store) for r in results)} (details: lss info {paths[0]})")
    return 0


# ---------------------------------------------------------------------------
# lss info
# ---------------------------------------------------------------------------
def _format_info(info: dict) -> str:
    span = (
        f"{format_time_ps(info['time_start_ps'])} – {format_time_ps(info['time_end_ps'])}"
        if info["time_start_ps"] is not None else "empty" if not info["frames"] else "unknown (damaged)"
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
    if info["missing_chunks"] and "damage" not in info:
        lines.append("integrity      DAMAGED: " + "; ".join(info["missing_chunks"]))
    if "damage" in info:
        lines.append("integrity      " + ("intact (every chunk read)" if not info["damage"] else
                                        "DAMAGED: " + "; ".join(info["damage"])))
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from .store import open_stores

    stores = open_stores(args.stores)
    infos = [store.info() for store in stores]
    if args.verify:
        for store, info in zip(stores, infos):
            info["damage"] = [str(d) for d in store.verify(progress=not args.json)]
    damaged = sum(bool(info["missing_chunks"] or info.get("damage")) for info in infos)
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
    else:
        print("\n\n".join(_format_info(i) for i in infos))
    if damaged:
        print(f"lss info: error: {damaged} of {len(infos)} store(s) damaged (see integrity above; "
              f"lss verify reads every chunk)", file=sys.stderr)
    return 1 if damaged else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .store import open_stores

    report = []
    for store in open_stores(args.stores):
        damages = store.verify(progress=not args.json)
        report.append({"path": str(store.path), "frames": store.n_frames, "damaged_frames":
                       [list(r) for r in store.damaged_ranges(damages)], "damage": [str(d) for d in damages]})
        if not args.json:
            if damages:
                print("\n".join(f"DAMAGED {d}" for d in damages))
            else:
                print(f"ok      {store.path}: {store.n_frames} frames")
    bad = sum(bool(r["damage"]) for r in report)
    if args.json:
        print(json.dumps(report if len(report) > 1 else report[0], indent=2))
    elif bad:
        print(f"lss verify: {bad} of {len(report)} store(s) damaged; train with --skip-damaged to use the "
              f"intact frames", file=sys.stderr)
    return 1 if bad else 0


def _damage_options(args: argparse.Namespace) -> dict:
    """``--skip-damaged``: intact stretches of the stores, each skipped range said on stderr."""
    return {"skip_damaged": args.skip_damaged,
            "on_damage": lambda line: print(f"lss {args.command}: warning: {line}", file=sys.stderr)}


def _open_stores(args: argparse.Namespace) -> list:
    from .store import open_stores

    return open_stores(args.stores, **_damage_options(args))


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import (DecoderSettings, EncoderSettings, PropagatorSettings, check_stages, train_decoder,
                           train_encoder, train_propagator, validate_simulator)

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    progress = not args.no_progress
    dim = None if args.dim == "auto" else positive_int(args.dim, "--dim", text=True)
    hidden = None if args.hidden is None else [positive_int(h, "--hidden", text=True) for h in args.hidden.split(",")]
    enc_settings = EncoderSettings(kind=args.encoder, lag=args.lag, dim=dim, hidden=hidden, epochs=args.epochs,
                                   pretrain_epochs=args.pretrain_epochs, batch_size=args.batch_size, lr=args.lr,
                                   restarts=args.restarts, patience=args.patience, seed=args.seed,
                                   val_fraction=args.val_fraction, val_split=args.val_split, device=args.device,
                                   progress=progress, threads=args.threads)
    prop_settings = PropagatorSettings(kind=args.propagator, lag=args.propagator_lag, n_components=args.components,
                                       transform=args.mdn_transform, n_labels=args.labels,
                                       epochs=args.propagator_epochs, seed=args.seed, val_fraction=args.val_fraction,
                                       val_split=args.val_split, device=args.device, progress=progress,
                                       threads=args.threads)
    dec_settings = DecoderSettings(epochs=args.decoder_epochs, stride=args.decoder_stride, seed=args.seed,
                                   alignment=args.decoder_alignment, val_fraction=args.val_fraction,
                                   device=args.device, progress=progress, threads=args.threads)
    # every requested stage is checked against the data before the first one trains
    stores = check_stages(args.stores, stages, args.out, encoder=enc_settings, propagator=prop_settings,
                          decoder=dec_settings, validate=not args.no_validation, **_damage_options(args))
    if "encoder" in stages:
        encoder = train_encoder(stores, enc_settings, args.out)
        timescales = encoder.extra.get("implied_timescales_ps") or []
        shown = ", ".join(format_time_ps(t) for t in timescales[:3] if t is not None and math.isfinite(t))
        print(f"lss train: {encoder.kind} at lag {format_time_ps(encoder.lag_ps)}, validation score "
              f"{encoder.extra['validation_score']:.4f}, slowest implied timescales {shown} -> {args.out} "
              f"(figures and metrics.json there)")
    if "propagator" in stages:
        meta = train_propagator(args.out, stores, prop_settings)
        print(f"lss train: {meta['kind']} propagator at lag {format_time_ps(meta['lag_ps'])}, validation score "
              f"{meta['validation_score']:.4f} -> {args.out}")
    if "decoder" in stages:
        meta = train_decoder(args.out, stores, dec_settings)
        print(f"lss train: cWGAN decoder of {len(meta['atom_indices'])} atoms ({meta['alignment']} alignment), "
              f"structure score "
              f"{meta['validation_score']:.4g} -> {args.out}")
    if "decoder" in stages and not args.no_validation:
        from .errors import NonFiniteError

        try:
            metrics = validate_simulator(args.out, stores)
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
    if "rg_mean_nm" in st:
        parts.append(f"Rg {st['rg_mean_nm']:.3f} vs MD {st['reference_rg_mean_nm']:.3f} nm")
    if "coordinate_w1_nm" in st:
        floor = metrics.get("structures_md_first_vs_second_half", {}).get("coordinate_w1_nm")
        parts.append(f"position W1 {st['coordinate_w1_nm']:.3g} nm"
                     + ("" if floor is None else f" (MD half vs half {floor:.3g})"))
    if "ramachandran_js" in st:
        floor = metrics.get("structures_md_first_vs_second_half", {}).get("ramachandran_js")
        parts.append(f"Ramachandran JS {st['ramachandran_js']:.3f}"
                     + ("" if floor is None else f" (MD half vs half {floor:.3f})"))
    return f"lss train: validation (MD vs LSS): {'; '.join(parts)}; figures and metrics.json in {where}"


def cmd_generate(args: argparse.Namespace) -> int:
    import time

    from .simulator import LatentSpaceSimulator, start_from_text

    sim = LatentSpaceSimulator.load(args.model)
    n_steps = args.steps if args.steps is not None else int(round(args.ns * 1000.0 / sim.lag_ps))
    if n_steps < 1:
        raise LssError(f"--ns {args.ns} is shorter than one lag time ({format_time_ps(sim.lag_ps)})")
    t0 = time.perf_counter()
    paths = sim.generate(n_steps, args.walkers, args.out, start=start_from_text(args.start), seed=args.seed,
                         report_interval=args.report_interval, overwrite=args.overwrite,
                         progress=not args.no_progress, threads=args.threads)
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
#: the long-MD reference the demo's closing lines compare with (package data; the trajectories are not shipped)
DEMO_REFERENCE = "ala2_450K_reference.json"


def cmd_demo(args: argparse.Namespace) -> int:
    """MD → train → generate → report, each step an ordinary ``lss`` command (printed as it runs)."""
    from .md import walker_stores
    from .store import open_store

    if args.md_walkers < 1:
        raise LssError(f"--md-walkers must be at least 1, got {args.md_walkers}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model"
    stores = walker_stores(out / "md.zarr", args.md_walkers)
    quiet = ["--no-progress"] if args.no_progress else []
    threads = [] if args.threads is None else ["--threads", str(args.threads)]
    md_frames = int(round(args.ns * 1000))  # DEMO_SIMULATE reports every 1 ps

    def complete(path: Path) -> bool:
        try:
            return path.exists() and len(open_store(path)) >= md_frames
        except LssError:
            return False

    commands: list[list[str]] = []
    if not all(complete(path) for path in stores):
        commands.append(["simulate", *DEMO_SIMULATE, "--ns", f"{args.ns:g}", "--walkers", str(args.md_walkers),
                         "--seed", str(args.seed), "--out", str(out / "md.zarr"), "--overwrite", *quiet])
    commands.append(["train", *map(str, stores), "--out", str(model), *DEMO_TRAIN, "--seed", str(args.seed),
                     *threads, *quiet])
    commands.append(["generate", str(model), "--ns", f"{args.generate_ns:g}", "--walkers", str(args.walkers),
                     "--out", str(out / "synth.dcd"), "--seed", str(args.seed), "--overwrite", *threads, *quiet])
    t0 = time.perf_counter()
    for command in commands:
        print("$ lss " + " ".join(command), flush=True)
        status = main(command)
        if status:
            return status
    print(f"lss demo: done in {time.perf_counter() - t0:.0f} s. MD stores {', '.join(map(str, stores))}; model and "
          f"training figures {model}; MD-vs-LSS report {model / 'validation'} (fes_md_vs_lss.png, "
          f"autocorrelation.png, ramachandran_md_vs_lss.png, metrics.json); synthetic trajectories "
          f"{out}/synth_*.dcd with {out}/synth_topology.pdb")
    print(_demo_comparison(model))
    return 0


def _demo_comparison(model: Path) -> str:
    """The demo's closing lines: its MD and its model next to the long-MD reference (package data)."""
    import importlib.resources

    reference = json.loads(importlib.resources.files("lss_engine").joinpath("resources", DEMO_REFERENCE)
                           .read_text())
    try:
        encoder_metrics = json.loads((model / "metrics.json").read_text())
        kinetics = json.loads((model / "validation" / "metrics.json").read_text())["torsion_kinetics"]
    except (OSError, KeyError, ValueError) as exc:
        return f"lss demo: no comparison with long MD ({exc.__class__.__name__}: {first_line(exc)})"
    md, lss = kinetics["md"], kinetics["lss"]

    def ps(value) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.0f} ps"

    def mfpt(entry: dict) -> str:
        mean = entry.get("mean")
        if mean is None or not math.isfinite(mean):
            return f"none seen (n=0, {entry.get('n_censored', 0)} unfinished)"
        return f"{mean / 1000:.2f} ns (n={entry['n']})"

    srv = (encoder_metrics.get("model_implied_timescales_ps") or [None])[0]
    rows = [("", f"this MD ({md['time_ns']:.0f} ns)", f"model, synthetic ({lss['time_ns']:.0f} ns)",
             f"long MD ({reference['total_ns']:g} ns)")]
    rows.append(("slowest timescale, (φ,ψ) MSM", ps(md["slowest_timescale_ps"]), ps(lss["slowest_timescale_ps"]),
                 f"{reference['slowest_timescale_ps']:g} ps ±{100 * reference['slowest_timescale_run_to_run_spread']:.0f} %"
                 f" run to run"))
    rows.append(("slowest timescale, SRV encoder", "", ps(srv), ""))
    for name in ("C7eq->C7ax", "C7ax->C7eq"):
        rows.append((f"MFPT {name.replace('->', '→')}", mfpt(md["mfpt_ps"][name]), mfpt(lss["mfpt_ps"][name]),
                     f"{reference['mfpt_ns'][name]:g} ns (n={reference['transitions'][name]})"))
    rows.append(("φ > 0", f"{100 * md['fraction_phi_positive']:.1f} %", f"{100 * lss['fraction_phi_positive']:.1f} %",
                 f"{100 * reference['fraction_phi_positive']:.1f} %"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    runs = reference["runs"]
    lines = [f"lss demo: how close to long MD ({len(runs)} × {runs[0]['ns']:g} ns of the same setup, seeds "
             f"{'/'.join(str(r['seed']) for r in runs)}: lss_engine/resources/{DEMO_REFERENCE}):"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"  (φ,ψ) MSM: {md['msm_grid'][0]}×{md['msm_grid'][1]} grid, lag {md['msm_lag_ps']:g} ps; MFPTs "
                 f"between cored C7eq (φ < −1.0 or φ > 2.6) and C7ax (0.5 < φ < 1.8); a few transitions give "
                 f"wide errors (95 % intervals in {model / 'validation' / 'metrics.json'})")
    return "\n".join(lines)


def cmd_sample_latent(args: argparse.Namespace) -> int:
    from .pipeline import sample_latent

    if args.steps < 1 or args.walkers < 1:
        raise LssError("--steps and --walkers must be positive")
    paths = sample_latent(args.model, args.steps, args.walkers, args.out, seed=args.seed,
                          progress=not args.no_progress, threads=args.threads, overwrite=args.overwrite)
    print(f"lss sample-latent: {len(paths)} walker store(s) of {args.steps} steps in {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .pipeline import analyze_encoder, load_encoder

    out = Path(args.out) if args.out else Path(args.model) / "analysis"
    metrics = analyze_encoder(load_encoder(args.model), _open_stores(args), out)
    print(f"lss analyze: {metrics['frames']} frames; CK max deviation {metrics['ck_test']['max_deviation']:.3f}; "
          f"figures {', '.join(metrics['figures'])} in {out}")
    return 0


def cmd_reweight(args: argparse.Namespace) -> int:
    from .pipeline import reweight_stores

    if args.bins < 2:
        raise LssError("--bins must be at least 2")
    m = reweight_stores(args.stores, args.out, coordinate=args.coordinate - 1, bins=args.bins,
                        temperature=args.temperature, resample=args.resample)
    profile, result = m["profile"], m["result"]
    print(f"lss reweight: {len(args.stores)} runs, {len(result.weights)} frames, MBAR "
          f"{'converged' if result.converged else 'NOT converged'} in {result.iterations} iterations, effective "
          f"sample size {result.effective_sample_size:.0f}, {m['temperature_K']:g} K")
    print(f"  ψ{args.coordinate}        F (kT)   ± (kT)")
    for x, f, e in zip(profile.centers[0], profile.free_energy, profile.errors):
        if math.isfinite(f):
            print(f"  {x:9.3f}  {f:7.2f}  {e:7.2f}")
    if args.out:
        print(f"  fes.png and metrics.json in {args.out}")
    return 0


_COMMANDS = {"simulate": cmd_simulate, "reweight": cmd_reweight, "train": cmd_train, "analyze": cmd_analyze, "generate": cmd_generate,
             "demo": cmd_demo, "sample-latent": cmd_sample_latent, "info": cmd_info, "verify": cmd_verify,
             "campaign": lambda args: _campaign(args)}


def _campaign(args: argparse.Namespace) -> int:
    from .campaign.commands import cmd_campaign

    return cmd_campaign(args)


#: what to say about an existing output, per command (default: "pass --overwrite to replace it")
_EXISTS_HINTS = {"simulate": "use --resume to continue it or --overwrite to replace it"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lss``; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except OutputExistsError as exc:  # the library names the paths; the flag is the command line's to name
        hint = _EXISTS_HINTS.get(args.command, "pass --overwrite to replace it")
        print(f"lss {args.command}: error: {exc}; {hint}", file=sys.stderr)
        return 1
    except LssError as exc:
        print(f"lss {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lss {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permissions, a path that vanished
        print(f"lss {args.command}: error: {exc.strerror or exc.__class__.__name__}"
              f"{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line, the traceback on request
        if os.environ.get("LSS_DEBUG"):
            raise
        print(f"lss {args.command}: internal error: {exc.__class__.__name__}: {first_line(exc)} (set LSS_DEBUG=1 for the traceback, "
              f"and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
