"""Every exception and warning the package exports has the library's root (issue 16)."""

import importlib
import pkgutil

import pytest

import conceptlens
from conceptlens.errors import ConceptlensError, ConceptlensWarning, UnknownConceptError


def _public_modules():
    for info in pkgutil.walk_packages(conceptlens.__path__, "conceptlens."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")[1:]) or ".demo.weights" in name:
            continue
        try:
            yield importlib.import_module(name)
        except ImportError:  # optional extras (open_clip, ray, ipywidgets) not installed here
            continue


def _exported_classes():
    seen = {}
    for module in _public_modules():
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr, None)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                seen[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return seen


EXPORTED = _exported_classes()


def test_the_walk_finds_the_library_errors():
    assert len(EXPORTED) >= 15


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_exception_has_the_library_root(name):
    cls = EXPORTED[name]
    root = ConceptlensWarning if issubclass(cls, Warning) else ConceptlensError
    assert issubclass(cls, root), f"{name} does not derive from {root.__name__}"


def test_one_unknown_concept_error():
    classes = {cls for cls in EXPORTED.values() if cls.__name__ == "UnknownConceptError"}
    assert classes == {UnknownConceptError}
    assert issubclass(UnknownConceptError, KeyError) and issubclass(UnknownConceptError, ValueError)
