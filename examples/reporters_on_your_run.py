"""Attach lss_engine's ZarrReporter to your own OpenMM simulation.

The reporter featurizes frames in batches (backbone torsions and heavy-atom
distances here) and streams them, with the heavy atoms' positions, into a
zarr store that ``lss train`` reads.  Replace the system set-up with yours.

    python examples/reporters_on_your_run.py runs/my_run.zarr
"""
import sys

import openmm
from openmm import app, unit

from lss_engine import ZarrReporter
from lss_engine.systems import get_system

out = sys.argv[1] if len(sys.argv) > 1 else "runs/my_run.zarr"

# --- your simulation (here: alanine dipeptide in vacuum at 450 K from lss_engine.systems) ---
test_system = get_system("alanine-dipeptide", temperature=450.0)
integrator = openmm.LangevinMiddleIntegrator(450 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtoseconds)
simulation = app.Simulation(test_system.topology, test_system.system, integrator,
                            openmm.Platform.getPlatformByName("Reference"))
simulation.context.setPositions(test_system.positions)
simulation.minimizeEnergy()

# --- the one line lss_engine adds: a frame every 500 steps (1 ps) ---
reporter = ZarrReporter(out, 500, featurizer="backbone-torsions,heavy-atom-distances", atoms="heavy",
                        overwrite=True)
simulation.reporters.append(reporter)
simulation.reporters.append(app.StateDataReporter(sys.stdout, 50_000, step=True, time=True, speed=True))
simulation.step(500_000)  # 1 ns
reporter.close()
print(f"wrote {out}; next: lss info {out} && lss train {out} --out runs/my_model")
