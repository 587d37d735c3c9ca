"""The notebooks in notebooks/ run top to bottom (a failing cell fails the suite) and produce
their figures."""

from __future__ import annotations

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
#: figures each notebook must produce (image/png outputs)
FIGURES = {"01_quickstart": 1, "02_inspect_gpt": 3, "03_budget_sweep": 1, "04_graph_breaks": 1}


def test_every_notebook_is_listed():
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == set(FIGURES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any failure
    pngs = [
        o
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(pngs) >= FIGURES[name], f"{name}: {len(pngs)} figures"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
