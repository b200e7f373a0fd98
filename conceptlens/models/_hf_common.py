"""Shared plumbing for adapters over Hugging Face dual encoders (CLIP, SigLIP).

One job per helper: device and dtype resolution, weight hashing for identities, turning
user images into PIL, describing an image processor as JSON, tokenising with character
offsets, and a base class holding what the CLIP and SigLIP adapters have in common.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conceptlens.models.base import (
    Backbone,
    BackboneIdentity,
    ImageFeatures,
    TextFeatures,
    as_text_list,
)
from conceptlens.models.errors import (
    BackboneLoadError,
    BackboneNotFoundError,
    UnsupportedBackboneError,
)
from conceptlens.models.hub import hub_error
from conceptlens.models.images import load_pil_images
from conceptlens.models.runtime import (
    hash_state_dict,
    hash_weight_files,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "HFDualEncoderBackbone",
    "align_token_offsets",
    "describe_image_processor",
    "hash_state_dict",
    "hash_weight_files",
    "resolve_device",
    "resolve_dtype",
    "tokenize_with_offsets",
]

def _field(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _resample_name(resample: Any) -> str | None:
    if resample is None:
        return None
    if hasattr(resample, "name"):
        return str(resample.name).lower()
    try:
        return Image.Resampling(int(resample)).name.lower()
    except (ValueError, TypeError):
        return str(resample)


def _floats(values: Any) -> list[float] | None:
    if values is None:
        return None
    if isinstance(values, (int, float)):
        return [float(values)]
    return [float(v) for v in values]


def describe_image_processor(image_processor: Any, image_size: tuple[int, int]) -> dict[str, Any]:
    """JSON-ready description of a Hugging Face image processor, for identities and cache keys.

    ``resize_mode`` is ``"squash"`` (resize to height x width, aspect ratio not kept),
    ``"shortest_edge_center_crop"`` (CLIP: shortest edge to N, then centre crop) or
    ``"shortest_edge"``.
    """
    size = getattr(image_processor, "size", None)
    do_crop = bool(getattr(image_processor, "do_center_crop", False))
    crop = getattr(image_processor, "crop_size", None) if do_crop else None
    shortest = _field(size, "shortest_edge")
    height, width = _field(size, "height"), _field(size, "width")
    if shortest is not None:
        resize: dict[str, int] = {"shortest_edge": int(shortest)}
        mode = "shortest_edge_center_crop" if do_crop else "shortest_edge"
    else:
        resize = {"height": int(height), "width": int(width)} if height and width else {}
        mode = "squash_center_crop" if do_crop else "squash"
    description: dict[str, Any] = {
        "processor": type(image_processor).__name__,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "resize": resize,
        "resize_mode": mode,
        "resample": _resample_name(getattr(image_processor, "resample", None)),
        "rescale_factor": float(getattr(image_processor, "rescale_factor", 1 / 255)),
        "mean": _floats(getattr(image_processor, "image_mean", None)),
        "std": _floats(getattr(image_processor, "image_std", None)),
    }
    if crop is not None:
        description["crop_size"] = [int(_field(crop, "height")), int(_field(crop, "width"))]
    return description


def align_token_offsets(
    text: str, pieces: Sequence[str], special: Sequence[bool]
) -> list[tuple[int, int]]:
    """Character spans of tokens found by matching their text left to right in ``text``.

    The fallback for slow (e.g. SentencePiece) tokenizers that cannot return offsets.
    Word-boundary markers (``"▁"``, ``"Ġ"``, ``"</w>"``, ``"##"``) are stripped and matching
    ignores case. A piece that cannot be found (the tokenizer normalised it away) gets
    ``(0, 0)`` and does not move the cursor.

    Args:
        text: The original text.
        pieces: Token strings, e.g. from ``tokenizer.convert_ids_to_tokens``.
        special: True for special and padding tokens, which get ``(0, 0)``.

    Returns:
        One ``(start, end)`` per piece.
    """
    lowered = text.lower()
    cursor = 0
    spans: list[tuple[int, int]] = []
    for piece, is_special in zip(pieces, special, strict=True):
        core = piece.replace("\u2581", "").replace("</w>", "").removeprefix("##")
        core = core.removeprefix("\u0120").strip().lower()
        start = lowered.find(core, cursor) if core and not is_special else -1
        if start < 0:
            spans.append((0, 0))
            continue
        cursor = start + len(core)
        spans.append((start, cursor))
    return spans


def tokenize_with_offsets(
    tokenizer: Any, texts: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenise texts padded and truncated to ``max_length``, with character offsets.

    Returns:
        ``input_ids`` ``(N, T)``, ``attention_mask`` ``(N, T)`` and ``offsets`` ``(N, T, 2)``
        (``(0, 0)`` for special and padding tokens), all int64 on the CPU.

    Raises:
        TypeError: an item of ``texts`` is not a string.
        ValueError: ``texts`` is empty.
    """
    texts = as_text_list(texts)
    fast = bool(getattr(tokenizer, "is_fast", False))
    encoding = tokenizer(
        texts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_attention_mask=True,
        return_special_tokens_mask=True,
        return_offsets_mapping=fast,
    )
    input_ids = torch.tensor(encoding["input_ids"], dtype=torch.long)
    attention_mask = torch.tensor(encoding["attention_mask"], dtype=torch.long)
    special = torch.tensor(encoding["special_tokens_mask"], dtype=torch.bool)
    special |= attention_mask == 0
    if fast:
        offsets = torch.tensor(encoding["offset_mapping"], dtype=torch.long)
    else:
        offsets = torch.tensor(
            [
                align_token_offsets(text, tokenizer.convert_ids_to_tokens(ids), flags)
                for text, ids, flags in zip(
                    texts, encoding["input_ids"], special.tolist(), strict=True
                )
            ],
            dtype=torch.long,
        ).reshape(len(texts), -1, 2)
    offsets[special] = 0
    return input_ids, attention_mask, offsets


