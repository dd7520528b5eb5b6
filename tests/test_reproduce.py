"""The main job's fast path: `brainrecon reproduce` on the mini world into a temporary run folder."""
import json
import subprocess

import nbformat

from conftest import BIN, ROOT


def test_reproduce_runs_experiments_and_writes_figures(isolated_env, tmp_path):
    res = subprocess.run([str(BIN / "brainrecon"), "reproduce", "-p", "sampling_steps=10", "-p", "noise_levels=[0.0, 1.0]"],
                         capture_output=True, text=True, cwd=ROOT,
                         env=isolated_env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    executed = sorted((tmp_path / "run" / "notebooks").glob("*.ipynb"))
    assert [p.name for p in executed] == [p.name for p in sorted((ROOT / "nbs" / "experiments").glob("[0-9]*.ipynb"))]
    nb = nbformat.read(executed[0], as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(tmp_path / "data") in injected[0].source   # the run's config reached the notebook
    assert (tmp_path / "figures" / "data_overview.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "mini_models.png").stat().st_size > 10_000
    mini = nbformat.read(tmp_path / "run" / "notebooks" / "00_mini_models.ipynb", as_version=4)
    assert "not retrained" in "".join(o.get("text", "") for c in mini.cells for o in c.get("outputs", []))   # shipped weights used
    assert "sampling_steps = 10" in "".join(c.source for c in mini.cells)
    subjects = (tmp_path / "run" / "data" / "subjects.csv").read_text().splitlines()
    assert subjects[0].startswith("subject,") and len(subjects) == 5
    world = json.loads((tmp_path / "data" / "mini-nsd" / "mini" / "world.json").read_text())
    assert world["seed"] == 0
