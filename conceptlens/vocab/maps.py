"""Per-concept patch maps of one image: where on the image each concept is seen.

A :class:`ConceptMaps` holds, for one image and a list of concepts, the local (patch-level)
score of every concept at every patch of the backbone's grid, from a single forward pass of
the image tower, and draws each map back onto the original image with
:func:`~conceptlens.models.images.resize_map_to_original` (undoing the squash resize and
accounting for the border of the model input that no whole patch covers).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from conceptlens._deprecation import warn_renamed
from conceptlens.models.images import resize_map_to_original
from conceptlens.vocab.vocabulary import match_concept

__all__ = ["ConceptMaps"]

_HTML_MAX_MAPS = 8
_HTML_THUMB = 160


@dataclass
class ConceptMaps:
    """Patch-level concept maps of one image.

    Attributes:
        image: The loaded image (PIL, RGB) at its original size.
        image_id: Its id (path or position), as in score tables.
        concept_ids: Ids of the mapped concepts, in map order.
        concept_names: Concept id -> preferred name (the same type as
            :attr:`ConceptScores.concept_names <conceptlens.vocab.ConceptScores.concept_names>`;
            a list aligned with :attr:`concept_ids` is accepted and converted).
        maps: ``(K, grid_h, grid_w)`` float32 patch scores; patch ``i`` of the backbone's
            row-major token order sits at ``(i // grid_w, i % grid_w)``. What a value means
            depends on :attr:`calibration` (see
            :meth:`conceptlens.vocab.ConceptScorer.patch_scores_tensor`): a cosine for
            ``"cosine"``, the local logit ``concept_logit_scale * cos + concept_logit_bias``
            for ``"sigmoid"``, the log-odds against the reference prompt for
            ``"paired_softmax"``.
        scores: ``(K,)`` the image's concept scores under the scorer's full configuration
            (the numbers :meth:`~conceptlens.vocab.ConceptScorer.score` would give).
        covered_fraction: ``(rows, cols)`` fraction of the model input covered by patches.
        calibration: The scorer's calibration.
        config: The scorer's full configuration, for provenance.
    """

    image: Image.Image
    image_id: str
    concept_ids: list[str]
    concept_names: dict[str, str]
    maps: np.ndarray
    scores: np.ndarray
    covered_fraction: tuple[float, float] = (1.0, 1.0)
    calibration: str = "cosine"
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.maps.ndim != 3 or self.maps.shape[0] != len(self.concept_ids):
            raise ValueError(
                f"maps must be (K, grid_h, grid_w) with K = {len(self.concept_ids)} concepts, "
                f"got shape {self.maps.shape}"
            )
        if not isinstance(self.concept_names, Mapping):
            names = list(self.concept_names)
            if len(names) != len(self.concept_ids):
                raise ValueError("concept_names must align with concept_ids")
            self.concept_names = dict(zip(self.concept_ids, names, strict=True))
        self.concept_names = {c: str(self.concept_names.get(c, c)) for c in self.concept_ids}
        if len(self.scores) != len(self.concept_ids):
            raise ValueError("scores must align with concept_ids")

    @property
    def names(self) -> list[str]:
        """Deprecated: preferred names as a list aligned with :attr:`concept_ids`; use
        :attr:`concept_names` (a dict, as in :class:`~conceptlens.vocab.ConceptScores`)."""
        warn_renamed("ConceptMaps.names", "ConceptMaps.concept_names (id -> name)")
        return [self.concept_names[c] for c in self.concept_ids]

    @property
    def grid(self) -> tuple[int, int]:
        """``(grid_h, grid_w)`` of the patch maps."""
        return int(self.maps.shape[1]), int(self.maps.shape[2])

    @property
    def original_size(self) -> tuple[int, int]:
        """``(width, height)`` of :attr:`image`."""
        return self.image.size

    def __len__(self) -> int:
        return len(self.concept_ids)

    def index(self, concept: str) -> int:
        """Position of a concept given by id or preferred name (case-insensitive; the rule of
        :meth:`~conceptlens.vocab.ConceptVocabulary.resolve`).

        Raises:
            UnknownConceptError: The concept is not among the mapped ones (a ``KeyError``;
                the message names it and suggests close matches).
        """
        return match_concept(concept, list(self.concept_ids), self.concept_names,
                             where="these concept maps")

    def map(self, concept: str) -> np.ndarray:
        """``(grid_h, grid_w)`` patch map of one concept (by id or name)."""
        return self.maps[self.index(concept)]

    def upsampled(self, concept: str) -> np.ndarray:
        """The concept's map drawn onto the original image grid.

        Returns:
            ``(height, width)`` float32 array aligned with :attr:`image` pixels.
        """
        return resize_map_to_original(
            self.map(concept), self.original_size, covered_fraction=self.covered_fraction
        )

    def to_dict(self) -> dict[str, np.ndarray]:
        """Concept id -> ``(grid_h, grid_w)`` map."""
        return {cid: self.maps[i] for i, cid in enumerate(self.concept_ids)}

    def top(self, k: int = 5) -> list[str]:
        """Ids of the ``k`` concepts with the highest scores, best first."""
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [self.concept_ids[i] for i in order]

    def __repr__(self) -> str:
        return (
            f"ConceptMaps(image_id={self.image_id!r}, {len(self)} concepts, grid={self.grid}, "
            f"original_size={self.original_size}, calibration={self.calibration!r})"
        )

    def _repr_html_(self) -> str:
        shown = self.top(min(len(self), _HTML_MAX_MAPS))
        cells = []
        for cid in shown:
            i = self.concept_ids.index(cid)
            label = html.escape(f"{self.concept_names[cid]} ({cid}): {self.scores[i]:.3f}")
            cells.append(
                "<figure style='display:inline-block;margin:4px;text-align:center'>"
                f"<img src='data:image/png;base64,{self._overlay_png(cid)}' "
                f"width='{_HTML_THUMB}'/><figcaption style='font-size:small'>{label}</figcaption>"
                "</figure>"
            )
        more = len(self) - len(shown)
        tail = f"<p>{more} more concept(s) not shown.</p>" if more > 0 else ""
        title = html.escape(f"Concept maps of {self.image_id} ({len(self)} concepts, grid {self.grid})")
        return f"<div><p><b>{title}</b></p>{''.join(cells)}{tail}</div>"

    def _overlay_png(self, concept: str) -> str:
        from matplotlib import colormaps

        thumb = self.image.copy()
        thumb.thumbnail((_HTML_THUMB, _HTML_THUMB))
        values = resize_map_to_original(
            self.map(concept), thumb.size, covered_fraction=self.covered_fraction
        )
        low, high = float(np.min(self.maps)), float(np.max(self.maps))
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        heat = (colormaps["inferno"](scaled)[..., :3] * 255).astype(np.uint8)
        blended = Image.blend(thumb.convert("RGB"), Image.fromarray(heat), alpha=0.5)
        buffer = io.BytesIO()
        blended.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

