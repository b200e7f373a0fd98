"""The demo model as a backbone plugin: found through its entry point, loaded offline."""

import subprocess
import sys
import warnings

import pytest
import torch

from conceptlens.demo import DEMO_WEIGHTS_DIR
from conceptlens.demo import backbone as demo_backbone
from conceptlens.errors import DeprecatedNameWarning
from conceptlens.models import (
    BackboneNotFoundError,
    factory,
    list_backbones,
    load_backbone,
)
from conceptlens.models.registry import BACKBONES
from conceptlens.vocab.reference import REFERENCE_FILE_NAME, default_reference


def test_the_entry_point_registers_the_demo_with_its_alias():
    assert "demo" in list_backbones(open_clip=False)
    spec = BACKBONES["demo"]
    assert spec is demo_backbone.DEMO_BACKBONE
    assert spec.family == "conceptclip" and not spec.remote_code
    assert BACKBONES.lookup("conceptlens:demo") is spec
    assert "conceptlens:demo" not in list_backbones(open_clip=False)


def test_listing_backbones_does_not_import_the_evaluation_or_the_generator():
    code = (
        "import sys\n"
        "from conceptlens.models import list_backbones\n"
        "assert 'demo' in list_backbones(open_clip=False)\n"
        "assert 'conceptlens.demo.backbone' in sys.modules\n"
        "heavy = [m for m in ('conceptlens.demo.evaluate', 'conceptlens.demo.generator',"
        " 'conceptlens.demo.train') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_weights_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_backbone, "demo_weights_dir", lambda: tmp_path / "weights")
    with pytest.raises(BackboneNotFoundError, match="demo model's weights are missing"):
        load_backbone("demo")


def test_demo_uses_the_package_code_without_remote_code(monkeypatch, saved_folder, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    for file in saved_folder.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "modeling_conceptclip.py").write_text("raise RuntimeError('must not run')\n")
    monkeypatch.setattr(demo_backbone, "demo_weights_dir", lambda: folder)
    backbone = load_backbone("demo", device="cpu")
    assert backbone.identity.model_id == "conceptlens:demo"
    assert type(backbone.model).__module__.startswith("conceptlens")
    assert backbone.weights_folder == folder.resolve()
    assert backbone.dtype == torch.float32  # "auto" means float32 for the demo model
    assert load_backbone("conceptlens:demo", device="cpu", dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="pretrained= applies to open_clip models only"):
        load_backbone("demo", pretrained="openai")


def test_the_shipped_model_finds_its_card_and_reference_through_its_weights_folder():
    from conceptlens.explain.report.workflows import model_notice

    backbone = load_backbone("demo", device="cpu")
    assert backbone.weights_folder == DEMO_WEIGHTS_DIR
    assert (DEMO_WEIGHTS_DIR / REFERENCE_FILE_NAME).is_file()
    assert default_reference(backbone) is not None
    assert "not for clinical use" in model_notice(backbone).lower()


def test_the_factory_s_demo_weights_dir_is_deprecated():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert factory.demo_weights_dir() == DEMO_WEIGHTS_DIR
    assert any(issubclass(w.category, DeprecatedNameWarning) for w in caught)
