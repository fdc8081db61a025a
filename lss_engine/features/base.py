"""The :class:`Featurizer` base class, :class:`FeatureUnion` and spec (de)serialisation."""
# No ``from __future__ import annotations`` here: TorchScript reads the class
# annotations of these modules.
import json
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

import numpy as np
import torch
from torch import Tensor

from ..errors import SpecError

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REGISTRY: Dict[str, Type["Featurizer"]] = {}


def register(cls: Type["Featurizer"]) -> Type["Featurizer"]:
    """Class decorator: make ``cls`` rebuildable by :func:`featurizer_from_spec`."""
    _REGISTRY[cls.SPEC_TYPE] = cls
    return cls


class Featurizer(torch.nn.Module):
    """Base class: maps positions of all atoms to a block of feature columns.

    Attributes
    ----------
    name : str
        Observable name (snake_case), e.g. ``"backbone_torsions"``.
    names : list of str
        One name per output column.
    units : list of str
        One unit per output column: ``"rad"``, ``"nm"`` or ``"1"``.
    n_features : int
        Number of output columns.
    n_atoms : int
        Total number of atoms of the system the atom indices refer to.
    periodic : bool
        Whether :meth:`forward` applies the minimum image convention when it
        is given a box.

    Notes
    -----
    ``forward`` is batched over frames, differentiable, TorchScript-able and
    computes in the dtype of ``positions``; :meth:`compute` is the numpy front.
    """

    SPEC_TYPE = ""

    name: str
    names: List[str]
    units: List[str]
    n_features: int
    n_atoms: int
    periodic: bool

    def __init__(self, name: str, n_atoms: int, periodic: bool = False) -> None:
        super().__init__()
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise SpecError(f"feature name must be an identifier like 'backbone_torsions', got {name!r}")
        n_atoms = _as_int(n_atoms, "n_atoms")
        if n_atoms < 1:
            raise SpecError(f"n_atoms must be positive, got {n_atoms}")
        self.name = name
        self.n_atoms = n_atoms
        self.periodic = bool(periodic)
        self.names = []
        self.units = []
        self.n_features = 0

    def _set_columns(self, names: List[str], units: List[str]) -> None:
        self.names = [str(n) for n in names]
        self.units = [str(u) for u in units]
        self.n_features = len(self.names)

    # -- torch -------------------------------------------------------------
    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        """Features of a batch of frames.

        Parameters
        ----------
        positions : Tensor, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
            Positions of all atoms in nm.
        box : Tensor, shape (n_frames, 3, 3) or (3, 3), optional
            Box vectors (rows a, b, c) in nm; used only when ``periodic``.

        Returns
        -------
        Tensor, shape (n_frames, n_features) (or (n_features,) for one frame),
        same dtype as ``positions``.
        """
        single = positions.dim() == 2
        if single:
            positions = positions.unsqueeze(0)
        if positions.dim() != 3 or positions.shape[1] != self.n_atoms or positions.shape[2] != 3:
            raise ValueError(
                "positions must have shape (n_frames, " + str(self.n_atoms) + ", 3), got " + str(list(positions.shape))
            )
        b: Optional[Tensor] = None
        if self.periodic:
            if box is not None:
                bb = box.to(positions.dtype)
                if bb.dim() == 2:
                    bb = bb.unsqueeze(0)
                if bb.shape[0] == 1 and positions.shape[0] != 1:
                    bb = bb.expand(positions.shape[0], 3, 3)
                b = bb
        out = self._features(positions, b)
        if single:
            out = out.squeeze(0)
        return out

    def _features(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        raise NotImplementedError("subclasses implement _features")

    # -- numpy front ---------------------------------------------------------
    def compute(self, xyz: Any, box: Any = None) -> np.ndarray:
        """Features of frames given as numpy arrays (no gradient).

        Parameters
        ----------
        xyz : array, shape (n_frames, n_atoms, 3) or (n_atoms, 3)
            Positions in nm (an OpenMM ``Quantity`` is converted to nm).
            float32 and float64 are kept; other dtypes become float64.
        box : array, optional
            Box vectors in nm: ``(3, 3)`` (rows a, b, c; shared by all
            frames), ``(n_frames, 3, 3)``, or orthorhombic edge lengths
            ``(3,)`` / ``(n_frames, 3)`` (a ``(3, 3)`` array is always read as
            vectors).

        Returns
        -------
        ndarray, shape (n_frames, n_features), or (n_features,) for a single
        frame, with the dtype of ``xyz``.
        """
        x = _as_nm_array(xyz)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        if x.ndim not in (2, 3) or x.shape[-1] != 3 or x.shape[-2] != self.n_atoms:
            raise SpecError(
                f"feature {self.name!r} expects positions of shape (n_frames, {self.n_atoms}, 3), got {x.shape}"
            )
        device = _module_device(self)
        pos = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        b = None
        if box is not None:
            b = torch.from_numpy(_box_array(box, x.dtype, x.shape[0] if x.ndim == 3 else 1)).to(device)
        with torch.no_grad():
            out = self(pos, b)
        return out.cpu().numpy()

    # -- spec --------------------------------------------------------------------
    def _spec_items(self) -> Dict[str, Any]:
        raise NotImplementedError

    def spec(self) -> Dict[str, Any]:
        """JSON-serialisable description; :func:`featurizer_from_spec` inverts it."""
        out: Dict[str, Any] = {"type": self.SPEC_TYPE, "name": self.name}
        out.update(self._spec_items())
        out["periodic"] = self.periodic
        out["n_atoms"] = self.n_atoms
        return out

    def to_json(self) -> str:
        """:meth:`spec` as a JSON string."""
        return json.dumps(self.spec())

    def extra_repr(self) -> str:
        return f"name={self.name!r}, n_features={self.n_features}, periodic={self.periodic}"


@register
class FeatureUnion(Featurizer):
    """Concatenation of several featurizers' columns, in order.

    Nested unions are flattened, so :attr:`blocks` lists leaf featurizers
    (each one becomes one store observable; their names must be unique).

    Spec: ``{"type": "union", "name": ..., "features": [child specs], "n_atoms": N}``.
    """

    SPEC_TYPE = "union"
    __jit_unused_properties__ = ["blocks"]

    def __init__(self, features: Sequence[Featurizer], name: str = "features") -> None:
        leaves: List[Featurizer] = []
        for f in features:
            if isinstance(f, FeatureUnion):
                leaves.extend(f.blocks)
            elif isinstance(f, Featurizer):
                leaves.append(f)
            else:
                raise SpecError(f"FeatureUnion takes Featurizer objects, got {type(f).__name__}")
        if not leaves:
            raise SpecError("FeatureUnion needs at least one featurizer")
        n_atoms = {f.n_atoms for f in leaves}
        if len(n_atoms) != 1:
            raise SpecError(f"featurizers of a union disagree on the atom count: {sorted(n_atoms)}")
        seen = set()
        for f in leaves:
            if f.name in seen:
                raise SpecError(f"duplicate feature name {f.name!r} in union")
            seen.add(f.name)
        super().__init__(name, leaves[0].n_atoms, any(f.periodic for f in leaves))
        self.featurizers = torch.nn.ModuleList(leaves)
        self._set_columns([n for f in leaves for n in f.names], [u for f in leaves for u in f.units])

    @property
    def blocks(self) -> List[Featurizer]:
        """The child featurizers, in column order."""
        return list(self.featurizers)

    def _features(self, positions: Tensor, box: Optional[Tensor]) -> Tensor:
        outs: List[Tensor] = []
        for f in self.featurizers:
            outs.append(f(positions, box))
        return torch.cat(outs, dim=1)

    def spec(self) -> Dict[str, Any]:
        return {
            "type": "union",
            "name": self.name,
            "features": [f.spec() for f in self.featurizers],
            "n_atoms": self.n_atoms,
        }

    @classmethod
    def _from_spec(cls, spec: Dict[str, Any]) -> "FeatureUnion":
        children = spec_get(spec, "features", list)
        n_atoms = spec.get("n_atoms")
        out = cls([featurizer_from_spec(c) for c in children], name=spec_get(spec, "name", str, "features"))
        if n_atoms is not None and n_atoms != out.n_atoms:
            raise SpecError(f"union spec says n_atoms={n_atoms} but its features use {out.n_atoms}")
        return out


# ---------------------------------------------------------------------------
# spec helpers
# ---------------------------------------------------------------------------
_MISSING = object()


def spec_get(spec: Dict[str, Any], key: str, kind: Any, default: Any = _MISSING) -> Any:
    """``spec[key]`` checked against ``kind`` (a type or tuple); SpecError if missing or wrong."""
    if key not in spec or spec[key] is None:
        if default is _MISSING:
            raise SpecError(f"{spec.get('type', 'feature')} spec lacks {key!r}")
        return default
    value = spec[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool):
        raise SpecError(f"{key!r} must be an int, got {value!r}")
    if not isinstance(value, kind):
        raise SpecError(f"{key!r} in {spec.get('type', 'feature')} spec has the wrong type ({type(value).__name__})")
    return value


def featurizer_from_spec(spec: Any) -> Featurizer:
    """Rebuild a featurizer from :meth:`Featurizer.spec` (a dict) or its JSON string.

    The result gives bitwise identical outputs to the original on the same
    input.  Raises :class:`~lss_engine.errors.SpecError` (one-line message)
    for an unknown ``type`` or a malformed spec.
    """
    if isinstance(spec, (str, bytes)):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise SpecError(f"feature spec is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"feature spec must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("type")
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SpecError(f"unknown feature type {kind!r}; expected one of {', '.join(sorted(_REGISTRY))}")
    try:
        return cls._from_spec(spec)
    except SpecError as e:
        raise SpecError(_one_line(str(e))) from None
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
        raise SpecError(_one_line(f"malformed {kind} spec: {type(e).__name__}: {e}")) from None


def to_json(featurizer: Featurizer) -> str:
    """``featurizer.spec()`` as a JSON string (inverse of :func:`featurizer_from_spec`)."""
    return featurizer.to_json()


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


# ---------------------------------------------------------------------------
# small validation helpers shared by the featurizers
# ---------------------------------------------------------------------------
def _as_int(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"{what} must be an int, got {value!r}")
    return int(value)


def index_array(values: Any, n_atoms: int, what: str, ncols: Optional[int] = None) -> np.ndarray:
    """Validate atom indices: int array, shape (n,) or (n, ncols), each in [0, n_atoms)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.size == 0:
        arr = arr.reshape((0,) if ncols is None else (0, ncols))
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise SpecError(f"{what} must be integers")
    arr = arr.astype(np.int64)
    if ncols is None and arr.ndim != 1:
        raise SpecError(f"{what} must be a flat list of atom indices, got shape {arr.shape}")
    if ncols is not None and (arr.ndim != 2 or arr.shape[1] != ncols):
        raise SpecError(f"{what} must have shape (n, {ncols}), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_atoms):
        raise SpecError(f"{what} must lie in [0, {n_atoms}), got values in [{arr.min()}, {arr.max()}]")
    return arr


def label_list(labels: Optional[Sequence[str]], n: int, default: Callable[[int], str], what: str) -> List[str]:
    if labels is None:
        return [default(k) for k in range(n)]
    if isinstance(labels, str) or len(labels) != n or not all(isinstance(s, str) for s in labels):
        raise SpecError(f"{what} labels must be {n} strings")
    return list(labels)


def _as_nm_array(x: Any) -> np.ndarray:
    if hasattr(x, "value_in_unit"):
        from openmm import unit

        x = x.value_in_unit(unit.nanometer)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)) and any(hasattr(v, "value_in_unit") for v in x):
        from openmm import unit

        x = [v.value_in_unit(unit.nanometer) if hasattr(v, "value_in_unit") else v for v in x]
    return np.asarray(x)


def _box_array(box: Any, dtype: Any, n_frames: int) -> np.ndarray:
    b = _as_nm_array(box).astype(dtype)
    if b.shape == (3, 3) or (b.ndim == 3 and b.shape[1:] == (3, 3)):
        pass
    elif b.shape == (3,) or (b.ndim == 2 and b.shape[1] == 3):
        lengths = b.reshape(-1, 3)
        b = np.zeros((lengths.shape[0], 3, 3), dtype=dtype)
        b[:, [0, 1, 2], [0, 1, 2]] = lengths
    else:
        raise SpecError(f"box must have shape (3, 3), (n_frames, 3, 3), (3,) or (n_frames, 3), got {b.shape}")
    if b.ndim == 3 and b.shape[0] not in (1, n_frames):
        raise SpecError(f"box has {b.shape[0]} frames but positions have {n_frames}")
    return np.ascontiguousarray(b)


def _module_device(module: torch.nn.Module) -> torch.device:
    for t in module.buffers():
        return t.device
    return torch.device("cpu")
