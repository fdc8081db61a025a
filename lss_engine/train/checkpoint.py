"""Training checkpoints on disk: one JSON record and one safetensors file, no pickle.

A checkpoint directory (``<checkpoint_dir>/<stage>/``) holds

``checkpoint.json``
    The commit record: ``schema_version``, ``kind``, provenance, the stage,
    the :class:`~lss_engine.train.TrainConfig`, a fingerprint of the data,
    the loop's counters, the history so far, the optimiser's non-tensor state,
    and the name, size and SHA-256 of the tensor file it belongs to.
``state-<sequence>.safetensors``
    Every tensor: the current model (``model/...``), the current restart's
    best weights (``best/...``), the best weights over completed restarts
    (``overall/...``), the optimiser's tensors (``optim/<param>/<key>``) and
    the RNG states (``rng/cpu``, ``rng/batches``, ``rng/cuda``).  A model with
    several optimisers (``configure_optimizers``, e.g. a GAN's critic and
    generator) has each one's tensors under ``optim.<name>/...`` and its
    metadata in the record's ``optimizers`` (the single default optimiser
    keeps ``optim/...`` and ``optimizer``).
``history.json``
    Written when the run is complete (see :func:`~lss_engine.train.save_history`).

Each save writes a *new* tensor file under a fresh name, then replaces
``checkpoint.json`` (the commit point), then deletes older tensor files.
Every file is written to a temporary name, flushed to disk and moved into
place with ``os.replace`` (:func:`lss_engine._helpers.atomic_write_bytes`), so a
run killed at any moment (even by SIGKILL)
leaves either the previous or the new checkpoint, never a mixture.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load as _load_tensors
from safetensors.torch import save as _save_tensors

from .._helpers import TEMP_SUFFIX, atomic_write_bytes, atomic_write_json
from ..errors import LssError

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointStore",
    "flatten_optimizer",
    "unflatten_optimizer",
    "prefixed",
    "unprefixed",
]

SCHEMA_VERSION = 1
KIND = "lss_engine.train.checkpoint"
RECORD = "checkpoint.json"
HISTORY = "history.json"
_STATE_RE = re.compile(r"^state-(\d{6,})\.safetensors$")


# --------------------------------------------------------------------------
# flat tensor dictionaries


def prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of ``state``'s tensors under ``prefix/name`` (shared storage broken up)."""
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise LssError(f"cannot checkpoint {name!r}: state entries must be tensors, got {type(value).__name__}")
        out[f"{prefix}/{name}"] = value.detach().to("cpu", copy=True).contiguous()
    return out


def unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix/``, with the prefix removed."""
    start = prefix + "/"
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def flatten_optimizer(
    state: Mapping[str, Any], prefix: str = "optim"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser ``state_dict`` into tensors (``<prefix>/<param>/<key>``) and JSON-serialisable metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{pid}/{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    meta = {"param_groups": groups, "scalars": scalars}
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LssError(f"cannot checkpoint the optimiser state: {exc}") from None
    return tensors, meta


def unflatten_optimizer(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], prefix: str = "optim"
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    for name, value in unprefixed(prefix, tensors).items():
        pid, key = name.split("/", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = []
    for group in meta["param_groups"]:
        groups.append({k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in group.items()})
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------
# the checkpoint directory


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


class CheckpointStore:
    """Reads and writes the checkpoint of one training stage in ``directory``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.sequence = 0

    @property
    def record_path(self) -> Path:
        return self.directory / RECORD

    def exists(self) -> bool:
        """Whether a checkpoint record is present (readable or not)."""
        return self.record_path.exists()

    def corrupt(self, reason: str) -> LssError:
        """The one-line error for an unusable checkpoint."""
        return LssError(
            f"checkpoint {self.record_path} is unusable ({reason}); nothing was changed - delete "
            f"{self.directory} or call fit(..., resume=False) to start over"
        )

    def load(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The record and the tensors of the checkpoint.

        Raises
        ------
        LssError
            Unreadable or malformed JSON, a newer ``schema_version``, a
            missing, truncated or altered tensor file.  Nothing is modified.
        """
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.corrupt(_one_line(exc)) from None
        if not isinstance(record, dict) or record.get("kind") != KIND:
            raise self.corrupt("not an lss_engine training checkpoint")
        version = record.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self.corrupt(f"bad schema_version {version!r}")
        if version > SCHEMA_VERSION:
            raise LssError(
                f"checkpoint {self.record_path} has schema version {version}, this lss_engine reads "
                f"up to {SCHEMA_VERSION}: upgrade lss_engine (nothing was changed)"
            )
        name = record.get("state_file")
        if not isinstance(name, str) or not _STATE_RE.match(name):
            raise self.corrupt(f"bad state_file {name!r}")
        try:
            blob = (self.directory / name).read_bytes()
        except OSError as exc:
            raise self.corrupt(_one_line(exc)) from None
        if len(blob) != record.get("state_bytes"):
            raise self.corrupt(f"{name} has {len(blob)} bytes, the record says {record.get('state_bytes')}")
        if hashlib.sha256(blob).hexdigest() != record.get("state_sha256"):
            raise self.corrupt(f"{name} does not match its SHA-256")
        try:
            tensors = _load_tensors(blob)
        except Exception as exc:  # safetensors raises its own error types
            raise self.corrupt(f"{name}: {_one_line(exc)}") from None
        sequence = record.get("sequence")
        if isinstance(sequence, bool) or not isinstance(sequence, int):
            raise self.corrupt(f"bad sequence {sequence!r}")
        self.sequence = sequence
        return record, tensors

    def save(self, record: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        """Write a new checkpoint (tensor file first, then the record) and drop older tensor files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        blob = _save_tensors(dict(tensors))
        sequence = self.sequence + 1
        name = f"state-{sequence:06d}.safetensors"
        atomic_write_bytes(self.directory / name, blob)
        full = {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND,
            **record,
            "sequence": sequence,
            "state_file": name,
            "state_bytes": len(blob),
            "state_sha256": hashlib.sha256(blob).hexdigest(),
        }
        try:
            atomic_write_json(self.record_path, full)
        except BaseException:
            (self.directory / name).unlink(missing_ok=True)
            raise
        self.sequence = sequence
        self._remove_stale(keep=name)

    def clear(self) -> None:
        """Delete the checkpoint (record first, so a half-cleared directory is no checkpoint)."""
        self.record_path.unlink(missing_ok=True)
        (self.directory / HISTORY).unlink(missing_ok=True)
        self._remove_stale(keep=None)
        self.sequence = 0

    def _remove_stale(self, keep: str | None) -> None:
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name != keep and (_STATE_RE.match(path.name) or path.name.endswith(TEMP_SUFFIX)):
                path.unlink(missing_ok=True)
