"""Adapter for open_clip models: ``load_backbone("open_clip:<name>")`` and ``"hf-hub:<repo>"``.

open_clip (``open_clip_torch``) builds CLIP, SigLIP, BiomedCLIP, QuiltNet and most other
published dual encoders from bundled configs or hub checkpoints. This adapter puts any of them
behind the :class:`~conceptlens.models.base.Backbone` interface, with patch tokens *in the
joint space* so concept maps and local alignment work:

* open_clip's own ``VisionTransformer`` (CLIP): the tokens after ``ln_post``, times ``proj``
  (the class token's path, applied to every patch token).
* a timm trunk (``TimmModel``: ``visual.trunk`` + ``visual.head``) with an attention-pool
  ("MAP", SigLIP) head: each token through the pool's *value path*, as if it were the only
  key (then ``kv``'s value half, ``proj``, the residual MLP), as the HF SigLIP adapter does;
  then the trunk's ``fc_norm`` / ``head`` and ``visual.head``.
* a timm trunk pooled by average or class token: the tokens after the trunk's final norm,
  through ``fc_norm`` / ``head`` and ``visual.head`` (the projection).

Global embeddings are open_clip's own ``encode_image`` / ``encode_text`` (normalised); the
token features are read from the same forward pass by forward hooks, so nothing runs twice.

Needs the ``open_clip`` extra: ``pip install "conceptlens[open_clip]"`` (open_clip_torch,
timm, torchvision; torchvision needs a torch build it was compiled against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conceptlens.models._hf_common import align_token_offsets
from conceptlens.models.base import (
    Backbone,
    BackboneIdentity,
    ImageFeatures,
    TextFeatures,
    as_text_list,
)
from conceptlens.models.errors import (
    BackboneLoadError,
    MissingExtraError,
    UnknownBackboneError,
    UnsupportedBackboneError,
)
from conceptlens.models.hub import hub_error
from conceptlens.models.images import load_pil_images
from conceptlens.models.runtime import (
    hash_state_dict,
    resolve_device,
    resolve_dtype,
)

__all__ = ["OpenCLIPBackbone", "import_open_clip", "list_open_clip_models", "timm_map_value_path"]

INSTALL_HINT = 'pip install "conceptlens[open_clip]"'
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def import_open_clip() -> Any:
    """Import ``open_clip``, or raise :class:`MissingExtraError` naming the ``pip install``.

    Raises:
        MissingExtraError: open_clip, timm or torchvision is missing or does not load
            against this torch build (``operator torchvision::nms does not exist``).
    """
    try:
        import open_clip
    except (ImportError, RuntimeError) as exc:
        raise MissingExtraError(
            f"open_clip models need the open_clip extra: run `{INSTALL_HINT}` (installs "
            "open_clip_torch, timm and torchvision; torchvision must match your torch build, "
            f"e.g. torch 2.14.1 with torchvision 0.29.1). Import failed with: {exc}"
        ) from exc
    return open_clip


def list_open_clip_models() -> list[str]:
    """``"open_clip:<config>"`` for every config bundled with the installed open_clip, or
    ``[]`` when open_clip is not installed."""
    try:
        open_clip = import_open_clip()
    except MissingExtraError:
        return []
    return [f"open_clip:{name}" for name in open_clip.list_models()]


def timm_map_value_path(pool: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Send every token through a timm ``AttentionPoolLatent`` as if it were the only key.

    With one key the softmax weight is 1, so the pooled output is the token's value,
    projected, plus the residual MLP: ``z_i = proj(W_v x_i + b_v)``, ``out_i = z_i +
    mlp(norm(z_i))``. For a one-token input this equals ``pool(tokens)``; for many tokens
    the attention output is a convex combination of the ``z_i``.

    Args:
        pool: The trunk's ``attn_pool`` (one latent query).
        tokens: ``(B, P, W)`` tokens after the trunk's final norm (prefix tokens removed).

    Returns:
        ``(B, P, W_out)``.

    Raises:
        UnsupportedBackboneError: A pool with several latents or a positional embedding.
    """
    if int(getattr(pool, "latent_len", 1)) != 1 or getattr(pool, "pos_embed", None) is not None:
        raise UnsupportedBackboneError(
            "the attention pool has several latent queries or its own positional embedding; "
            "its per-token value path is not defined"
        )
    width = pool.kv.out_features // 2
    weight = pool.kv.weight[width:]
    bias = None if pool.kv.bias is None else pool.kv.bias[width:]
    values = pool.proj(F.linear(tokens, weight, bias))
    if getattr(pool, "mlp", None) is not None:
        values = values + pool.mlp(pool.norm(values))
    return values


