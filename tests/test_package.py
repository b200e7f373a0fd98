import importlib

import pytest

import conceptlens


@pytest.mark.parametrize("name", ["models", "vocab", "concepts", "explain", "demo"])
def test_subpackage_exports_are_importable(name):
    module = importlib.import_module(f"conceptlens.{name}")
    for symbol in module.__all__:
        assert hasattr(module, symbol), f"conceptlens.{name}.__all__ names missing {symbol!r}"


def test_version_is_set():
    assert conceptlens.__version__.count(".") == 2
