"""The demo model as a backbone plugin: ``load_backbone("demo")``.

``pyproject.toml`` declares :data:`DEMO_BACKBONE` in the ``conceptlens.backbones``
entry-point group, so :mod:`conceptlens.models` finds it without importing the demo package
(see :mod:`conceptlens.models.registry`). It loads the weights shipped in
:data:`~conceptlens.demo.weights_io.DEMO_WEIGHTS_DIR` with the package's own model code (no
remote code), records ``"conceptlens:demo"`` as the model id (also accepted as a name), and
exposes the folder as :attr:`~conceptlens.models.base.Backbone.weights_folder`, where the
model card and the out-of-distribution reference set live.
"""

from __future__ import annotations

from pathlib import Path

import torch

from conceptlens.demo.weights_io import DEMO_WEIGHTS_DIR
from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.models.errors import BackboneNotFoundError
from conceptlens.models.registry import BackboneSpec
from conceptlens.models.runtime import resolve_dtype

__all__ = ["DEMO_BACKBONE", "DEMO_MODEL_ID", "demo_weights_dir", "load_demo_backbone"]

DEMO_MODEL_ID = "conceptlens:demo"
"""The model id the demo backbone records in its identity (and so in every cache key)."""


def demo_weights_dir() -> Path:
    """Folder of the demo model shipped in the package (``conceptlens/demo/weights``)."""
    return DEMO_WEIGHTS_DIR


def load_demo_backbone(
    *,
    device: torch.device,
    dtype: str | torch.dtype | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    token: str | bool | None = None,
) -> ConceptCLIPBackbone:
    """Load the shipped demo model (the ``"demo"`` backbone's loader).

    Args:
        device: Where to run it.
        dtype: ``"auto"`` means float32 here: the model is small enough that bfloat16 saves
            nothing, and its shipped reference set and every number in the docs were made in
            float32. Any other value as in :func:`~conceptlens.models.runtime.resolve_dtype`.
        revision: Ignored (the weights ship with the package).
        trust_remote_code: Ignored (the package's own code is used).
        token: Ignored (nothing is downloaded).

    Raises:
        BackboneNotFoundError: The weights are missing from this installation.
    """
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        dtype = "float32"
    torch_dtype = resolve_dtype(dtype, device)
    folder = demo_weights_dir()
    if not (folder / "config.json").is_file():
        raise BackboneNotFoundError(
            f"the demo model's weights are missing from this installation (expected {folder}/"
            "config.json); reinstall conceptlens from a complete distribution, or rebuild them "
            "with the demo training script in conceptlens.demo"
        )
    return ConceptCLIPBackbone.from_pretrained(
        folder, device=device, dtype=torch_dtype, use_package_code=True, model_id=DEMO_MODEL_ID
    )


DEMO_BACKBONE = BackboneSpec(
    "demo",
    str(DEMO_WEIGHTS_DIR),
    "conceptclip",
    False,
    "tiny ConceptCLIP-architecture model trained on the synthetic demo data (offline)",
    loader=load_demo_backbone,
    aliases=(DEMO_MODEL_ID,),
)
"""The registration :mod:`conceptlens.models.registry` reads from the entry point."""
