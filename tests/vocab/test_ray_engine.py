"""engine="ray": Ray Data actors give the single-process numbers (local Ray, 2 workers)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from conceptlens.vocab.cache import FeatureCache  # noqa: E402
from conceptlens.vocab.scorer import ConceptScorer  # noqa: E402
from conceptlens.vocab.textbank import clear_text_memo  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    from conceptlens.demo.generator import generate

    folder = tmp_path_factory.mktemp("demo")
    from PIL import Image

    world = generate(n=240, seed=7)
    for i, pixels in enumerate(world.images):
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def demo():
    from conceptlens.models import load_backbone
    from conceptlens.vocab import ConceptVocabulary

    return load_backbone("demo"), ConceptVocabulary.builtin("demo")


def test_ray_scores_equal_single_process_scores(local_ray, demo, demo_folder, tmp_path):
    backbone, vocabulary = demo
    local = ConceptScorer(backbone, vocabulary, progress=False).score(demo_folder)
    store = tmp_path / "store"
    scorer = ConceptScorer(backbone, vocabulary, progress=False, cache=FeatureCache(store))
    distributed = scorer.score(demo_folder, engine="ray", ray_workers=2)
    assert distributed.image_ids == local.image_ids and len(distributed) == 240
    np.testing.assert_allclose(distributed.to_numpy(), local.to_numpy(), rtol=0, atol=1e-6)
    assert distributed.warnings.equals(local.warnings)
    ray.shutdown()  # actors commit their shards when Ray shuts them down
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}})
    assert len(FeatureCache(store)) == 240


def test_ray_reports_bad_images_like_the_local_path(local_ray, demo, demo_folder, tmp_path):
    backbone, vocabulary = demo
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    inputs = [str(p) for p in sorted(demo_folder.glob("*.png"))[:5]] + [str(broken)]
    clear_text_memo()
    local = ConceptScorer(backbone, vocabulary, progress=False).score(inputs)
    distributed = ConceptScorer(backbone, vocabulary, progress=False).score(inputs, engine="ray")
    assert distributed.image_ids == local.image_ids
    assert distributed.errors.equals(local.errors)
    np.testing.assert_allclose(distributed.to_numpy(), local.to_numpy(), rtol=0, atol=1e-6)
