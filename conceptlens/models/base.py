"""The backbone interface every model family is adapted to.

A backbone hides which vision-language model is underneath (ConceptCLIP, Hugging Face
CLIP, SigLIP, the demo model). Everything above ``conceptlens.models`` talks to a model only
through :class:`Backbone`.

Conventions
-----------
* ``D`` is the joint embedding dimension, ``P = grid_h * grid_w`` the number of patch tokens,
  ``T`` the text length in tokens (including special tokens).
* Global embeddings are L2-normalised; token embeddings are *projected into the joint space*
  (ConceptCLIP: after ``image_proj`` / ``text_proj``) and are **not** normalised.
* Calibration scalars are plain floats, already exponentiated where the model stores logs:
  ``p_global = sigmoid(logit_scale * cos + logit_bias)``,
  ``p_local = sigmoid(concept_logit_scale * cos + concept_logit_bias)``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "Backbone",
    "BackboneIdentity",
    "ImageFeatures",
    "TextFeatures",
    "as_text_list",
    "weights_folder_of",
]


def as_text_list(texts: Sequence[str] | str) -> list[str]:
    """Texts as a non-empty list of strings; a single string is one text.

    Raises:
        ValueError: ``texts`` is empty.
        TypeError: An item is not a string.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("texts is empty; pass at least one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
    return texts


@dataclass(frozen=True)
class BackboneIdentity:
    """What makes two backbones produce the same numbers; usable as a cache key.

    Args:
        model_id: Hub id or resolved local path of the weights.
        family: Adapter family, e.g. ``"conceptclip"``, ``"clip"``, ``"siglip"``.
        revision: Hub revision (commit or tag) when known.
        weights_hash: Hash of the weights (content of the safetensors files) when known.
        dtype: Compute dtype name, e.g. ``"float32"``.
        preprocessing: JSON-serialisable description of the image preprocessing
            (size, resample, mean, std, resize mode).
    """

    model_id: str
    family: str
    revision: str | None = None
    weights_hash: str | None = None
    dtype: str = "float32"
    preprocessing: str = "{}"

    @classmethod
    def record(
        cls,
        *,
        model_id: str,
        family: str,
        revision: str | None,
        weights_hash: str | None,
        dtype: torch.dtype,
        preprocessing: dict[str, Any],
    ) -> BackboneIdentity:
        """The identity an adapter records: ``dtype`` as a name, ``preprocessing`` as
        sorted-key JSON (so equal settings give equal keys).

        Examples:
            >>> BackboneIdentity.record(model_id="m", family="clip", revision=None,
            ...     weights_hash="ab", dtype=torch.bfloat16, preprocessing={"size": 224}).dtype
            'bfloat16'
        """
        return cls(
            model_id=model_id,
            family=family,
            revision=revision,
            weights_hash=weights_hash,
            dtype=str(dtype).removeprefix("torch."),
            preprocessing=json.dumps(preprocessing, sort_keys=True),
        )

    @property
    def key(self) -> str:
        """A short stable hex digest of every field."""
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        """The identity as a JSON-ready dict (``preprocessing`` decoded)."""
        d = asdict(self)
        d["preprocessing"] = json.loads(self.preprocessing)
        d["key"] = self.key
        return d


@dataclass
class ImageFeatures:
    """Image-side outputs of a backbone.

    Attributes:
        global_embeds: ``(B, D)`` L2-normalised global image embeddings.
        patch_embeds: ``(B, P, D)`` patch tokens projected into the joint space, not normalised.
        grid_size: ``(grid_h, grid_w)``; patch ``i`` sits at row ``i // grid_w``,
            column ``i % grid_w`` (row-major).
    """

    global_embeds: torch.Tensor
    patch_embeds: torch.Tensor
    grid_size: tuple[int, int]


@dataclass
class TextFeatures:
    """Text-side outputs of a backbone.

    Attributes:
        global_embeds: ``(N, D)`` L2-normalised global text embeddings.
        token_embeds: ``(N, T, D)`` token features projected into the joint space, not normalised.
        attention_mask: ``(N, T)`` 1 for real tokens, 0 for padding.
        offsets: ``(N, T, 2)`` character ``[start, end)`` of each token in its text
            (``(0, 0)`` for special and padding tokens), to find a concept's token span.
    """

    global_embeds: torch.Tensor
    token_embeds: torch.Tensor
    attention_mask: torch.Tensor
    offsets: torch.Tensor
    texts: list[str] = field(default_factory=list)


class Backbone(ABC):
    """A vision-language model seen through one interface.

    Subclasses set :attr:`identity`, :attr:`image_size`, :attr:`grid_size`,
    :attr:`embed_dim` and the four calibration scalars, and implement the abstract methods.
    Scoring paths call :meth:`encode_images` / :meth:`encode_texts`, which run without
    gradients; attribution paths call :meth:`forward_images` with ``pixel_values`` that
    require grad.
    """

    identity: BackboneIdentity
    image_size: tuple[int, int]
    grid_size: tuple[int, int]
    embed_dim: int
    logit_scale: float
    logit_bias: float
    concept_logit_scale: float
    concept_logit_bias: float
    model: nn.Module

    @property
    def device(self) -> torch.device:
        """Device the model's parameters live on."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the model's parameters."""
        return next(self.model.parameters()).dtype

    @abstractmethod
    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """Turn images (paths, PIL, arrays, tensors) into ``(B, 3, H, W)`` pixel values.

        The squash resize to :attr:`image_size` is recorded by the caller through the
        original sizes (see :func:`conceptlens.models.load_image`).
        """

    @abstractmethod
    def forward_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Differentiable pixels -> :class:`ImageFeatures` (no ``no_grad``)."""

    @abstractmethod
    def forward_texts(self, texts: Sequence[str]) -> TextFeatures:
        """Tokenise and encode texts, differentiably; see :class:`TextFeatures`."""

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The image preprocessing the adapter recorded, JSON-ready (it is part of
        :attr:`identity`); ``{}`` when it records none."""
        return dict(getattr(self, "_preprocessing", None) or {})

    def _model_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Check ``(B, 3, H, W)`` pixels against :attr:`image_size` and cast them to the
        model's device and dtype (what every adapter's :meth:`forward_images` starts with).

        Raises:
            TypeError: ``pixel_values`` is not a tensor.
            ValueError: Its shape is not ``(B, 3, *image_size)``.
        """
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; "
                "use backbone.preprocess(images) first"
            )
        expected = (3, *self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (B, {', '.join(map(str, expected))}), got "
                f"{tuple(pixel_values.shape)}; use backbone.preprocess(images)"
            )
        return pixel_values.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Encode preprocessed images without building a graph.

        Args:
            pixel_values: ``(B, 3, H, W)`` as returned by :meth:`preprocess`.

        Raises:
            TypeError: ``pixel_values`` is not a tensor.
        """
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; "
                "use backbone.preprocess(images) first"
            )
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        return self.forward_images(pixel_values)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> TextFeatures:
        """Encode texts without building a graph; see :meth:`forward_texts`.

        A single string is one text (not a sequence of one-character texts).
        """
        return self.forward_texts(as_text_list(texts))

    def token_layers(self) -> list[nn.Module]:
        """The vision transformer's blocks, first to last, for Grad-CAM style methods.

        Each block's output is ``(B, P', W)`` tokens; :attr:`num_prefix_tokens` of them
        (class token, registers) come before the ``P`` patch tokens.
        """
        raise NotImplementedError(f"{type(self).__name__} does not expose its token layers")

    num_prefix_tokens: int = 0

    @property
    def weights_folder(self) -> Path | None:
        """The local folder the weights were loaded from, or ``None`` (hub, in memory).

        What ships beside the weights lives there: the model card (``README.md`` /
        ``MODEL_CARD.md``) and a reference set for the out-of-distribution check
        (:data:`conceptlens.vocab.reference.REFERENCE_FILE_NAME`). The default is
        :attr:`identity`'s ``model_id`` when that is an existing folder; adapters that load
        from a folder under another id (e.g. the demo model, ``"conceptlens:demo"``) return
        the folder itself.
        """
        return _existing_folder(self.identity.model_id)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_id={self.identity.model_id!r}, "
            f"image_size={self.image_size}, grid_size={self.grid_size}, "
            f"embed_dim={self.embed_dim}, dtype={self.identity.dtype}, device={self.device})"
        )


def weights_folder_of(backbone: Any) -> Path | None:
    """:attr:`Backbone.weights_folder` of any backbone-like object.

    Objects that are not a :class:`Backbone` (test doubles, wrappers) count by their
    ``weights_folder`` attribute if they have one, else by ``identity.model_id`` when that
    is an existing folder.

    Returns:
        The folder, or ``None`` when the weights do not come from a local folder.
    """
    folder = getattr(backbone, "weights_folder", None)
    if folder is not None:
        return Path(folder)
    identity = getattr(backbone, "identity", None)
    return _existing_folder(getattr(identity, "model_id", None))


def _existing_folder(model_id: object) -> Path | None:
    if not isinstance(model_id, str) or not model_id:
        return None
    folder = Path(model_id)
    try:
        return folder if folder.is_dir() else None
    except OSError:  # a hub id that is no valid path on this system
        return None
