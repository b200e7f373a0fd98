"""Adapter for ConceptCLIP loaded through ``AutoModel`` / ``AutoProcessor`` with remote code.

The adapter talks to the model only through the released calling convention
(``model(pixel_values=...)`` / ``model(input_ids=...)`` returning a dict with
``image_features``, ``image_token_features``, ``text_features``, ``text_token_features`` and
the four calibration scalars, scales already exponentiated), so the real ConceptCLIP and the
package's reference model (:func:`conceptlens.models.create_reference_model`) go through the
same code.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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
    RemoteCodeRequiredError,
    UnsupportedBackboneError,
)
from conceptlens.models.hub import hub_error, remote_code_message
from conceptlens.models.images import load_pil_images
from conceptlens.models.reference import REMOTE_CODE_FILES, load_reference_folder
from conceptlens.models.runtime import (
    hash_state_dict,
    hash_weight_files,
    resolve_device,
    resolve_dtype,
)

__all__ = ["ConceptCLIPBackbone", "fast_bert_tokenizer"]

_SCALAR_KEYS = ("logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias")
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class ConceptCLIPBackbone(Backbone):
    """ConceptCLIP (or its reference model) behind the :class:`Backbone` interface.

    Args:
        model: The model as returned by ``AutoModel.from_pretrained(..., trust_remote_code=True)``
            (or :class:`~conceptlens.models.reference.ConceptCLIPModel`). Put in eval mode
            and frozen (``requires_grad=False``) here.
        processor: Its processor: ``processor.image_processor`` (SigLIP, squash resize) and
            ``processor.tokenizer``, a BERT tokenizer; a *slow* one (what third-party code
            loads the released model with) is replaced by the fast one built from the same
            vocabulary (:func:`fast_bert_tokenizer`; same ids, checked on every batch),
            because character offsets need the fast one.
        model_id: Hub id or local path, for :attr:`identity`.
        revision: Hub revision (commit) when known.
        weights_hash: Hash of the weight files when known; otherwise the state dict is
            hashed the first time :attr:`identity` is read.
        context_length: Texts are padded / truncated to this many tokens (default: the
            processor's ``max_length``, else 77 like the authors).
        weights_folder: The local folder the weights come from, for
            :attr:`~conceptlens.models.base.Backbone.weights_folder` (model card, shipped
            reference set) when ``model_id`` is not that folder.

    Attributes:
        image_size: ``(H, W)`` of the pixel values the model takes.
        grid_size: Patch grid ``(rows, cols)``; the last ``H % patch`` pixels are not covered.
        embed_dim: Joint embedding dimension ``D``.
        logit_scale, logit_bias, concept_logit_scale, concept_logit_bias: Floats, read from
            the model's forward output (scales already exponentiated).

    Example:
        >>> import torch
        >>> from conceptlens.models import ConceptCLIPBackbone, create_reference_model
        >>> backbone = ConceptCLIPBackbone(*create_reference_model("tiny"))
        >>> feats = backbone.encode_images(torch.zeros(1, 3, 64, 64))
        >>> tuple(feats.patch_embeds.shape), feats.grid_size
        ((1, 64, 32), (8, 8))
    """

    num_prefix_tokens = 0

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        model_id: str = "<in-memory>",
        revision: str | None = None,
        weights_hash: str | None = None,
        context_length: int | None = None,
        weights_folder: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.processor = processor
        tokenizer = _require(processor, "tokenizer")
        self._slow_tokenizer = None
        if not getattr(tokenizer, "is_fast", False):
            self._slow_tokenizer = tokenizer
            tokenizer = fast_bert_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.image_processor = _require(processor, "image_processor")
        self.context_length = int(
            context_length
            or getattr(processor, "max_length", None)
            or getattr(getattr(model, "config", None), "context_length", None)
            or 77
        )
        self.image_size = _image_size(self.image_processor)
        self.patch_size = _patch_size(model)
        self.grid_size = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        self._model_id = model_id
        self._revision = revision
        self._weights_hash = weights_hash
        self._weights_folder = Path(weights_folder) if weights_folder is not None else None
        self._identity: BackboneIdentity | None = None
        self._read_calibration()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        token: str | bool | None = None,
        use_package_code: bool | None = None,
        model_id: str | None = None,
    ) -> ConceptCLIPBackbone:
        """Load ConceptCLIP (or a saved reference model) from the hub or a local folder.

        Args:
            name_or_path: Hub id (``"JerrryNie/ConceptCLIP"``) or local folder.
            device: See :func:`~conceptlens.models.runtime.resolve_device`.
            dtype: See :func:`~conceptlens.models.runtime.resolve_dtype`.
            revision: Hub branch, tag or commit.
            trust_remote_code: Allow the folder's / repository's Python code to run.
            token: Hugging Face token (ConceptCLIP is gated).
            use_package_code: Load with this package's own reference classes instead of the
                folder's code. ``None`` (default) does so only for a local folder whose three
                code files are byte-identical to the package's (running them is then no
                different from running the package), so no ``trust_remote_code`` is needed.
            model_id: Overrides the id recorded in :attr:`identity`.

        Raises:
            RemoteCodeRequiredError: Remote code is needed and ``trust_remote_code`` is False.
            BackboneLoadError: Hub unreachable, repository gated / not found, files missing.
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        source = os.fspath(name_or_path)
        folder = Path(source).expanduser()
        local = folder.is_dir()
        if use_package_code is None:
            use_package_code = local and _has_package_code(folder)
        if not use_package_code and not trust_remote_code:
            raise RemoteCodeRequiredError(remote_code_message(source))
        try:
            if use_package_code:
                model, processor = load_reference_folder(folder, dtype=torch_dtype)
            else:
                from transformers import AutoModel, AutoProcessor

                hub = dict(revision=revision, token=token, trust_remote_code=True)
                model = AutoModel.from_pretrained(source, dtype=torch_dtype, **hub)
                processor = AutoProcessor.from_pretrained(source, **hub)
        except (OSError, ValueError) as exc:
            if local:
                raise BackboneLoadError(
                    f"{source}: could not load the model or processor from this folder "
                    f"({type(exc).__name__}: {exc}); it needs config.json, the weights and the "
                    "processor files written by save_pretrained"
                ) from exc
            if isinstance(exc, ValueError) and not isinstance(exc, OSError):
                raise
            raise hub_error(source, exc, revision=revision) from exc
        model.to(device=torch_device, dtype=torch_dtype)
        config = getattr(model, "config", None)
        return cls(
            model,
            processor,
            model_id=model_id or (str(folder.resolve()) if local else source),
            revision=revision or getattr(config, "_commit_hash", None),
            weights_hash=hash_weight_files(folder) if local else None,
            weights_folder=folder.resolve() if local else None,
        )

    # ------------------------------------------------------------------ Backbone API

    @property
    def weights_folder(self) -> Path | None:
        """The folder :meth:`from_pretrained` loaded the weights from (whatever
        :attr:`identity` records as ``model_id``), else the base class's answer."""
        folder = getattr(self, "_weights_folder", None)
        return folder if folder is not None else super().weights_folder

    @property
    def identity(self) -> BackboneIdentity:  # type: ignore[override]
        """Model id, revision, weights hash, dtype and preprocessing; a cache key."""
        dtype = str(self.dtype).removeprefix("torch.")
        if self._identity is None or self._identity.dtype != dtype:
            if self._weights_hash is None and self._revision is None:
                self._weights_hash = hash_state_dict(self.model)
            self._identity = BackboneIdentity.record(
                model_id=self._model_id, family="conceptclip", revision=self._revision,
                weights_hash=self._weights_hash, dtype=self.dtype,
                preprocessing=self.preprocessing_config(),
            )
        return self._identity

    @property
    def preprocessing(self) -> dict[str, Any]:
        """:meth:`preprocessing_config` (the part of :attr:`identity` it records)."""
        return self.preprocessing_config()

    def preprocessing_config(self) -> dict[str, Any]:
        """JSON-ready description of the image and text preprocessing."""
        ip = self.image_processor
        resample = getattr(ip, "resample", None)
        resample = getattr(resample, "value", resample)
        return {
            "size": list(self.image_size),
            "resize": "squash",
            "resample": _RESAMPLE_NAMES.get(resample, str(resample)),
            "rescale_factor": getattr(ip, "rescale_factor", None),
            "mean": [float(v) for v in (getattr(ip, "image_mean", None) or [])],
            "std": [float(v) for v in (getattr(ip, "image_std", None) or [])],
            "text_padding": "max_length",
            "context_length": self.context_length,
        }

    def preprocess(self, images: Sequence[Any] | Any) -> torch.Tensor:
        """Load images (paths, PIL, arrays, tensors, :class:`LoadedImage`) and make pixels.

        Each image goes through :func:`conceptlens.models.images.load_image` (RGB, EXIF,
        DICOM ...) and then the model's image processor (squash resize to
        :attr:`image_size`, bicubic, mean = std = 0.5).

        Args:
            images: One image or a sequence of images; a 4-D array or tensor is a batch
                ``(B, ...)`` of images.

        Returns:
            ``(B, 3, H, W)`` float32 pixel values on the CPU.
        """
        pil = load_pil_images(images)
        pixels = self.image_processor(pil, return_tensors="pt")["pixel_values"]
        return pixels.float()

    def _run_model(self, side: str, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One side of the model: its L2-normalised ``{side}_features`` and its
        ``{side}_token_features`` (``side``: ``"image"`` or ``"text"``)."""
        out = self.model(**inputs)
        pooled = _output(out, f"{side}_features")
        return F.normalize(pooled, dim=-1), _output(out, f"{side}_token_features")

    def forward_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Pixels -> global embedding and patch tokens, differentiably.

        Args:
            pixel_values: ``(B, 3, H, W)`` with ``(H, W) == image_size``; cast to the model's
                device and dtype.

        Returns:
            :class:`ImageFeatures`: ``global_embeds`` ``(B, D)`` (the model's
            ``image_features``), ``patch_embeds`` ``(B, P, D)`` (``image_token_features``),
            ``grid_size``.
        """
        pixel_values = self._model_input(pixel_values)
        image, tokens = self._run_model("image", pixel_values=pixel_values)
        return ImageFeatures(
            global_embeds=image,
            patch_embeds=tokens,
            grid_size=self._grid_for(tokens.shape[1]),
        )

    def forward_texts(self, texts: Sequence[str] | str, padding: str = "max_length") -> TextFeatures:
        """Tokenise (padding to :attr:`context_length`, like the authors) and encode texts.

        Args:
            texts: Strings (a single string is one text).
            padding: ``"max_length"`` (to :attr:`context_length`) or ``"longest"`` (to the
                batch's longest text, at most :attr:`context_length`). The model masks
                padding tokens, so the global embedding and the real tokens' vectors do not
                depend on it (up to float rounding); only the vectors *at* padding positions do.

        Returns:
            :class:`TextFeatures`: ``global_embeds`` ``(N, D)``, ``token_embeds`` ``(N, T, D)``
            (``text_token_features``, ``T = context_length`` or the longest text),
            ``attention_mask`` ``(N, T)``, ``offsets`` ``(N, T, 2)`` character spans
            (``(0, 0)`` for special / padding).
        """
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        texts = as_text_list(texts)
        self._warn_if_truncated(texts)
        encoded = self.tokenizer(
            texts,
            padding=padding,
            truncation=True,
            max_length=self.context_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        if self._slow_tokenizer is not None:
            _check_same_ids(self._slow_tokenizer, encoded["input_ids"], texts, self.context_length,
                            padding=padding)
        input_ids = encoded["input_ids"].to(self.device)
        text, tokens = self._run_model("text", input_ids=input_ids)
        return TextFeatures(
            global_embeds=text,
            token_embeds=tokens,
            attention_mask=encoded["attention_mask"].to(self.device),
            offsets=encoded["offset_mapping"].to(self.device),
            texts=texts,
        )

    def token_layers(self) -> list[nn.Module]:
        """The vision transformer's blocks, first to last.

        Supports the released model (OpenCLIP/timm trunk: ``model.visual.trunk.blocks``) and
        the reference model (``model.vision_model.encoder.layers``); both have no prefix
        tokens. A block's output is a ``(B, P, W)`` tensor (before the final norm).

        Raises:
            UnsupportedBackboneError: Neither layout is present.
        """
        trunk = getattr(getattr(self.model, "visual", None), "trunk", None)
        if trunk is not None and hasattr(trunk, "blocks"):
            self.num_prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 0) or 0)
            return list(trunk.blocks)
        encoder = getattr(getattr(self.model, "vision_model", None), "encoder", None)
        if encoder is not None and hasattr(encoder, "layers"):
            return list(encoder.layers)
        raise UnsupportedBackboneError(
            f"{type(self.model).__name__}: cannot find the vision transformer blocks (looked for "
            "model.visual.trunk.blocks and model.vision_model.encoder.layers)"
        )

    # ------------------------------------------------------------------ helpers

    def _read_calibration(self) -> None:
        probe = self.tokenizer(["a"], padding="max_length", max_length=self.context_length,
                               truncation=True, return_tensors="pt")
        with torch.no_grad():
            out = self.model(input_ids=probe["input_ids"].to(self.device))
        for key in _SCALAR_KEYS:
            setattr(self, key, float(_output(out, key)))
        self.embed_dim = int(_output(out, "text_features").shape[-1])

    def _grid_for(self, num_tokens: int) -> tuple[int, int]:
        rows, cols = self.grid_size
        if num_tokens == rows * cols:
            return self.grid_size
        side = math.isqrt(num_tokens)
        if side * side == num_tokens:
            return (side, side)
        raise UnsupportedBackboneError(
            f"the model returned {num_tokens} image tokens, which is neither the expected "
            f"{rows}x{cols} grid nor a square grid"
        )

    def _warn_if_truncated(self, texts: list[str]) -> None:
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        long = [t for t, n in zip(texts, lengths, strict=True) if n > self.context_length]
        if long:
            warnings.warn(
                f"{len(long)} text(s) exceed {self.context_length} tokens and were truncated, "
                f"e.g. {long[0][:60]!r}",
                stacklevel=3,
            )


