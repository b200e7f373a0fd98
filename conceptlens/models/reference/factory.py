"""Build the ConceptCLIP-architecture reference model at ``tiny`` or ``full`` size."""

from __future__ import annotations

import json
import os
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import BertConfig, BertTokenizer, SiglipImageProcessorPil, SiglipVisionConfig
from transformers.image_utils import PILImageResampling

from conceptlens.models.reference.configuration_conceptclip import ConceptCLIPConfig
from conceptlens.models.reference.configuration_conceptclip_openclip import (
    ConceptCLIPOpenCLIPConfig,
)
from conceptlens.models.reference.modeling_conceptclip import ConceptCLIPModel
from conceptlens.models.reference.modeling_conceptclip_openclip import ConceptCLIPOpenCLIPModel
from conceptlens.models.reference.processing_conceptclip import ConceptCLIPProcessor

__all__ = [
    "FLAVOURS",
    "REFERENCE_SIZES",
    "REMOTE_CODE_FILES",
    "build_slow_tokenizer",
    "build_tokenizer",
    "create_reference_model",
    "default_words",
    "load_reference_folder",
    "reference_config",
    "save_reference_model",
    "write_remote_code",
]

REFERENCE_SIZES = ("tiny", "full")
FLAVOURS = ("transformers", "open_clip")
REMOTE_CODE_FILES: dict[str, tuple[str, ...]] = {
    "transformers": (
        "_conceptclip_shared.py",
        "configuration_conceptclip.py",
        "modeling_conceptclip.py",
        "processing_conceptclip.py",
    ),
    "open_clip": (
        "_conceptclip_shared.py",
        "configuration_conceptclip_openclip.py",
        "modeling_conceptclip_openclip.py",
        "processing_conceptclip.py",
    ),
}
"""The *remote code* of each flavour: the modules of this package that a saved folder carries
(``config.json``'s ``auto_map`` names them; both flavours import ``_conceptclip_shared``, the
code they share, relatively), so ``trust_remote_code=True`` loads it anywhere."""
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CHARACTERS = string.ascii_lowercase + string.digits
_PUNCTUATION = ".,;:!?-'\"()[]/%+&*=<>#_"

# the released ConceptCLIP's dimensions at "full" (SigLIP so400m/14 at 384 px, BERT-base text)
_VISION = {
    "tiny": dict(image_size=64, patch_size=8, hidden_size=32, intermediate_size=64,
                 num_hidden_layers=2, num_attention_heads=2),
    "full": dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304,
                 num_hidden_layers=27, num_attention_heads=16),
}
_TEXT = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=128),
    "full": dict(vocab_size=30522, hidden_size=768, intermediate_size=3072,
                 num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512),
}
# the open_clip flavour's names of the same vision dimensions
_OPEN_CLIP_NAMES = dict(image_size="image_size", patch_size="patch_size", hidden_size="width",
                        num_hidden_layers="depth", num_attention_heads="heads",
                        intermediate_size="mlp_dim")


