"""The dashboard for a lab: `brainrecon hub` (JupyterHub 5, NativeAuthenticator, configurable-http-proxy, one system
account per person), driven in headless Chromium by an admin and two people.

The hub needs root (it creates system accounts and starts each person's server as theirs); the test creates accounts
with a random prefix and removes them, their homes and their processes at the end. It checks sign-up with admin
approval, hashed passwords, each person uploading and reconstructing, each seeing only their own history and
statistics, that a signed-out request and a request for another person's server are refused, and, from inside one
person's server (a kernel started through its Jupyter API, code run in it), that the other person's store cannot be
opened. Time and memory of the hub with two people go to tests/artifacts/hub_resources.json.
"""
import json
import os
import pwd
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import BIN, ROOT, output, port_open, start_tagged, wait_until
from test_app import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LOAD_TIMEOUT_MS, choose_file, free_port, list_options,
                      upload_message)

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="brainrecon hub creates system accounts: it needs root")

PASSWORDS = {"boss": "boss-approves-7391", "alice": "alice-reads-4826", "bob": "bob-decodes-5170"}

# Run inside a person's server: start a kernel through the server's Jupyter API (as the page's own scripts do, with the
# page's cookies and XSRF token), run `code` in it over the kernel's websocket, return what it printed.
RUN_IN_KERNEL_JS = """async ([base, code]) => {
  const xsrf = decodeURIComponent((document.cookie.split('; ').find(c => c.startsWith('_xsrf=')) || '_xsrf=').slice(6));
  const headers = {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'};
  const r = await fetch(base + 'api/kernels', {method: 'POST', headers, body: JSON.stringify({name: 'python3'})});
  if (!r.ok) return 'kernel refused: ' + r.status + ' ' + await r.text();
  const kernel = await r.json();
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + base + 'api/kernels/' + kernel.id + '/channels');
  const msgId = crypto.randomUUID();
  const text = await new Promise((resolve, reject) => {
    let out = '';
    ws.onerror = () => reject(new Error('websocket error'));
    ws.onopen = () => ws.send(JSON.stringify({channel: 'shell', buffers: [], metadata: {}, parent_header: {},
      header: {msg_id: msgId, msg_type: 'execute_request', username: '', session: crypto.randomUUID(), version: '5.3',
               date: new Date().toISOString()},
      content: {code, silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.parent_header.msg_id !== msgId) return;
      if (m.msg_type === 'stream') out += m.content.text;
      if (m.msg_type === 'error') out += m.content.ename + ': ' + m.content.evalue + '\\n';
      if (m.msg_type === 'status' && m.content.execution_state === 'idle') resolve(out);
    };
  });
  ws.close();
  await fetch(base + 'api/kernels/' + kernel.id, {method: 'DELETE', headers});
  return text;
}"""

PROBE = """
import os, pwd
print("running as", pwd.getpwuid(os.getuid()).pw_name)
for path in {paths!r}:
    try:
        if os.path.isdir(path): os.listdir(path)
        else: open(path, "rb").read(16)
        print("OPENED", path)
    except OSError as e:
        print("REFUSED", path, type(e).__name__)
"""


