"""load_backbone / list_backbones: dispatch, device and dtype, and errors a user can act on."""

import json
import sys
import types

import huggingface_hub.constants
import pytest
import torch
from huggingface_hub.errors import GatedRepoError

from conceptlens.models import (
    BackboneLoadError,
    BackboneNotFoundError,
    CLIPBackbone,
    ConceptCLIPBackbone,
    RemoteCodeRequiredError,
    SiglipBackbone,
    UnknownBackboneError,
    UnsupportedBackboneError,
    factory,
    list_backbones,
    load_backbone,
)
from conceptlens.models.factory import family_from_config, hub_error, resolve_device, resolve_dtype


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network, empty cache: every hub access must fail fast."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_list_backbones_names_the_short_names():
    names = list_backbones()
    assert names == sorted(names)
    assert {"conceptclip", "demo", "clip-vit-b16", "siglip-base"} <= set(names)
    assert factory.BACKBONES["conceptclip"].source == "JerrryNie/ConceptCLIP"
    assert factory.BACKBONES["conceptclip"].remote_code


def test_conceptclip_without_trust_remote_code_explains_why():
    with pytest.raises(RemoteCodeRequiredError) as info:
        load_backbone("conceptclip")
    message = str(info.value)
    assert "trust_remote_code=True" in message
    assert "not part of transformers" in message and "runs that code" in message


def test_unknown_short_name_lists_the_valid_ones():
    with pytest.raises(UnknownBackboneError) as info:
        load_backbone("conceptclp")
    message = str(info.value)
    assert "Did you mean 'conceptclip'" in message
    for name in list_backbones():
        assert name in message


def test_missing_folder_is_a_file_not_found_error(tmp_path):
    with pytest.raises(BackboneNotFoundError, match="no such folder") as info:
        load_backbone(str(tmp_path / "nope" / "model"))
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(BackboneNotFoundError, match="no config.json"):
        load_backbone(tmp_path)


def test_unreachable_hub_id_fails_fast_with_what_to_do(offline_hub):
    with pytest.raises(BackboneLoadError) as info:
        load_backbone("someone/not-a-real-model-xyz", device="cpu")
    message = str(info.value)
    assert isinstance(info.value, OSError)
    assert "could not be reached" in message
    assert "token=" in message and "local folder" in message


def test_unreachable_conceptclip_with_remote_code_allowed(offline_hub):
    with pytest.raises(BackboneLoadError, match="JerrryNie/ConceptCLIP"):
        load_backbone("conceptclip", trust_remote_code=True, device="cpu")


def test_gated_repository_message_says_how_to_get_access():
    response = types.SimpleNamespace(headers={}, status_code=401, request=None)
    error = hub_error("JerrryNie/ConceptCLIP", GatedRepoError("401 gated", response=response))
    message = str(error)
    assert "gated" in message and "https://huggingface.co/JerrryNie/ConceptCLIP" in message
    assert "token=" in message and "local folder" in message


def test_local_folder_is_dispatched_by_its_config(saved_folder):
    backbone = load_backbone(saved_folder, device="cpu")
    assert isinstance(backbone, ConceptCLIPBackbone)
    assert backbone.identity.model_id == str(saved_folder.resolve())
    assert backbone.identity.weights_hash == factory.hash_weight_files(saved_folder)


def test_family_from_config():
    assert family_from_config({"model_type": "clip"}, "x") == "clip"
    assert family_from_config({"model_type": "siglip"}, "x") == "siglip"
    assert family_from_config({"model_type": "foo", "auto_map": {"AutoModel": "m.M"}}, "x") == (
        "conceptclip")
    with pytest.raises(UnsupportedBackboneError, match="'bert' is not supported"):
        family_from_config({"model_type": "bert"}, "x")


@pytest.mark.parametrize(("model_type", "cls"), [
    ("clip", CLIPBackbone),
    ("siglip", SiglipBackbone),
])
def test_hf_families_go_to_their_adapters(monkeypatch, tmp_path, model_type, cls):
    calls = []
    monkeypatch.setattr(cls, "from_pretrained", classmethod(
        lambda klass, source, **kw: calls.append((source, kw)) or "adapter"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert load_backbone(tmp_path, device="cpu", dtype="bf16", revision="abc") == "adapter"
    (source, kwargs), = calls
    assert source == str(tmp_path.resolve())
    assert kwargs == dict(device=torch.device("cpu"), dtype=torch.bfloat16, revision="abc",
                          token=None)


def test_dtype_and_device_are_applied(saved_folder):
    backbone = load_backbone(saved_folder, device="cpu", dtype=torch.bfloat16)
    assert backbone.dtype == torch.bfloat16 and backbone.device == torch.device("cpu")
    assert backbone.identity.dtype == "bfloat16"
    assert not backbone.model.training
    assert not any(p.requires_grad for p in backbone.model.parameters())
    feats = backbone.encode_images(torch.zeros(1, 3, 64, 64))  # float32 pixels are cast
    assert feats.global_embeds.dtype == torch.bfloat16


def test_resolve_dtype():
    assert resolve_dtype(None) == torch.float32
    assert resolve_dtype("bf16") == resolve_dtype("torch.bfloat16") == torch.bfloat16
    assert resolve_dtype("float16", "cuda") == torch.float16
    with pytest.raises(ValueError, match="not supported on the CPU"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="'int8' is not supported"):
        resolve_dtype("int8")
    with pytest.raises(TypeError, match="dtype must be"):
        resolve_dtype(16)


def test_resolve_device():
    auto = resolve_device(None)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert auto == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_open_clip_without_the_extra_names_the_pip_install(monkeypatch):
    from conceptlens.errors import ConceptlensError
    from conceptlens.models.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "conceptlens\[open_clip\]"') as info:
        load_backbone("open_clip:ViT-B-32", pretrained=None, device="cpu")
    assert isinstance(info.value, ImportError) and isinstance(info.value, ConceptlensError)
    assert "open_clip:ViT-B-32" not in factory.list_backbones()
