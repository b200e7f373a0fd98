"""Synthetic dermoscopy images with 7-point-checklist concepts, masks and captions.

Every image shows a pigmented lesion on skin. Each of the seven criteria of the 7-point
checklist (Argenziano et al. 1998) is an independently controllable, *localised* structure
drawn inside the lesion (streaks: at its border), and an optional artifact (an ink marking)
is drawn on the skin near a corner. Nuisance factors that are not concepts vary freely:
skin tone, lesion size, shape and position, hair, illumination, blur and noise.

Random numbers come from one independent stream per purpose (presence, nuisance, each
concept's geometry, captions), all drawn whether or not a concept is present. Redrawing
the same ``seed`` with other ``concepts`` therefore changes only the pixels of the concepts
that changed: this is what makes the masks checkable (see :func:`generate`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "ARTIFACT_ID",
    "CONCEPT_IDS",
    "CRITERIA_IDS",
    "CRITERIA_POINTS",
    "SyntheticDermoscopy",
    "caption_words",
    "concept_synonyms",
    "generate",
    "patch_masks",
    "seven_point_score",
]

CRITERIA_IDS: tuple[str, ...] = (
    "derm7pt:atypical_pigment_network",
    "derm7pt:blue_whitish_veil",
    "derm7pt:atypical_vascular_pattern",
    "derm7pt:irregular_streaks",
    "derm7pt:irregular_pigmentation",
    "derm7pt:irregular_dots_globules",
    "derm7pt:regression_structures",
)
"""The seven criteria of the 7-point checklist: three major, then four minor."""

ARTIFACT_ID = "artifact:ink_marking"
"""Id of the artifact concept (not a criterion)."""

CONCEPT_IDS: tuple[str, ...] = (*CRITERIA_IDS, ARTIFACT_ID)
"""Column order of every concept matrix of this module: the seven criteria, then the artifact."""

CRITERIA_POINTS: np.ndarray = np.array([2, 2, 2, 1, 1, 1, 1], dtype=np.int64)
"""7-point checklist points per criterion (major criteria 2, minor criteria 1)."""

MELANOMA_THRESHOLD = 3
"""A 7-point score at or above this is labelled melanoma (diagnosis 1)."""

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "derm7pt:atypical_pigment_network": (
        "atypical pigment network",
        "irregular pigment network",
        "atypical network",
        "broadened pigment network",
    ),
    "derm7pt:blue_whitish_veil": (
        "blue-whitish veil",
        "blue-white veil",
        "bluish-white veil",
        "blue whitish veil",
    ),
    "derm7pt:atypical_vascular_pattern": (
        "atypical vascular pattern",
        "atypical vessels",
        "irregular vascular structures",
        "atypical vascular structures",
    ),
    "derm7pt:irregular_streaks": (
        "irregular streaks",
        "radial streaming",
        "pseudopods",
        "irregular peripheral streaks",
    ),
    "derm7pt:irregular_pigmentation": (
        "irregular pigmentation",
        "irregular blotch",
        "irregular dark blotches",
        "asymmetric pigmentation",
    ),
    "derm7pt:irregular_dots_globules": (
        "irregular dots and globules",
        "irregular globules",
        "irregular dots",
        "irregularly distributed dots and globules",
    ),
    "derm7pt:regression_structures": (
        "regression structures",
        "regression areas",
        "scar-like depigmentation",
        "white scar-like regression",
    ),
    "artifact:ink_marking": (
        "ink marking",
        "ink mark",
        "skin marker ink",
        "purple pen marking",
    ),
}

_TEMPLATES: tuple[str, ...] = (
    "This is dermatoscopy of {}.",
    "Dermoscopy shows {}.",
    "Dermoscopic image of a pigmented lesion with {}.",
    "A pigmented skin lesion showing {}.",
    "Dermatoscopy reveals {}.",
    "Dermoscopy of a melanocytic lesion with {}.",
    "Close-up dermoscopic view with {}.",
)

# Captions of images without concepts say nothing about structures (they are true of every
# image), so the zero-shot reference prompt "This is dermatoscopy." stays neutral.
_EMPTY_CAPTIONS: tuple[str, ...] = (
    "This is dermatoscopy.",
    "Dermoscopy of a pigmented lesion.",
    "Dermoscopic image of a pigmented skin lesion.",
    "A pigmented skin lesion on dermoscopy.",
    "Dermatoscopy of a melanocytic lesion.",
)

# Layer colours (RGB, 0-255). Dark concepts differ in texture as much as in hue.
_COLOURS: dict[str, tuple[float, float, float]] = {
    "derm7pt:atypical_pigment_network": (62.0, 34.0, 18.0),
    "derm7pt:blue_whitish_veil": (150.0, 172.0, 212.0),
    "derm7pt:atypical_vascular_pattern": (222.0, 24.0, 40.0),
    "derm7pt:irregular_streaks": (82.0, 36.0, 12.0),
    "derm7pt:irregular_pigmentation": (18.0, 12.0, 10.0),
    "derm7pt:irregular_dots_globules": (44.0, 34.0, 78.0),
    "derm7pt:regression_structures": (238.0, 232.0, 226.0),
    "artifact:ink_marking": (120.0, 40.0, 160.0),
}
_PEPPER_COLOUR = (105.0, 110.0, 128.0)
_HAIR_COLOUR = (28.0, 26.0, 26.0)

# Paint order, bottom to top (indices into CONCEPT_IDS); hair is painted last of all.
_PAINT_ORDER: tuple[int, ...] = (6, 1, 4, 0, 5, 2, 3, 7)
# Concepts that sit inside the lesion on a ring of slots (all criteria except streaks).
_INNER: tuple[int, ...] = (0, 1, 2, 4, 5, 6)
_ALPHA_FLOOR = 0.04  # alpha below this is set to exactly 0, so masks are exact
_CHUNK = 256


def concept_synonyms(concept_id: str) -> tuple[str, ...]:
    """Wordings the captions use for a concept; the first is its preferred name.

    Args:
        concept_id: One of :data:`CONCEPT_IDS`.

    Raises:
        KeyError: If ``concept_id`` is not a demo concept.
    """
    try:
        return _SYNONYMS[concept_id]
    except KeyError:
        raise KeyError(
            f"unknown demo concept {concept_id!r}; expected one of {list(CONCEPT_IDS)}"
        ) from None


def caption_words() -> list[str]:
    """Every word the captions (and the zero-shot prompts) can contain, lower case, sorted.

    Words are split the way a BERT pre-tokenizer splits them (on spaces and punctuation),
    so a tokenizer holding these words encodes every caption without sub-word pieces.
    """
    texts = [*_TEMPLATES, *_EMPTY_CAPTIONS, "This is dermatoscopy of {}.", "and"]
    texts += [w for options in _SYNONYMS.values() for w in options]
    words = {w for text in texts for w in re.findall(r"[a-z0-9]+", text.lower())}
    return sorted(words)


def seven_point_score(concepts: np.ndarray) -> np.ndarray:
    """7-point checklist score of concept vectors.

    Args:
        concepts: ``(n, 7)`` or ``(n, 8)`` 0/1 matrix in :data:`CONCEPT_IDS` order (an
            artifact column is ignored).

    Returns:
        ``(n,)`` int scores in ``0..10``.
    """
    concepts = np.asarray(concepts)
    if concepts.ndim != 2 or concepts.shape[1] not in (7, 8):
        raise ValueError(f"concepts must have shape (n, 7) or (n, 8), got {concepts.shape}")
    return (concepts[:, :7].astype(np.int64) * CRITERIA_POINTS).sum(axis=1)


@dataclass
class SyntheticDermoscopy:
    """A generated data set; array row ``i`` is image ``i`` everywhere.

    Attributes:
        images: ``(n, size, size, 3)`` uint8 RGB images.
        concepts: ``(n, 8)`` int 0/1 matrix, columns :attr:`concept_ids`.
        concept_ids: Column ids: the seven criteria, then ``artifact:ink_marking``.
        masks: ``(n, 8, size, size)`` bool, where each concept changed the image (all
            False for absent concepts); ``None`` when generated with ``masks=False``.
        scores: ``(n,)`` 7-point checklist scores (2 points per major, 1 per minor criterion).
        diagnoses: ``(n,)`` 1 = melanoma (score >= 3), 0 = benign.
        captions: ``n`` captions naming the present concepts in varied wordings.
        mentions: Per caption, the ``(concept_index, start, end)`` character spans of its
            concept mentions.
        seed: The seed the set was drawn with.
    """

    images: np.ndarray
    concepts: np.ndarray
    concept_ids: list[str]
    masks: np.ndarray | None
    scores: np.ndarray
    diagnoses: np.ndarray
    captions: list[str]
    mentions: list[list[tuple[int, int, int]]] = field(default_factory=list)
    seed: int | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """One row per image: concept columns, ``score``, ``diagnosis`` and ``caption``."""
        frame = pd.DataFrame(self.concepts, columns=self.concept_ids)
        frame["score"] = self.scores
        frame["diagnosis"] = self.diagnoses
        frame["caption"] = self.captions
        frame.index = pd.Index([f"synthetic_{i:05d}" for i in range(len(self))], name="image")
        return frame

    def __repr__(self) -> str:
        n, size = len(self), self.images.shape[1]
        return (
            f"SyntheticDermoscopy(n={n}, size={size}, seed={self.seed}, "
            f"melanoma={int(self.diagnoses.sum())}/{n})"
        )


def patch_masks(masks: np.ndarray, grid_size: tuple[int, int], min_fraction: float = 0.0) -> np.ndarray:
    """Downsample pixel masks to a patch grid.

    A patch counts as inside the mask when more than ``min_fraction`` of its pixels are.
    Border pixels not covered by a whole patch are dropped (as a ViT does).

    Args:
        masks: ``(..., H, W)`` bool masks.
        grid_size: ``(rows, cols)`` of the patch grid.
        min_fraction: Fraction of a patch's pixels that must be inside.

    Returns:
        ``(..., rows, cols)`` bool.
    """
    rows, cols = grid_size
    h, w = masks.shape[-2:]
    ph, pw = h // rows, w // cols
    if ph == 0 or pw == 0:
        raise ValueError(f"grid_size {grid_size} is finer than the masks' {h}x{w} pixels")
    cropped = masks[..., : rows * ph, : cols * pw].astype(np.float32)
    blocks = cropped.reshape(*masks.shape[:-2], rows, ph, cols, pw)
    return blocks.mean(axis=(-3, -1)) > min_fraction


def _concept_prob_vector(concept_prob: float | Sequence[float]) -> np.ndarray:
    given = np.asarray(concept_prob, dtype=np.float64)
    if given.ndim > 1 or given.size not in (1, 7):
        raise ValueError(
            f"concept_prob must be a scalar or 7 values (one per criterion), got shape {given.shape}"
        )
    probs = np.broadcast_to(given.reshape(-1), (7,)).copy()
    if not np.all((probs >= 0) & (probs <= 1)):  # also rejects NaN
        raise ValueError(f"concept_prob must lie in [0, 1], got {concept_prob!r}")
    return probs


def _sample_presence(
    rng: np.random.Generator,
    n: int,
    probs: np.ndarray,
    artifact_prob: float,
    artifact_correlation: float,
) -> np.ndarray:
    criteria = (rng.random((n, 7)) < probs).astype(np.int64)
    diagnosis = (seven_point_score(criteria) >= MELANOMA_THRESHOLD).astype(np.int64)
    independent = (rng.random(n) < artifact_prob).astype(np.int64)
    tied = rng.random(n) < abs(artifact_correlation)
    follows = diagnosis if artifact_correlation >= 0 else 1 - diagnosis
    artifact = np.where(tied, follows, independent)
    return np.concatenate([criteria, artifact[:, None]], axis=1)


def _sample_scene(rng: np.random.Generator, n: int, size: int) -> dict[str, np.ndarray]:
    """Every random number of the drawing, concept geometry included, in a fixed order."""
    s = size / 64.0
    p: dict[str, np.ndarray] = {}
    # skin and lesion
    tone = rng.random(n)
    light, dark = np.array([238.0, 204.0, 182.0]), np.array([168.0, 118.0, 92.0])
    p["skin"] = light + tone[:, None] * (dark - light) + rng.normal(0, 5, (n, 3))
    lesion_dark = rng.uniform(0.5, 0.8, n)[:, None]
    brown = np.array([105.0, 62.0, 38.0])
    p["lesion"] = p["skin"] * (1 - lesion_dark) + brown * lesion_dark + rng.normal(0, 6, (n, 3))
    p["radius"] = rng.uniform(19.0, 25.0, n) * s
    p["centre"] = size / 2 + rng.uniform(-4.0, 4.0, (n, 2)) * s
    p["shape_amp"] = rng.uniform(0.03, 0.12, (n, 2))
    p["shape_phase"] = rng.uniform(0, 2 * np.pi, (n, 2))
    p["lesion_mottle_phase"] = rng.uniform(0, 2 * np.pi, (n, 2))
    # concept slots inside the lesion (a ring of six) and per-concept geometry
    p["slot_offset"] = rng.uniform(0, 2 * np.pi, n)
    p["slot_perm"] = np.argsort(rng.random((n, 6)), axis=1)
    p["slot_radius"] = rng.uniform(0.5, 0.6, (n, 6))
    p["blob_radius"] = rng.uniform(0.28, 0.33, (n, 8))
    p["blob_phase"] = rng.uniform(0, 2 * np.pi, (n, 8))
    p["blob_amp"] = rng.uniform(0.08, 0.2, (n, 8))
    p["rotation"] = rng.uniform(0, np.pi, (n, 8))
    p["texture_phase"] = rng.uniform(0, 2 * np.pi, (n, 8, 2))
    p["colour_jitter"] = rng.normal(0, 8, (n, 8, 3))
    p["streak_angle"] = rng.uniform(0, 2 * np.pi, n)
    p["ink_corner"] = rng.integers(0, 4, n)
    p["ink_offset"] = rng.uniform(5.0, 10.0, (n, 2)) * s
    p["ink_angle"] = rng.uniform(0, np.pi, n)
    # nuisance
    p["hair_count"] = rng.integers(0, 4, n) * (rng.random(n) < 0.5)
    p["hair_point"] = rng.uniform(0, size, (n, 3, 2))
    p["hair_angle"] = rng.uniform(0, np.pi, (n, 3))
    p["hair_curve"] = rng.uniform(-0.02, 0.02, (n, 3)) / s
    p["light_gain"] = rng.uniform(0.85, 1.1, n)
    p["light_grad"] = rng.uniform(-0.12, 0.12, (n, 2))
    p["vignette"] = rng.uniform(0.0, 0.35, n)
    p["blur"] = rng.uniform(0.0, 0.22, n) * (rng.random(n) < 0.6)
    p["noise_sd"] = rng.uniform(1.0, 6.0, n)
    return p


def _blur(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Separable 3-tap blur ``[a, 1-2a, a]`` with a per-image weight ``a``; (m, H, W[, C])."""
    a = a.reshape((-1,) + (1,) * (x.ndim - 1))
    for axis in (1, 2):
        prev = np.concatenate([np.take(x, [0], axis=axis), np.delete(x, -1, axis=axis)], axis=axis)
        nxt = np.concatenate([np.delete(x, 0, axis=axis), np.take(x, [-1], axis=axis)], axis=axis)
        x = (1 - 2 * a) * x + a * (prev + nxt)
    return x


