"""Stopping `brainrecon app`: SIGTERM (what a service manager or JupyterHub's spawner sends) and SIGINT (Ctrl-C) end
the command, its Voila server and the kernels Voila started, close the port, and the same command then starts
cleanly on the same port. (`federate`, `reproduce` and `rehearse` are stopped in their own tests: test_federated,
test_reproduce, test_rehearsal.)"""
import signal
import threading
import urllib.error
import urllib.request

from conftest import BIN, port_open, start_tagged, stop_and_check, tagged_processes, wait_until


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 300):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r: return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e: return e.code, e.read().decode(errors="replace")
    except Exception as e: return None, repr(e)     # the page's connection cut by the stop: expected in step 1


def test_app_stops_with_its_server_and_kernels(isolated_env):
    port, token = _free_port(), "stop-test-token"
    cmd = [BIN / "brainrecon", "app", "--port", port, "--token", token]
    page = f"http://127.0.0.1:{port}/?token={token}"

    # 1. SIGTERM while a page is being rendered: brainrecon, Voila and the page's kernel all exist
    proc, tag = start_tagged(cmd, isolated_env)
    wait_until(lambda: port_open(port), 180, "the dashboard's port to open", proc)
    threading.Thread(target=_get, args=(page,), daemon=True).start()
    kernel = lambda: any("ipykernel" in " ".join(p.cmdline()) for p in tagged_processes(tag))
    wait_until(kernel, 120, "Voila to start a kernel for the page", proc)
    stop_and_check(proc, tag, signal.SIGTERM)
    assert not port_open(port), "the port still accepts connections after SIGTERM"

    # 2. the same command on the same port starts cleanly and serves the page; then Ctrl-C (SIGINT)
    proc, tag = start_tagged(cmd, isolated_env)
    try:
        wait_until(lambda: port_open(port), 180, "the dashboard's port to open again", proc)
        status, body = _get(page)
        assert status == 200 and "brainrecon" in body.lower(), (status, body[:500])
        stop_and_check(proc, tag, signal.SIGINT)
        assert not port_open(port), "the port still accepts connections after SIGINT"
    finally:
        if proc.poll() is None: proc.kill()


def test_app_caps_its_pages(isolated_env):
    "`--max-sessions 1`: the first page gets the server's one kernel, a second page is refused with a message (503)."
    port, token = _free_port(), "cap-test-token"
    proc, tag = start_tagged([BIN / "brainrecon", "app", "--port", port, "--token", token, "--max-sessions", "1"], isolated_env)
    try:
        wait_until(lambda: port_open(port), 180, "the dashboard's port to open", proc)
        page = f"http://127.0.0.1:{port}/?token={token}"
        assert _get(page)[0] == 200                             # rendered; its kernel stays for the page's session
        status, body = _get(page)
        assert status == 503 and "already serves 1 pages" in body, (status, body[:2000])
        stop_and_check(proc, tag, signal.SIGTERM)
    finally:
        if proc.poll() is None: proc.kill()
