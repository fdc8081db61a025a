"""Train a latent space simulator from existing stores, stage by stage, from Python.

Equivalent to ``lss train STORE... --out MODEL``; here each stage's settings
are spelled out so you can change them.

    python examples/train_from_stores.py runs/my_model runs/ala2_*.zarr
"""
import sys

from lss_engine.pipeline import (DecoderSettings, EncoderSettings, PropagatorSettings, train_decoder, train_encoder,
                                 train_propagator, validate_simulator)

model, stores = sys.argv[1], sys.argv[2:]
if not stores:
    sys.exit("usage: train_from_stores.py MODEL_DIR STORE [STORE ...]")

encoder = train_encoder(stores, EncoderSettings(kind="srv", lag="10ps", dim=2, epochs=50, restarts=1), model)
print("SRV implied timescales (ps):", encoder.extra.get("implied_timescales_ps"))
train_propagator(model, stores, PropagatorSettings(kind="mdn", n_components=24, epochs=60))
train_decoder(model, stores, DecoderSettings(epochs=20, stride=2))
metrics = validate_simulator(model, stores)
print("FES RMSE along psi1 (kT):", round(metrics["fes_psi1_rmse_kT"], 3))
print("decoded structures vs MD:", {k: round(v, 4) for k, v in metrics["structures"].items()})
