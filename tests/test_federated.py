"""BG on Flower across processes: a killed run resumes where it stopped with the same site state."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BRAINRECON = [str(Path(sys.executable).parent / "brainrecon")]


def _kill_session(proc: subprocess.Popen) -> None:
    "SIGKILL the process group of `proc` and anything else left in its session (ray's helpers)."
    try: os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError: pass
    proc.wait(30)
    ps = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
    for line in ps:
        parts = line.split()
        if len(parts) == 2 and int(parts[1]) == proc.pid:
            try: os.kill(int(parts[0]), signal.SIGKILL)
            except ProcessLookupError: pass


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fed")
    path = tmp / "cfg.yaml"
    path.write_text(f"data_dir: {tmp}/data\nrun_dir: {tmp}/run\nsubjects: [1, 2]\n")
    return path


def test_killed_run_resumes_with_the_same_site_state(config):
    tmp = config.parent
    rounds = 8
    ref = subprocess.run([*BRAINRECON, "federate", "-c", str(config), "--rounds", str(rounds), "--out", str(tmp / "ref")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    assert "subject 1: best validation similarity" in ref.stdout

    out = tmp / "killed"
    proc = subprocess.Popen([*BRAINRECON, "federate", "-c", str(config), "--rounds", str(rounds), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            csv = out / "rounds.csv"
            if csv.is_file() and pd.read_csv(csv)["round"].max() >= 2: break
            time.sleep(0.05)
        else:
            pytest.fail("the federation did not finish round 2 in time")
    finally:
        _kill_session(proc)
    k = int(torch.load(out / "server.pt", weights_only=False)["round"])
    assert 2 <= k < rounds, f"killed after round {k}: too late to test resuming"
    saved = {s: torch.load(out / f"subj{s:02d}" / "state.pt", weights_only=False)["round"] for s in (1, 2)}

    res = subprocess.run([*BRAINRECON, "federate", "-c", str(config), "--rounds", str(rounds), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resuming after round {k} of {rounds}" in res.stderr + res.stdout

    table = pd.read_csv(out / "rounds.csv")
    assert sorted(zip(table["round"], table["subject"])) == [(r, s) for r in range(1, rounds + 1) for s in (1, 2)]
    # every round after the restart is the round the uninterrupted run did: same losses, same global model
    ref_table = pd.read_csv(tmp / "ref" / "rounds.csv")
    np.testing.assert_allclose(table.train_loss, ref_table.train_loss, rtol=1e-5)
    np.testing.assert_allclose(table.val_similarity, ref_table.val_similarity, rtol=1e-5)
    a = torch.load(out / "server.pt", weights_only=False)["arrays"]
    b = torch.load(tmp / "ref" / "server.pt", weights_only=False)["arrays"]
    for name in b: np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
    # a site may have saved round k + 1 just before the kill (the server had not stored it yet): it answers that
    # round from its saved upload instead of training twice, so its history has each round once
    for s in (1, 2):
        assert saved[s] in (k, k + 1)
        history = torch.load(out / f"subj{s:02d}" / "state.pt", weights_only=False)["history"]
        assert [h["round"] for h in history] == list(range(1, rounds + 1))
