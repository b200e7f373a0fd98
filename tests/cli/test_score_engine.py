"""`conceptlens score --engine/--address` and the store beside it."""

import importlib.util

import pytest

from conceptlens.cli import main
from conceptlens.vocab import ConceptScores
from tests.helpers.fakes import make_image


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        make_image(i, size=(64, 64)).save(images / f"{i}.png")
    return images


def test_address_needs_the_ray_engine(folder, tmp_path, capsys):
    code = main(["score", str(folder), "--out", str(tmp_path / "s.parquet"), "--address", "x:1",
                 "--quiet"])
    assert code == 1 and "--engine ray" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_ray_engine_without_ray_says_how_to_install_it(folder, tmp_path, capsys):
    code = main(["score", str(folder), "--out", str(tmp_path / "s.parquet"), "--engine", "ray",
                 "--quiet"])
    assert code == 1 and "conceptlens[ray]" in capsys.readouterr().err


def test_second_run_with_a_store_equals_the_first(folder, tmp_path, capsys):
    args = ["score", str(folder), "--cache-dir", str(tmp_path / "store"), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.parquet")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.csv")]) == 0
    first, second = ConceptScores.load(tmp_path / "a.parquet"), ConceptScores.load(tmp_path / "b.csv")
    assert first.image_ids == second.image_ids
    assert abs(first.to_numpy() - second.to_numpy()).max() < 2e-3
    assert list((tmp_path / "store" / "text").glob("*.safetensors"))
    capsys.readouterr()
