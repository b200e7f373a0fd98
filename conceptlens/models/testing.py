"""Contract checks for :class:`~conceptlens.models.base.Backbone` implementations.

:func:`check_backbone` is to a backbone what scikit-learn's ``check_estimator`` is to an
estimator: it runs a built instance through the interface everything above
``conceptlens.models`` relies on and raises :class:`BackboneCheckError` naming the first
check that fails. Use it in the tests of a new adapter (or of a test double)::

    def test_my_adapter_keeps_the_backbone_contract():
        check_backbone(MyBackbone(...))

The checks, in the order they run (names for ``skip``):

``attributes``
    ``image_size`` and ``grid_size`` are pairs of positive ints, ``embed_dim`` a positive
    int, the four calibration scalars finite floats (scales > 0), ``num_prefix_tokens`` a
    non-negative int, ``model`` an ``nn.Module`` in eval mode, ``weights_folder`` ``None`` or
    an existing folder.
``identity``
    ``identity`` is a :class:`~conceptlens.models.base.BackboneIdentity`: hashable, equal
    and with the same ``key`` when read twice, JSON ``preprocessing``, ``to_dict()``
    JSON-serialisable, ``dtype`` naming :attr:`~conceptlens.models.base.Backbone.dtype`.
``device_dtype``
    ``device`` is a ``torch.device``, ``dtype`` a floating ``torch.dtype``.
``preprocess``
    RGB, grayscale and RGBA images of other sizes, a file path and a ``uint8`` array become
    ``(B, 3, H, W)`` finite floating pixels with ``(H, W) == image_size``; an image gives the
    same pixels alone or in a batch, as a PIL image, a path or an array.
``image_features``
    :meth:`~conceptlens.models.base.Backbone.encode_images` returns ``(B, D)`` unit-norm
    global embeddings and ``(B, grid_h * grid_w, D)`` patch tokens (``D == embed_dim``), its
    ``grid_size`` the backbone's, finite, on :attr:`device`, without a graph; different
    images give different embeddings.
``image_batch_invariance``
    An image's global embedding and patch tokens do not depend on its batch-mates (equal,
    to the tolerance, when encoded alone).
``text_features``
    :meth:`~conceptlens.models.base.Backbone.encode_texts` returns ``(N, D)`` unit-norm
    global embeddings, ``(N, T, D)`` token embeddings (the same ``D`` as the images), a
    0/1 ``(N, T)`` attention mask with a real token in every row, integer ``(N, T, 2)``
    character offsets inside each text (``(0, 0)`` on padding), all finite; one string is
    one text.
``text_determinism``
    Encoding the same texts twice, or each text alone, gives the same global embeddings.
``geometry``
    The patch grid fits the input (``grid <= image_size``); a backbone with a
    ``patch_size`` has ``grid_size == image_size // patch_size``.
``token_layers``
    :meth:`~conceptlens.models.base.Backbone.token_layers` (the Grad-CAM targets) is a
    non-empty list of sub-modules of ``model`` whose outputs are
    ``(B, num_prefix_tokens + grid_h * grid_w, W)`` tokens.
``gradients``
    :meth:`~conceptlens.models.base.Backbone.forward_images` is differentiable: a
    gradient reaches the pixels, finite and not all zero.
``bad_input``
    A non-tensor to ``encode_images`` raises ``TypeError``, a wrongly shaped tensor
    ``ValueError``; no texts raise ``ValueError``, a non-string text ``TypeError``; no
    images raise ``ValueError`` and a missing file a conceptlens
    :class:`~conceptlens.models.images.ImageLoadError` (never a bare ``RuntimeError`` from
    deep inside the model).
``identity_after_use``
    Encoding changed neither the identity nor its key; ``repr`` works.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from PIL import Image
from torch import nn

from conceptlens.errors import ConceptlensError
from conceptlens.models.base import Backbone, BackboneIdentity, ImageFeatures, TextFeatures

__all__ = ["BACKBONE_CHECKS", "BackboneCheckError", "check_backbone"]

_TEXTS = (
    "pigment network",
    "a blue-whitish veil and irregular streaks",
    "dots",
)
_SCALARS = ("logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias")


class BackboneCheckError(ConceptlensError, AssertionError):
    """A backbone broke the :class:`~conceptlens.models.base.Backbone` contract.

    An ``AssertionError`` (so test runners report it as a failed assertion) and a
    :class:`~conceptlens.errors.ConceptlensError`.

    Attributes
    ----------
    check : str
        Name of the failed check (see :data:`BACKBONE_CHECKS`).
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"check_backbone: {check!r} failed: {message}")
        self.check = check
        self._message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.check, self._message))


