"""Where the shipped demo model lives and how to load it without remote code."""

from __future__ import annotations

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
    from conceptlens.models.reference.modeling_conceptclip import ConceptCLIPModel
    from conceptlens.models.reference.processing_conceptclip import ConceptCLIPProcessor

    folder = DEMO_WEIGHTS_DIR if folder is None else Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"demo model file {folder / name} not found")
    model = ConceptCLIPModel.from_pretrained(folder, use_safetensors=True)
    model.eval()
    processor = ConceptCLIPProcessor.from_pretrained(folder)
    return model, processor