def _line_distance(u: np.ndarray, period: float) -> np.ndarray:
    """Distance of coordinate ``u`` to the nearest multiple of ``period``."""
    return np.abs((u / period + 0.5) % 1.0 - 0.5) * period


def _inner_layer(
    k: int,
    j: int,
    p: dict[str, np.ndarray],
    slot_angle: np.ndarray,
    pepper: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Alpha ``(r, S, S)`` (and per-pixel colour, or None) of inner concept ``k`` in slot ``j``."""
    r_count = slot_angle.shape[0]
    s = size / 64.0
    f32 = np.float32
    grid = np.arange(size, dtype=f32) + 0.5
    yy, xx = grid[None, :, None], grid[None, None, :]

    def col(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=f32).reshape(r_count, 1, 1)

    rgb = None
    r_slot = p["slot_radius"][:, j] * p["radius"]
    px = col(p["centre"][:, 0] + r_slot * np.cos(slot_angle[:, j]))
    py = col(p["centre"][:, 1] + r_slot * np.sin(slot_angle[:, j]))
    ox, oy = xx - px, yy - py
    r = np.sqrt(ox**2 + oy**2)
    a = np.arctan2(oy, ox)
    blob_edge = col(p["blob_radius"][:, k] * p["radius"]) * (
        1 + col(p["blob_amp"][:, k]) * np.sin(3 * a + col(p["blob_phase"][:, k]))
    )
    region = np.clip((blob_edge - r) / (1.0 * s) + 0.5, 0, 1)
    rot = col(p["rotation"][:, k])
    u = ox * np.cos(rot) + oy * np.sin(rot)
    v = -ox * np.sin(rot) + oy * np.cos(rot)
    t0, t1 = col(p["texture_phase"][:, k, 0]), col(p["texture_phase"][:, k, 1])
    if k == 0:  # atypical pigment network: thick, irregular dark-brown mesh
        uw = u + 0.7 * s * np.sin(v * 0.9 / s + t0)
        vw = v + 0.7 * s * np.sin(u * 0.8 / s + t1)
        d = np.minimum(_line_distance(uw, 4.0 * s), _line_distance(vw, 4.0 * s))
        pattern = np.clip(1.3 - d / (0.85 * s), 0, 1)
        alpha = region * pattern * 0.95
    elif k == 1:  # blue-whitish veil: structureless, diffuse blue-white area
        alpha = region * (0.85 + 0.1 * np.sin(u * 0.5 / s + t0))
    elif k == 2:  # atypical vascular pattern: red serpentine vessels
        uw = u + 1.3 * s * np.sin(v * 0.75 / s + t0)
        pattern = np.clip(1.3 - _line_distance(uw, 4.5 * s) / (0.95 * s), 0, 1)
        alpha = region * pattern
    elif k == 4:  # irregular pigmentation: a structureless black blotch
        alpha = region * 0.95
    elif k == 5:  # irregular dots/globules: a cluster of round dark dots
        du = _line_distance(u + 0.6 * s * np.sin(v * 0.5 / s + t0), 4.2 * s)
        dv = _line_distance(v + 0.6 * s * np.sin(u * 0.5 / s + t1), 4.2 * s)
        pattern = np.clip((1.6 * s - np.sqrt(du**2 + dv**2)) / (0.5 * s), 0, 1)
        alpha = region * pattern
    else:  # regression structures: white scar-like area with grey-blue peppering
        alpha = region * 0.9
        pep = (pepper > 0.78).astype(f32)[..., None]
        white = np.asarray(_COLOURS[CONCEPT_IDS[k]], dtype=f32)
        rgb = (
            white * (1 - pep) + np.asarray(_PEPPER_COLOUR, dtype=f32) * pep
            + p["colour_jitter"][:, k].astype(f32)[:, None, None, :]
        )
    return alpha, rgb


def _draw_chunk(
    p: dict[str, np.ndarray],
    present: np.ndarray,
    pepper: np.ndarray,
    noise: np.ndarray,
    size: int,
    want_masks: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    m = present.shape[0]
    s = size / 64.0
    f32 = np.float32
    grid = np.arange(size, dtype=f32) + 0.5
    yy, xx = grid[None, :, None], grid[None, None, :]

    def col(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=f32).reshape(m, 1, 1)

    cx, cy = col(p["centre"][:, 0]), col(p["centre"][:, 1])
    radius = col(p["radius"])
    dx, dy = xx - cx, yy - cy
    rho = np.sqrt(dx**2 + dy**2)
    ang = np.arctan2(dy, dx)
    amp, ph = p["shape_amp"], p["shape_phase"]
    edge = radius * (
        1
        + col(amp[:, 0]) * np.sin(2 * ang + col(ph[:, 0]))
        + col(amp[:, 1]) * np.sin(3 * ang + col(ph[:, 1]))
    )
    lesion_alpha = np.clip((edge - rho) / (1.5 * s) + 0.5, 0, 1)
    mp = p["lesion_mottle_phase"]
    mottle = 1 + 0.08 * np.sin(xx * 0.35 / s + col(mp[:, 0])) * np.sin(yy * 0.3 / s + col(mp[:, 1]))
    lesion_rgb = p["lesion"].astype(f32)[:, None, None, :] * mottle[..., None]
    skin_rgb = p["skin"].astype(f32)[:, None, None, :]
    img = skin_rgb * (1 - lesion_alpha[..., None]) + lesion_rgb * lesion_alpha[..., None]
    img = _blur(img, p["blur"].astype(f32))

    # concept layers: alpha (m, S, S) and colour (m, S, S, 3) or (m, 1, 1, 3)
    alphas: dict[int, np.ndarray] = {}
    colours: dict[int, np.ndarray] = {}
    slot_angle = p["slot_offset"][:, None] + 2 * np.pi * p["slot_perm"] / 6.0
    for j, k in enumerate(_INNER):
        rows = np.flatnonzero(present[:, k])  # absent concepts leave no trace: skip their pixels
        alphas[k] = np.zeros((m, size, size), dtype=f32)
        if rows.size == 0:
            continue
        part = {key: value[rows] for key, value in p.items()}
        alpha, rgb = _inner_layer(k, j, part, slot_angle[rows], pepper[rows], size)
        alphas[k][rows] = alpha
        if rgb is not None:
            colours[k] = np.zeros((m, size, size, 3), dtype=f32)
            colours[k][rows] = rgb
    # irregular streaks: radial lines across a sector of the lesion border
    da = (ang - col(p["streak_angle"]) + np.pi) % (2 * np.pi) - np.pi
    sector = np.clip((0.75 - np.abs(da)) / 0.08, 0, 1)
    radial = np.clip((rho - 0.78 * radius) / (1.0 * s), 0, 1) * np.clip(
        (1.42 * radius - rho) / (1.5 * s), 0, 1
    )
    arc = _line_distance(da, 5.0 * s / radius) * rho
    alphas[3] = sector * radial * np.clip(1.3 - arc / (1.4 * s), 0, 1)
    # ink marking: a purple stroke near one corner of the image
    corner = p["ink_corner"]
    ix = np.where(corner % 2 == 0, p["ink_offset"][:, 0], size - p["ink_offset"][:, 0])
    iy = np.where(corner < 2, p["ink_offset"][:, 1], size - p["ink_offset"][:, 1])
    ox, oy = xx - col(ix), yy - col(iy)
    ia = col(p["ink_angle"])
    along = np.clip(ox * np.cos(ia) + oy * np.sin(ia), -6.0 * s, 6.0 * s)
    ex, ey = ox - along * np.cos(ia), oy - along * np.sin(ia)
    alphas[7] = np.clip((2.0 * s - np.sqrt(ex**2 + ey**2)) / (0.6 * s), 0, 1) * 0.95

    # hair: thin dark curved lines across the image
    hair = np.zeros((m, size, size), dtype=f32)
    for h in range(3):
        on = col(p["hair_count"] > h)
        hx, hy = col(p["hair_point"][:, h, 0]), col(p["hair_point"][:, h, 1])
        ha = col(p["hair_angle"][:, h])
        ox, oy = xx - hx, yy - hy
        t = ox * np.cos(ha) + oy * np.sin(ha)
        normal = -ox * np.sin(ha) + oy * np.cos(ha) - col(p["hair_curve"][:, h]) * t**2
        hair = np.maximum(hair, on * np.clip((0.45 * s - np.abs(normal)) / (0.4 * s) + 0.5, 0, 1))

    blur = p["blur"].astype(f32)
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    for k in _PAINT_ORDER:
        alpha = _blur(alphas[k], blur) * col(present[:, k])
        alpha = np.where(alpha < _ALPHA_FLOOR, f32(0), alpha)
        rgb = colours.get(k)
        if rgb is None:
            rgb = (np.asarray(_COLOURS[CONCEPT_IDS[k]], dtype=f32) + p["colour_jitter"][:, k].astype(f32))[
                :, None, None, :
            ]
        layers.append((alpha, rgb))
    hair = np.where(hair < _ALPHA_FLOOR, f32(0), hair)
    layers.append((hair, np.asarray(_HAIR_COLOUR, dtype=f32)))
    for alpha, rgb in layers:
        img = img * (1 - alpha[..., None]) + rgb * alpha[..., None]

    masks = None
    if want_masks:
        masks = np.zeros((m, 8, size, size), dtype=bool)
        visible = np.ones((m, size, size), dtype=f32)
        for idx in range(len(layers) - 1, -1, -1):
            alpha = layers[idx][0]
            if idx < len(_PAINT_ORDER):
                masks[:, _PAINT_ORDER[idx]] = (alpha * visible) > 0
            visible = visible * (1 - alpha)

    # illumination (multiplicative) and sensor noise
    gx, gy = p["light_grad"][:, 0], p["light_grad"][:, 1]
    centred_x, centred_y = (xx / size - 0.5), (yy / size - 0.5)
    light = col(p["light_gain"]) * (
        1 + col(gx) * centred_x + col(gy) * centred_y
        - col(p["vignette"]) * (centred_x**2 + centred_y**2)
    )
    img = img * light[..., None] + noise * col(p["noise_sd"])[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), masks


def _caption(rng: np.random.Generator, present: np.ndarray) -> tuple[str, list[tuple[int, int, int]]]:
    idx = [int(k) for k in np.flatnonzero(present)]
    if not idx:
        return _EMPTY_CAPTIONS[int(rng.integers(len(_EMPTY_CAPTIONS)))], []
    idx = [idx[i] for i in rng.permutation(len(idx))]
    words = []
    for k in idx:
        options = _SYNONYMS[CONCEPT_IDS[k]]
        # the preferred name half of the time, otherwise a synonym
        choice = 0 if rng.random() < 0.5 else int(rng.integers(1, len(options)))
        words.append(options[choice])
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    head, tail = template.split("{}")
    text, spans = head, []
    for i, (k, word) in enumerate(zip(idx, words, strict=True)):
        if i > 0:
            text += " and " if i == len(idx) - 1 else ", "
        spans.append((k, len(text), len(text) + len(word)))
        text += word
    return text + tail, spans


def generate(
    n: int,
    seed: int = 0,
    size: int = 64,
    *,
    concept_prob: float | Sequence[float] = 0.3,
    artifact_prob: float = 0.3,
    artifact_correlation: float = 0.0,
    concepts: np.ndarray | None = None,
    masks: bool = True,
) -> SyntheticDermoscopy:
    """Draw ``n`` synthetic dermoscopy images with their concepts, masks and captions.

    Args:
        n: Number of images.
        seed: Seed of every random choice; the same arguments give the same data.
        size: Image side in pixels (square images); structures scale with it.
        concept_prob: Probability of each criterion (a scalar or 7 values, in
            :data:`CRITERIA_IDS` order); criteria are drawn independently.
        artifact_prob: Probability of the ink marking where it is not tied to the diagnosis.
        artifact_correlation: In ``[-1, 1]``: with probability ``|artifact_correlation|``
            an image carries the ink marking exactly when it is melanoma (or, when negative,
            exactly when it is benign); otherwise it carries it with ``artifact_prob``.
        concepts: Optional ``(n, 8)`` 0/1 matrix that replaces the drawn concepts. Everything
            else (lesion, nuisance, concept placement, noise) is drawn as without it, so
            ``generate(n, seed, concepts=c)`` redraws the images of ``generate(n, seed)``
            with only the concepts changed.
        masks: Also return the ``(n, 8, size, size)`` concept masks.

    Returns:
        :class:`SyntheticDermoscopy`.

    Raises:
        ValueError: For a negative ``n``, a ``size`` under 16, probabilities outside
            ``[0, 1]``, or a ``concepts`` matrix of the wrong shape or values.

    Example:
        >>> data = generate(8, seed=1, size=32)
        >>> data.images.shape, data.concepts.shape, data.masks.shape
        ((8, 32, 32, 3), (8, 8), (8, 8, 32, 32))
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    probs = _concept_prob_vector(concept_prob)
    if not 0 <= artifact_prob <= 1:
        raise ValueError(f"artifact_prob must lie in [0, 1], got {artifact_prob!r}")
    if not -1 <= artifact_correlation <= 1:
        raise ValueError(f"artifact_correlation must lie in [-1, 1], got {artifact_correlation!r}")
    n, size = int(n), int(size)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    present = _sample_presence(streams[0], n, probs, artifact_prob, artifact_correlation)
    if concepts is not None:
        given = np.asarray(concepts)
        if given.shape != (n, 8):
            raise ValueError(f"concepts must have shape ({n}, 8), got {given.shape}")
        if not np.isin(given, (0, 1)).all():
            raise ValueError("concepts must hold only 0 and 1")
        present = given.astype(np.int64)
    scene = _sample_scene(streams[1], n, size)

    images = np.empty((n, size, size, 3), dtype=np.uint8)
    all_masks = np.zeros((n, 8, size, size), dtype=bool) if masks else None
    pepper_rng, noise_rng = streams[2], streams[3]
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        m = stop - start
        pepper = pepper_rng.random((m, size, size), dtype=np.float32)
        noise = noise_rng.standard_normal((m, size, size, 3), dtype=np.float32)
        part = {key: value[start:stop] for key, value in scene.items()}
        chunk_images, chunk_masks = _draw_chunk(part, present[start:stop], pepper, noise, size, masks)
        images[start:stop] = chunk_images
        if all_masks is not None and chunk_masks is not None:
            all_masks[start:stop] = chunk_masks

    caption_rng = streams[4]
    captions, mentions = [], []
    for row in present:
        text, spans = _caption(caption_rng, row)
        captions.append(text)
        mentions.append(spans)
    scores = seven_point_score(present)
    return SyntheticDermoscopy(
        images=images,
        concepts=present,
        concept_ids=list(CONCEPT_IDS),
        masks=all_masks,
        scores=scores,
        diagnoses=(scores >= MELANOMA_THRESHOLD).astype(np.int64),
        captions=captions,
        mentions=mentions,
        seed=seed,
    )