@dataclass
class _Context:
    """What the checks share: the backbone, tolerances, sample inputs and results."""

    backbone: Backbone
    atol: float
    norm_tol: float
    folder: Path
    images: list[Image.Image] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    image_features: ImageFeatures | None = None
    identity: BackboneIdentity | None = None

    def fail(self, message: str) -> NoReturn:
        raise _Failure(message)

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise _Failure(message)


class _Failure(Exception):
    """Raised inside a check; :func:`check_backbone` turns it into a BackboneCheckError."""


def _sample_images() -> list[Image.Image]:
    """Three textured images of different sizes and modes (RGB, grayscale, RGBA)."""
    rng = np.random.default_rng(20240601)
    images = []
    for (width, height), mode in (((56, 40), "RGB"), ((23, 31), "L"), ((70, 70), "RGBA")):
        ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 1))
        noise = rng.integers(0, 256, (height, width, 4))
        array = (0.5 * ramp + 0.5 * noise).astype(np.uint8)
        if mode == "L":
            images.append(Image.fromarray(array[..., 0], mode="L"))
        elif mode == "RGB":
            images.append(Image.fromarray(array[..., :3], mode="RGB"))
        else:
            array[..., 3] = 255
            images.append(Image.fromarray(array, mode="RGBA"))
    return images


def _pair_of_positive_ints(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor.detach().float()).all())


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------- checks


def _check_attributes(ctx: _Context) -> None:
    b = ctx.backbone
    ctx.expect(_pair_of_positive_ints(getattr(b, "image_size", None)),
               f"image_size must be a tuple of two positive ints, got {b.image_size!r}")
    ctx.expect(_pair_of_positive_ints(getattr(b, "grid_size", None)),
               f"grid_size must be a tuple of two positive ints, got {b.grid_size!r}")
    dim = getattr(b, "embed_dim", None)
    ctx.expect(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0,
               f"embed_dim must be a positive int, got {dim!r}")
    for name in _SCALARS:
        value = getattr(b, name, None)
        ctx.expect(isinstance(value, float) and math.isfinite(value),
                   f"{name} must be a finite float, got {value!r}")
    for name in ("logit_scale", "concept_logit_scale"):
        ctx.expect(getattr(b, name) > 0, f"{name} must be positive (already exponentiated), "
                   f"got {getattr(b, name)!r}")
    prefix = getattr(b, "num_prefix_tokens", None)
    ctx.expect(isinstance(prefix, int) and prefix >= 0,
               f"num_prefix_tokens must be a non-negative int, got {prefix!r}")
    ctx.expect(isinstance(getattr(b, "model", None), nn.Module),
               f"model must be a torch.nn.Module, got {type(getattr(b, 'model', None)).__name__}")
    ctx.expect(not b.model.training, "model must be in eval mode (dropout makes embeddings random)")
    folder = getattr(b, "weights_folder", None)
    ctx.expect(folder is None or (isinstance(folder, Path) and folder.is_dir()),
               f"weights_folder must be None or an existing folder (a Path), got {folder!r}")


