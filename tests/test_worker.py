"""The shared reconstruction worker (`brainrecon worker`, Ray Serve, chapter 22) as a lab uses it: started from the
command line, two people's requests sent at the same moment over HTTP are decoded in one batch (the worker's log says
so, naming both), each gets the image of their own tokens and seed, and SIGTERM ends the worker with every Ray process
it started."""
import signal
import threading

import numpy as np

from conftest import BIN, ROOT, output, port_open, start_tagged, stop_and_check, wait_until
from test_app import free_port

ARTIFACTS = ROOT / "tests" / "artifacts"


def test_worker_batches_two_people(isolated_env):
    from brainrecon.app_actions import get_decoder
    from brainrecon.config import load_config
    from brainrecon.decoding import reconstruct
    from brainrecon.worker import decode_via_worker
    port = free_port()
    proc, tag = start_tagged([BIN / "brainrecon", "worker", "--port", port, "--batch-wait", "1.0"], isolated_env)
    try:
        wait_until(lambda: "worker at http://127.0.0.1" in output(proc)[0], 240, "the worker to start", proc)
        decoder = get_decoder(load_config())
        tokens = np.random.default_rng(1).standard_normal((2, *decoder.token_shape)).astype(np.float32) * 2
        images, start = {}, threading.Barrier(2)
        def send(i, user):
            start.wait()
            images[user] = decode_via_worker(f"http://127.0.0.1:{port}", tokens[i], steps=8, seed=10 + i, user=user)
        threads = [threading.Thread(target=send, args=(i, u)) for i, u in enumerate(("ana", "bob"))]
        for t in threads: t.start()
        for t in threads: t.join(300)
        assert set(images) == {"ana", "bob"}
        wait_until(lambda: "batch of 2 request(s) from ana, bob in 1 call(s)" in "".join(output(proc)), 30,
                   "the worker's log line of one batch of both")
        for i, user in enumerate(("ana", "bob")):       # each gets their own image: as decoding alone, within 1 grey level
            alone = reconstruct(decoder, tokens[i:i + 1], steps=8, guidance_scale=3.0, seed=10 + i, progress=False)[0]
            assert np.abs(images[user].astype(int) - alone.astype(int)).max() <= 1, user
        stop_and_check(proc, tag, signal.SIGTERM, within=60)
        assert not port_open(port)
    finally:
        if proc.poll() is None: proc.kill()


def _kernels(server) -> list:
    "The dashboard kernels a `brainrecon app` server started (each page runs one)."
    import psutil
    try: family = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess: return []
    return [p for p in family if "ipykernel" in " ".join(p.cmdline())]


def _replicas(tag) -> list:
    "The worker's Ray Serve replica processes (they decode)."
    from conftest import tagged_processes
    out = []
    for p in tagged_processes(tag):
        try:
            if "ServeReplica" in " ".join(p.cmdline()): out.append(p)
        except Exception: pass
    return out