def _pooled(output: Any) -> torch.Tensor:
    """The pooled tensor of a ``get_*_features`` result (tensor in 4.x, model output in 5.x)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot find pooled features in {type(output).__name__}")
    return pooled


def _split_processor(processor: Any) -> tuple[Any, Any]:
    image_processor = getattr(processor, "image_processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if image_processor is None or tokenizer is None:
        raise TypeError(
            "processor must have .image_processor and .tokenizer (a transformers Processor), "
            f"got {type(processor).__name__}"
        )
    return image_processor, tokenizer


def _looks_local(name: str) -> bool:
    """True for names meant as folders: existing paths, absolute or relative paths."""
    return (
        Path(name).exists()
        or Path(name).is_absolute()
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or "\\" in name
    )


def _load(what: str, name: str, loader: Callable[[], Any], revision: str | None) -> Any:
    try:
        return loader()
    except ImportError as err:
        raise BackboneLoadError(
            f"loading the {what} of {name!r} needs a package that is not installed: {err}"
        ) from err
    except (OSError, ValueError) as err:
        if isinstance(err, BackboneLoadError):
            raise
        raise hub_error(name, err, revision=revision) from err


B = TypeVar("B", bound="HFDualEncoderBackbone")


class HFDualEncoderBackbone(Backbone):
    """What the CLIP and SigLIP adapters share; subclasses supply the projections.

    Subclasses set :attr:`family`, :attr:`model_type` and implement :meth:`_model_class`,
    :meth:`_image_outputs`, :meth:`_text_outputs` and :meth:`_calibration`.
    """

    family: ClassVar[str]
    model_type: ClassVar[str]

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        model_id: str,
        revision: str | None = None,
        weights_hash: str | None = None,
        whole_image: bool = True,
    ) -> None:
        model_class = self._model_class()
        if not isinstance(model, model_class):
            raise TypeError(
                f"{type(self).__name__} needs a transformers {model_class.__name__}, "
                f"got {type(model).__name__}"
            )
        self.image_processor, self.tokenizer = _split_processor(processor)
        self.processor = processor
        if whole_image and getattr(self.image_processor, "do_center_crop", False):
            self.image_processor = _squash_instead_of_crop(self.image_processor)
        model.eval()
        model.requires_grad_(False)
        self.model = model

        vision_config = model.config.vision_config
        side = int(vision_config.image_size)
        patch = int(vision_config.patch_size)
        self.image_size = (side, side)
        self.grid_size = (side // patch, side // patch)
        self.embed_dim = self._embed_dim()
        self.text_length = int(model.config.text_config.max_position_embeddings)

        scale, bias = self._calibration()
        self.logit_scale = self.concept_logit_scale = scale
        self.logit_bias = self.concept_logit_bias = bias

        self._preprocessing = describe_image_processor(self.image_processor, self.image_size)
        self._check_processor_size()
        if revision is None and weights_hash is None:
            weights_hash = hash_state_dict(model)
        self._model_id = model_id
        self._revision = revision
        self._weights_hash = weights_hash

    # ----------------------------------------------------------------- subclass hooks
    @classmethod
    @abstractmethod
    def _model_class(cls) -> type[nn.Module]:
        """The transformers model class this adapter wraps."""

    @abstractmethod
    def _embed_dim(self) -> int:
        """Joint embedding dimension ``D``."""

    @abstractmethod
    def _calibration(self) -> tuple[float, float]:
        """``(logit_scale, logit_bias)`` as plain floats, scale exponentiated."""

    @abstractmethod
    def _image_outputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(global (B, D) unnormalised, patch tokens (B, P, D) in the joint space)``."""

    @abstractmethod
    def _text_outputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(global (N, D) unnormalised, token features (N, T, D) in the joint space)``."""

    # ----------------------------------------------------------------- identity
    @property
    def identity(self) -> BackboneIdentity:  # type: ignore[override]
        """Model id, revision / weights hash, current dtype and preprocessing."""
        return BackboneIdentity.record(
            model_id=self._model_id, family=self.family, revision=self._revision,
            weights_hash=self._weights_hash, dtype=self.dtype, preprocessing=self._preprocessing,
        )

    def _check_processor_size(self) -> None:
        crop = self._preprocessing.get("crop_size")
        resize = self._preprocessing["resize"]
        produced = crop or ([resize["height"], resize["width"]] if "height" in resize else None)
        if produced is not None and tuple(produced) != self.image_size:
            raise ValueError(
                f"the image processor produces {tuple(produced)} images but the model "
                f"expects {self.image_size}"
            )

    # ----------------------------------------------------------------- Backbone API
    def preprocess(self, images: Any) -> torch.Tensor:
        """Turn images into ``(B, 3, H, W)`` float32 CPU pixel values with the model's processor.

        Args:
            images: One image or a sequence: paths, PIL images, arrays, tensors.
        """
        pil_images = load_pil_images(images)
        encoded = self.image_processor(images=pil_images, return_tensors="pt")
        return encoded["pixel_values"].float()

    def forward_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Differentiable pixels -> global embeddings and projected patch tokens.

        Args:
            pixel_values: ``(B, 3, H, W)`` from :meth:`preprocess`.

        Returns:
            :class:`ImageFeatures` with ``global_embeds`` ``(B, D)`` (L2-normalised) and
            ``patch_embeds`` ``(B, grid_h * grid_w, D)`` (row-major, not normalised).
        """
        pixel_values = self._model_input(pixel_values)
        global_raw, patches = self._image_outputs(pixel_values)
        return ImageFeatures(
            global_embeds=F.normalize(global_raw, dim=-1),
            patch_embeds=patches,
            grid_size=self.grid_size,
        )

    def forward_texts(self, texts: Sequence[str]) -> TextFeatures:
        """Tokenise (padded to :attr:`text_length`) and encode texts, differentiably.

        Returns:
            :class:`TextFeatures`; ``token_embeds`` are ``(N, text_length, D)``.
        """
        texts = as_text_list(texts)
        input_ids, attention_mask, offsets = tokenize_with_offsets(
            self.tokenizer, texts, self.text_length
        )
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        global_raw, tokens = self._text_outputs(input_ids, attention_mask)
        return TextFeatures(
            global_embeds=F.normalize(global_raw, dim=-1),
            token_embeds=tokens,
            attention_mask=attention_mask,
            offsets=offsets.to(self.device),
            texts=texts,
        )

    def token_layers(self) -> list[nn.Module]:
        """The vision encoder's transformer blocks, first to last."""
        return list(self.model.vision_model.encoder.layers)

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls: type[B],
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
    ) -> B:
        """Load the model and its processor from a hub id or a ``save_pretrained`` folder.

        Args:
            name_or_path: Hub id or local folder.
            device: Where to put the model; None picks cuda, then mps, then cpu.
            dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``, or a torch dtype.
            revision: Hub revision (branch, tag or commit).
            token: Hub token for gated or private models.

        Raises:
            BackboneNotFoundError: a local folder that does not exist.
            BackboneLoadError: the files cannot be fetched or read (gated, offline, missing
                processor files, a package such as ``sentencepiece`` not installed).
            UnsupportedBackboneError: the folder holds another model type.
            ValueError: a bad ``device`` or ``dtype``.
        """
        from transformers import AutoConfig, AutoProcessor

        target_device = resolve_device(device)
        target_dtype = resolve_dtype(dtype, target_device)
        name = os.path.expanduser(str(name_or_path))
        if _looks_local(name) and not Path(name).is_dir():
            raise BackboneNotFoundError(f"no such model folder: {name!r}")
        hub_kwargs: dict[str, Any] = {"revision": revision, "token": token}
        config = _load(
            "config", name, lambda: AutoConfig.from_pretrained(name, **hub_kwargs), revision
        )
        if getattr(config, "model_type", None) != cls.model_type:
            raise UnsupportedBackboneError(
                f"'{name}' holds a '{getattr(config, 'model_type', None)}' model; "
                f"{cls.__name__} needs model_type '{cls.model_type}'"
            )
        model_class = cls._model_class()
        model = _load(
            "weights",
            name,
            lambda: model_class.from_pretrained(name, dtype=target_dtype, **hub_kwargs),
            revision,
        )
        model = model.to(device=target_device, dtype=target_dtype)
        processor = _load(
            "processor", name, lambda: AutoProcessor.from_pretrained(name, **hub_kwargs), revision
        )
        local = Path(name).is_dir()
        weights_hash = hash_weight_files(name) if local else None
        resolved_revision = revision
        if not local and resolved_revision is None:
            resolved_revision = getattr(config, "_commit_hash", None)
        model_id = str(Path(name).resolve()) if local else name
        return cls(
            model,
            processor,
            model_id=model_id,
            revision=resolved_revision,
            weights_hash=weights_hash,
        )


def _squash_instead_of_crop(image_processor: Any) -> Any:
    """A copy of a cropping image processor that squash-resizes to the crop size instead.

    Explanations must cover the whole image (a lesion at the border must not be cropped
    away) and concept maps must map back onto it, so adapters feed the whole image, squashed
    to the model's input size, like ConceptCLIP's own preprocessing.
    """
    import copy

    crop = image_processor.crop_size
    height, width = int(_field(crop, "height")), int(_field(crop, "width"))
    squashed = copy.deepcopy(image_processor)
    squashed.do_center_crop = False
    squashed.size = {"height": height, "width": width}
    return squashed