def _check_identity(ctx: _Context) -> None:
    b = ctx.backbone
    first, second = b.identity, b.identity
    ctx.expect(isinstance(first, BackboneIdentity),
               f"identity must be a BackboneIdentity, got {type(first).__name__}")
    try:
        hash(first)
    except TypeError as err:
        ctx.fail(f"identity must be hashable (it is a cache key): {err}")
    ctx.expect(first == second and first.key == second.key,
               f"identity changes between two reads: {first} vs {second}")
    key = first.key
    ctx.expect(isinstance(key, str) and len(key) > 0 and all(c in "0123456789abcdef" for c in key),
               f"identity.key must be a hex string, got {key!r}")
    ctx.expect(isinstance(first.model_id, str) and bool(first.model_id),
               f"identity.model_id must be a non-empty string, got {first.model_id!r}")
    ctx.expect(isinstance(first.family, str) and bool(first.family),
               f"identity.family must be a non-empty string, got {first.family!r}")
    try:
        json.loads(first.preprocessing)
        json.dumps(first.to_dict())
    except (TypeError, ValueError) as err:
        ctx.fail(f"identity.preprocessing / to_dict() must be JSON: {err}")
    ctx.expect(first.dtype == _dtype_name(b.dtype),
               f"identity.dtype {first.dtype!r} does not name the backbone's dtype {b.dtype}")
    ctx.identity = first


def _check_device_dtype(ctx: _Context) -> None:
    b = ctx.backbone
    ctx.expect(isinstance(b.device, torch.device),
               f"device must be a torch.device, got {type(b.device).__name__}")
    ctx.expect(isinstance(b.dtype, torch.dtype) and b.dtype.is_floating_point,
               f"dtype must be a floating torch.dtype, got {b.dtype!r}")


def _check_pixels(ctx: _Context, pixels: Any, n: int, what: str) -> torch.Tensor:
    expected = (n, 3, *ctx.backbone.image_size)
    ctx.expect(isinstance(pixels, torch.Tensor),
               f"preprocess({what}) must return a torch.Tensor, got {type(pixels).__name__}")
    ctx.expect(tuple(pixels.shape) == expected,
               f"preprocess({what}) must return shape {expected}, got {tuple(pixels.shape)}")
    ctx.expect(pixels.dtype.is_floating_point,
               f"preprocess({what}) must return floating pixels, got {pixels.dtype}")
    ctx.expect(_finite(pixels), f"preprocess({what}) returned non-finite pixels")
    return pixels


def _check_preprocess(ctx: _Context) -> None:
    b = ctx.backbone
    images = ctx.images
    pixels = _check_pixels(ctx, b.preprocess(images), len(images), "3 PIL images")
    alone = _check_pixels(ctx, b.preprocess([images[0]]), 1, "one PIL image")
    ctx.expect(_max_diff(alone[0], pixels[0]) <= 1e-6,
               "an image's pixels depend on the other images of the batch")
    path = ctx.folder / "image.png"
    images[0].save(path)
    from_path = _check_pixels(ctx, b.preprocess([str(path)]), 1, "a file path")
    ctx.expect(_max_diff(from_path[0], pixels[0]) <= 1e-6,
               "a PNG file gives other pixels than the same image as PIL")
    array = np.asarray(images[0].convert("RGB"))
    from_array = _check_pixels(ctx, b.preprocess([array]), 1, "a uint8 array")
    ctx.expect(_max_diff(from_array[0], pixels[0]) <= 1e-6,
               "a (H, W, 3) uint8 array gives other pixels than the same image as PIL")
    ctx.pixels = pixels


