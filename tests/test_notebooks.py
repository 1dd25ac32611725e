"""The notebooks run, top to bottom, so none can rot: the search walkthrough against a real server (real Ray,
calls streamed in as Twilio would, the emotion model on), the ingest walkthrough on the shared data. Each runs
in a Jupyter kernel that is this venv's interpreter (checked), with matplotlib headless (Agg)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import API_KEY, REPO, Server, data_path, stream_calls, wait_searchable

pytestmark = pytest.mark.integration

NOTEBOOKS = REPO / "notebooks"
SPEED = 8.0
CELL_TIMEOUT_S = 120
PROBE = "import sys; print(sys.executable)"


@pytest.fixture
def jupyter_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec ``python3`` that launches this interpreter, found first (JUPYTER_PATH); Jupyter's and
    matplotlib's own folders in the test's temp dir, never the user's."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Mise venv", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # the new (platformdirs) locations, without the old ones' warning
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return tmp_path


def run_notebook(path: Path) -> nbformat.NotebookNode:
    """Execute a copy of the notebook (the file keeps its cleared outputs) in its own folder; a failing cell
    raises CellExecutionError with its traceback. A last cell, added here, reports the kernel's interpreter."""
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), (
        f"{path.name}: clear the outputs before committing"
    )
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    probe = nb.cells.pop()
    assert [o.get("text", "").strip() for o in probe.outputs] == [sys.executable], "the kernel is not this venv"
    return nb


def images(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def errors(nb: nbformat.NotebookNode) -> list[Any]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_the_search_walkthrough_runs_against_a_live_server(
    ray_address: str, tmp_path: Path, jupyter_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synthetic = load_jsonl(data_path("calls/synthetic_dialogue/twilio.jsonl"))
    meeting = load_jsonl(data_path("calls/ami_es2004_a/twilio.jsonl"))
    captures = [with_fresh_sids(m, api_key=API_KEY) for m in (synthetic, synthetic, meeting)]
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    with Server.start(ray_address, data_dir, MISE_EMOTION="1") as server:  # the frustration panel needs scores
        stream_calls(server, captures, SPEED)
        counts = [len(wait_searchable(server, m[1]["start"]["callSid"])) for m in captures]
        assert all(n > 3 for n in counts)
        monkeypatch.setenv("MISE_URL", server.http)
        monkeypatch.setenv("MISE_API_KEY", API_KEY)
        nb = run_notebook(NOTEBOOKS / "search_walkthrough.ipynb")

    assert errors(nb) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    figures = [c for c in code if "plt.subplots(" in c.source]
    assert len(figures) == 2 and all(images(c) == 1 for c in figures)
    printed = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert f"{sum(counts)} turns in 3 calls" in printed
    assert "4 caller turns that talked over the agent" in printed  # two barge-ins in each synthetic call
    assert "no values" not in printed  # every panel had data: pitch, energy and the emotion model's frustration


def test_the_ingest_walkthrough_runs_on_the_shared_data(jupyter_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = data_path("calls/synthetic_dialogue/twilio.jsonl")
    monkeypatch.setenv("MISE_TEST_DATA", str(capture.parents[2]))
    nb = run_notebook(NOTEBOOKS / "ingest_walkthrough.ipynb")
    assert errors(nb) == []
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert printed.count("identical except dropped frames: True") == 2
