"""Tests of the synthetic dermoscopy generator."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import conceptlens
from conceptlens.demo import (
    CONCEPT_IDS,
    caption_words,
    concept_synonyms,
    generate,
    patch_masks,
    seven_point_score,
)


@pytest.fixture(scope="module")
def data():
    return generate(48, seed=7, size=64)


def test_shapes_and_dtypes(data):
    n, size = 48, 64
    assert data.images.shape == (n, size, size, 3) and data.images.dtype == np.uint8
    assert data.concepts.shape == (n, 8) and set(np.unique(data.concepts)) <= {0, 1}
    assert data.masks.shape == (n, 8, size, size) and data.masks.dtype == bool
    assert data.concept_ids == list(CONCEPT_IDS)
    assert len(data.captions) == n and len(data.mentions) == n
    frame = data.to_frame()
    assert list(frame.columns[:8]) == list(CONCEPT_IDS)
    assert frame["diagnosis"].tolist() == data.diagnoses.tolist()


def test_same_seed_same_data_other_seed_other_data(data):
    again = generate(48, seed=7, size=64)
    np.testing.assert_array_equal(again.images, data.images)
    np.testing.assert_array_equal(again.masks, data.masks)
    assert again.captions == data.captions
    other = generate(48, seed=8, size=64)
    assert not np.array_equal(other.images, data.images)


def test_scores_follow_the_seven_point_checklist(data):
    points = np.array([2, 2, 2, 1, 1, 1, 1])
    expected = data.concepts[:, :7] @ points
    np.testing.assert_array_equal(data.scores, expected)
    np.testing.assert_array_equal(data.diagnoses, (expected >= 3).astype(int))
    np.testing.assert_array_equal(seven_point_score(data.concepts), expected)
    with pytest.raises(ValueError, match="shape"):
        seven_point_score(np.zeros((3, 5)))


def test_masks_mark_exactly_the_pixels_a_concept_changes(data):
    for k, concept in enumerate(CONCEPT_IDS):
        without = data.concepts.copy()
        without[:, k] = 0
        redrawn = generate(48, seed=7, size=64, concepts=without)
        diff = np.any(redrawn.images != data.images, axis=-1)  # (n, H, W)
        mask = data.masks[:, k]
        assert not np.any(diff & ~mask), f"{concept}: pixels outside its mask changed"
        present = data.concepts[:, k] == 1
        assert present.sum() >= 5
        inside = diff[present][mask[present]]
        assert inside.mean() > 0.9, f"{concept}: only {inside.mean():.2f} of mask pixels differ"
        assert not mask[~present].any(), f"{concept}: absent concept has a mask"
        assert mask[present].sum(axis=(1, 2)).min() > 0, f"{concept}: present concept, empty mask"


def test_concepts_are_localised(data):
    area = data.masks.mean(axis=(2, 3))  # fraction of the image
    present = data.concepts == 1
    assert area[present].max() < 0.15  # streaks fan out along the border; the rest are smaller
    inner = [0, 1, 2, 4, 5, 6]
    assert area[:, inner][present[:, inner]].max() < 0.08
    # the criteria other than streaks sit inside the lesion, the ink marking near a corner
    size = data.images.shape[1]
    yy, xx = np.mgrid[:size, :size]
    corner_dist = np.minimum(np.minimum(xx, size - 1 - xx), np.minimum(yy, size - 1 - yy))
    ink = data.masks[:, 7][present[:, 7]]
    assert corner_dist[ink.any(0)].max() <= 20


def test_captions_name_exactly_the_present_concepts(data):
    for caption, spans, row in zip(data.captions, data.mentions, data.concepts, strict=True):
        named = sorted(k for k, _, _ in spans)
        assert named == list(np.flatnonzero(row))
        for k, start, end in spans:
            assert caption[start:end] in concept_synonyms(CONCEPT_IDS[k])
    assert len(set(data.captions)) > 0.8 * len(data.captions)
    words = set(caption_words())
    for caption in data.captions:
        assert set(re.findall(r"[a-z0-9]+", caption.lower())) <= words


def test_artifact_correlation_controls_the_ink_marking():
    tied = generate(300, seed=1, artifact_correlation=1.0, masks=False)
    np.testing.assert_array_equal(tied.concepts[:, 7], tied.diagnoses)
    anti = generate(300, seed=1, artifact_correlation=-1.0, masks=False)
    np.testing.assert_array_equal(anti.concepts[:, 7], 1 - anti.diagnoses)
    free = generate(1000, seed=1, artifact_correlation=0.0, masks=False)
    assert abs(np.corrcoef(free.concepts[:, 7], free.diagnoses)[0, 1]) < 0.1


def test_concept_probabilities():
    none = generate(50, seed=0, concept_prob=0.0, masks=False)
    assert none.concepts[:, :7].sum() == 0 and none.scores.sum() == 0
    only_veil = generate(50, seed=0, concept_prob=[0, 1, 0, 0, 0, 0, 0], masks=False)
    assert only_veil.concepts[:, 1].all() and only_veil.concepts[:, [0, 2, 3, 4, 5, 6]].sum() == 0


@pytest.mark.parametrize("size", [32, 128])
def test_any_image_size(size):
    d = generate(4, seed=0, size=size, concept_prob=1.0)
    assert d.images.shape == (4, size, size, 3)
    assert d.masks[:, :7].any(axis=(2, 3)).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be"),
        ({"n": 2, "size": 8}, "size must be"),
        ({"n": 2, "concept_prob": 1.5}, "concept_prob"),
        ({"n": 2, "concept_prob": float("nan")}, r"concept_prob must lie in \[0, 1\]"),
        ({"n": 2, "concept_prob": [0.3] * 8}, "scalar or 7 values"),
        ({"n": 2, "artifact_correlation": 2.0}, "artifact_correlation"),
        ({"n": 2, "concepts": np.zeros((2, 7))}, r"concepts must have shape \(2, 8\)"),
        ({"n": 2, "concepts": np.full((2, 8), 2)}, "only 0 and 1"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(**kwargs)


def test_unknown_concept_synonyms():
    with pytest.raises(KeyError, match="unknown demo concept"):
        concept_synonyms("derm7pt:nope")


def test_patch_masks_downsamples_to_the_grid():
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 0, 0] = True  # one pixel in the top-left patch
    masks[0, 4:8, 4:8] = True  # the whole bottom-right patch
    grid = patch_masks(masks, (2, 2))
    np.testing.assert_array_equal(grid[0], [[True, False], [False, True]])
    half = patch_masks(masks, (2, 2), min_fraction=0.5)
    np.testing.assert_array_equal(half[0], [[False, False], [False, True]])
    with pytest.raises(ValueError, match="finer"):
        patch_masks(masks, (16, 16))


def test_vocabulary_file_matches_the_generator():
    path = Path(conceptlens.__file__).parent / "vocab" / "data" / "demo.yaml"
    spec = yaml.safe_load(path.read_text())
    assert [c["id"] for c in spec["concepts"]] == list(CONCEPT_IDS)
    for entry in spec["concepts"]:
        assert (entry["name"], *entry["synonyms"]) == concept_synonyms(entry["id"])
    points = [c["attributes"]["points"] for c in spec["concepts"]]
    assert points == [2, 2, 2, 1, 1, 1, 1, 0]