def _check_image_features(ctx: _Context) -> None:
    b = ctx.backbone
    n = ctx.pixels.shape[0]
    feats = b.encode_images(ctx.pixels)
    ctx.expect(isinstance(feats, ImageFeatures),
               f"encode_images must return ImageFeatures, got {type(feats).__name__}")
    rows, cols = b.grid_size
    d = b.embed_dim
    ctx.expect(tuple(feats.global_embeds.shape) == (n, d),
               f"global_embeds must be (B, embed_dim) = {(n, d)}, got "
               f"{tuple(feats.global_embeds.shape)}")
    ctx.expect(tuple(feats.patch_embeds.shape) == (n, rows * cols, d),
               f"patch_embeds must be (B, grid_h * grid_w, embed_dim) = {(n, rows * cols, d)}, "
               f"got {tuple(feats.patch_embeds.shape)}")
    ctx.expect(tuple(feats.grid_size) == tuple(b.grid_size),
               f"ImageFeatures.grid_size {feats.grid_size} is not the backbone's {b.grid_size}")
    _check_embeddings(ctx, feats, ("global_embeds", "patch_embeds"), side="image",
                      same="two different images give the same global embedding "
                      "(is the input ignored?)")
    ctx.image_features = feats


def _check_embeddings(
    ctx: _Context, feats: ImageFeatures | TextFeatures, names: tuple[str, ...], *, side: str,
    same: str,
) -> None:
    """What both sides' features must be: each tensor floating, finite, on the backbone's
    device and without a graph; the global embeddings L2-normalised and input-dependent
    (``same``: the message when the first two are equal)."""
    b = ctx.backbone
    label = "" if side == "image" else f"{side} "
    for name in names:
        tensor = getattr(feats, name)
        ctx.expect(tensor.dtype.is_floating_point,
                   f"{label}{name} must be floating, got {tensor.dtype}")
        ctx.expect(_finite(tensor), f"{label}{name} holds NaN or inf")
        ctx.expect(tensor.device == b.device,
                   f"{label}{name} is on {tensor.device}, the backbone reports {b.device}")
        ctx.expect(not tensor.requires_grad,
                   f"encode_{side}s built a graph ({name} requires grad)")
    norms = feats.global_embeds.float().norm(dim=-1)
    ctx.expect(bool(((norms - 1).abs() <= ctx.norm_tol).all()),
               f"global {side} embeddings must be L2-normalised, norms {norms.tolist()}")
    ctx.expect(_max_diff(feats.global_embeds[0], feats.global_embeds[1]) > 0, same)


def _check_image_batch_invariance(ctx: _Context) -> None:
    b, feats = ctx.backbone, ctx.image_features
    for i in range(ctx.pixels.shape[0]):
        alone = b.encode_images(ctx.pixels[i : i + 1])
        for name in ("global_embeds", "patch_embeds"):
            diff = _max_diff(getattr(alone, name)[0], getattr(feats, name)[i])
            ctx.expect(diff <= ctx.atol,
                       f"image {i}'s {name} depend on its batch-mates: max |difference| "
                       f"{diff:.3g} > atol {ctx.atol:.3g} between the image alone and in a batch")


def _check_text_features(ctx: _Context) -> None:
    b = ctx.backbone
    texts = list(_TEXTS)
    feats = b.encode_texts(texts)
    ctx.expect(isinstance(feats, TextFeatures),
               f"encode_texts must return TextFeatures, got {type(feats).__name__}")
    n, d = len(texts), b.embed_dim
    ctx.expect(tuple(feats.global_embeds.shape) == (n, d),
               f"text global_embeds must be (N, embed_dim) = {(n, d)}, got "
               f"{tuple(feats.global_embeds.shape)} (the image and text sides must share the "
               "joint space)")
    tokens = feats.token_embeds
    ctx.expect(tokens.ndim == 3 and tokens.shape[0] == n and tokens.shape[2] == d,
               f"token_embeds must be (N, T, embed_dim) with N={n}, embed_dim={d}, got "
               f"{tuple(tokens.shape)}")
    length = tokens.shape[1]
    mask, offsets = feats.attention_mask, feats.offsets
    ctx.expect(tuple(mask.shape) == (n, length),
               f"attention_mask must be (N, T) = {(n, length)}, got {tuple(mask.shape)}")
    ctx.expect(bool(((mask == 0) | (mask == 1)).all()), "attention_mask must hold 0 and 1 only")
    ctx.expect(bool((mask.sum(dim=1) > 0).all()), "every text needs at least one real token")
    ctx.expect(tuple(offsets.shape) == (n, length, 2),
               f"offsets must be (N, T, 2) = {(n, length, 2)}, got {tuple(offsets.shape)}")
    ctx.expect(not offsets.dtype.is_floating_point and offsets.dtype != torch.bool,
               f"offsets must be integer character positions, got {offsets.dtype}")
    offsets = offsets.cpu()
    lengths = torch.tensor([len(t) for t in texts])[:, None]
    start, end = offsets[..., 0], offsets[..., 1]
    ctx.expect(bool(((start >= 0) & (start <= end) & (end <= lengths)).all()),
               "offsets must be [start, end) spans inside each text")
    ctx.expect(bool((offsets[mask.cpu() == 0] == 0).all()), "padding tokens must have offsets (0, 0)")
    _check_embeddings(ctx, feats, ("global_embeds", "token_embeds"), side="text",
                      same="two different texts give the same global embedding")
    ctx.expect(not feats.texts or list(feats.texts) == texts,
               f"TextFeatures.texts must be the texts encoded, got {feats.texts!r}")
    one = b.encode_texts(texts[0])
    ctx.expect(tuple(one.global_embeds.shape) == (1, d),
               f"a single string must be one text, got global_embeds {tuple(one.global_embeds.shape)}")


