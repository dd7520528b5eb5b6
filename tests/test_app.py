"""The dashboard end to end: `brainrecon app` served by Voila, driven in headless Chromium.

Two servers share one run folder and database, as two users (`--user alice`, `--user bob`);
alice's server caps uploads at 8 MiB. The test checks the token, bad uploads (each with its
message, the store unchanged), a good upload, fitting RR from the page, a reconstruction with
a chosen number of steps, the history, and that neither user sees the other's recordings.
Screenshots go to tests/artifacts/.
"""
import http.client
import io
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from brainrecon.config import SAMPLER_PRESETS
from conftest import BIN, ROOT

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "tests" / "artifacts"
LOAD_TIMEOUT_MS = 120_000


def brainrecon(*args, env, timeout=120):
    return subprocess.run([str(BIN / "brainrecon"), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    "`brainrecon app` in its own process group; `stop` ends it, Voila and every kernel it started."
    def __init__(self, env, log: Path, *args, token=None):
        self.port, self.log, self.token = free_port(), log, token
        given = ["--token", token] if token else []
        self.proc = subprocess.Popen([str(BIN / "brainrecon"), "app", "--port", str(self.port), *given, *args], cwd=ROOT, env=env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout=120) -> str:
        "The token (given, or generated and printed by `brainrecon app`), once Voila accepts connections."
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log.read_text()
            if self.proc.poll() is not None: raise RuntimeError(f"brainrecon app exited:\n{text}")
            if "is running at" in text:
                if self.token is None: self.token = re.search(r"\?token=([\w-]+)", text).group(1)
                return self.token
            time.sleep(0.5)
        raise TimeoutError(f"brainrecon app did not start in {timeout} s:\n{self.log.read_text()}")

    def url(self, token=True) -> str:
        return f"http://127.0.0.1:{self.port}/" + (f"?token={self.token}" if token else "")

    def stop(self):
        try: family = psutil.Process(self.proc.pid).children(recursive=True)   # kernels run in sessions of their own
        except psutil.NoSuchProcess: family = []
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try: self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for p in family:
            try: p.kill()
            except psutil.NoSuchProcess: pass
        psutil.wait_procs(family, timeout=10)


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    res = conn.getresponse()
    return res.status, res.getheader("Location") or "", res.read()


def choose_file(page, button_class, path):
    "Choose `path` with an upload button and wait until the kernel has it (the page names the file)."
    with page.expect_file_chooser() as chooser:
        page.locator(f".{button_class}").click()
    chooser.value.set_files(str(path))
    name = re.escape(Path(path).name)
    page.locator(".br-upload-msg").get_by_text(re.compile(rf"{name} \(.*\) received|{name}: .* over the upload limit")).wait_for(timeout=60_000)


def upload_message(page, kind):
    page.locator(f".br-upload-msg .br-{kind}").wait_for(timeout=60_000)
    return page.locator(".br-upload-msg").inner_text()


def _png(w: int, h: int) -> bytes:
    "A valid black RGB PNG of w x h pixels, compressed (a large one is small on disk and large decoded)."
    import struct
    import zlib
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    z, row = zlib.compressobj(9), b"\x00" + bytes(3 * w)                 # row by row: the image is never held
    raw = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", raw)
            + chunk(b"IEND", b""))


def _login(port: int, token: str, **extra) -> int:
    "POST the login form as a browser does (its _xsrf cookie and field); the final status."
    import http.cookiejar
    import urllib.error
    import urllib.parse
    import urllib.request
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"http://127.0.0.1:{port}/login", timeout=30).read()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    data = urllib.parse.urlencode({"password": token, "_xsrf": xsrf, **extra}).encode()
    try:
        with opener.open(f"http://127.0.0.1:{port}/login", data=data, timeout=120) as r: return r.status
    except urllib.error.HTTPError as e: return e.code


