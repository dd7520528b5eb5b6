"""Fail when `brainrecon/` is not what `nbdev_export` makes of `nbs/`, or a notebook is not clean.

Exports a temporary copy of the notebooks into an empty library folder, so it never rewrites
the working tree: a hand edit of `brainrecon/*.py` is reported, not overwritten, and a module
that no notebook makes is reported too.
"""
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tree(folder: Path, pattern: str) -> dict:
    return {p.relative_to(folder): p for p in folder.rglob(pattern)
            if ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy2(ROOT / "settings.ini", tmp / "settings.ini")
        shutil.copytree(ROOT / "nbs", tmp / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        for cmd in ("nbdev_export", "nbdev_clean"):
            run = subprocess.run([str(BIN / cmd)], cwd=tmp, capture_output=True, text=True)
            if run.returncode:
                print(f"{cmd} failed:\n{run.stdout}{run.stderr}")
                return 1
        problems = []
        for label, pattern, ours, theirs in (
            ("library", "*.py", ROOT / "brainrecon", tmp / "brainrecon"),
            ("notebook", "*.ipynb", ROOT / "nbs", tmp / "nbs"),
        ):
            a, b = tree(ours, pattern), tree(theirs, pattern)
            for rel in sorted(set(a) | set(b)):
                if rel not in b:
                    problems.append(f"{label} {ours.name}/{rel}: not produced by nbdev_export (hand-written or stale)")
                elif rel not in a:
                    problems.append(f"{label} {ours.name}/{rel}: missing; run nbdev_export")
                elif not filecmp.cmp(a[rel], b[rel], shallow=False):
                    what = "differs from the notebooks" if label == "library" else "is not clean"
                    problems.append(f"{label} {ours.name}/{rel}: {what}")
    if problems:
        print("Library and notebooks disagree:\n  " + "\n  ".join(problems))
        print("Edit nbs/, then run `make export` (nbdev_export && nbdev_clean) and commit both.")
        return 1
    print("check_sync: brainrecon/ matches nbs/ and every notebook is clean.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