def _check_text_determinism(ctx: _Context) -> None:
    b = ctx.backbone
    texts = list(_TEXTS)
    first, second = b.encode_texts(texts), b.encode_texts(texts)
    diff = _max_diff(first.global_embeds, second.global_embeds)
    ctx.expect(diff <= ctx.atol, f"encoding the same texts twice differs by {diff:.3g}")
    for i, text in enumerate(texts):
        diff = _max_diff(b.encode_texts([text]).global_embeds[0], first.global_embeds[i])
        ctx.expect(diff <= ctx.atol,
                   f"text {text!r}'s embedding depends on its batch-mates: max |difference| "
                   f"{diff:.3g} > atol {ctx.atol:.3g}")


def _check_geometry(ctx: _Context) -> None:
    b = ctx.backbone
    (height, width), (rows, cols) = b.image_size, b.grid_size
    ctx.expect(rows <= height and cols <= width,
               f"grid_size {b.grid_size} has more patches than image_size {b.image_size} has pixels")
    patch = getattr(b, "patch_size", None)
    if patch is None:
        return
    patch_hw = tuple(int(p) for p in patch) if isinstance(patch, (tuple, list)) else (int(patch),) * 2
    ctx.expect(len(patch_hw) == 2 and min(patch_hw) > 0,
               f"patch_size must be a positive int or pair, got {patch!r}")
    expected = (height // patch_hw[0], width // patch_hw[1])
    ctx.expect(expected == (rows, cols),
               f"grid_size {b.grid_size} is not image_size // patch_size = {expected}")


@contextmanager
def _record_outputs(layers: list[nn.Module], shapes: dict[int, tuple[int, ...]]) -> Iterator[None]:
    def hook(index: int) -> Callable[..., None]:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(tensor, torch.Tensor):
                shapes[index] = tuple(tensor.shape)

        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_token_layers(ctx: _Context) -> None:
    b = ctx.backbone
    try:
        layers = list(b.token_layers())
    except NotImplementedError as err:
        ctx.fail(f"token_layers() is not implemented ({err}); Grad-CAM needs the vision "
                 "transformer's blocks (skip=['token_layers'] for a backbone without them)")
    ctx.expect(len(layers) > 0, "token_layers() is empty")
    modules = list(b.model.modules())
    for i, layer in enumerate(layers):
        ctx.expect(isinstance(layer, nn.Module), f"token_layers()[{i}] is not an nn.Module")
        ctx.expect(any(layer is m for m in modules),
                   f"token_layers()[{i}] ({type(layer).__name__}) is not a sub-module of model")
    ends = [layers[0], layers[-1]] if len(layers) > 1 else [layers[0]]
    shapes: dict[int, tuple[int, ...]] = {}
    with _record_outputs(ends, shapes):
        b.encode_images(ctx.pixels[:2])
    rows, cols = b.grid_size
    expected = b.num_prefix_tokens + rows * cols
    for i in range(len(ends)):
        shape = shapes.get(i)
        ctx.expect(shape is not None, "a token layer did not run during encode_images")
        ctx.expect(len(shape) == 3 and shape[0] == 2 and shape[1] == expected,
                   f"a token layer's output must be (B, num_prefix_tokens + grid_h * grid_w, W) "
                   f"= (2, {expected}, W), got {shape}")


def _check_gradients(ctx: _Context) -> None:
    b = ctx.backbone
    pixels = ctx.pixels[:1].detach().to(device=b.device, dtype=b.dtype).requires_grad_(True)
    with torch.enable_grad():
        feats = b.forward_images(pixels)
        ctx.expect(feats.global_embeds.requires_grad and feats.patch_embeds.requires_grad,
                   "forward_images' embeddings do not require grad for pixels that do")
        total = feats.global_embeds.float().sum() + feats.patch_embeds.float().square().sum()
        (grad,) = torch.autograd.grad(total, pixels, allow_unused=True)
    ctx.expect(grad is not None, "no gradient reaches the pixels (is the input detached?)")
    ctx.expect(_finite(grad), "the gradient on the pixels holds NaN or inf")
    ctx.expect(bool((grad != 0).any()), "the gradient on the pixels is zero everywhere")


def _expect_raises(ctx: _Context, call: Callable[[], Any], expected: tuple[type, ...],
                   what: str) -> None:
    names = " or ".join(t.__name__ for t in expected)
    try:
        call()
    except expected:
        return
    except Exception as err:  # noqa: BLE001 - any other class is the failure reported
        ctx.fail(f"{what} must raise {names}, raised {type(err).__name__}: {err}")
    ctx.fail(f"{what} must raise {names}, returned normally")


def _check_bad_input(ctx: _Context) -> None:
    from conceptlens.models.images import ImageLoadError

    b = ctx.backbone
    height, width = b.image_size
    _expect_raises(ctx, lambda: b.encode_images(ctx.pixels.detach().cpu().numpy()), (TypeError,),
                   "encode_images(<numpy array>)")
    _expect_raises(ctx, lambda: b.encode_images(torch.zeros(3, height, width)), (ValueError,),
                   "encode_images(<(3, H, W) tensor without batch axis>)")
    _expect_raises(ctx, lambda: b.encode_images(torch.zeros(1, 3, height + 3, width + 5)),
                   (ValueError,), "encode_images(<(1, 3, H + 3, W + 5) tensor>)")
    _expect_raises(ctx, lambda: b.encode_texts([]), (ValueError,), "encode_texts([])")
    _expect_raises(ctx, lambda: b.encode_texts(["ok", 3]), (TypeError,), "encode_texts(['ok', 3])")
    _expect_raises(ctx, lambda: b.preprocess([]), (ValueError,), "preprocess([])")
    missing = ctx.folder / "missing.png"
    _expect_raises(ctx, lambda: b.preprocess([str(missing)]), (ImageLoadError,),
                   "preprocess([<missing file>])")


def _check_identity_after_use(ctx: _Context) -> None:
    b = ctx.backbone
    after = b.identity
    if ctx.identity is not None:
        ctx.expect(after == ctx.identity and after.key == ctx.identity.key,
                   f"encoding changed the identity: {ctx.identity} -> {after}")
    text = repr(b)
    ctx.expect(isinstance(text, str) and bool(text), "repr(backbone) must be a non-empty string")


BACKBONE_CHECKS: dict[str, Callable[[_Context], None]] = {
    "attributes": _check_attributes,
    "identity": _check_identity,
    "device_dtype": _check_device_dtype,
    "preprocess": _check_preprocess,
    "image_features": _check_image_features,
    "image_batch_invariance": _check_image_batch_invariance,
    "text_features": _check_text_features,
    "text_determinism": _check_text_determinism,
    "geometry": _check_geometry,
    "token_layers": _check_token_layers,
    "gradients": _check_gradients,
    "bad_input": _check_bad_input,
    "identity_after_use": _check_identity_after_use,
}
"""The checks :func:`check_backbone` runs, by name, in order (see the module docstring)."""

_NEEDS = {  # checks whose inputs come from an earlier check
    "image_features": "preprocess",
    "image_batch_invariance": "image_features",
    "token_layers": "preprocess",
    "gradients": "preprocess",
    "bad_input": "preprocess",
}


def check_backbone(
    backbone: Backbone,
    *,
    atol: float | None = None,
    skip: Collection[str] = (),
) -> list[str]:
    """Check that a backbone keeps the :class:`~conceptlens.models.base.Backbone` contract.

    Runs the checks of :data:`BACKBONE_CHECKS` (described in :mod:`conceptlens.models.testing`)
    on small synthetic images and texts: identity and cache key, preprocessing, image and
    text features (shapes, joint-space width, normalisation, finiteness, device), batch
    invariance and determinism, patch-grid geometry, the Grad-CAM token layers, gradients
    and the errors raised for bad input. The backbone is used as is (its device and dtype);
    nothing is downloaded.

    Parameters
    ----------
    backbone : Backbone
        A built backbone instance.
    atol : float, optional
        Absolute tolerance of the batch-invariance and determinism checks. Default
        ``1e-4`` for float32 / float64 backbones, ``2e-2`` for half precision.
    skip : collection of str, optional
        Names of checks not to run, e.g. ``["token_layers"]`` for a backbone that does not
        expose transformer blocks (Grad-CAM then is not available for it).

    Returns
    -------
    list of str
        The names of the checks that ran and passed, in order.

    Raises
    ------
    BackboneCheckError
        An ``AssertionError`` naming the first failed check and what was wrong.
    ValueError
        ``skip`` names a check that does not exist.
    TypeError
        ``backbone`` is not a :class:`~conceptlens.models.base.Backbone`.

    See Also
    --------
    conceptlens.models.base.Backbone : The interface checked.

    Examples
    --------
    >>> from conceptlens.models import ConceptCLIPBackbone, create_reference_model
    >>> from conceptlens.models.testing import check_backbone
    >>> backbone = ConceptCLIPBackbone(*create_reference_model("tiny"))
    >>> passed = check_backbone(backbone)
    >>> passed[:3]
    ['attributes', 'identity', 'device_dtype']
    >>> len(passed) == len(BACKBONE_CHECKS)
    True
    """
    if not isinstance(backbone, Backbone):
        raise TypeError(f"backbone must be a conceptlens Backbone, got {type(backbone).__name__}")
    skip = set(skip)
    unknown = skip - set(BACKBONE_CHECKS)
    if unknown:
        raise ValueError(f"unknown checks in skip: {sorted(unknown)}; valid: {list(BACKBONE_CHECKS)}")
    while True:  # a check whose inputs come from a skipped check is skipped too
        more = {name for name, needed in _NEEDS.items() if needed in skip} - skip
        if not more:
            break
        skip |= more
    if atol is None:
        half = backbone.dtype in (torch.float16, torch.bfloat16)
        atol = 2e-2 if half else 1e-4
    passed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="check_backbone_") as folder:
        ctx = _Context(backbone=backbone, atol=float(atol), norm_tol=max(1e-3, float(atol)),
                       folder=Path(folder), images=_sample_images())
        for name, check in BACKBONE_CHECKS.items():
            if name in skip:
                continue
            try:
                check(ctx)
            except _Failure as failure:
                raise BackboneCheckError(name, f"{type(backbone).__name__}: {failure}") from None
            except BackboneCheckError:
                raise
            except Exception as err:
                raise BackboneCheckError(
                    name, f"{type(backbone).__name__} raised {type(err).__name__}: {err}"
                ) from err
            passed.append(name)
    return passed
