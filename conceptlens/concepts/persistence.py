"""Saving and loading fitted bottlenecks without pickle (JSON + ``.npz``).

A saved model is a folder with two files:

* ``bottleneck.json``: format version, estimator class, hyper-parameters, class labels,
  concept ids and names, vocabulary hash, backbone identity, the scorer settings of the
  training scores (``score_space``), small fitted attributes;
* ``bottleneck.npz``: the numeric arrays, read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from conceptlens.concepts._inputs import check_vocabulary
from conceptlens.errors import ConceptlensError

__all__ = ["bottleneck_classes", "load_bottleneck", "register_bottleneck", "save_bottleneck"]

FORMAT = "conceptlens.bottleneck"
FORMAT_VERSION = 1
JSON_NAME = "bottleneck.json"
ARRAYS_NAME = "bottleneck.npz"
_SHARED_ARRAYS = ("coef_", "intercept_", "mean_", "scale_")


class BottleneckFileError(ConceptlensError, ValueError):
    """A saved bottleneck's files are malformed or disagree with each other; the message
    names the file and what is wrong."""


_BOTTLENECKS: dict[str, type] = {}
"""Class name -> bottleneck class, for :func:`load_bottleneck`; filled by
:func:`register_bottleneck` (every subclass of
:class:`~conceptlens.concepts.base.ConceptBottleneckBase` registers itself when it is
defined), so this module imports none of the classes it restores."""


def register_bottleneck(cls: type) -> type:
    """Make :func:`load_bottleneck` restore files saved from ``cls`` (by class name).

    :class:`~conceptlens.concepts.base.ConceptBottleneckBase` calls this for every subclass
    as it is defined. A name keeps the class registered first (the package's own classes),
    unless the new class is the same definition again (a module re-imported).

    Returns:
        ``cls``, so it can decorate a class.
    """
    name = cls.__name__
    known = _BOTTLENECKS.get(name)
    if known is None or (known.__module__, known.__qualname__) == (cls.__module__,
                                                                    cls.__qualname__):
        _BOTTLENECKS[name] = cls
    return cls


def bottleneck_classes() -> dict[str, type]:
    """The registered bottleneck classes by name (a copy)."""
    return dict(_BOTTLENECKS)


def to_json_value(value: Any, *, what: str) -> Any:
    """Encode a parameter / attribute as JSON, tagging what JSON cannot say by itself."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O" and all(isinstance(v, str) for v in value.ravel()):
            # labels read by pandas arrive as object arrays of str; keep them object on load
            return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
        if value.dtype.kind not in "biufU":
            raise TypeError(f"cannot save {what}: array of dtype {value.dtype}")
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, what=what) for v in value]
    if isinstance(value, dict):
        return {"__pairs__": [[to_json_value(k, what=what), to_json_value(v, what=what)]
                              for k, v in value.items()]}
    if type(value).__name__ in _BOTTLENECKS and hasattr(value, "get_params"):
        # a nested bottleneck (e.g. HybridBottleneck(bottleneck=...)): class name + parameters
        return {"__estimator__": type(value).__name__,
                "params": to_json_value(value.get_params(deep=False), what=what)}
    raise TypeError(
        f"cannot save {what}: values of type {type(value).__name__} are not JSON-serialisable "
        "(use plain numbers, strings, lists or dicts)"
    )