@pytest.fixture
def study():
    "A study every account may read (umask 022, in a 0755 folder outside pytest's private one): mini world, examples, RR for subject 1."
    old = os.umask(0o022)
    folder = Path(tempfile.mkdtemp(prefix="brainrecon-hub-study-", dir="/tmp"))
    os.chmod(folder, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINRECON_")}
    env.update(BRAINRECON_DATA_DIR=str(folder / "data"), BRAINRECON_RUN_DIR=str(folder / "run"),
               BRAINRECON_FIGURES_DIR=str(folder / "figures"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    try:
        for args in (["app", "--export-examples", str(folder / "examples"), "-n", "2"], ["fit", "--subject", "1"],
                     ["app", "--export-examples", str(folder / "examples2"), "-n", "1", "--subject", "2"]):
            res = subprocess.run([str(BIN / "brainrecon"), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
            assert res.returncode == 0, res.stdout + res.stderr
        yield folder, env
    finally:
        os.umask(old)
        subprocess.run(["rm", "-rf", str(folder)])


@pytest.fixture
def accounts():
    "A random account prefix; afterwards every account with it is ended and removed with its home."
    prefix = f"brt{uuid.uuid4().hex[:5]}-"
    yield prefix
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["pkill", "-KILL", "-u", entry.pw_name])
            time.sleep(0.5)
            subprocess.run(["userdel", "--remove", entry.pw_name], capture_output=True)


def sign_up(browser, base, name):
    page = browser.new_context().new_page()
    page.goto(f"{base}/hub/signup")
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORDS[name])
    page.fill("#password_confirmation_input", PASSWORDS[name])
    page.click("#signup_submit")
    page.wait_for_load_state()
    message = " ".join(page.locator(".alert").all_inner_texts())
    page.context.close()
    return message


def sign_in(browser, base, name, password=None, next_url=None):
    context = browser.new_context(viewport={"width": 1200, "height": 1500})
    page = context.new_page()
    page.goto(f"{base}/hub/login" + (f"?next={next_url}" if next_url else ""))
    page.fill("#username_input", name)
    page.fill("#password_input", password or PASSWORDS[name])
    page.click("#login_submit")
    page.wait_for_load_state()
    return page


def add_and_reconstruct(page, examples, voxels, stimulus, name, steps):
    "Upload a recording (with its stimulus) under `name`, then reconstruct it with `steps` steps; the metrics text."
    page.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
    choose_file(page, "br-voxels", examples / voxels)
    choose_file(page, "br-stimulus", examples / stimulus)
    page.locator(".br-name input").fill(name)
    page.locator(".br-add").click()
    assert f"added “{name}” (subject 1, 1572 voxels, with stimulus)" in upload_message(page, "ok")
    page.get_by_role("tab", name="Reconstruct").click()
    page.get_by_text("RR model:").wait_for(timeout=60_000)        # the lab's model, fitted before the hub started
    steps_box = page.locator(".br-steps input")
    steps_box.fill(str(steps))
    steps_box.press("Enter")
    page.locator(".br-go").click()
    page.locator(".br-metrics-view").get_by_text("PixCorr").wait_for(timeout=180_000)
    return page.locator(".br-metrics-view").inner_text()


def tree(pid):
    try: return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess: return []


def test_hub_for_a_lab(study, accounts, tmp_path):
    folder, env = study
    examples = folder / "examples"
    homes = Path(tempfile.mkdtemp(prefix="brainrecon-hub-homes-", dir="/tmp"))
    os.chmod(homes, 0o755)
    run = homes.parent / f"{homes.name}-run"           # the accounts' interpreter goes in there: not under pytest's 0700 folder
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    t0 = time.time()
    hub, tag = start_tagged([BIN / "brainrecon", "hub", "--port", port, "--admin", "boss", "--run-dir", run, "--homes", homes,
                             "--user-prefix", accounts, "--max-sessions", "3"], env)
    try:
        wait_until(lambda: "JupyterHub is now running" in output(hub)[1] + output(hub)[0], 180, "the hub to start", hub)
        started_s = time.time() - t0
        state = run / "state"
        mode = lambda p: p.stat().st_mode & 0o777
        assert (mode(state), mode(state / "jupyterhub.sqlite"), mode(state / "jupyterhub_cookie_secret"),
                mode(state / "settings.json")) == (0o700, 0o600, 0o600, 0o600)

        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # sign-up: the admin is approved at once, the others wait for the admin
            assert "successful" in sign_up(browser, base, "boss")
            for name in ("alice", "bob"):
                assert "sent to the admin" in sign_up(browser, base, name)
            waiting = sign_in(browser, base, "alice")
            assert "/hub/login" in waiting.url and "/user/" not in waiting.url           # not approved yet
            waiting.context.close()
            with sqlite3.connect(state / "jupyterhub.sqlite") as con:
                stored = dict(con.execute("SELECT username, password FROM users_info").fetchall())
            assert set(stored) == {"boss", "alice", "bob"}
            for name, hashed in stored.items():                  # bcrypt hashes, never the password
                assert bytes(hashed).startswith(b"$2b$") and PASSWORDS[name].encode() not in bytes(hashed)

            boss = sign_in(browser, base, "boss", next_url="/hub/authorize")
            print("the admin signed in at", boss.url)
            if "/hub/authorize" not in boss.url: boss.goto(f"{base}/hub/authorize")
            for name in ("alice", "bob"):
                boss.locator("tr", has_text=name).get_by_role("button", name="Authorize", exact=True).click()
                boss.wait_for_load_state()
            for name in ("alice", "bob"):
                assert boss.locator("tr", has_text=name).get_by_role("button", name="Unauthorize", exact=True).count() == 1
            boss.context.close()
            wrong = sign_in(browser, base, "bob", password="not-bobs-password")
            assert "/hub/login" in wrong.url and "/user/" not in wrong.url
            wrong.context.close()

            # each person signs in to their own dashboard, as their own system account, and reconstructs
            pages = {}
            for name in ("alice", "bob"):
                t = time.time()
                pages[name] = sign_in(browser, base, name)
                pages[name].locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
                print(f"{name}'s dashboard ready {time.time() - t:.1f} s after signing in")
                assert f"/user/{name}/voila/render/app.ipynb" in pages[name].url
                assert f"user {name}" in pages[name].locator(".br-header").inner_text()
                assert list_options(pages[name], "br-list") == []
            a, b = pages["alice"], pages["bob"]
            metrics_a = add_and_reconstruct(a, examples, "subj01_nsd00508_mean.npy", "subj01_nsd00508.png", "alice-scan", 3)
            metrics_b = add_and_reconstruct(b, examples, "subj01_nsd00416_mean.npy", "subj01_nsd00416.png", "bob-scan", 4)
            assert "3 steps" in metrics_a and "4 steps" in metrics_b, (metrics_a, metrics_b)
            for name, page, other in (("alice", a, "bob-scan"), ("bob", b, "alice-scan")):
                mine = f"{name}-scan (#1, subject 1, with stimulus)"         # each store numbers its own recordings
                assert list_options(page, "br-list", [mine]) == [mine]
                page.get_by_role("tab", name="History & statistics").click()
                page.locator(".br-history-view table").get_by_text(f"{name}-scan").wait_for(timeout=60_000)
                body = page.inner_text("body")
                assert "1 recording (1 with a stimulus), 1 reconstruction (1 scored)" in body and other not in body
                page.screenshot(path=str(ARTIFACTS / f"hub_{name}.png"), full_page=True)

            # the stores: in each person's 0700 home, owned by their account
            stores = {}
            for name in ("alice", "bob"):
                entry = pwd.getpwnam(accounts + name)
                home = Path(entry.pw_dir)
                assert home.parent == homes and mode(home) == 0o700 and home.stat().st_uid == entry.pw_uid
                db = home / ".brainrecon" / "dashboard" / "brainrecon.db"
                assert db.stat().st_uid == entry.pw_uid and mode(db) == 0o600
                with sqlite3.connect(db) as con:
                    assert con.execute("SELECT owner, count(*) FROM recordings GROUP BY owner").fetchall() == [(name, 1)]
                stores[name] = dict(home=home, db=db, files=db.parent / "files",
                                    file=next(p for p in (db.parent / "files").rglob("*") if p.is_file()))
            measured = dict(hub_start_s=round(started_s, 1), seconds_until_both_reconstructed=round(time.time() - t0, 1))
            procs = tree(hub.pid)
            rss = {p.pid: p.memory_info().rss for p in procs if p.is_running()}
            def role(p):
                line = " ".join(p.cmdline())
                for key, name in (("ipykernel", "kernel"), ("singleuser_main", "server"), ("configurable-http-proxy", "proxy"),
                                  ("jupyterhub -f", "jupyterhub"), ("from brainrecon.cli import main", "brainrecon hub"),
                                  ("bin/brainrecon hub", "supervisor")):
                    if key in line: return name
                return line[:60]
            measured.update(processes=len(rss), rss_total_gb=round(sum(rss.values()) / 2**30, 2),
                            rss_mb=[(p.username(), role(p), round(rss[p.pid] / 2**20)) for p in procs if p.pid in rss])

            # the lab's models are read-only for a person: "Fit RR now" (subject 2 has no RR model) says what to do
            b.get_by_role("tab", name="Recordings").click()
            b.locator(".br-subject select").select_option(label="subject 2")
            choose_file(b, "br-voxels", next((folder / "examples2").glob("*_mean.npy")))
            b.locator(".br-name input").fill("bob-subject2")
            b.locator(".br-add").click()
            assert "added “bob-subject2” (subject 2" in upload_message(b, "ok")
            b.get_by_role("tab", name="Reconstruct").click()
            choice = next(o for o in list_options(b, "br-recording-choice") if o.startswith("bob-subject2"))
            b.locator(".br-recording-choice select").select_option(label=choice)
            b.get_by_text("no RR model for subject 2").wait_for(timeout=60_000)
            b.get_by_role("button", name="Fit RR now").click()
            b.get_by_text("you cannot write the models folder").wait_for(timeout=120_000)
            assert not (folder / "run" / "ridge" / "subj02").exists()

            # refused: a signed-out request, another person's server, the other's store from inside one's own server
            anonymous = browser.new_context()
            r = anonymous.request.get(f"{base}/user/alice/api/kernels", max_redirects=0)
            assert r.status in (302, 403) and "br-" not in r.text()
            page = anonymous.new_page()
            page.goto(f"{base}/user/alice/voila/render/app.ipynb")
            assert "/hub/login" in page.url and page.locator(".br-dashboard").count() == 0
            anonymous.close()
            response = a.goto(f"{base}/user/bob/voila/render/app.ipynb")
            assert response.status == 403 and "/user/bob/voila" not in a.url and a.locator(".br-dashboard").count() == 0
            a.goto(f"{base}/user/alice/voila/render/app.ipynb")
            a.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
            theirs = [str(stores["bob"][k]) for k in ("db", "files", "file", "home")]
            own = [str(stores["alice"][k]) for k in ("db", "file")]
            printed = a.evaluate(RUN_IN_KERNEL_JS, ["/user/alice/", PROBE.format(paths=theirs + own)])
            print(printed)
            assert f"running as {accounts}alice" in printed, printed
            for path in theirs: assert f"REFUSED {path} PermissionError" in printed, printed
            for path in own: assert f"OPENED {path}" in printed, printed      # the probe can open what is hers
            browser.close()

        # stopping the hub ends the people's servers and kernels too
        procs = tree(hub.pid)
        os.kill(hub.pid, signal.SIGTERM)
        assert hub.wait(60) == 128 + signal.SIGTERM, output(hub)
        gone, alive = psutil.wait_procs(procs, timeout=30)
        assert not alive, alive
        assert not port_open(port)
        measured["stopped_processes"] = len(procs)
        (ARTIFACTS / "hub_resources.json").write_text(json.dumps(measured, indent=1))
        print(json.dumps(measured, indent=1))
    finally:
        out, err = output(hub)
        (ARTIFACTS / "hub.log").write_text(out + err)            # the hub's and the servers' log, for a failure
        for p in tree(hub.pid):
            try: p.kill()
            except psutil.NoSuchProcess: pass
        subprocess.run(["rm", "-rf", str(homes), str(run)])
