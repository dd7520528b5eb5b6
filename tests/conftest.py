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


# --- stopping a command (SIGTERM / SIGINT) and checking that nothing it started is left --------------------------
# Every process a command starts inherits its environment: a unique value of TAG marks the whole tree, wherever a
# process of it went (re-parented to init included). The scan reads every process of the machine with psutil.
TAG = "STOP_TEST_TREE_TAG"   # not BRAINRECON_*: the rehearsal clears those for what it starts


def tagged_processes(tag: str) -> list:
    "Running (not zombie) processes of this machine whose environment holds TAG=tag."
    import psutil
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(TAG) == tag: found.append(p)
        except psutil.Error: pass
    return found


def start_tagged(cmd: list, env: dict):
    """Start `cmd` with a fresh tag in its environment, in its own session (the test's terminal signals do not reach
    it), its output into temporary files (a pipe nobody reads would block a chatty server): `output(proc)` reads them."""
    import subprocess
    import tempfile
    import uuid
    tag = uuid.uuid4().hex
    out, err = (tempfile.NamedTemporaryFile("w+", prefix=f"stop-{tag}-", suffix=s, delete=False) for s in (".out", ".err"))
    # as from an interactive shell: SIGINT and SIGHUP at their defaults (a CI job started in the background ignores
    # SIGINT, under nohup SIGHUP, and its children would inherit that)
    shim = ("import os, signal, sys; [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)]; "
            "os.execv(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", shim, *[str(c) for c in cmd]], env={**env, TAG: tag}, cwd=ROOT,
                            start_new_session=True, stdout=out, stderr=err, text=True)
    proc.output_files = (out.name, err.name)
    return proc, tag


def output(proc) -> tuple[str, str]:
    "What a `start_tagged` command wrote so far: stdout, stderr."
    return tuple(Path(f).read_text(errors="replace") for f in proc.output_files)


def wait_until(predicate, timeout: float, what: str, proc=None, step: float = 0.2):
    "Poll `predicate` until it is true; fail after `timeout` s (or when `proc` ended first) saying `what`."
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate(): return
        if proc is not None and proc.poll() is not None:
            out, err = output(proc)
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(step)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def stop_and_check(proc, tag: str, sig, within: float = 30.0) -> str:
    """Send `sig` to the command (its process only, as `kill` does) and check that within `within` seconds it exited
    with 128 + sig and no process of its tree remains. Returns its stderr."""
    import signal as _signal
    import subprocess
    import time
    before = tagged_processes(tag)
    assert len(before) > 1, f"no child process to stop yet: {[p.cmdline() for p in before]}"
    t0 = time.monotonic()
    proc.send_signal(sig)
    try: proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        for p in tagged_processes(tag): p.kill()
        pytest.fail(f"still running {within} s after {_signal.Signals(sig).name}")
    err = output(proc)[1]
    left = tagged_processes(tag)
    while left and time.monotonic() - t0 < within:
        time.sleep(0.2); left = tagged_processes(tag)
    for p in left: p.kill()
    assert not left, f"left running after {_signal.Signals(sig).name}: {[(p.pid, p.cmdline()) for p in left]}"
    assert proc.returncode == 128 + sig, (proc.returncode, err[-3000:])
    assert f"stopped by {_signal.Signals(sig).name}" in err, err[-3000:]
    print(f"{_signal.Signals(sig).name}: {len(before)} processes, all ended in {time.monotonic() - t0:.1f} s")
    return err


def port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