class OpenCLIPBackbone(Backbone):
    """An open_clip model behind the :class:`~conceptlens.models.base.Backbone` interface.

    Args:
        model: An open_clip ``CLIP`` / ``CustomTextCLIP`` (as from
            ``open_clip.create_model``); put in eval mode, parameters frozen.
        tokenizer: Its open_clip tokenizer (``open_clip.get_tokenizer(name)``):
            ``SimpleTokenizer`` (CLIP BPE) or ``HFTokenizer``.
        model_id: Recorded in :attr:`identity`, e.g. ``"open_clip:ViT-B-32"``.
        pretrained: The pretrained tag (``"openai"``, ...) or ``None`` for random weights;
            recorded as the identity's revision.

    Images are squash-resized to the model's input size (whole image, no centre crop, so
    concept maps cover the image and map back onto it), with open_clip's interpolation, mean
    and std; :attr:`preprocessing` says so and is part of the cache key.

    Example:
        >>> backbone = load_backbone("open_clip:ViT-B-32", pretrained="openai")  # doctest: +SKIP
        >>> backbone.grid_size  # doctest: +SKIP
        (7, 7)
    """

    family = "open_clip"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        model_id: str,
        pretrained: str | None = None,
        weights_hash: str | None = None,
    ) -> None:
        if not hasattr(model, "encode_image") or not hasattr(model, "visual"):
            raise TypeError(
                f"OpenCLIPBackbone needs an open_clip model (CLIP / CustomTextCLIP), got "
                f"{type(model).__name__}"
            )
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self._model_id = model_id
        self._pretrained = pretrained
        self._weights_hash = weights_hash
        visual = model.visual
        self._trunk = getattr(visual, "trunk", None)
        if self._trunk is not None:
            self._init_timm()
        else:
            self._init_vit()
        self.image_size = tuple(int(v) for v in _pair(visual.image_size))  # type: ignore[assignment]
        self.patch_size = (
            self.image_size[0] // self.grid_size[0], self.image_size[1] // self.grid_size[1]
        )
        self.context_length = int(getattr(tokenizer, "context_length", 0) or 77)
        self._text_tokens_module, self._text_projection = self._find_text_parts()
        scale = float(model.logit_scale.detach().float().exp())
        bias_param = getattr(model, "logit_bias", None)
        bias = 0.0 if bias_param is None else float(bias_param.detach().float())
        self.logit_scale = self.concept_logit_scale = scale
        self.logit_bias = self.concept_logit_bias = bias
        with torch.no_grad():
            self.embed_dim = int(self.model.encode_text(self._tokenize(["a"])[0]).shape[-1])
        self._preprocessing = self._describe_preprocessing()

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        name: str,
        *,
        pretrained: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        tokenizer: Any = None,
    ) -> OpenCLIPBackbone:
        """Build an open_clip model and wrap it.

        Args:
            name: ``"open_clip:<config>"`` (a bundled config, e.g. ``"ViT-B-32"``; the prefix
                may be omitted) or ``"hf-hub:<org>/<repo>"`` (config and weights from the hub,
                e.g. BiomedCLIP's checkpoint).
            pretrained: For a bundled config: open_clip's pretrained tag (downloads weights) or
                ``None`` for random weights (offline; how the tests run). Ignored by open_clip
                for ``hf-hub:`` names, so passing one is an error.
            device: See :func:`~conceptlens.models.runtime.resolve_device`.
            dtype: See :func:`~conceptlens.models.runtime.resolve_dtype` (``"auto"`` too).
            tokenizer: An open_clip tokenizer, or a name / ``hf-hub:`` id for
                ``open_clip.get_tokenizer``; default: the model's own. Pass one when the
                model's tokenizer lives on the hub and the hub is out of reach.

        Raises:
            MissingExtraError: open_clip is not installed (names the ``pip install``).
            UnknownBackboneError: Not a bundled config name.
            BackboneLoadError: The hub (weights, config or tokenizer) cannot be reached.
        """
        open_clip = import_open_clip()
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        hub = name.startswith("hf-hub:")
        config = name.removeprefix("open_clip:")
        if hub and pretrained is not None:
            raise ValueError(
                f"pretrained={pretrained!r} does not apply to {name!r}: an hf-hub model's "
                "weights are the repository's"
            )
        if not hub and config not in open_clip.list_models():
            import difflib

            close = difflib.get_close_matches(config, open_clip.list_models(), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownBackboneError(
                f"{config!r} is not an open_clip config bundled with open_clip "
                f"{getattr(open_clip, '__version__', '?')}.{hint} "
                "list_backbones() lists them as 'open_clip:<name>'"
            )
        model_id = name if hub else f"open_clip:{config}"
        source = name if hub else config
        try:
            model = open_clip.create_model(
                source, pretrained=None if hub else pretrained, device="cpu",
                load_weights=hub or pretrained is not None,
            )
            if tokenizer is None or isinstance(tokenizer, str):
                tokenizer = open_clip.get_tokenizer(tokenizer or source)
        except (OSError, ValueError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "hub" not in str(exc).lower() and not hub:
                raise BackboneLoadError(f"{model_id}: open_clip could not build it: {exc}") from exc
            repo = name.removeprefix("hf-hub:") if hub else model_id
            raise hub_error(repo, exc) from exc
        model = model.to(device=torch_device, dtype=torch_dtype)
        return cls(model, tokenizer, model_id=model_id, pretrained=pretrained)

    def _init_vit(self) -> None:
        visual = self.model.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "ln_post"):
            raise UnsupportedBackboneError(
                f"{type(visual).__name__}: only open_clip's VisionTransformer and timm trunks "
                "(TimmModel) are supported as image towers (ResNets have no patch tokens)"
            )
        if getattr(visual, "attn_pool", None) is not None or getattr(
            visual, "final_ln_after_pool", False
        ):
            raise UnsupportedBackboneError(
                "open_clip VisionTransformer with an attention pool or a final norm after "
                "pooling: patch tokens in the joint space are not defined for it"
            )
        if getattr(visual, "pool_type", "tok") not in ("tok", "avg"):
            raise UnsupportedBackboneError(f"pool_type {visual.pool_type!r} is not supported")
        self.grid_size = tuple(int(v) for v in _pair(visual.grid_size))  # type: ignore[assignment]
        self.num_prefix_tokens = 1
        self._image_tokens_module = visual.ln_post

    def _init_timm(self) -> None:
        trunk = self._trunk
        if not hasattr(trunk, "blocks") or not hasattr(trunk, "patch_embed"):
            raise UnsupportedBackboneError(
                f"timm trunk {type(trunk).__name__} is not a vision transformer (needs "
                "trunk.blocks and trunk.patch_embed): no patch tokens to explain"
            )
        self.grid_size = tuple(int(v) for v in trunk.patch_embed.grid_size)  # type: ignore[assignment]
        self.num_prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 0) or 0)
        self._image_tokens_module = trunk.norm
        if any(True for _ in self.model.visual.head.children()) and any(
            name == "pool" for name, _ in self.model.visual.head.named_children()
        ):
            raise UnsupportedBackboneError("timm trunks with an open_clip attention-pool head")

    def _find_text_parts(self) -> tuple[nn.Module, Any]:
        text = getattr(self.model, "text", None)
        if text is None:  # CLIP: the text tower lives on the model itself
            return self.model.ln_final, self.model.text_projection
        if hasattr(text, "ln_final") and getattr(text, "cls_emb", None) is None:
            return text.ln_final, text.text_projection
        if hasattr(text, "transformer") and hasattr(text, "proj"):  # HFTextEncoder (BiomedCLIP)
            return text.transformer, text.proj
        raise UnsupportedBackboneError(
            f"text tower {type(text).__name__}: token features in the joint space are only "
            "defined for open_clip's own text transformers (HF text towers: not yet)"
        )

    # ------------------------------------------------------------------ identity

    @property
    def identity(self) -> BackboneIdentity:  # type: ignore[override]
        """Model id, pretrained tag (as revision), weights hash, dtype and preprocessing."""
        if self._weights_hash is None:
            self._weights_hash = hash_state_dict(self.model)
        return BackboneIdentity.record(
            model_id=self._model_id, family=self.family, revision=self._pretrained,
            weights_hash=self._weights_hash, dtype=self.dtype, preprocessing=self._preprocessing,
        )

    def _describe_preprocessing(self) -> dict[str, Any]:
        open_clip = import_open_clip()
        cfg = dict(open_clip.get_model_preprocess_cfg(self.model))
        mean = [float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))]
        std = [float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))]
        interpolation = str(cfg.get("interpolation", "bicubic"))
        return {
            "processor": "conceptlens.open_clip",
            "image_size": list(self.image_size),
            "resize_mode": "squash",
            "open_clip_resize_mode": str(cfg.get("resize_mode", "shortest")),
            "note": "whole image squash-resized; open_clip's own transform would centre-crop",
            "resample": interpolation if interpolation in _RESAMPLE else "bicubic",
            "rescale_factor": 1 / 255,
            "mean": mean,
            "std": std,
            "context_length": self.context_length,
        }

    # ------------------------------------------------------------------ Backbone API

    def preprocess(self, images: Any) -> torch.Tensor:
        """Images (paths, PIL, arrays, tensors, :class:`LoadedImage`) -> ``(B, 3, H, W)``.

        Squash resize to :attr:`image_size` with open_clip's interpolation, scale to [0, 1],
        normalise with the model's mean and std; float32 on the CPU.
        """
        p = self._preprocessing
        height, width = self.image_size
        mean = torch.tensor(p["mean"]).view(3, 1, 1)
        std = torch.tensor(p["std"]).view(3, 1, 1)
        out = []
        for image in load_pil_images(images):
            image = image.convert("RGB").resize((width, height), _RESAMPLE[p["resample"]])
            array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()) / 255.0
            out.append((array.permute(2, 0, 1) - mean) / std)
        return torch.stack(out)

    def forward_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Differentiable pixels -> open_clip's global embedding and joint-space patch tokens.

        Returns:
            :class:`ImageFeatures`: ``global_embeds`` ``(B, D)`` =
            ``model.encode_image(x, normalize=True)``, ``patch_embeds`` ``(B, P, D)``.
        """
        pixel_values = self._model_input(pixel_values)
        with _capture(self._image_tokens_module) as seen:
            pooled = self.model.encode_image(pixel_values)
        tokens = seen[-1][:, self.num_prefix_tokens :]
        return ImageFeatures(
            global_embeds=F.normalize(pooled, dim=-1),
            patch_embeds=self._project_patches(tokens),
            grid_size=self.grid_size,
        )

    def _project_patches(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._trunk is None:
            proj = self.model.visual.proj
            return tokens if proj is None else tokens @ proj
        trunk = self._trunk
        if getattr(trunk, "attn_pool", None) is not None:
            tokens = timm_map_value_path(trunk.attn_pool, tokens)
        tokens = trunk.head(trunk.fc_norm(tokens))
        return self.model.visual.head(tokens)

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(texts)
        ids = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids)
        ids = ids.long().reshape(len(texts), -1)
        inner = getattr(self.tokenizer, "tokenizer", None)
        if inner is not None and hasattr(inner, "convert_ids_to_tokens"):  # HFTokenizer
            special_ids = set(inner.all_special_ids)
            pad = inner.pad_token_id
            pieces = [inner.convert_ids_to_tokens(row.tolist()) for row in ids]
        else:  # SimpleTokenizer (CLIP BPE): pad 0, <start_of_text> / <end_of_text>
            decoder = self.tokenizer.decoder
            special_ids = set(getattr(self.tokenizer, "all_special_ids", ()))
            pad = 0
            pieces = [[decoder.get(int(i), "") for i in row] for row in ids]
        mask = torch.ones_like(ids) if pad is None else (ids != pad).long()
        offsets = torch.tensor(
            [
                align_token_offsets(
                    text, row_pieces,
                    [int(i) in special_ids or not m for i, m in zip(row, row_mask, strict=True)],
                )
                for text, row_pieces, row, row_mask in zip(
                    texts, pieces, ids.tolist(), mask.tolist(), strict=True
                )
            ],
            dtype=torch.long,
        ).reshape(len(texts), -1, 2)
        return ids, mask, offsets

    def forward_texts(self, texts: Sequence[str] | str) -> TextFeatures:
        """Tokenise with the model's open_clip tokenizer and encode, differentiably.

        Returns:
            :class:`TextFeatures`: ``global_embeds`` = ``model.encode_text(ids, normalize=True)``,
            ``token_embeds`` ``(N, T, D)``: the tokens after the final norm through the text
            projection; ``offsets`` found by aligning token pieces with the text.
        """
        texts = as_text_list(texts)
        ids, mask, offsets = self._tokenize(texts)
        ids = ids.to(self.device)
        with _capture(self._text_tokens_module) as seen:
            pooled = self.model.encode_text(ids)
        tokens = seen[-1]
        if not isinstance(tokens, torch.Tensor):  # a transformers ModelOutput
            tokens = tokens.last_hidden_state
        projection = self._text_projection
        if projection is not None:
            tokens = projection(tokens) if isinstance(projection, nn.Module) else tokens @ projection
        return TextFeatures(
            global_embeds=F.normalize(pooled, dim=-1),
            token_embeds=tokens,
            attention_mask=mask.to(self.device),
            offsets=offsets.to(self.device),
            texts=texts,
        )

    def token_layers(self) -> list[nn.Module]:
        """The vision transformer's blocks (``visual.transformer.resblocks`` or
        ``visual.trunk.blocks``), first to last; outputs are batch-first ``(B, N, W)``."""
        if self._trunk is not None:
            return list(self._trunk.blocks)
        transformer = self.model.visual.transformer
        if not getattr(transformer, "batch_first", True):
            raise UnsupportedBackboneError("a sequence-first open_clip transformer")
        return list(transformer.resblocks)


@contextmanager
def _capture(module: nn.Module):
    """Collect ``module``'s outputs during the ``with`` block."""
    seen: list[torch.Tensor] = []
    hook: Callable[..., None] = lambda _m, _i, out: seen.append(out)  # noqa: E731
    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()
    if not seen:
        raise UnsupportedBackboneError(
            f"{type(module).__name__} did not run during the forward pass; this open_clip "
            "layout is not supported"
        )


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return (values[0], values[0])
    return values[0], values[1]

