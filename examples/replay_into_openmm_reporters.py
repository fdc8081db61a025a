"""Generate a synthetic trajectory and record it with OpenMM's own reporters.

``LatentSpaceSimulator.simulation()`` returns an object with the surface of
``openmm.app.Simulation`` that reporters use (``reporters``, ``step``,
``currentStep``, ``context.getState``); one step is one lag time of the model.
LSS frames have no energies: a reporter asking for them gets a clear error.

    python examples/replay_into_openmm_reporters.py runs/demo/model
"""
import sys

from openmm import app

from lss_engine import LatentSpaceSimulator, ZarrReporter

model = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/model"
lss = LatentSpaceSimulator.load(model)
simulation = lss.simulation(seed=1)  # start: a latent point of the training data
simulation.reporters.append(app.DCDReporter("synthetic.dcd", 10))
simulation.reporters.append(app.PDBReporter("synthetic_first_frames.pdb", 1000))
simulation.reporters.append(app.StateDataReporter(sys.stdout, 10_000, step=True, time=True, speed=True))
simulation.reporters.append(ZarrReporter("synthetic.zarr", 10, overwrite=True))
simulation.step(100_000)  # 100,000 lag times (1 µs at a 10 ps lag)
for reporter in simulation.reporters:
    if hasattr(reporter, "close"):
        reporter.close()
print("wrote synthetic.dcd (topology: the decoded atoms; see", model, ") and synthetic.zarr")
