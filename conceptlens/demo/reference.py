"""The demo model's reference set for the out-of-distribution check.

The file ``weights/conceptlens_reference.npz`` holds the global embeddings (float16) of
:data:`REFERENCE_SIZE` images drawn from the demo generator the way the training data were
drawn (default probabilities), with seed :data:`REFERENCE_SEED`, which neither training
(seed 0) nor ``conceptlens demo`` (seed 2026) uses. ``ConceptScorer`` finds it through
:func:`conceptlens.vocab.reference.default_reference` whenever it scores with
``load_backbone("demo")``.

Why a shipped file rather than computing it at first use (measured on a 2-core CPU): the
file is 118 KB of package data and loading and refitting it takes 12 ms (0.36 s on the
first call of a process, which imports scikit-learn's covariance module); drawing and
encoding the same 1000 images takes about 10 s per process (2 s to generate, the rest to
load the model and encode). The two references give the same threshold to 1e-4.

Rebuild (after retraining the demo model): ``python -m conceptlens.demo.reference``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["REFERENCE_SEED", "REFERENCE_SIZE", "build_demo_reference", "demo_reference_path"]

REFERENCE_SEED = 7919
REFERENCE_SIZE = 1000


def demo_reference_path() -> Path:
    """Where the demo model's reference ships (beside its weights)."""
    from conceptlens.demo.backbone import demo_weights_dir
    from conceptlens.vocab.reference import REFERENCE_FILE_NAME

    return demo_weights_dir() / REFERENCE_FILE_NAME


def build_demo_reference(
    n: int = REFERENCE_SIZE, seed: int = REFERENCE_SEED, *, path: str | Path | None = None
):
    """Draw the reference images, encode them with the demo model and fit the reference.

    Args:
        n: Number of reference images.
        seed: Generator seed.
        path: Where to save it (``.npz``); ``None`` saves nothing.

    Returns:
        The fitted :class:`~conceptlens.vocab.reference.EmbeddingReference`.
    """
    import torch
    from PIL import Image

    from conceptlens.demo.generator import generate
    from conceptlens.models import load_backbone
    from conceptlens.vocab.reference import EmbeddingReference

    backbone = load_backbone("demo", device="cpu", dtype="float32")
    images = generate(n, seed=seed, size=backbone.image_size[0], masks=False).images
    rows = []
    with torch.no_grad():
        for start in range(0, n, 100):
            pixels = backbone.preprocess([Image.fromarray(a) for a in images[start:start + 100]])
            rows.append(backbone.encode_images(pixels).global_embeds.float().cpu().numpy())
    reference = EmbeddingReference().fit(np.concatenate(rows))
    if path is not None:
        identity = backbone.identity
        reference.save(path, metadata={
            "model_id": identity.model_id, "weights_hash": identity.weights_hash,
            "source": f"conceptlens.demo.generate({n}, seed={seed}, size={backbone.image_size[0]})",
        })
    return reference


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m conceptlens.demo.reference [--out FILE] [--n N] [--seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="target .npz (default: beside the demo weights)")
    parser.add_argument("--n", type=int, default=REFERENCE_SIZE)
    parser.add_argument("--seed", type=int, default=REFERENCE_SEED)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else demo_reference_path()
    reference = build_demo_reference(args.n, args.seed, path=out)
    print(f"{reference!r} -> {out}")


if __name__ == "__main__":
    main()
