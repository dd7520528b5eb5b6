"""The test command's guards: it fails when library and notebooks disagree or a notebook test breaks."""
import json
import shutil
import subprocess
import sys

from conftest import BIN, ROOT


def copy_project(dst):
    for name in ("settings.ini",):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("nbs", "brainrecon", "tests"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return dst


def check_sync(project):
    return subprocess.run([sys.executable, str(project / "tests" / "check_sync.py")], capture_output=True, text=True)


def test_check_sync_passes_on_this_checkout():
    res = check_sync(ROOT)
    assert res.returncode == 0, res.stdout


def test_hand_edit_of_library_fails(tmp_path):
    project = copy_project(tmp_path)
    lib = project / "brainrecon" / "config.py"
    lib.write_text(lib.read_text() + "\nHAND_EDIT = True\n")
    res = check_sync(project)
    assert res.returncode == 1 and "brainrecon/config.py: differs from the notebooks" in res.stdout
    assert "HAND_EDIT" in lib.read_text(), "the check must not overwrite the working tree"


def test_stray_module_and_dirty_notebook_fail(tmp_path):
    project = copy_project(tmp_path)
    (project / "brainrecon" / "stray.py").write_text("x = 1\n")
    nb = project / "nbs" / "index.ipynb"
    content = json.loads(nb.read_text())
    code = next(c for c in content["cells"] if c["cell_type"] == "code")
    code["execution_count"], code["metadata"] = 7, {"scrolled": True}      # what a Jupyter session leaves
    nb.write_text(json.dumps(content, indent=1))
    res = check_sync(project)
    assert res.returncode == 1
    assert "stray.py: not produced by nbdev_export" in res.stdout and "index.ipynb: is not clean" in res.stdout


def test_broken_notebook_assertion_fails_nbdev_test(tmp_path):
    project = copy_project(tmp_path)
    nb = project / "nbs" / "00_config.ipynb"
    text = nb.read_text()
    assert 'test_eq(cfg.world, \\"mini\\")' in text
    nb.write_text(text.replace('test_eq(cfg.world, \\"mini\\")', 'test_eq(cfg.world, \\"nsd\\")'))
    res = subprocess.run([str(BIN / "nbdev_test"), "--path", str(nb)], cwd=project, capture_output=True, text=True)
    assert res.returncode != 0 and "00_config.ipynb" in res.stdout + res.stderr
