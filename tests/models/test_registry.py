"""The backbone registry: built-in names, plugins by entry point or at run time, aliases."""

from importlib import metadata

import pytest
import torch

from conceptlens.errors import ConceptlensWarning
from conceptlens.models import BackboneSpec, load_backbone, register_backbone
from conceptlens.models import registry as registry_module
from conceptlens.models.hub import hub_error, remote_code_message
from conceptlens.models.registry import BACKBONES, BackboneRegistry

SPEC = BackboneSpec("tiny", "somewhere", "conceptclip", False, "a test model",
                    loader=lambda **options: options, aliases=("tiny:v1",))
PLUGIN = BackboneSpec("from-plugin", "pkg", "clip", False, "from an entry point")


def _entry(name, value):
    return metadata.EntryPoint(name, value, "conceptlens.backbones")


def test_register_look_up_by_name_or_alias_and_refuse_a_taken_name():
    reg = BackboneRegistry()
    reg.register(SPEC)
    assert reg["tiny"] is SPEC and reg.lookup("tiny:v1") is SPEC and reg.lookup("nope") is None
    assert list(reg) == ["tiny"] and len(reg) == 1
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        reg.register(SPEC)
    other = BackboneSpec("other", "x", "clip", False, "", aliases=("tiny:v1",))
    with pytest.raises(ValueError, match="'tiny:v1' is taken by 'tiny'"):
        reg.register(other)
    replacement = BackboneSpec("tiny", "elsewhere", "clip", False, "")
    reg.register(replacement, replace=True)
    assert reg["tiny"] is replacement and reg.lookup("tiny:v1") is None
    del reg["tiny"]
    assert "tiny" not in reg
    with pytest.raises(ValueError, match="must be a BackboneSpec named"):
        reg["x"] = SPEC


def test_entry_points_are_read_once_on_first_use(monkeypatch):
    calls = []

    def entry_points(group):
        calls.append(group)
        return [_entry("from-plugin", "tests.models.test_registry:PLUGIN"),
                _entry("a-loader", "tests.models.test_registry:_loader")]

    monkeypatch.setattr(registry_module.metadata, "entry_points", entry_points)
    reg = BackboneRegistry(entry_point_group="conceptlens.backbones")
    assert not calls  # nothing read at construction
    assert sorted(reg) == ["a-loader", "from-plugin"]
    assert reg["from-plugin"] is PLUGIN
    assert reg["a-loader"].loader is _loader and reg["a-loader"].family == "plugin"
    reg.lookup("from-plugin")
    assert calls == ["conceptlens.backbones"]


def _loader(**options):
    return options


def test_a_broken_plugin_is_skipped_with_a_warning(monkeypatch):
    monkeypatch.setattr(registry_module.metadata, "entry_points", lambda group: [
        _entry("broken", "no_such_module_xyz:THING"),
        _entry("from-plugin", "tests.models.test_registry:PLUGIN"),
    ])
    reg = BackboneRegistry(entry_point_group="conceptlens.backbones")
    with pytest.warns(ConceptlensWarning, match="'broken'.*could not be registered"):
        assert list(reg) == ["from-plugin"]


def test_register_backbone_makes_load_backbone_call_the_loader():
    seen = {}

    def loader(**options):
        seen.update(options)
        return "a backbone"

    spec = register_backbone("test-only", loader, description="test", aliases=("test:only",))
    try:
        assert spec.loader is loader and BACKBONES["test-only"] is spec
        assert load_backbone("test:only", device="cpu", dtype="bf16", token="t") == "a backbone"
        assert seen == dict(device=torch.device("cpu"), dtype="bf16", revision=None,
                            trust_remote_code=False, token="t")
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("test-only", loader)
        with pytest.raises(TypeError, match="loader must be callable"):
            register_backbone("test-other", "not callable")
    finally:
        del BACKBONES["test-only"]
    assert BACKBONES.lookup("test:only") is None


def test_hub_messages_live_below_the_adapters():
    assert "trust_remote_code=True" in remote_code_message("x/y")
    error = hub_error("x/y", ConnectionError("could not connect"))
    assert "could not be reached" in str(error)
