"""Notebooks 01-04 run top to bottom on the demo model (05 needs the hub and is only checked)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXECUTED = sorted(p.name for p in NOTEBOOKS.glob("0[1-4]_*.ipynb"))


def test_notebooks_exist_and_are_stripped():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert [n[:2] for n in names] == ["01", "02", "03", "04", "05"]
    for name in names:
        nb = json.loads((NOTEBOOKS / name).read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name} has outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(o.get("data", {}).get("text/html") for c in nb.cells if c.cell_type == "code" for o in c.outputs), \
        "notebooks show rich (_repr_html_) results"
