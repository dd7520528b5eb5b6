"""The dashboard's store across processes: two writers on one SQLite database (two servers, or two users) never fail
with "database is locked" and lose no row or file; writers killed half-way (SIGKILL) leave nothing behind once the
dashboard has started again (it sweeps), and the database passes SQLite's integrity check."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from conftest import BIN, ROOT, port_open, start_tagged, stop_and_check, wait_until

# A writer: adds recordings (voxels and stimuli drawn from a few shared contents, so that files are shared between
# users and a delete races an identical add), adds reconstructions, renames and deletes, until `seconds` have passed;
# then prints the ids of the recordings it kept. Any exception ends it with a traceback and a non-zero status.
WRITER = r"""
import json, sys, time
import numpy as np
from brainrecon.app_store import Store
db_url, files, user, seconds, seed = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
unique = len(sys.argv) > 6                # every content new and large (262,144 voxels, 256 x 256 noise): slow writes
store = Store(db_url, files, user)
rng = np.random.default_rng(seed)
shared_vox = [np.full(64, v, np.float32) for v in (1.0, 2.0, 3.0)]
shared_img = [np.full((16, 16, 3), v, np.uint8) for v in (10, 20)]
if unique:
    class New:
        def __init__(self, make): self.make = make
        def __getitem__(self, i): return self.make()
    shared_vox = New(lambda: rng.standard_normal(2**18).astype(np.float32))
    shared_img = New(lambda: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
print("ready", flush=True)
mine, ops, end = [], 0, time.time() + seconds
while time.time() < end:
    r = store.add_recording(f"{user}-{ops}", 1, shared_vox[rng.integers(3)], shared_img[rng.integers(2)] if rng.random() < 0.5 else None)
    mine.append(r.id)
    if rng.random() < 0.5:
        store.add_reconstruction(r.id, shared_img[rng.integers(2)], pipeline="RR", model="m", decoder="mini", steps=1,
                                 scheduler="ddim", guidance=1.0, seed=0)
    if rng.random() < 0.3: store.rename_recording(mine[rng.integers(len(mine))], f"{user}-renamed-{ops}")
    if len(mine) > 2 and rng.random() < 0.6: store.delete_recording(mine.pop(rng.integers(len(mine))))
    ops += 1
print(json.dumps(dict(kept=sorted(mine), ops=ops)))
"""


def _check_store(db: str, files, users) -> None:
    "Every row's files exist and load; no file without a row; SQLite's integrity check passes."
    from brainrecon.app_store import Store
    for user in users:
        s = Store(f"sqlite:///{db}", files, user)
        for rec in s.recordings():
            assert s.voxels(rec).shape == (rec.n_voxels,)
            if rec.has_stimulus: assert s.stimulus(rec).ndim == 3
        for reco in s.reconstructions(): assert s.image(reco).ndim == 3
    referenced = set()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for (a, b) in conn.execute("SELECT voxels_sha, stimulus_sha FROM recordings"): referenced |= {a, b} - {None}
        referenced |= {a for (a,) in conn.execute("SELECT image_sha FROM reconstructions")}
    on_disk = [p for p in files.rglob("*") if p.is_file()]
    assert {p.name.split(".")[0] for p in on_disk} == referenced, sorted(p.name for p in on_disk)
    assert not [p for p in on_disk if p.name.startswith(".tmp-")]


def test_two_writers_on_one_database(tmp_path):
    db, files = tmp_path / "app.db", tmp_path / "files"
    url = f"sqlite:///{db}"
    subprocess.run([sys.executable, "-c", "import sys; from brainrecon.app_store import Store; Store(*sys.argv[1:4])", url, str(files), "x"],
                   check=True, cwd=ROOT)                                    # the schema, before the race
    procs = {user: subprocess.Popen([sys.executable, "-c", WRITER, url, str(files), user, "20", str(i)], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, user in enumerate(("ana", "bob"))}
    results = {}
    for user, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{user}'s writer failed:\n{err[-4000:]}"
        results[user] = json.loads(out.strip().splitlines()[-1])
    from brainrecon.app_store import Store
    for user, r in results.items():
        assert r["ops"] > 20, r                                               # both really wrote, concurrently
        assert sorted(rec.id for rec in Store(url, files, user).recordings()) == r["kept"]   # no row lost or left over
    _check_store(str(db), files, ("ana", "bob"))
    print({u: r["ops"] for u, r in results.items()}, "operations")


def test_killed_writes_leave_nothing_once_the_dashboard_started(isolated_env, tmp_path):
    env = {**isolated_env, "BRAINRECON_APP_USER": "ana"}
    run = tmp_path / "run" / "app"
    db, files = run / "brainrecon.db", (run / "files").resolve()
    url = f"sqlite:///{db}"
    rng = np.random.default_rng(0)
    for i in range(30):                                                      # 30 writers, each SIGKILLed at a random moment
        p = subprocess.Popen([sys.executable, "-c", WRITER, url, str(files), "ana", "60", str(i), "unique"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.random())
        p.send_signal(signal.SIGKILL); p.wait(); p.stdout.close()
    left = [p for p in files.rglob("*") if p.is_file()]
    print(f"{len(left)} files after the kills, {len([p for p in left if p.name.startswith('.tmp-')])} temporary")
    # the dashboard starts later: temporary files are older than the minute a write in flight may take
    for p in left: os.utime(p, (time.time() - 120, time.time() - 120))
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    proc, tag = start_tagged([BIN / "brainrecon", "app", "--port", port, "--token", "t", "--db-url", url], env)
    wait_until(lambda: port_open(port), 180, "the dashboard's port to open", proc)
    stop_and_check(proc, tag, signal.SIGTERM)
    _check_store(str(db), files, ("ana",))
