"""Each image is loaded once: counted file opens and content hashes (issue 16).

The data path is source -> LoadedImage -> pixels -> ImageFeatures -> ConceptScores; every
entry point takes the most advanced form already computed, so ``explain_images`` on three
files opens each file once and hashes its pixels once, and ``score`` does the same.
"""

import builtins
import collections
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import conceptlens.vocab.cache as cache_module
from conceptlens.explain.report import explain_images
from conceptlens.vocab.scorer import ConceptScorer
from tests.explain._planted import vocabulary
from tests.helpers.backbones import tiny_conceptclip_backbone

SIZES = [(40, 30), (50, 36), (60, 42)]


@pytest.fixture(scope="module")
def backbone():
    return tiny_conceptclip_backbone()


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height) in enumerate(SIZES):
        path = tmp_path / f"lesion_{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def counted(files, monkeypatch):
    """Counts opens of the image files (``open``, ``io.open``, ``os.open``) and content
    hashes (every module's reference to ``image_content_hash``), per image."""
    opens: collections.Counter = collections.Counter()
    hashes: collections.Counter = collections.Counter()
    wanted = {os.path.realpath(p): Path(p).name for p in files}

    def counting(original):
        def opener(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) in wanted:
                opens[wanted[os.path.realpath(file)]] += 1
            return original(file, *args, **kwargs)

        return opener

    for owner, name in ((builtins, "open"), (io, "open"), (os, "open")):
        monkeypatch.setattr(owner, name, counting(getattr(owner, name)))
    original_hash = cache_module.image_content_hash

    def counting_hash(image, *args, **kwargs):
        hashes[image.size] += 1
        return original_hash(image, *args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "image_content_hash", None) is original_hash:
            monkeypatch.setattr(module, "image_content_hash", counting_hash)
    return opens, hashes


def _per_file(counter, keys):
    return [counter.get(key, 0) for key in keys]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_explain_images_opens_and_hashes_each_file_once(backbone, files, counted, tmp_path):
    opens, hashes = counted
    scorer = ConceptScorer(backbone, vocabulary(), progress=False, cache_dir=tmp_path / "store")
    report, errors = explain_images(scorer, files, method="integrated_gradients", n_steps=4, top_k=2)
    assert errors.empty and report is not None
    assert _per_file(opens, [Path(p).name for p in files]) == [1, 1, 1]
    assert _per_file(hashes, SIZES) == [1, 1, 1]
    assert sum(opens.values()) == 3 and sum(hashes.values()) == 3

    # a second report from the warm feature store: each file opened once, hashed never
    opens.clear()
    hashes.clear()
    explain_images(scorer, files, method="saliency", top_k=2)
    assert _per_file(opens, [Path(p).name for p in files]) == [1, 1, 1]
    assert sum(hashes.values()) == 0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_score_opens_and_hashes_each_file_once(backbone, files, counted, tmp_path):
    opens, hashes = counted
    scorer = ConceptScorer(backbone, vocabulary(), progress=False, cache_dir=tmp_path / "store")
    scores = scorer.score(files)
    assert len(scores) == 3
    assert _per_file(opens, [Path(p).name for p in files]) == [1, 1, 1]
    assert _per_file(hashes, SIZES) == [1, 1, 1]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_concept_maps_from_given_features_equal_the_maps_it_computes(backbone, files):
    from conceptlens.models.images import load_image

    scorer = ConceptScorer(backbone, vocabulary(), progress=False)
    loaded = load_image(files[0])
    computed = scorer.concept_maps(loaded)
    pixels = backbone.preprocess([loaded.image])
    given = scorer.concept_maps(loaded, features=backbone.encode_images(pixels))
    assert given.image is loaded.image and given.concept_ids == computed.concept_ids
    np.testing.assert_allclose(given.maps, computed.maps, atol=1e-4)
    np.testing.assert_allclose(given.scores, computed.scores, atol=1e-4)
    with pytest.raises(ValueError, match="patch tokens"):
        scorer.concept_maps(loaded, features=backbone.encode_images(pixels.repeat(2, 1, 1, 1)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_score_and_maps_take_loaded_images_without_opening_files(backbone, files, counted):
    from conceptlens.models.images import load_image

    opens, _ = counted
    loaded = [load_image(p) for p in files]
    opens.clear()
    scorer = ConceptScorer(backbone, vocabulary(), progress=False)
    scores = scorer.score(loaded)
    assert scores.image_ids == files
    np.testing.assert_allclose(scores.table.to_numpy(), scorer.score(files).table.to_numpy())
    opens.clear()
    maps = scorer.concept_maps(loaded[0])
    assert maps.image_id == files[0] and maps.image is loaded[0].image
    assert sum(opens.values()) == 0
