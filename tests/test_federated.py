"""BG on Flower across processes: a run stopped by SIGTERM or SIGINT ends with its Ray and Flower processes, and a
stopped or killed run resumes where it stopped with the same site state."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import start_tagged, stop_and_check, wait_until

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


def _done_round(out: Path) -> int:
    try: return int(pd.read_csv(out / "rounds.csv")["round"].max())
    except (OSError, ValueError, pd.errors.EmptyDataError): return 0


def test_stopped_and_killed_runs_resume_with_the_same_site_state(config):
    tmp = config.parent
    rounds = 10
    ref = subprocess.run([*BRAINRECON, "federate", "-c", str(config), "--rounds", str(rounds), "--out", str(tmp / "ref")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    assert "subject 1: best validation similarity" in ref.stdout

    out = tmp / "killed"
    cmd = [*BRAINRECON, "federate", "-c", str(config), "--rounds", str(rounds), "--out", str(out)]
    # SIGTERM after round 2, then (resumed) Ctrl-C after round 4: each time the command ends with every Ray and Flower
    # process it started, within 30 s, with 128 + the signal, and leaves no half-written file
    for sig, at in ((signal.SIGTERM, 2), (signal.SIGINT, 4)):
        proc, tag = start_tagged(cmd, dict(os.environ))
        wait_until(lambda: _done_round(out) >= at, 300, f"round {at}", proc, step=0.05)
        err = stop_and_check(proc, tag, sig)
        assert "Rerun the same command to resume" in err, err[-2000:]
        if at > 2: assert "resuming after round" in err, err[-2000:]              # the second run went on from the first
        assert not list(out.rglob(".tmp*")), list(out.rglob(".tmp*"))
        assert at <= int(torch.load(out / "server.pt", weights_only=False)["round"]) < rounds
    # then a crash: SIGKILL of the whole session after round 6
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if _done_round(out) >= 6: break
            time.sleep(0.05)
        else:
            pytest.fail("the federation did not finish round 6 in time")
    finally:
        _kill_session(proc)
    k = int(torch.load(out / "server.pt", weights_only=False)["round"])
    assert 6 <= k < rounds, f"killed after round {k}: too late to test resuming"
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


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0: return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def test_server_and_sites_as_separate_processes_on_loopback(config, tmp_path):
    """flower-superlink + one flower-supernode per subject + `flwr run flower`: the server's configuration points at
    a data folder that does not exist, so the run can only work if the voxels stay with the sites."""
    import json
    bin_ = Path(sys.executable).parent
    data = config.parent / "data"
    subprocess.run([str(bin_ / "brainrecon"), "mini", "-c", str(config)], cwd=ROOT, check=True, capture_output=True)
    server_cfg = tmp_path / "server.yaml"
    server_cfg.write_text(f"data_dir: {tmp_path}/no-data-here\nrun_dir: {tmp_path}/server-run\nsubjects: [1, 2]\n")
    sites = {}
    for s in (1, 2):
        sites[s] = tmp_path / f"site{s}.yaml"
        sites[s].write_text(f"data_dir: {data}\nrun_dir: {tmp_path}/site{s}-run\nsubjects: [{s}]\n")
    home = tmp_path / "flwr-home"; home.mkdir()
    link = _free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_HOME": str(home), "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}
    procs = []
    def start(*args, log):
        procs.append(subprocess.Popen([str(bin_ / args[0]), *args[1:]], cwd=ROOT, env=env, start_new_session=True,
                                      stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT))
    try:
        start("flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(link), log="superlink.log")
        _wait_port(link)
        for s in (1, 2):
            start("flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}", "--port", str(_free_port()),
                  "--node-config", f'subject={s} config="{sites[s]}" out="{tmp_path}/site{s}-state"', log=f"site{s}.log")
        out = tmp_path / "server-out"
        run = subprocess.run([str(bin_ / "flwr"), "run", "flower", "local", "--format", "json", "--run-config",
                              f'rounds=2 out="{out}" config="{server_cfg}"'], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        run_id = json.loads(run.stdout)["run-id"]
        deadline, status = time.time() + 420, ""
        while time.time() < deadline:
            ls = subprocess.run([str(bin_ / "flwr"), "ls", "--run-id", str(run_id), "--format", "json"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
            status = json.loads(ls.stdout)["runs"][0]["status"] if ls.returncode == 0 else ""
            if status.startswith("finished"): break
            time.sleep(2)
        logs = "".join((tmp_path / f).read_text()[-3000:] for f in ("superlink.log", "site1.log", "site2.log"))
        assert status == "finished:completed", f"status {status!r}\n{ls.stdout}\n{logs}"
    finally:
        for p in procs: _kill_session(p)
    table = pd.read_csv(out / "rounds.csv")
    assert sorted(zip(table["round"], table["subject"])) == [(r, s) for r in (1, 2) for s in (1, 2)]
    assert (table.bytes_sent > 1e6).all() and (table.bytes_received > 1e6).all()
    assert not (tmp_path / "no-data-here").exists()                     # the server never looked for data
    assert sorted(p.name for p in out.iterdir()) == ["rounds.csv", "server.pt", "summary.json"]
    for s in (1, 2):   # each site's model and predictions stay in the site's own folder
        assert (tmp_path / f"site{s}-state" / f"subj{s:02d}" / "model.safetensors").is_file()
        assert (tmp_path / f"site{s}-state" / f"subj{s:02d}" / "test_pred.npy").is_file()
