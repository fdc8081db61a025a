"""Model directories: trained networks saved as JSON + safetensors, loaded without pickle.

A model directory holds::

    MODEL_DIR/
      model.json                 schema_version, kind, stages, checksums, provenance
      <stage>.safetensors        tensors of one stage's network (state_dict)
      ...                        figures, metrics.json, histories (not part of the bundle)

``model.json`` names, for each stage (``encoder``, later ``propagator`` and
``decoder``), the network type — looked up in a fixed registry, never imported
by name from the file — its constructor config, and any JSON metadata (lag,
feature spec, normaliser). Every tensor file is listed with its SHA-256, so a
truncated or altered file is refused with a clear message. Files are written
to a temporary name, flushed and renamed into place
(:func:`lss_engine._helpers.atomic_write_bytes`), tensors first and ``model.json``
last, so a SIGKILL never leaves a directory that loads inconsistent weights.
``model.json`` is strict JSON: non-finite numbers in metadata (an infinite
implied timescale) are written as ``null``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ._helpers import atomic_write_bytes, atomic_write_json, first_line, hash_file
from .errors import LssError
from .provenance import provenance as _provenance

SCHEMA_VERSION = 1
BUNDLE_KIND = "lss_engine.model"
MANIFEST = "model.json"


def _registry() -> dict[str, Callable[[dict], Any]]:
    """Network types a bundle may name, mapped to their ``from_config``."""
    from .models import SRV, CWGANDecoder, LSTMLanguageModel, MDNPropagator, VAMPNet

    return {"vampnet": VAMPNet.from_config, "srv": SRV.from_config, "lstm": LSTMLanguageModel.from_config,
            "mdn": MDNPropagator.from_config, "cwgan": CWGANDecoder.from_config}


def _model_type(model: Any) -> str:
    for name, builder in _registry().items():
        if type(model) is getattr(builder, "__self__", None):
            return name
    raise LssError(f"cannot save a {type(model).__name__}: not a registered lss_engine network")


def sha256(path: Path) -> str:
    return hash_file(path).hexdigest()


@dataclass
class Stage:
    """One trained network of a bundle and its metadata."""

    name: str
    model: Any
    meta: dict = field(default_factory=dict)


class ModelBundle:
    """Stages of a trained model; :meth:`save` and :meth:`load` a model directory."""

    def __init__(self, stages: dict[str, Stage] | None = None, provenance: dict | None = None):
        self.stages: dict[str, Stage] = dict(stages or {})
        self.provenance = provenance or {}

    def __getitem__(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            raise LssError(f"the model has no {name!r} stage (it has: {', '.join(self.stages) or 'none'})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.stages

    def add(self, name: str, model: Any, **meta: Any) -> None:
        self.stages[name] = Stage(name, model, meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle into directory ``path`` (created if needed)."""
        from safetensors.torch import save as save_tensors

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kind": BUNDLE_KIND,
            "stages": {},
            "provenance": self.provenance or _provenance(),
        }
        for name, stage in self.stages.items():
            filename = f"{name}.safetensors"
            tensors = {k: v.detach().cpu().contiguous() for k, v in stage.model.state_dict().items()}
            atomic_write_bytes(path / filename, save_tensors(tensors))
            manifest["stages"][name] = {
                "type": _model_type(stage.model),
                "config": stage.model.config(),
                "file": filename,
                "sha256": sha256(path / filename),
                "meta": stage.meta,
            }
        atomic_write_json(path / MANIFEST, manifest, indent=2)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> "ModelBundle":
        """Read a model directory; never executes code from it.

        Raises
        ------
        LssError
            Not a model directory, a newer schema, an unknown network type, or
            a tensor file whose checksum does not match (truncated or altered).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise LssError(f"{path} is not an lss_engine model directory (no {MANIFEST})")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LssError(f"{manifest_path} is not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
            raise LssError(f"{manifest_path} is not an lss_engine model manifest")
        version = manifest.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise LssError(
                f"{path} has model schema version {version!r}; this lss_engine reads up to {SCHEMA_VERSION}"
            )
        registry = _registry()
        bundle = cls(provenance=manifest.get("provenance", {}))
        stages = manifest.get("stages", {})
        if not isinstance(stages, dict) or not all(isinstance(e, dict) for e in stages.values()):
            raise LssError(f"{manifest_path} is garbled: 'stages' is not a mapping of stage records")
        for name, entry in stages.items():
            kind = entry.get("type")
            if kind not in registry:
                raise LssError(f"{path}: stage {name!r} has unknown network type {kind!r}")
            if not isinstance(entry.get("file"), str) or not isinstance(entry.get("config"), dict):
                raise LssError(f"{manifest_path} is garbled: stage {name!r} lacks its file or config")
            file = path / Path(entry["file"]).name  # never leave the directory
            if not file.is_file():
                raise LssError(f"{path}: {file.name} is missing")
            if sha256(file) != entry.get("sha256"):
                raise LssError(f"{path}: {file.name} does not match its checksum (truncated or altered)")
            try:
                tensors = load_file(str(file), device=device)
            except SafetensorError as exc:
                raise LssError(f"{path}: {file.name} is not a valid safetensors file ({exc})") from None
            try:
                model = registry[kind](entry["config"])
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                raise LssError(f"{path}: stage {name!r} has a config that does not build a {kind} "
                               f"({exc.__class__.__name__}: {first_line(exc)})") from None
            try:
                model.load_state_dict(tensors)
            except RuntimeError as exc:
                raise LssError(f"{path}: {file.name} does not fit its config ({first_line(exc)})") from None
            model.eval()
            bundle.stages[name] = Stage(name, model, dict(entry.get("meta", {})))
        return bundle
