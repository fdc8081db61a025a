"""Cost of a learned (latent-space) bias in OpenMM: alanine dipeptide, vacuum, 300 K, 2 fs.

One process, one system, every variant its own Context built from the same
start (minimised C7eq, same velocity seed):

* no bias (LangevinMiddleIntegrator);
* a ``CustomTorsionForce`` harmonic restraint on φ and ψ (the zero-ML floor);
* the latent restraint (``lss_engine.bias.latent_bias_force``: harmonic
  restraint on ψ1 + flat-bottom walls, one encoder evaluation per call) on
  the openmm-torch ``TorchForce`` backend, every step;
* the same on OpenMM's ``PythonForce`` backend, every step;
* ``MTSLangevinIntegrator`` with no bias (the floor of the MTS rows: it is a
  ``CustomIntegrator``), and with the TorchForce bias in the slow group
  evaluated every 2, 4 and 8 steps: outer step N × 2 fs, groups
  ``[(0, N), (bias, 1)]`` ((force group, evaluations per outer step)).

Every bias is in force group 30.  Variants take turns in segments of about
``--seconds`` each for ``--rounds`` rounds after the same warm-up (the
machine may be shared); the table gives the median steps/s (2 fs steps), the
ratio to the unbiased run and the added cost per bias evaluation.  Threads are
set on purpose: torch 1 intra-op thread, the CPU platform ``--cpu-threads``
(default 1; the Reference platform has one).

Then the per-call cost of the latent read-back: ``LatentBias.latent_from_state``
of a ``getState(getParameters=True, getParameterDerivatives=True)`` (which
makes OpenMM evaluate the force: for the bias group alone, and for all
groups as a reporter asking for energies would) against a separate encoder
call on the positions (``getState(getPositions=True)`` + the float64 module
without gradients, and the ``Encoder`` numpy path).

``--model DIR``: an SRV model directory whose features fit alanine dipeptide
(``examples/steer_alanine.py`` makes one); without it a tiny SRV (sin/cos of
φ, ψ; 500 ps at 450 K) is trained first (~20 s).

Run (≤ 3 minutes; on a quiet machine for numbers worth quoting):

    OMP_NUM_THREADS=1 python benchmarks/bias_overhead.py [--model runs/steer_alanine/model] \\
        [--platform Reference|CPU] [--seconds 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GROUP = 30
KAPPA = 100.0  # kJ/mol per latent unit² (restraint) and per rad² (torsions); the cost does not depend on it


def fail(message: str) -> None:
    print(f"bias_overhead.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        fail(message)


def tiny_model(workdir: Path, seed: int) -> Path:
    """A small SRV on sin/cos(φ, ψ) from 500 ps of 450 K MD (~20 s)."""
    from lss_engine.md import run_md
    from lss_engine.pipeline import EncoderSettings, train_encoder
    from lss_engine.systems import get_system

    store = workdir / "md450.zarr"
    print("training a tiny SRV: 500 ps at 450 K, sin/cos(φ, ψ), hidden (32, 32), 5 epochs ...", flush=True)
    run_md(get_system("alanine-dipeptide", temperature=450.0), store, steps="500ps", report_interval="1ps",
           featurizer="backbone-torsions-sincos", atoms="none", seed=seed, progress=False)
    model = workdir / "model"
    train_encoder([str(store)], EncoderSettings(kind="srv", lag="2ps", dim=2, hidden=(32, 32), epochs=5, restarts=1,
                                                seed=seed, threads=1, progress=False), model, analyze=False)
    return model


class Variant:
    """One Context and how many integrator steps make ``steps`` 2 fs steps."""

    def __init__(self, name: str, simulation, mts: int, bias_per_step: float, bias=None):
        self.name, self.sim, self.mts, self.bias_per_step, self.bias = name, simulation, mts, bias_per_step, bias
        self.rates: list[float] = []
        self.block = 0  # 2-fs steps per segment, from the warm-up

    def run(self, steps: int) -> float:
        """Steps (2 fs) per second over ``steps`` 2 fs steps."""
        t0 = time.perf_counter()
        self.sim.integrator.step(steps // self.mts)
        return steps / (time.perf_counter() - t0)


def build_variants(args: argparse.Namespace, model_dir: Path) -> list[Variant]:
    import openmm
    import torch
    from openmm import app, unit

    from lss_engine.bias import FlatBottomWalls, HarmonicRestraint, latent_bias_force
    from lss_engine.bias.backends import PythonForceBackend
    from lss_engine.systems import (
        ALANINE_PHI_INDICES,
        ALANINE_PSI_INDICES,
        choose_platform,
        get_system,
    )

    base = get_system("alanine-dipeptide", temperature=300.0)
    platform = choose_platform(args.platform, base)
    properties = {"Threads": str(args.cpu_threads)} if platform.getName() == "CPU" else {}
    # the common start: minimised C7eq
    probe = app.Simulation(base.topology, base.system, base.make_integrator(), platform, properties)
    probe.context.setPositions(base.positions)
    probe.minimizeEnergy()
    start = probe.context.getState(getPositions=True).getPositions(asNumpy=True)
    x0 = np.asarray(start.value_in_unit(unit.nanometer), dtype=np.float64)
    del probe

    def latent_force(backend: str):
        force, bias = latent_bias_force(model_dir, restraint=HarmonicRestraint([0.0], KAPPA),
                                        walls=FlatBottomWalls([-5.0], [5.0]), dim=1, force_group=GROUP,
                                        backend=backend)
        with torch.no_grad():
            s0 = float(bias.module.latent(torch.as_tensor(x0))[0])
        return force, bias, s0

    def make(name: str, extra=None, mts: int = 1, bias_per_step: float = 0.0, handle=None, centre=None):
        t = get_system("alanine-dipeptide", temperature=300.0)
        system = t.system
        if extra is not None:
            system.addForce(extra)
        if mts == 0:  # MTS integrator with nothing in the slow group
            integrator, mts = openmm.MTSLangevinIntegrator(t.temperature, t.friction, 4 * t.timestep,
                                                           [(0, 4), (GROUP, 1)]), 4
        elif mts > 1:
            integrator = openmm.MTSLangevinIntegrator(t.temperature, t.friction, mts * t.timestep,
                                                      [(0, mts), (GROUP, 1)])
        else:
            integrator = t.make_integrator()
        integrator.setRandomNumberSeed(args.seed)
        sim = app.Simulation(t.topology, system, integrator, platform, properties)
        sim.context.setPositions(start)
        if handle is not None:
            handle.set_centre(sim.context, [centre])
        sim.context.setVelocitiesToTemperature(t.temperature, args.seed)
        return Variant(name, sim, mts, bias_per_step, handle)

    torsions = openmm.CustomTorsionForce("0.5*k*d^2; d=min(dt, 2*pi-dt); dt=abs(theta-theta0); pi=3.141592653589793")
    torsions.addPerTorsionParameter("k")
    torsions.addPerTorsionParameter("theta0")
    for quartet, theta0 in ((ALANINE_PHI_INDICES, -1.35), (ALANINE_PSI_INDICES, 0.94)):  # C7eq
        torsions.addTorsion(*quartet, [KAPPA, theta0])
    torsions.setForceGroup(GROUP)

    variants = [make("no bias"), make("CustomTorsionForce φ/ψ", torsions, bias_per_step=1.0)]
    force, handle, s0 = latent_force("torch")
    variants.append(make("latent, TorchForce", force, bias_per_step=1.0, handle=handle, centre=s0))
    if PythonForceBackend.available():
        force, handle, s0 = latent_force("python")
        variants.append(make("latent, PythonForce", force, bias_per_step=1.0, handle=handle, centre=s0))
    else:
        print(f"OpenMM {openmm.__version__} has no PythonForce: that row is skipped")
    variants.append(make("MTS, no bias (floor)", mts=0))
    for n in (2, 4, 8):
        force, handle, s0 = latent_force("torch")
        variants.append(make(f"latent, TorchForce, MTS /{n}", force, mts=n, bias_per_step=1.0 / n, handle=handle,
                             centre=s0))
    return variants


def per_call_costs(args: argparse.Namespace, model_dir: Path, variant: Variant) -> list[tuple[str, float]]:
    """Median µs per latent read-out, several ways, on the TorchForce variant's Context."""
    import torch
    from openmm import unit

    from lss_engine.bundle import ModelBundle
    from lss_engine.encoder import Encoder
    from lss_engine.features import featurizer_from_spec

    ctx, bias = variant.sim.context, variant.bias
    encoder = Encoder.from_bundle(ModelBundle.load(model_dir))
    featurizer = featurizer_from_spec(encoder.feature_spec)
    variant.sim.integrator.step(100)

    def read_back_group() -> float:
        state = ctx.getState(getParameters=True, getParameterDerivatives=True, groups={GROUP})
        return float(bias.latent_from_state(state)[0])

    def read_back_all() -> float:
        state = ctx.getState(getEnergy=True, getParameters=True, getParameterDerivatives=True)
        return float(bias.latent_from_state(state)[0])

    def positions() -> np.ndarray:
        return np.asarray(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                          dtype=np.float64)

    def module_call() -> float:
        with torch.no_grad():
            return float(bias.module.latent(torch.as_tensor(positions()))[0])

    def encoder_call() -> float:
        return float(encoder.latent(featurizer.compute(positions()[None]))[0, 0])

    def positions_only() -> float:
        return float(positions()[0, 0])

    def energy_only() -> float:  # a force evaluation of the bias group, nothing read back
        return float(ctx.getState(getEnergy=True, groups={GROUP}).getPotentialEnergy()._value)

    ways = [
        ("read-back: getState(parameter derivatives, bias group) + latent_from_state", read_back_group),
        ("read-back: getState(energy + parameter derivatives, all groups)", read_back_all),
        ("  for scale: getState(energy, bias group) alone (one force call)", energy_only),
        ("separate: getState(positions) + float64 module, no grad", module_call),
        ("separate: getState(positions) + Encoder numpy path (float32)", encoder_call),
        ("  for scale: getState(positions) alone", positions_only),
    ]
    same = abs(read_back_group() - module_call())
    costs = []
    for label, fn in ways:
        for _ in range(20):
            fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times.append((time.perf_counter() - t0) / args.calls * 1e6)
        costs.append((label, statistics.median(times)))
    costs.append(("|read-back - module| (latent units)", same))
    return costs


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="SRV model directory (default: train a tiny one)")
    parser.add_argument("--platform", default="Reference", help="Reference (default) or CPU")
    parser.add_argument("--cpu-threads", type=int, default=1, help="CPU platform threads (1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per variant per round (2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all variants (3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per variant (1)")
    parser.add_argument("--calls", type=int, default=200, help="calls per timing of the read-back costs (200)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.platform.lower() not in ("reference", "cpu"):
        fail(f"--platform must be Reference or CPU, got {args.platform!r}")
    for name in ("seconds", "warmup"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            fail(f"--{name} must be a positive number")
    if args.rounds < 1 or args.calls < 1 or args.cpu_threads < 1:
        fail("--rounds, --calls and --cpu-threads must be at least 1")
    if args.model is not None and not (args.model / "model.json").is_file():
        fail(f"{args.model} is not a model directory (no model.json)")

    import openmm
    import torch

    from lss_engine._helpers import configure_threads
    from lss_engine.errors import LssError

    configure_threads(1)
    try:
        model_dir = args.model or tiny_model(Path(tempfile.mkdtemp(prefix="lss-bias-bench-")), args.seed)
        variants = build_variants(args, model_dir)
    except LssError as exc:
        fail(str(exc))
    platform = variants[0].sim.context.getPlatform().getName()
    print(f"alanine dipeptide, vacuum, 300 K, 2 fs, {platform} platform"
          + (f" ({args.cpu_threads} thread{'s' if args.cpu_threads > 1 else ''})" if platform == "CPU" else "")
          + f", OpenMM {openmm.__version__}, torch {torch.__version__} ({torch.get_num_threads()} thread); "
          f"model {model_dir}; {len(variants)} variants, warm-up {args.warmup:g} s each, "
          f"{args.rounds} rounds of ~{args.seconds:g} s each", flush=True)

    for v in variants:  # warm-up (same wall time for all) and calibration of the segment length
        steps, t0 = 8, time.perf_counter()
        while True:
            rate = v.run(steps)
            if time.perf_counter() - t0 >= args.warmup:
                break
            steps = min(steps * 2, 8 * max(1, int(rate * args.warmup / 8)))
        v.block = 8 * max(1, int(rate * args.seconds / 8))
        print(f"  warm-up {v.name:<32} ~{rate:>9,.0f} steps/s", flush=True)
    for r in range(args.rounds):
        for v in variants:
            v.rates.append(v.run(v.block))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    bare = statistics.median(variants[0].rates)
    print(f"\n{'variant':<34}{'bias calls/step':>16}{'steps/s':>11}{'range':>20}{'ratio':>8}{'ns/day':>9}"
          f"{'µs/bias call':>14}")
    mts_floor = next((statistics.median(v.rates) for v in variants if v.name.startswith("MTS, no bias")), None)
    for v in variants:
        med = statistics.median(v.rates)
        floor = mts_floor if v.mts > 1 and v.bias_per_step else bare
        per_call = ((1 / med - 1 / floor) / v.bias_per_step * 1e6) if v.bias_per_step else float("nan")
        calls = f"1/{v.mts}" if v.mts > 1 and v.bias_per_step else f"{v.bias_per_step:g}"
        print(f"{v.name:<34}{calls:>16}{med:>11,.0f}{min(v.rates):>10,.0f}-{max(v.rates):<9,.0f}"
              f"{med / bare:>8.3f}{med * 0.002 * 86400 / 1000:>9.1f}"
              + (f"{per_call:>14.{0 if abs(per_call) >= 100 else 1}f}" if v.bias_per_step else f"{'':>14}"))
    print("ratio: to 'no bias'; µs/bias call: added time per bias evaluation over 'no bias' "
          "(MTS rows: over the MTS floor)")

    torch_variant = next(v for v in variants if v.name == "latent, TorchForce")
    print("\nreading the latent point (µs per call, median of 5 x "
          f"{args.calls}):")
    for label, value in per_call_costs(args, model_dir, torch_variant):
        print(f"  {label:<76}{value:>10.3g}" if label.startswith("|") else f"  {label:<76}{value:>10.0f}")
    print("  (getState with parameter derivatives makes OpenMM evaluate the force again, so the read-back saves "
          "an encoder call only\n   where that evaluation is wanted anyway, e.g. a reporter that records the "
          "bias energy)")


if __name__ == "__main__":
    main()