_PROBE_TEXTS = (
    "This is dermatoscopy of pigment network.",
    "Blue-whitish veil, irregular streaks; 3 mm (ABCD) and 45% regression!",
    "ATYPICAL   Dots/Globules",
)


def fast_bert_tokenizer(slow: Any) -> Any:
    """The fast (Rust) BERT tokenizer built from a slow one's vocabulary and settings.

    Third-party code loads the released ConceptCLIP with a slow ``BertTokenizer``; token
    offsets (to find a concept's span in a prompt) need the fast one. The two must give
    the same ids: checked here on probe texts and again on every batch the backbone encodes.

    Args:
        slow: A slow WordPiece (BERT) tokenizer with ``get_vocab()``.

    Returns:
        A fast tokenizer with the same vocabulary, casing, special tokens and length.

    Raises:
        UnsupportedBackboneError: Not a WordPiece tokenizer, or the fast one gives other ids.
    """
    import transformers

    if not hasattr(slow, "get_vocab") or not hasattr(slow, "wordpiece_tokenizer"):
        raise UnsupportedBackboneError(
            f"{type(slow).__name__} is a slow tokenizer that is not BERT WordPiece; token "
            "offsets need a fast (Rust) tokenizer: pass a processor with one"
        )
    vocab = slow.get_vocab()
    basic = getattr(slow, "basic_tokenizer", None)
    settings = dict(
        do_lower_case=bool(getattr(slow, "do_lower_case", True)),
        strip_accents=getattr(basic, "strip_accents", None),
        tokenize_chinese_chars=bool(getattr(basic, "tokenize_chinese_chars", True)),
        unk_token=slow.unk_token, sep_token=slow.sep_token, pad_token=slow.pad_token,
        cls_token=slow.cls_token, mask_token=slow.mask_token,
        model_max_length=slow.model_max_length,
    )
    fast_class = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    try:
        fast = fast_class(vocab=vocab, **settings)  # transformers 5: from the vocab dict
    except TypeError:  # transformers 4.x: from a vocab file
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "vocab.txt"
            path.write_text("\n".join(sorted(vocab, key=vocab.__getitem__)) + "\n",
                            encoding="utf-8")
            fast = fast_class(vocab_file=str(path), **settings)
    probe = fast(list(_PROBE_TEXTS), padding="max_length", truncation=True,
                 max_length=77, return_tensors="pt")["input_ids"]
    _check_same_ids(slow, probe, list(_PROBE_TEXTS), 77)
    return fast


