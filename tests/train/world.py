"""A second synthetic world (not dermoscopy): coloured shapes on a grid, 10 visible concepts
plus one invisible negative control, with exact masks."""

from __future__ import annotations

import numpy as np

from conceptlens.vocab import Concept, ConceptVocabulary

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 180, 60),
           "yellow": (230, 210, 40), "white": (245, 245, 245)}
SHAPES = ("square", "frame")
VISIBLE = [f"{c} {s}" for c in COLOURS for s in SHAPES]
CONTROL = "lucky charm"  # labelled at random, never drawn


def vocabulary() -> ConceptVocabulary:
    concepts = [Concept(f"shapes:{name.replace(' ', '_')}", name) for name in VISIBLE]
    concepts.append(Concept("shapes:lucky_charm", CONTROL, synonyms=("charm",)))
    return ConceptVocabulary(concepts, name="shapes")


def generate_shapes(n: int, seed: int, size: int = 32, prob: float = 0.3):
    rng = np.random.default_rng(seed)
    k = len(VISIBLE) + 1
    labels = (rng.random((n, k)) < prob).astype(np.int64)
    cell = size // 4
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, k, size, size), bool)
    for i in range(n):
        base = rng.integers(60, 120)
        img = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255)
        present = np.flatnonzero(labels[i, :-1])
        cells = rng.choice(16, size=len(present), replace=False)
        for j, c in zip(present, cells, strict=True):
            r0, c0 = (c // 4) * cell + 1, (c % 4) * cell + 1
            colour = COLOURS[VISIBLE[j].split()[0]]
            patch = np.zeros((cell - 2, cell - 2), bool)
            if VISIBLE[j].endswith("square"):
                patch[:] = True
            else:
                patch[[0, -1], :] = True
                patch[:, [0, -1]] = True
            ys, xs = np.nonzero(patch)
            img[r0 + ys, c0 + xs] = colour
            masks[i, j, r0 + ys, c0 + xs] = True
        images[i] = img.astype(np.uint8)
    return images, labels, masks
