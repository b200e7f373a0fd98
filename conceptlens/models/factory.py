"""Load any supported backbone by short name, hub id or local folder.

>>> from conceptlens.models import list_backbones
>>> "conceptclip" in list_backbones()
True

``load_backbone("conceptclip", trust_remote_code=True, token=...)`` loads the released
ConceptCLIP through its own remote code; a local folder is dispatched by its
``config.json``; names that plugins register (:mod:`conceptlens.models.registry`) go to their
own loaders: ``load_backbone("demo")`` loads the small model the demo package ships.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from conceptlens._deprecation import warn_renamed
from conceptlens.models.clip import CLIPBackbone
from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.models.errors import (
    BackboneLoadError,
    BackboneNotFoundError,
    UnknownBackboneError,
    UnsupportedBackboneError,
)
from conceptlens.models.hub import hub_error, remote_code_message
from conceptlens.models.open_clip import OpenCLIPBackbone, list_open_clip_models
from conceptlens.models.registry import (
    BACKBONES,
    FAMILIES,
    BackboneSpec,
    register_backbone,
)
from conceptlens.models.runtime import (
    hash_state_dict,
    hash_weight_files,
    resolve_device,
    resolve_dtype,
)
from conceptlens.models.siglip import SiglipBackbone

if TYPE_CHECKING:
    from conceptlens.models.base import Backbone

__all__ = [
    "BACKBONES",
    "FAMILIES",
    "BackboneSpec",
    "demo_weights_dir",
    "family_from_config",
    "hash_state_dict",
    "hash_weight_files",
    "hub_error",
    "list_backbones",
    "load_backbone",
    "register_backbone",
    "remote_code_message",
    "resolve_device",
    "resolve_dtype",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def list_backbones(*, open_clip: bool = True) -> list[str]:
    """Names accepted by :func:`load_backbone`, sorted; details of short names in
    :data:`BACKBONES`.

    Args:
        open_clip: Also list ``"open_clip:<config>"`` for every config bundled with the
            installed open_clip (none when the ``open_clip`` extra is not installed).
            ``"hf-hub:<org>/<repo>"`` names (open_clip checkpoints on the hub) are accepted
            too but cannot be listed offline.

    Returns:
        e.g. ``["biomedclip", "clip-vit-b16", ..., "conceptclip", "demo", ...,
        "open_clip:ViT-B-32", ...]``.
    """
    names = sorted(BACKBONES)
    if open_clip:
        names += sorted(list_open_clip_models())
    return names


def demo_weights_dir() -> Path:
    """Folder of the demo model's weights; deprecated, use
    :data:`conceptlens.demo.DEMO_WEIGHTS_DIR` or ``load_backbone("demo").weights_folder``.

    The demo model is a backbone plugin (see :mod:`conceptlens.models.registry`); this reads
    the folder its registration names.

    Raises:
        UnknownBackboneError: The demo plugin is not registered (conceptlens is not
            installed, so its entry points are missing).
    """
    warn_renamed(
        "conceptlens.models.factory.demo_weights_dir()",
        "conceptlens.demo.DEMO_WEIGHTS_DIR or load_backbone('demo').weights_folder",
    )
    spec = BACKBONES.lookup("demo")
    if spec is None:
        raise UnknownBackboneError(_unknown_name_message("demo"))
    return Path(spec.source)


def load_backbone(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    token: str | bool | None = None,
    pretrained: str | None = None,
) -> Backbone:
    """Load a backbone by short name, Hugging Face hub id or local folder.

    Args:
        name_or_path: A short name from :func:`list_backbones` (``"conceptclip"``,
            ``"demo"``, ``"clip-vit-b16"``, ...), a hub id (``"owner/name"``) or a local
            folder holding ``config.json``, the weights and the processor files. A folder
            is dispatched by its ``config.json``: ``model_type`` ``"clip"`` / ``"siglip"``
            go to the Hugging Face adapters, a ConceptCLIP-like ``auto_map`` to
            :class:`~conceptlens.models.conceptclip.ConceptCLIPBackbone`.
        device: ``None`` picks CUDA, then MPS, then the CPU (see :func:`resolve_device`).
        dtype: ``"auto"`` (default): bfloat16 where the device runs it natively (CUDA with
            bf16 support; a CPU with ``avx512_bf16`` / ``amx_bf16``, arm64 ``bf16``), float32
            otherwise (see :func:`~conceptlens.models.runtime.auto_dtype`). A plugin's
            loader (see :mod:`~conceptlens.models.registry`) decides what ``"auto"`` means
            for its model: the demo model stays float32, being small enough that bfloat16
            saves nothing, with its shipped reference set and every number in the docs made
            in float32; ask for ``dtype="bfloat16"`` to get it. ``None`` or ``"float32"``, ``"bfloat16"``,
            ``"float16"`` (not on the CPU) force a dtype. The resolved dtype is part of
            :attr:`Backbone.identity` (bfloat16 scores differ by about 1e-3).
        revision: Hub branch, tag or commit; pin a commit you reviewed when using remote code.
        trust_remote_code: Allow running the model repository's own Python code. Needed for
            ConceptCLIP (its architecture is not part of ``transformers``); never implied.
        token: Hugging Face token for gated or private repositories (ConceptCLIP is gated).
        pretrained: For ``"open_clip:<name>"`` only: open_clip's pretrained tag (e.g.
            ``"openai"``) or ``None`` for random weights from the bundled config.

    Returns:
        A :class:`~conceptlens.models.base.Backbone` in eval mode, parameters frozen.

    Raises:
        UnknownBackboneError: Not a short name, hub id or folder (lists the valid names).
        RemoteCodeRequiredError: The model needs ``trust_remote_code=True``.
        BackboneNotFoundError: The folder (or a plugin's weights) does not exist.
        BackboneLoadError: The hub cannot be reached, the repository is gated / not found,
            or the files are incomplete; the message says what to do.
        UnsupportedBackboneError: A model family no adapter handles.

    Example:
        >>> backbone = load_backbone("demo")  # doctest: +SKIP
        >>> feats = backbone.encode_images(backbone.preprocess(["lesion.png"]))  # doctest: +SKIP
    """
    torch_device = resolve_device(device)
    name = os.fspath(name_or_path)
    if not isinstance(name, str):
        raise TypeError(f"name_or_path must be a string or path, got {type(name).__name__}")
    spec = BACKBONES.lookup(name)
    if spec is not None and spec.loader is not None:  # a plugin: it resolves the dtype
        _refuse_pretrained(pretrained, name)
        return spec.loader(
            device=torch_device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            token=token,
        )
    torch_dtype = resolve_dtype(dtype, torch_device)
    options = dict(device=torch_device, dtype=torch_dtype, revision=revision, token=token)

    if name.startswith(("open_clip:", "hf-hub:")) or (
        spec is not None and spec.family == "open_clip"
    ):
        source = spec.source if spec is not None else name
        return OpenCLIPBackbone.create(
            source, pretrained=pretrained, device=torch_device, dtype=torch_dtype
        )
    _refuse_pretrained(pretrained, name)
    if spec is not None:
        return _load_family(spec.family, spec.source, trust_remote_code, **options)

    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackboneNotFoundError(
                f"{name!r} is a file; pass the folder that holds config.json and the weights"
            )
        family = family_from_config(_read_json(path / "config.json"), str(path))
        return _load_family(family, str(path.resolve()), trust_remote_code, **options)

    if _looks_like_path(name):
        raise BackboneNotFoundError(f"no such folder: {name!r}")
    if not _HUB_ID.match(name):
        raise UnknownBackboneError(_unknown_name_message(name))
    config = _fetch_hub_config(name, revision=revision, token=token)
    family = family_from_config(config, name)
    return _load_family(family, name, trust_remote_code, **options)


def family_from_config(config: dict[str, Any], where: str) -> str:
    """The adapter family of a ``config.json`` (``"conceptclip"``, ``"clip"`` or ``"siglip"``).

    Raises:
        UnsupportedBackboneError: No adapter handles this ``model_type``.
    """
    model_type = str(config.get("model_type", "")).lower()
    auto_map = config.get("auto_map") or {}
    if "conceptclip" in model_type or "AutoModel" in auto_map:
        return "conceptclip"
    if model_type in ("clip", "siglip"):
        return model_type
    raise UnsupportedBackboneError(
        f"{where}: model_type {model_type or None!r} is not supported; conceptlens adapts "
        "ConceptCLIP-style remote-code models and Hugging Face 'clip' and 'siglip' models"
    )


# --------------------------------------------------------------------------------------------


def _load_family(
    family: str,
    source: str,
    trust_remote_code: bool,
    *,
    device: torch.device,
    dtype: torch.dtype,
    revision: str | None,
    token: str | bool | None,
) -> Backbone:
    if family == "conceptclip":
        return ConceptCLIPBackbone.from_pretrained(
            source,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            token=token,
        )
    adapter: type[CLIPBackbone] | type[SiglipBackbone]
    if family == "clip":
        adapter = CLIPBackbone
    elif family == "siglip":
        adapter = SiglipBackbone
    else:  # pragma: no cover - FAMILIES is closed
        raise UnsupportedBackboneError(f"unknown backbone family {family!r}")
    try:
        return adapter.from_pretrained(
            source, device=device, dtype=dtype, revision=revision, token=token
        )
    except BackboneLoadError:
        raise
    except OSError as exc:
        raise hub_error(source, exc, revision=revision) from exc


def _refuse_pretrained(pretrained: str | None, name: str) -> None:
    if pretrained is not None:
        raise ValueError(
            "pretrained= applies to open_clip models only ('open_clip:<name>'); "
            f"{name!r} is not one"
        )


def _fetch_hub_config(name: str, *, revision: str | None, token: str | bool | None) -> dict:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(name, "config.json", revision=revision, token=token)
    except (OSError, ValueError) as exc:
        raise hub_error(name, exc, revision=revision) from exc
    return _read_json(Path(path))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BackboneNotFoundError(
            f"{path.parent}: no config.json; pass a folder saved with save_pretrained "
            "(config.json, weights, processor files)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackboneLoadError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise BackboneLoadError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or Path(name).suffix in (".json", ".safetensors")
    )


def _unknown_name_message(name: str) -> str:
    names = sorted(BACKBONES)
    close = difflib.get_close_matches(name, names, n=2)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"unknown backbone {name!r}.{hint} Valid short names: {', '.join(names)}; "
        "or pass a hub id ('owner/name'), a local folder, 'open_clip:<config>' or "
        "'hf-hub:<org>/<repo>' (open_clip models)."
    )