def from_json_value(value: Any) -> Any:
    """Inverse of :func:`to_json_value`."""
    if isinstance(value, list):
        return [from_json_value(v) for v in value]
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        if "__float__" in value:
            return float(value["__float__"])
        if "__pairs__" in value:
            return {_hashable(from_json_value(k)): from_json_value(v) for k, v in value["__pairs__"]}
        if "__estimator__" in value:
            cls = _BOTTLENECKS.get(value["__estimator__"])
            params = from_json_value(value.get("params", {}))
            if cls is None or not isinstance(params, dict):
                raise ValueError(f"unknown nested estimator {value['__estimator__']!r}")
            known = set(cls._get_param_names())
            unknown = sorted(str(k) for k in params if k not in known)
            if unknown:
                raise ValueError(f"unknown parameter(s) {unknown} for {cls.__name__}")
            return cls(**params)
        return {k: from_json_value(v) for k, v in value.items()}
    return value


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def save_bottleneck(model: Any, path: str | Path) -> Path:
    """Write a fitted bottleneck to folder ``path``; see the module docstring."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot save model to {folder}: it exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    name = type(model).__name__
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": name,
        "params": to_json_value(model.get_params(deep=False), what=f"{name} parameters"),
        "classes": to_json_value(np.asarray(model.classes_), what="classes_"),
        "concept_ids": list(model.concept_ids_),
        "concept_names": dict(model.concept_names_),
        "vocabulary_hash": model.vocabulary_hash_,
        "backbone": model.backbone_,
        "score_space": getattr(model, "score_space_", None),
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": (
            [str(f) for f in model.feature_names_in_] if hasattr(model, "feature_names_in_") else None
        ),
        "attributes": {
            a: to_json_value(getattr(model, a), what=a) for a in model._json_attributes
        },
    }
    arrays = {a: np.asarray(getattr(model, a)) for a in _SHARED_ARRAYS + model._array_attributes}
    for a, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot save {a}: array of dtype {arr.dtype}")
    with open(folder / ARRAYS_NAME, "wb") as fh:
        np.savez(fh, **arrays)
    (folder / JSON_NAME).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder


def load_bottleneck(path: str | Path, *, vocabulary_hash: str | None = None) -> Any:
    """Read a bottleneck written by :func:`save_bottleneck` (any bottleneck class).

    Raises:
        FileNotFoundError: The folder or one of its two files is missing.
        ValueError: The files are not a conceptlens bottleneck, or are inconsistent.
        VocabularyMismatchError: ``vocabulary_hash`` is given and differs from the stored one.
    """
    folder = Path(path)
    json_path, npz_path = folder / JSON_NAME, folder / ARRAYS_NAME
    for p in (json_path, npz_path):
        if not p.is_file():
            raise FileNotFoundError(f"saved bottleneck incomplete: {p} not found")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BottleneckFileError(f"{json_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not a conceptlens bottleneck file")
    _check_keys(meta, json_path)
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(
            f"{json_path} has format version {meta['format_version']}; this conceptlens reads "
            f"up to {FORMAT_VERSION}"
        )
    cls = _BOTTLENECKS.get(meta.get("estimator"))
    if cls is None:
        raise ValueError(f"{json_path}: unknown estimator {meta.get('estimator')!r}")
    check_vocabulary(meta.get("vocabulary_hash"), vocabulary_hash, where=str(folder))

    model = _construct(cls, meta["params"], json_path)
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BottleneckFileError(f"{npz_path} is not a readable array file ({exc})") from None
    missing = [a for a in _SHARED_ARRAYS + cls._array_attributes if a not in arrays]
    if missing:
        raise ValueError(f"{npz_path} lacks arrays {missing}")
    for a in _SHARED_ARRAYS + cls._array_attributes:
        setattr(model, a, arrays[a])
    model.classes_ = from_json_value(meta["classes"])
    model.concept_ids_ = list(meta["concept_ids"])
    model.concept_names_ = dict(meta["concept_names"])
    model.vocabulary_hash_ = meta["vocabulary_hash"]
    model.backbone_ = meta["backbone"]
    model.score_space_ = meta.get("score_space")
    model.n_features_in_ = int(meta["n_features_in"])
    if meta.get("feature_names_in") is not None:
        model.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    for a, v in meta.get("attributes", {}).items():
        setattr(model, a, from_json_value(v))
    _check_integrity(model, json_path, npz_path)
    model._restore_after_load()
    return model


_REQUIRED_KEYS = ("estimator", "params", "classes", "concept_ids", "concept_names",
                  "vocabulary_hash", "backbone", "n_features_in")


def _check_keys(meta: dict[str, Any], json_path: Path) -> None:
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise BottleneckFileError(f"{json_path}: missing field(s) {', '.join(missing)}")
    if not isinstance(meta["params"], dict):
        raise BottleneckFileError(f"{json_path}: 'params' must be a mapping")
    if not isinstance(meta["concept_ids"], list) or not isinstance(meta["concept_names"], dict):
        raise BottleneckFileError(f"{json_path}: 'concept_ids' must be a list and "
                                  "'concept_names' a mapping")


def _construct(cls: type, params: dict[str, Any], json_path: Path) -> Any:
    """``cls(**params)``, naming the file and any parameter the class does not take."""
    try:
        params = from_json_value(params)
    except (TypeError, ValueError, KeyError) as exc:
        raise BottleneckFileError(f"{json_path}: malformed 'params' ({exc})") from None
    if not isinstance(params, dict):
        raise BottleneckFileError(f"{json_path}: 'params' must be a mapping")
    known = set(cls._get_param_names())
    unknown = sorted(str(k) for k in params if k not in known)
    if unknown:
        raise BottleneckFileError(
            f"{json_path}: unknown parameter(s) {', '.join(map(repr, unknown))} for "
            f"{cls.__name__}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise BottleneckFileError(f"{json_path}: invalid parameters for {cls.__name__} "
                                  f"({exc})") from None


def _check_integrity(model: Any, json_path: Path, npz_path: Path) -> None:
    """The JSON metadata and the arrays must describe the same model: class count vs
    coefficient rows, concept count vs coefficient columns, finite numbers."""
    classes = np.asarray(model.classes_)
    n_features = model.n_features_in_
    if classes.ndim != 1 or len(classes) < 2:
        raise BottleneckFileError(f"{json_path}: 'classes' must list at least two classes, "
                                  f"got {len(np.atleast_1d(classes))}")
    if len(set(classes.tolist())) != len(classes):
        raise BottleneckFileError(f"{json_path}: 'classes' lists a class twice")
    rows = model._expected_outputs()
    coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
    if coef.shape != (rows, n_features) or intercept.shape != (rows,):
        raise BottleneckFileError(
            f"{json_path} and {npz_path} disagree: {len(classes)} classes and {n_features} "
            f"concepts need coef_ of shape {(rows, n_features)} and intercept_ of shape "
            f"{(rows,)}, the arrays have {coef.shape} and {intercept.shape}"
        )
    if len(model.concept_ids_) != n_features:
        raise BottleneckFileError(f"{json_path}: {len(model.concept_ids_)} concept ids for "
                                  f"{n_features} features")
    names = getattr(model, "feature_names_in_", None)
    if names is not None and len(names) != n_features:
        raise BottleneckFileError(f"{json_path}: {len(names)} feature names for "
                                  f"{n_features} features")
    for name in _SHARED_ARRAYS:
        values = np.asarray(getattr(model, name))
        if name in ("mean_", "scale_") and values.shape != (n_features,):
            raise BottleneckFileError(f"{npz_path}: {name} has shape {values.shape}, expected "
                                      f"({n_features},)")
        if values.dtype.kind not in "biuf" or not np.all(np.isfinite(values)):
            raise BottleneckFileError(f"{npz_path}: {name} holds non-finite or non-numeric "
                                      "values")
