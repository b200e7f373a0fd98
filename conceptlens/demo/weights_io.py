"""Where the shipped demo model lives, how to load it without remote code, how to save one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["DEMO_WEIGHTS_DIR", "load_demo_model", "save_demo_model"]

DEMO_WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped demo model (config, safetensors weights, processor, tokenizer, card).

It holds no Python files: the model's code is the package's own
(:mod:`conceptlens.models.reference`), which :func:`save_demo_model` writes into a saved folder.
"""


def load_demo_model(folder: str | Path | None = None) -> tuple[Any, Any]:
    """Load the demo model and its processor with the package's own classes (offline).

    Args:
        folder: A folder written by ``python -m conceptlens.demo.train`` (or
            :func:`save_demo_model`); the shipped :data:`DEMO_WEIGHTS_DIR` when ``None``.

    Returns:
        ``(model, processor)``: a ``ConceptCLIPModel`` in eval mode and its
        ``ConceptCLIPProcessor``.

    Raises:
        FileNotFoundError: If the folder has no ``config.json`` or ``model.safetensors``.
    """
    from transformers import BertTokenizer, SiglipImageProcessorPil

    from conceptlens.models.reference.modeling_conceptclip import ConceptCLIPModel
    from conceptlens.models.reference.processing_conceptclip import ConceptCLIPProcessor

    folder = DEMO_WEIGHTS_DIR if folder is None else Path(folder)
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"demo model file {folder / name} not found")
    model = ConceptCLIPModel.from_pretrained(folder, use_safetensors=True)
    model.eval()
    # built from its parts: ProcessorMixin.from_pretrained would offer to run the folder's code
    settings = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    image_settings = {
        k: v
        for k, v in settings.get("image_processor", {}).items()
        if k not in ("auto_map", "image_processor_type", "processor_class")
    }
    tokenizer = BertTokenizer.from_pretrained(folder)
    processor = ConceptCLIPProcessor(
        SiglipImageProcessorPil(**image_settings),
        tokenizer,
        max_length=int(settings.get("max_length", 77)),
    )
    return model, processor


def save_demo_model(model: Any, processor: Any, folder: str | os.PathLike[str]) -> Path:
    """Save a demo model as a self-contained folder, its remote code exported at save time.

    Weights, config (with ``auto_map``), processor and tokenizer files, and the model's
    Python files written from :mod:`conceptlens.models.reference` (see
    :func:`~conceptlens.models.reference.save_reference_model`): the folder loads with
    :func:`load_demo_model`, with ``load_backbone(folder)`` and, without conceptlens, with
    ``AutoModel.from_pretrained(folder, trust_remote_code=True)``.

    Args:
        model: The demo model (a ``ConceptCLIPModel``), e.g. from :func:`load_demo_model`.
        processor: Its ``ConceptCLIPProcessor``.
        folder: Where to save (created if missing).

    Returns:
        The folder.
    """
    from conceptlens.models.reference import save_reference_model

    return save_reference_model(model, processor, folder)