def _check_same_ids(slow: Any, ids: torch.Tensor, texts: list[str], length: int,
                    padding: str = "max_length") -> None:
    expected = slow(texts, padding=padding, truncation=True, max_length=length,
                    return_tensors="pt")["input_ids"]
    if expected.shape != ids.shape or not torch.equal(expected, ids.cpu()):
        rows = [i for i in range(len(texts)) if not torch.equal(expected[i], ids[i].cpu())]
        first = rows[0] if rows else 0
        raise UnsupportedBackboneError(
            f"the fast tokenizer built from {type(slow).__name__}'s vocabulary tokenises "
            f"{texts[first]!r} differently from it; pass a processor with a fast tokenizer "
            "that matches the model's (token offsets need a fast tokenizer)"
        )


def _require(processor: Any, name: str) -> Any:
    value = getattr(processor, name, None)
    if value is None:
        raise UnsupportedBackboneError(
            f"{type(processor).__name__} has no {name}; expected a processor with an "
            "image_processor and a tokenizer"
        )
    return value


def _image_size(image_processor: Any) -> tuple[int, int]:
    size = getattr(image_processor, "size", None)
    if isinstance(size, Mapping) or hasattr(size, "get"):
        height, width = size.get("height"), size.get("width")
        if height and width:
            return (int(height), int(width))
        if size.get("shortest_edge"):
            edge = int(size["shortest_edge"])
            return (edge, edge)
    if isinstance(size, int):
        return (size, size)
    raise UnsupportedBackboneError(
        f"{type(image_processor).__name__}.size={size!r}: cannot tell the input image size"
    )


def _patch_size(model: nn.Module) -> int:
    """The stride of the first patchifying convolution (kernel == stride)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == module.stride:
            return int(module.stride[0])
    raise UnsupportedBackboneError(
        f"{type(model).__name__}: no patch-embedding convolution found to derive the patch grid"
    )


def _output(out: Any, key: str) -> torch.Tensor:
    value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
    if value is None:
        found = sorted(out) if isinstance(out, Mapping) else type(out).__name__
        raise UnsupportedBackboneError(
            f"the model's output has no {key!r} (found: {found}); expected ConceptCLIP's "
            "output dict"
        )
    return value


def _has_package_code(folder: Path) -> bool:
    """Whether the folder's remote-code files are byte-identical to this package's."""
    package = Path(__file__).parent / "reference"
    for name in REMOTE_CODE_FILES["transformers"]:
        theirs = folder / name
        if not theirs.is_file() or theirs.read_bytes() != (package / name).read_bytes():
            return False
    return True