def default_words() -> list[str]:
    """The whole words of the tiny tokenizer (basic English and common medical words)."""
    text = resources.files("conceptlens.models.reference").joinpath("tiny_words.txt").read_text()
    return [w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#")]


def build_tokenizer(words: Sequence[str] | None = None, *, max_length: int = 77) -> BertTokenizer:
    """A small lower-case WordPiece tokenizer that never produces ``[UNK]`` for ASCII text.

    The vocabulary is the five BERT special tokens (``[PAD]`` = 0), the characters
    ``a-z0-9``, their ``##`` continuations, common punctuation, then ``words``.

    Args:
        words: Whole words to add (lower-cased, deduplicated); :func:`default_words`
            when ``None``.
        max_length: The tokenizer's ``model_max_length``.

    Returns:
        A fast :class:`~transformers.BertTokenizer` (supports ``return_offsets_mapping``).
    """
    words = default_words() if words is None else list(words)
    if any(not isinstance(w, str) for w in words):
        raise TypeError("tokenizer_vocab must be a list of strings")
    entries: list[str] = list(SPECIAL_TOKENS)
    entries += list(_CHARACTERS) + [f"##{c}" for c in _CHARACTERS] + list(_PUNCTUATION)
    seen = set(entries)
    for word in words:
        word = word.strip().lower()
        if word and word not in seen and not any(ch.isspace() for ch in word):
            entries.append(word)
            seen.add(word)
    vocab = {token: i for i, token in enumerate(entries)}
    return BertTokenizer(vocab=vocab, model_max_length=max_length)


def build_slow_tokenizer(words: Sequence[str] | None = None, *, max_length: int = 77) -> Any:
    """The *slow* (pure Python) BERT tokenizer over :func:`build_tokenizer`'s vocabulary.

    Third-party code loads the released ConceptCLIP with a plain slow ``BertTokenizer``;
    the open_clip-flavoured stand-in ships one so that path is exercised. In transformers 5
    the slow class is ``BertTokenizerLegacy`` (``BertTokenizer`` became the fast one).
    """
    import tempfile

    import transformers

    slow_class = getattr(transformers, "BertTokenizerLegacy", None)
    if slow_class is None:  # transformers 4.x: BertTokenizer is the slow one
        slow_class = transformers.BertTokenizer
    vocab = build_tokenizer(words, max_length=max_length).get_vocab()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.txt"
        path.write_text("\n".join(sorted(vocab, key=vocab.__getitem__)) + "\n", encoding="utf-8")
        return slow_class(vocab_file=str(path), do_lower_case=True, model_max_length=max_length)


def reference_config(
    size: Literal["tiny", "full"] = "tiny", *, vocab_size: int | None = None, **overrides: Any
) -> ConceptCLIPConfig:
    """The :class:`ConceptCLIPConfig` of a named size.

    Args:
        size: ``"tiny"`` (64 px, patch 8, width 32, 2 layers; for tests) or ``"full"``
            (384 px, patch 14, width 1152, depth 27, 16 heads, MLP 4304, BERT-base text,
            joint dim 1152; the released ConceptCLIP's dimensions).
        vocab_size: Text vocabulary size (tiny: the tokenizer's; full: 30522).
        **overrides: ``vision_config`` / ``text_config`` dicts are merged into the size's
            defaults; other keys go to :class:`ConceptCLIPConfig`.
    """
    if size not in REFERENCE_SIZES:
        raise ValueError(f"size must be one of {REFERENCE_SIZES}, got {size!r}")
    vision = {**_VISION[size], **dict(overrides.pop("vision_config", None) or {})}
    text = {**_TEXT[size], **dict(overrides.pop("text_config", None) or {})}
    if vocab_size is not None and "vocab_size" not in text:
        text["vocab_size"] = vocab_size
    text.setdefault("pad_token_id", 0)
    return ConceptCLIPConfig(
        vision_config=SiglipVisionConfig(**vision),
        text_config=BertConfig(**text),
        **overrides,
    )


def _image_processor(side: int, **settings: Any) -> SiglipImageProcessorPil:
    defaults: dict[str, Any] = dict(
        size={"height": side, "width": side},
        resample=PILImageResampling.BICUBIC,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )
    return SiglipImageProcessorPil(**{**defaults, **settings})


def load_reference_folder(
    folder: str | os.PathLike[str], *, dtype: torch.dtype | None = None
) -> tuple[ConceptCLIPModel, ConceptCLIPProcessor]:
    """Load a folder written by the reference model's ``save_pretrained`` with *this
    package's* classes, running none of the folder's Python files.

    Args:
        folder: Folder with ``config.json``, ``model.safetensors``, ``processor_config.json``
            and the tokenizer files.
        dtype: Load the weights in this dtype (default: as saved).

    Returns:
        ``(model, processor)``, the model in eval mode.
    """
    folder = Path(folder)
    model = ConceptCLIPModel.from_pretrained(str(folder), dtype=dtype)
    model.eval()
    settings: dict[str, Any] = {}
    for name in ("processor_config.json", "preprocessor_config.json"):
        if (folder / name).is_file():
            settings = json.loads((folder / name).read_text(encoding="utf-8"))
            break
    image_settings = dict(settings.get("image_processor", settings))
    for key in ("image_processor_type", "auto_map", "processor_class", "max_length"):
        image_settings.pop(key, None)
    image_processor = _image_processor(model.config.vision_config.image_size, **image_settings)
    # BertTokenizer.from_pretrained reads only the tokenizer files (AutoTokenizer would
    # read config.json and ask whether to run the folder's code).
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    max_length = int(settings.get("max_length", model.config.context_length))
    return model, ConceptCLIPProcessor(image_processor, tokenizer, max_length=max_length)


def write_remote_code(
    folder: str | os.PathLike[str], *, flavour: Literal["transformers", "open_clip"] = "transformers"
) -> list[Path]:
    """Write the reference model's remote code into a saved folder, from this package.

    The files are this package's own modules, byte for byte (so
    :class:`~conceptlens.models.conceptclip.ConceptCLIPBackbone` recognises the folder as
    carrying the package's code and loads it without ``trust_remote_code``).

    Args:
        folder: An existing folder, usually one ``save_pretrained`` wrote.
        flavour: Which model's code (see :data:`REMOTE_CODE_FILES`).

    Returns:
        The paths written.

    Raises:
        ValueError: An unknown ``flavour``.
        FileNotFoundError: ``folder`` does not exist.
    """
    if flavour not in REMOTE_CODE_FILES:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    package = resources.files("conceptlens.models.reference")
    written = []
    for name in REMOTE_CODE_FILES[flavour]:
        target = folder / name
        target.write_bytes(package.joinpath(name).read_bytes())
        written.append(target)
    return written


def save_reference_model(model: Any, processor: Any, folder: str | os.PathLike[str]) -> Path:
    """Save a reference model and its processor as a folder that loads like the released model.

    Writes the weights (safetensors), ``config.json`` and ``processor_config.json`` with their
    ``auto_map``, the tokenizer files, and the remote code (:func:`write_remote_code`, from
    this package at save time: no copy of the code is kept anywhere else). The folder then
    loads with ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` /
    ``AutoProcessor.from_pretrained(folder, trust_remote_code=True)`` without conceptlens,
    with :func:`load_reference_folder`, and with
    :func:`~conceptlens.models.load_backbone` (no remote code needed, the code being the
    package's).

    Args:
        model: A :class:`ConceptCLIPModel` or
            :class:`~conceptlens.models.reference.ConceptCLIPOpenCLIPModel`.
        processor: Its :class:`ConceptCLIPProcessor`.
        folder: Where to save (created if missing).

    Returns:
        The folder.

    Raises:
        TypeError: ``model`` is not a reference model.

    Example:
        >>> import tempfile
        >>> from conceptlens.models.reference import create_reference_model, save_reference_model
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = save_reference_model(*create_reference_model("tiny"), tmp)
        ...     sorted(p.name for p in folder.glob("*.py"))
        ['_conceptclip_shared.py', 'configuration_conceptclip.py', 'modeling_conceptclip.py', 'processing_conceptclip.py']
    """
    if isinstance(model, ConceptCLIPOpenCLIPModel):
        flavour = "open_clip"
    elif isinstance(model, ConceptCLIPModel):
        flavour = "transformers"
    else:
        raise TypeError(
            "model must be a reference ConceptCLIPModel or ConceptCLIPOpenCLIPModel, got "
            f"{type(model).__name__}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_remote_code(folder, flavour=flavour)
    return folder


def _create_open_clip_flavour(
    size: str, seed: int, tokenizer_vocab: Sequence[str] | None, overrides: dict[str, Any]
) -> tuple[ConceptCLIPOpenCLIPModel, ConceptCLIPProcessor]:
    context_length = int(overrides.get("context_length", 77))
    tokenizer = build_slow_tokenizer(tokenizer_vocab, max_length=context_length)
    text = {**_TEXT[size], **dict(overrides.pop("text_config", None) or {})}
    if size == "tiny":
        text.setdefault("vocab_size", len(tokenizer))
    text.setdefault("pad_token_id", 0)
    vision = {_OPEN_CLIP_NAMES[key]: value for key, value in _VISION[size].items()}
    config = ConceptCLIPOpenCLIPConfig(
        **{**vision, **overrides}, text_config=BertConfig(**text)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConceptCLIPOpenCLIPModel(config)
    model.eval()
    processor = ConceptCLIPProcessor(
        _image_processor(config.image_size), tokenizer, max_length=context_length
    )
    return model, processor


def create_reference_model(
    size: Literal["tiny", "full"] = "tiny",
    *,
    flavour: Literal["transformers", "open_clip"] = "transformers",
    seed: int = 0,
    tokenizer_vocab: Sequence[str] | None = None,
    **config_overrides: Any,
) -> tuple[Any, ConceptCLIPProcessor]:
    """Build the ConceptCLIP-architecture reference model (random weights) and its processor.

    ``model.save_pretrained(folder)`` plus ``processor.save_pretrained(folder)`` write a
    folder that loads like the released model, through
    ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` and
    ``AutoProcessor.from_pretrained(folder, trust_remote_code=True)``.

    Args:
        size: ``"tiny"`` or ``"full"`` (see :func:`reference_config`).
        flavour: ``"transformers"`` (default): :class:`ConceptCLIPModel`, a transformers-native
            SigLIP vision tower and fast tokenizer. ``"open_clip"``:
            :class:`ConceptCLIPOpenCLIPModel`, the released model's own layout (an open_clip
            ``TimmModel``-shaped vision tower, ``visual.trunk.blocks``; a BERT text tower
            behind ``text.proj``) with the *slow* ``BertTokenizer`` third-party loaders use.
            Both return ConceptCLIP's output dict and ``(global, tokens)`` from
            ``encode_image`` / ``encode_text``. ``config_overrides`` of the open_clip
            flavour are :class:`ConceptCLIPOpenCLIPConfig` fields (``image_size``,
            ``width``, ..., ``text_config``).
        seed: Seed of the weight initialisation (the global RNG state is left untouched).
        tokenizer_vocab: Whole words for the WordPiece tokenizer (see :func:`build_tokenizer`).
            The full size keeps BERT-base's 30522-entry embedding table whatever the
            tokenizer (PubMedBERT's vocabulary is not shipped).
        **config_overrides: See :func:`reference_config`, e.g.
            ``vision_config={"image_size": 96}``.

    Returns:
        ``(model, processor)``; the model is in eval mode on the CPU in float32.

    Example:
        >>> from conceptlens.models import create_reference_model
        >>> model, processor = create_reference_model("tiny")
        >>> model.config.embed_dim, model.config.grid_size
        (32, (8, 8))
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if size not in REFERENCE_SIZES:
        raise ValueError(f"size must be one of {REFERENCE_SIZES}, got {size!r}")
    if flavour == "open_clip":
        return _create_open_clip_flavour(size, seed, tokenizer_vocab, dict(config_overrides))
    context_length = int(config_overrides.get("context_length", 77))
    tokenizer = build_tokenizer(tokenizer_vocab, max_length=context_length)
    vocab_size = len(tokenizer) if size == "tiny" else None
    config = reference_config(size, vocab_size=vocab_size, **config_overrides)
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} entries but text_config.vocab_size is "
            f"{config.text_config.vocab_size}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConceptCLIPModel(config)
    model.eval()
    image_processor = _image_processor(config.vision_config.image_size)
    processor = ConceptCLIPProcessor(image_processor, tokenizer, max_length=context_length)
    return model, processor
