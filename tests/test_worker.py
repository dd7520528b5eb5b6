"""The shared reconstruction worker (`brainrecon worker`, Ray Serve, chapter 22) as a lab uses it: started from the
command line, two people's requests sent at the same moment over HTTP are decoded in one batch (the worker's log says
so, naming both), each gets the image of their own tokens and seed, and SIGTERM ends the worker with every Ray process
it started."""
import signal
import threading

import numpy as np

from conftest import BIN, output, port_open, start_tagged, stop_and_check, wait_until
from test_app import free_port


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
