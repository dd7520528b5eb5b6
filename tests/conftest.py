import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    "Environment whose brainrecon folders (data, runs, figures) all live under `tmp_path`."
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINRECON_")}
    env.update(BRAINRECON_DATA_DIR=str(tmp_path / "data"), BRAINRECON_RUN_DIR=str(tmp_path / "run"),
               BRAINRECON_FIGURES_DIR=str(tmp_path / "figures"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env
