"""Load any supported backbone by short name, hub id or local folder.

>>> from conceptlens.models import list_backbones
>>> "conceptclip" in list_backbones()
True

``load_backbone("conceptclip", trust_remote_code=True, token=...)`` loads the released
ConceptCLIP through its own remote code; ``load_backbone("demo")`` loads the small model that
ships inside the package; a local folder is dispatched by its ``config.json``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from conceptlens.models.errors import (
    BackboneLoadError,
    BackboneNotFoundError,
    UnknownBackboneError,
    UnsupportedBackboneError,
)
from conceptlens.models.runtime import (
    hash_state_dict,
    hash_weight_files,
    resolve_device,
    resolve_dtype,
)

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
    "remote_code_message",
    "resolve_device",
    "resolve_dtype",
]

FAMILIES = ("conceptclip", "clip", "siglip", "open_clip")


@dataclass(frozen=True)
class BackboneSpec:
    """A short name :func:`load_backbone` knows.

    Attributes:
        name: The short name.
        source: Hub id, or ``"package:demo"`` for the weights shipped in the package.
        family: Adapter family: ``"conceptclip"``, ``"clip"``, ``"siglip"`` or ``"open_clip"``
            (source ``"hf-hub:<repo>"``; needs the ``open_clip`` extra).
        remote_code: Whether loading runs Python code from the model repository.
        description: One line for humans.
    """

    name: str
    source: str
    family: str
    remote_code: bool
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "conceptclip",
            "JerrryNie/ConceptCLIP",
            "conceptclip",
            True,
            "ConceptCLIP (SigLIP so400m/14 @384 + PubMedBERT); gated, needs a token",
        ),
        BackboneSpec(
            "demo",
            "package:demo",
            "conceptclip",
            False,
            "tiny ConceptCLIP-architecture model trained on the synthetic demo data (offline)",
        ),
        BackboneSpec(
            "clip-vit-b16", "openai/clip-vit-base-patch16", "clip", False, "OpenAI CLIP ViT-B/16"
        ),
        BackboneSpec(
            "clip-vit-b32", "openai/clip-vit-base-patch32", "clip", False, "OpenAI CLIP ViT-B/32"
        ),
        BackboneSpec(
            "clip-vit-l14",
            "openai/clip-vit-large-patch14",
            "clip",
            False,
            "OpenAI CLIP ViT-L/14",
        ),
        BackboneSpec(
            "siglip-base",
            "google/siglip-base-patch16-224",
            "siglip",
            False,
            "SigLIP ViT-B/16 @224",
        ),
        BackboneSpec(
            "biomedclip",
            "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            "open_clip",
            False,
            "BiomedCLIP ViT-B/16 + PubMedBERT (open_clip checkpoint; needs the open_clip extra)",
        ),
        BackboneSpec(
            "quiltnet-b32",
            "hf-hub:wisdomik/QuiltNet-B-32",
            "open_clip",
            False,
            "QuiltNet ViT-B/32, histopathology CLIP (open_clip checkpoint; open_clip extra)",
        ),
        BackboneSpec(
            "siglip-so400m",
            "google/siglip-so400m-patch14-384",
            "siglip",
            False,
            "SigLIP so400m/14 @384 (ConceptCLIP's image tower before medical training)",
        ),
    )
}

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
        from conceptlens.models.open_clip import list_open_clip_models

        names += sorted(list_open_clip_models())
    return names






def demo_weights_dir() -> Path:
    """Folder of the demo model shipped in the package (``conceptlens/demo/weights``)."""
    return Path(str(resources.files("conceptlens.demo").joinpath("weights")))


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
            otherwise (see :func:`~conceptlens.models.runtime.auto_dtype`). The demo model
            stays float32 under ``"auto"``: it is small enough that bfloat16 saves nothing,
            and its shipped reference set and every number in the docs were made in float32;
            ask for ``dtype="bfloat16"`` to get it. ``None`` or ``"float32"``, ``"bfloat16"``,
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
        BackboneNotFoundError: The folder (or the demo weights) does not exist.
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
    if name == "demo" and isinstance(dtype, str) and dtype.strip().lower() == "auto":
        dtype = "float32"
    torch_dtype = resolve_dtype(dtype, torch_device)
    options = dict(device=torch_device, dtype=torch_dtype, revision=revision, token=token)

    if name.startswith(("open_clip:", "hf-hub:")) or (
        name in BACKBONES and BACKBONES[name].family == "open_clip"
    ):
        source = BACKBONES[name].source if name in BACKBONES else name
        from conceptlens.models.open_clip import OpenCLIPBackbone

        return OpenCLIPBackbone.create(
            source, pretrained=pretrained, device=torch_device, dtype=torch_dtype
        )
    if pretrained is not None:
        raise ValueError(
            "pretrained= applies to open_clip models only ('open_clip:<name>'); "
            f"{name!r} is not one"
        )
    if name in BACKBONES:
        spec = BACKBONES[name]
        if spec.source == "package:demo":
            return _load_demo(torch_device, torch_dtype)
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


def hub_error(name: str, exc: BaseException, *, revision: str | None = None) -> BackboneLoadError:
    """Turn a hub / file error raised while loading ``name`` into one actionable message.

    Args:
        name: Hub id or folder being loaded.
        exc: The error from ``huggingface_hub`` or ``transformers``.
        revision: The revision asked for, if any.

    Returns:
        A :class:`BackboneLoadError` (raise it ``from exc``).
    """
    from huggingface_hub import errors as hf_errors

    chain = _exception_chain(exc)
    url = f"https://huggingface.co/{name}"
    local_hint = (
        "or download the model once on a machine with access and pass the local folder "
        "(config.json, weights, processor files) instead of the hub id"
    )
    if any(isinstance(e, hf_errors.GatedRepoError) for e in chain):
        reason = (
            f"{name!r} is a gated repository on the Hugging Face hub: accept its terms at {url} "
            f"with your account, then pass token='hf_...' (or log in with `hf auth login`), "
            f"{local_hint}"
        )
    elif any(isinstance(e, hf_errors.RevisionNotFoundError) for e in chain):
        reason = f"revision {revision!r} does not exist in {name!r}; check the branch, tag or commit"
    elif any(isinstance(e, hf_errors.RepositoryNotFoundError) for e in chain):
        reason = (
            f"{name!r} was not found on the Hugging Face hub: check the spelling, pass "
            f"token='hf_...' if it is private or gated, {local_hint}. "
            f"Known short names: {', '.join(sorted(BACKBONES))}"
        )
    elif any(
        isinstance(e, (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError,
                       ConnectionError, TimeoutError))
        for e in chain
    ) or _mentions_connection(chain):
        reason = (
            f"{name!r} could not be reached: the Hugging Face hub is not reachable from here "
            f"(offline mode or no network) and no copy is in the local cache. Connect and retry, "
            f"pass token='hf_...' if the repository is gated, {local_hint}"
        )
    else:
        reason = (
            f"{name!r} could not be loaded; if it is a hub id, check the name and your access "
            f"(pass token='hf_...' for gated or private repositories), {local_hint}"
        )
    return BackboneLoadError(f"{reason}. Original error: {type(exc).__name__}: {exc}")


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
        from conceptlens.models.conceptclip import ConceptCLIPBackbone

        return ConceptCLIPBackbone.from_pretrained(
            source,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            token=token,
        )
    if family == "clip":
        from conceptlens.models.clip import CLIPBackbone as adapter
    elif family == "siglip":
        from conceptlens.models.siglip import SiglipBackbone as adapter
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


def _load_demo(device: torch.device, dtype: torch.dtype) -> Backbone:
    from conceptlens.models.conceptclip import ConceptCLIPBackbone

    folder = demo_weights_dir()
    if not (folder / "config.json").is_file():
        raise BackboneNotFoundError(
            f"the demo model's weights are missing from this installation (expected {folder}/"
            "config.json); reinstall conceptlens from a complete distribution, or rebuild them "
            "with the demo training script in conceptlens.demo"
        )
    return ConceptCLIPBackbone.from_pretrained(
        folder, device=device, dtype=dtype, use_package_code=True, model_id="conceptlens:demo"
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


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _mentions_connection(chain: list[BaseException]) -> bool:
    text = " ".join(str(e) for e in chain).lower()
    return any(
        word in text
        for word in ("couldn't connect", "could not connect", "offline", "connection", "timed out")
    )


def remote_code_message(name: str) -> str:
    """Why ``name`` needs ``trust_remote_code=True`` and how to pass it."""
    return (
        f"{name!r} needs trust_remote_code=True: ConceptCLIP's architecture (a SigLIP image "
        "tower and a PubMedBERT text tower with token heads for concept-level alignment) is "
        "not part of transformers, so the model repository ships its own Python files and "
        "loading it runs that code on this machine. Review the code (config.json's auto_map "
        "names the files), then call load_backbone(..., trust_remote_code=True); pinning "
        "revision='<commit>' keeps the code you reviewed."
    )