def store_counts(db: Path, files: Path):
    with sqlite3.connect(db) as con:
        rows = {t: con.execute(f"SELECT owner, count(*) FROM {t} GROUP BY owner").fetchall() for t in ("recordings", "reconstructions")}
    return rows, sorted(p.name for p in files.rglob("*") if p.is_file()) if files.is_dir() else []


def list_options(page, css, expected=None, timeout=30):
    "The options of a list widget; with `expected`, wait (the kernel may still be updating) until they are that."
    deadline = time.time() + timeout
    while True:
        options = [t.replace("\xa0", " ") for t in page.locator(f".{css} option").all_inner_texts()]
        if expected is None or options == expected or time.time() > deadline: return options
        time.sleep(0.2)


@pytest.fixture
def examples(isolated_env, tmp_path):
    "Mini-world recordings exported by the CLI (this also generates the mini world before the servers start)."
    res = brainrecon("app", "--export-examples", str(tmp_path / "examples"), "-n", "2", env=isolated_env)
    assert res.returncode == 0, res.stdout + res.stderr
    files = sorted((tmp_path / "examples").iterdir())
    assert len(files) == 6 and res.stdout.count("wrote ") == 6, res.stdout
    return tmp_path / "examples"


def test_dashboard_notebook_names_exist():
    "Every library name nbs/app.ipynb imports exists (a renamed function fails here, not as a blank page in Voila)."
    import ast
    import importlib
    import json
    cells = json.loads((ROOT / "nbs" / "app.ipynb").read_text())["cells"]
    tree = ast.parse("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("brainrecon")]
    assert imports
    missing = [f"{n.module}.{a.name}" for n in imports for a in n.names if not hasattr(importlib.import_module(n.module), a.name)]
    assert not missing, missing


def test_cli_refuses_bad_options(isolated_env):
    res = brainrecon("app", "--token", " ", env=isolated_env)
    assert res.returncode != 0 and "--token must not be empty" in res.stdout + res.stderr
    res = brainrecon("app", "--max-upload-mb", "0", env=isolated_env)
    assert res.returncode != 0 and "--max-upload-mb must be positive" in res.stdout + res.stderr


def test_dashboard_in_a_browser(isolated_env, tmp_path, examples):
    t0 = time.time()
    ARTIFACTS.mkdir(exist_ok=True)
    # alice's page is rendered more than 4 times below (plain GETs, whose kernels never get a websocket, then a page and
    # its reload), on a fast machine all within the minute after which the 4-page cap frees a closed page's kernel: the
    # final reload was refused (503). A higher cap keeps this test independent of speed (test_stop.py tests the cap)
    alice = Server(isolated_env, tmp_path / "alice.log", "--user", "alice", "--max-upload-mb", "8", "--max-sessions", "8")
    bob = Server(isolated_env, tmp_path / "bob.log", "--user", "bob", token="bobs-secret-token")
    db, files = tmp_path / "run" / "app" / "brainrecon.db", tmp_path / "run" / "app" / "files"
    try:
        assert len(alice.wait()) >= 32                                  # generated, printed once
        assert alice.log.read_text().count(alice.token) == 1
        bob.wait()
        assert "bobs-secret-token" not in bob.log.read_text()           # a given token is not printed
        # no token, or a wrong one: no dashboard, only the login page
        for path in ("/", "/?token=wrong", "/voila/render/app.ipynb", "/api/kernels"):
            status, location, body = get(alice.port, path)
            assert status in (302, 403) and "login" in location and b"br-" not in body, (path, status, location)
        assert get(alice.port, f"/?token={alice.token}")[0] == 200
        # the login page offers no "new password" form (it wrote to a Jupyter config file that does not exist: a 500)
        assert b"new_password" not in get(alice.port, "/login")[2]
        assert _login(alice.port, alice.token, new_password="x") == 200
        # the tokens are on no command line (`ps` shows those to every user) and in no log line, even of failing requests
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert alice.token not in ps and "bobs-secret-token" not in ps
        for path in ("/voila/render/missing.ipynb?token=bobs-secret-token", "/voila/static/x.js?token=bobs-secret-token",
                     "/api/kernels/../../etc/passwd?token=bobs-secret-token", "/?token=bobs-secret-token&x=%ZZ"):
            get(bob.port, path)
            get(alice.port, path.replace("bobs-secret-token", alice.token))
        # the same port again: refused, not moved to another one
        taken = brainrecon("app", "--port", str(alice.port), "--token", "x", env=isolated_env, timeout=120)
        assert taken.returncode != 0, taken.stdout + taken.stderr

        big = tmp_path / "twelve_mib.npy"          # over alice's 8 MiB cap and over Voila's default 10 MiB websocket limit
        np.save(big, np.zeros(3 * 2 ** 20, np.float32))
        wrong_count = tmp_path / "wrong_count.npy"
        np.save(wrong_count, np.zeros(1000, np.float32))
        with_nan = tmp_path / "with_nan.npy"
        v = np.load(examples / "subj01_nsd00508_mean.npy"); v[3] = np.nan
        np.save(with_nan, v)
        corrupt = tmp_path / "corrupt.png"
        corrupt.write_bytes((examples / "subj01_nsd00508.png").read_bytes()[:150])
        liar = tmp_path / "liar.npy"               # 192 bytes whose header claims 10^12 float32 values
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
        liar.write_bytes(buf.getvalue() + bytes(64))
        assert liar.stat().st_size == 192
        bomb = tmp_path / "bomb.png"               # an 8192 x 8192 PNG of a few hundred KiB (one blank image)
        bomb.write_bytes(_png(8192, 8192))
        dot = tmp_path / "dot.png"
        dot.write_bytes(_png(1, 1))

        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            a = browser.new_context(viewport={"width": 1200, "height": 1500}).new_page()
            b = browser.new_context(viewport={"width": 1200, "height": 1500}).new_page()
            requested = []                         # every URL the page asks for: all on this server (the project runs offline)
            a.on("request", lambda r: requested.append(r.url))
            a.goto(alice.url())
            b.goto(bob.url())
            a.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
            assert "user alice" in a.locator(".br-header").inner_text()
            from urllib.parse import urlparse
            elsewhere = [u for u in requested if urlparse(u.removeprefix("blob:")).hostname not in (None, "127.0.0.1")]
            assert not elsewhere, elsewhere

            # bad uploads: a clear message each, nothing stored
            empty = store_counts(db, files)
            assert empty == ({"recordings": [], "reconstructions": []}, [])
            choose_file(a, "br-voxels", big)
            assert "twelve_mib.npy: 12.0 MiB is over the upload limit of 8.0 MiB" in upload_message(a, "error")
            a.locator(".br-add").click()
            a.wait_for_timeout(1000)
            assert "over the upload limit" in upload_message(a, "error")
            for bad, words in [(wrong_count, "1000 voxels, but subject 1 has 1572"), (with_nan, "1 of 1572 values are NaN"),
                               (examples / "subj01_nsd00508.png", "not a .npy file"),
                               (liar, "1000000000000 voxels, but subject 1 has 1572")]:
                choose_file(a, "br-voxels", bad)
                a.locator(".br-add").click()
                assert words in upload_message(a, "error"), words
            choose_file(a, "br-voxels", examples / "subj01_nsd00508_mean.npy")
            choose_file(a, "br-stimulus", corrupt)
            a.locator(".br-add").click()
            assert "corrupt.png: not a readable image" in upload_message(a, "error")
            for bad, words in [(bomb, "bomb.png: 8192 x 8192 pixels; at most 16.8 megapixels"), (dot, "dot.png: 1 x 1 pixels; at least 16")]:
                choose_file(a, "br-stimulus", bad)
                a.locator(".br-add").click()
                assert words in upload_message(a, "error"), words
            a.screenshot(path=str(ARTIFACTS / "app_bad_upload.png"), full_page=True)
            assert store_counts(db, files) == empty and list_options(a, "br-list") == []

            # a good recording with its stimulus (the voxel file chosen above is still there)
            choose_file(a, "br-stimulus", examples / "subj01_nsd00508.png")
            a.locator(".br-name input").fill("alice-mean")
            a.locator(".br-add").click()
            assert "added “alice-mean” (subject 1, 1572 voxels, with stimulus)" in upload_message(a, "ok")
            mine = ["alice-mean (#1, subject 1, with stimulus)"]
            assert list_options(a, "br-list", mine) == mine

            # bob, at the same time on the same database, sees nothing of alice's and adds his own
            b.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
            assert "user bob" in b.locator(".br-header").inner_text()
            assert list_options(b, "br-list") == []
            choose_file(b, "br-voxels", examples / "subj01_nsd00416_trial1.npy")
            b.locator(".br-add").click()
            assert "added “subj01_nsd00416_trial1” (subject 1, 1572 voxels)" in upload_message(b, "ok")
            assert list_options(b, "br-list", ["subj01_nsd00416_trial1 (#2, subject 1)"]) == ["subj01_nsd00416_trial1 (#2, subject 1)"]
            b.locator(".br-list select").select_option(label="subj01_nsd00416_trial1 (#2, subject 1)")
            b.locator(".br-open").click()
            b.get_by_text("subject 1, 1572 voxels, mean").wait_for(timeout=30_000)
            b.locator(".br-rename input").fill("bob-renamed")
            b.get_by_role("button", name="Rename", exact=True).click()
            b.get_by_text("renamed to “bob-renamed”").wait_for(timeout=30_000)
            assert list_options(b, "br-list") == ["bob-renamed (#2, subject 1)"]

            # reconstruct: no RR model yet, fit it from the page, then 7 steps
            a.get_by_role("tab", name="Reconstruct").click()
            a.get_by_text("no RR model for subject 1").wait_for()
            a.get_by_role("button", name="Fit RR now").click()
            a.get_by_text("RR fitted for subject 1").wait_for(timeout=120_000)
            a.get_by_text("RR model:").wait_for()
            steps = a.locator(".br-steps input")
            # the sampler presets: "fast" (the frontier's pick) and back to the thesis' DDIM 100 set steps and scheduler
            fast_name, fast = next((k, v) for k, v in SAMPLER_PRESETS.items() if k.startswith("fast"))
            a.locator(".br-sampler").get_by_role("button", name=fast_name).click()
            expect(steps).to_have_value(str(fast["steps"]))
            expect(a.locator(".br-scheduler select")).to_have_value(fast["scheduler"])
            a.locator(".br-sampler").get_by_role("button", name="thesis (DDIM 100)").click()
            expect(steps).to_have_value("100")
            steps.fill("7")
            steps.press("Enter")
            a.locator(".br-go").dblclick()          # a double click: one reconstruction, not two
            a.locator(".br-metrics-view").get_by_text("PixCorr").wait_for(timeout=120_000)
            a.wait_for_timeout(2000)                 # the second click's request, answered from the store
            metrics = a.locator(".br-metrics-view").inner_text()
            assert re.search(r"PixCorr -?\d\.\d{3}\s+SSIM -?\d\.\d{3}", metrics), metrics
            assert "RR, mini decoder, 7 steps ddim, guidance 3, seed 0" in metrics, metrics
            expect(a.locator(".br-sampler").get_by_role("button", name="custom")).to_have_class(re.compile("mod-active"))
            assert a.get_by_text(re.compile(r"done in \d+\.\d s")).is_visible()
            for css in ("br-stimulus-view", "br-reconstruction"):
                box = a.locator(f".{css}").bounding_box()
                assert box and box["width"] >= 200 and box["height"] >= 200, (css, box)
            a.screenshot(path=str(ARTIFACTS / "app_reconstruction.png"), full_page=True)
            rows, stored = store_counts(db, files)
            assert rows == {"recordings": [("alice", 1), ("bob", 1)], "reconstructions": [("alice", 1)]}
            assert len(stored) == 4      # alice's voxels and stimulus, her reconstruction, bob's voxels
            with sqlite3.connect(db) as con:
                steps_kept, pixcorr = con.execute("SELECT steps, pixcorr FROM reconstructions").fetchone()
            assert steps_kept == 7 and -1 <= pixcorr <= 1
            assert f"{pixcorr:.3f}" in metrics

            # history and statistics
            a.get_by_role("tab", name="History & statistics").click()
            a.locator(".br-history-view table").get_by_text("alice-mean").wait_for(timeout=60_000)
            assert "1 recording (1 with a stimulus), 1 reconstruction (1 scored)" in a.inner_text("body")
            for css in ("br-stats-plot", "br-past-image"):            # the statistics figure and the past reconstruction
                a.locator(f".{css}").wait_for(state="visible", timeout=60_000)
            assert list_options(a, "br-past") == [f"#1 alice-mean RR 7 steps, PixCorr {pixcorr:.3f}"]
            assert a.locator(".br-stats-plot").bounding_box()["height"] > 200
            a.screenshot(path=str(ARTIFACTS / "app_history.png"), full_page=True)

            # each user, reloading, still sees only their own recordings
            b.reload()
            b.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
            assert list_options(b, "br-list", ["bob-renamed (#2, subject 1)"]) == ["bob-renamed (#2, subject 1)"]
            assert list_options(b, "br-recording-choice") == ["bob-renamed (#2, subject 1)"]
            b.get_by_role("tab", name="History & statistics").click()
            b.get_by_text("no reconstructions yet").wait_for(timeout=60_000)
            b.locator(".br-stats-plot").wait_for(state="visible", timeout=60_000)
            b.screenshot(path=str(ARTIFACTS / "app_bob.png"), full_page=True)
            # bob deletes his recording (after a confirmation); alice's is untouched. A confirmation names one recording:
            # selecting another withdraws it, and the button deletes exactly the recording it names
            b.get_by_role("tab", name="Recordings").click()
            choose_file(b, "br-voxels", examples / "subj01_nsd00416_mean.npy")
            b.locator(".br-name input").fill("bob-second")
            b.locator(".br-add").click()
            assert "added “bob-second”" in upload_message(b, "ok")
            b.locator(".br-list select").select_option(label="bob-renamed (#2, subject 1)")
            b.locator(".br-delete").click()
            expect(b.locator(".br-confirm")).to_have_text("Yes, delete “bob-renamed”")
            b.locator(".br-list select").select_option(label="bob-second (#3, subject 1)")
            expect(b.locator(".br-confirm")).to_be_hidden()
            b.locator(".br-list select").select_option(label="bob-renamed (#2, subject 1)")
            b.locator(".br-delete").click()
            b.locator(".br-confirm").get_by_text("Yes, delete “bob-renamed”").click()
            b.get_by_text("deleted “bob-renamed” and its 0 reconstruction(s)").wait_for(timeout=30_000)
            assert list_options(b, "br-list", ["bob-second (#3, subject 1)"]) == ["bob-second (#3, subject 1)"]
            rows, left = store_counts(db, files)
            assert rows == {"recordings": [("alice", 1), ("bob", 1)], "reconstructions": [("alice", 1)]} and len(left) == 4
            a.reload()
            a.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
            assert list_options(a, "br-list", mine) == mine
            browser.close()
    finally:
        alice.stop()
        bob.stop()
    assert "bobs-secret-token" not in bob.log.read_text(), "bob's token in his server's log"
    assert alice.log.read_text().count(alice.token) == 1, "alice's token logged beyond the one line that tells it"
    print(f"dashboard end-to-end test: {time.time() - t0:.1f} s")