def test_jobs_through_the_worker(isolated_env, tmp_path):
    """Jobs as a lab uses them (chapters 22, 23): a job sent from the dashboard whose page is then closed (and its kernel
    gone) is in the history when the page is opened again, and the comparison view shows it beside the stimulus; two
    people's jobs submitted at the same moment are one batch in the worker's log, and `brainrecon jobs --wait` collects
    one of them; `brainrecon reconstruct --via-worker` returns at once; a replica killed mid-job (SIGKILL) and the whole
    worker stopped mid-job (SIGTERM) each leave the job failed with the reason, no reconstruction row and no file."""
    import time
    import psutil
    from brainrecon.app_actions import add_uploaded_recording
    from brainrecon.app_jobs import submit_job
    from brainrecon.app_serve import ENV_USER, app_settings
    from brainrecon.app_store import Store
    from brainrecon.app_uploads import Upload
    from brainrecon.config import load_config
    from brainrecon.worker import job_state
    from test_app import CHROMIUM, CHROMIUM_ARGS, LOAD_TIMEOUT_MS, Server, brainrecon, choose_file, playwright, upload_message

    res = brainrecon("app", "--export-examples", str(tmp_path / "examples"), "-n", "1", env=isolated_env)
    assert res.returncode == 0, res.stdout + res.stderr
    res = brainrecon("fit", "-s", "1", env=isolated_env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    examples = tmp_path / "examples"
    mean, stimulus = examples / "subj01_nsd00508_mean.npy", examples / "subj01_nsd00508.png"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = load_config(data_dir=isolated_env["BRAINRECON_DATA_DIR"], run_dir=isolated_env["BRAINRECON_RUN_DIR"], worker_url=url)
    store = lambda user: Store.open(app_settings(cfg, {ENV_USER: user}))
    files = lambda: sorted(p.name for p in cfg.run_path("app", "files").rglob("*") if p.is_file())
    worker, tag = start_tagged([BIN / "brainrecon", "worker", "--port", port, "--batch-wait", "1.0"], isolated_env)
    app = Server(isolated_env, tmp_path / "app.log", "--user", "alice", "--worker-url", url)
    try:
        wait_until(lambda: "worker at http://127.0.0.1" in output(worker)[0], 240, "the worker to start", worker)
        app.wait()

        # 1. the dashboard: a job, the page closed while it runs and its kernel gone, the page opened again
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.goto(app.url())
            page.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
            assert f"shared worker {url}" in page.locator(".br-header").inner_text()
            choose_file(page, "br-voxels", mean)
            choose_file(page, "br-stimulus", stimulus)
            page.locator(".br-add").click()
            assert "added" in upload_message(page, "ok")
            page.get_by_role("tab", name="Reconstruct").click()
            page.locator(".br-steps input").fill("400")
            page.locator(".br-steps input").press("Tab")
            page.locator(".br-go").click()
            page.locator(".br-result-msg").get_by_text("sent to the worker").wait_for(timeout=60_000)
            [job] = store("alice").jobs()
            old_kernels = _kernels(app)
            page.close()
            for p in old_kernels: p.kill()               # the closed page's kernel is gone (culled), it collects nothing
            psutil.wait_procs(old_kernels, timeout=10)
            assert not store("alice").job(job.id).finished, "the job ended before its page was closed: nothing tested"
            wait_until(lambda: job_state(url, job.worker_job)["state"] == "done", 180, "the worker to finish the job")
            assert store("alice").job(job.id).state != "done"          # nobody has collected it yet
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.goto(app.url())
            page.locator(".br-add").wait_for(timeout=LOAD_TIMEOUT_MS)
            page.get_by_role("tab", name="History & statistics").click()
            page.locator(".br-history-view table").get_by_text("400").first.wait_for(timeout=60_000)
            done = store("alice").job(job.id)
            assert done.state == "done" and store("alice").reconstruction(done.reconstruction_id).steps == 400
            page.get_by_role("tab", name="Compare").click()
            page.locator(".br-compare-item").nth(1).wait_for(timeout=60_000)     # the stimulus and the reconstruction
            assert page.locator(".br-compare-item").count() == 2
            assert "PixCorr" in page.locator(".br-compare-view").inner_text()
            page.screenshot(path=str(ARTIFACTS / "worker_compare.png"), full_page=True)
            browser.close()
        assert job_state(url, job.worker_job) is None                  # collected: the worker forgot it

        # 2. two people submit at the same moment: one batch of both; `brainrecon jobs --wait` collects ana's
        recs = {u: add_uploaded_recording(store(u), cfg, 1, Upload(mean.name, mean.read_bytes())) for u in ("ana", "bob")}
        jobs, start = {}, threading.Barrier(2)
        def send(user):
            start.wait()
            jobs[user] = submit_job(store(user), cfg, recs[user].id, steps=8, seed=3)
        threads = [threading.Thread(target=send, args=(u,)) for u in ("ana", "bob")]
        for t in threads: t.start()
        for t in threads: t.join(120)
        assert {u: j.state for u, j in jobs.items()} == {"ana": "queued", "bob": "queued"}
        wait_until(lambda: "batch of 2 request(s) from ana, bob in 1 call(s)" in "".join(output(worker)), 60,
                   "the worker's log line of one batch of both")
        env = {**isolated_env, "BRAINRECON_WORKER_URL": url}
        res = brainrecon("jobs", "--wait", "--user", "ana", "--out-dir", str(tmp_path / "out"), env=env)
        assert res.returncode == 0 and f"job {jobs['ana'].id:>4}  done" in res.stdout, res.stdout + res.stderr
        assert (tmp_path / "out" / f"job-{jobs['ana'].id}.png").is_file()

        # 3. --via-worker returns at once; a replica killed mid-job: the job fails, nothing is kept
        def via_worker(user):
            t0 = time.monotonic()
            res = brainrecon("reconstruct", str(mean), "-s", "1", "--via-worker", "--stimulus", str(stimulus), "--steps", "999",
                             "--user", user, env=env)
            assert res.returncode == 0 and "queued at" in res.stdout, res.stdout + res.stderr
            [job] = store(user).jobs()
            return job, time.monotonic() - t0
        job, seconds = via_worker("carl")
        print(f"brainrecon reconstruct --via-worker returned in {seconds:.1f} s")
        wait_until(lambda: job_state(url, job.worker_job)["state"] == "running", 60, "carl's job to run")
        before = files()
        replicas = _replicas(tag)
        assert len(replicas) == 1, [p.cmdline() for p in replicas]
        replicas[0].kill()
        res = brainrecon("jobs", "--wait", "--user", "carl", "--timeout", "120", env=env)
        assert res.returncode == 1 and "failed" in res.stdout and "replica decoding it stopped" in res.stdout, res.stdout + res.stderr
        assert store("carl").reconstructions() == [] and files() == before
        assert not list(cfg.run_path("worker").glob(f"{job.worker_job}.png"))

        # 4. the whole worker stopped (SIGTERM) mid-job: failed, nothing kept
        wait_until(lambda: len(_replicas(tag)) == 1, 120, "Ray Serve to replace the replica")
        job, _ = via_worker("dora")
        wait_until(lambda: job_state(url, job.worker_job)["state"] == "running", 120, "dora's job to run")
        before = files()
        stop_and_check(worker, tag, signal.SIGTERM, within=60)
        res = brainrecon("jobs", "--wait", "--user", "dora", env=env)
        assert res.returncode == 1 and f"no worker at {url}" in res.stdout, res.stdout + res.stderr
        assert store("dora").reconstructions() == [] and files() == before
    finally:
        app.stop()
        if worker.poll() is None: worker.kill()
