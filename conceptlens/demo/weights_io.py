"""Where the shipped demo model lives and how to load it without remote code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DEMO_WEIGHTS_DIR", "load_demo_model"]

DEMO_WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped demo model (config, safetensors weights, processor, tokenizer, card)."""


def load_demo_model(folder: str | Path | None = None) -> tuple[Any, Any]:
    """Load the demo model and its processor with the package's own classes (offline).

    Args:
        folder: A folder written by ``python -m conceptlens.demo.train``; the shipped
            :data:`DEMO_WEIGHTS_DIR` when ``None``.

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
