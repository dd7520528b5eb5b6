"""The shared worker (chapter 22): images per second for N concurrent requests (N people pressing Reconstruct at
once, each one image), decoded by the worker with batching (up to N per batch) against the same worker taking them
one by one (max batch 1), in the same run, over HTTP as the dashboard sends them. Mini decoder on the CPU by default
(the configuration's decoder and device otherwise).

    python bench/worker_batching.py [--requests 8] [--steps 50] [--rounds 3]
"""
import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from brainrecon.config import load_config
from brainrecon.worker import decode_via_worker, start_worker, stop_worker


def burst(url, tokens, steps):
    "All requests at once, one thread each; seconds until the last image arrived."
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(tokens)) as pool:
        images = list(pool.map(lambda i: decode_via_worker(url, tokens[i], steps=steps, seed=i, user=f"user{i}"), range(len(tokens))))
    return time.perf_counter() - t0, images


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="bursts per setting (the median is reported)")
    ap.add_argument("--port", type=int, default=8797)
    args = ap.parse_args()
    cfg = load_config()
    url = f"http://127.0.0.1:{args.port}"
    from brainrecon.app_actions import get_decoder
    shape = get_decoder(cfg).token_shape
    tokens = np.random.default_rng(0).standard_normal((args.requests, *shape)).astype(np.float32) * 2
    results = {}
    for name, max_batch in (("one by one (max batch 1)", 1), (f"batched (max batch {args.requests})", args.requests)):
        handle = start_worker(cfg, port=args.port, max_batch_size=max_batch, batch_wait_s=0.25)
        try:
            burst(url, tokens[:1], 2)                                            # warm-up
            times = []
            for _ in range(args.rounds):
                seconds, images = burst(url, tokens, args.steps)
                times.append(seconds)
            results[name] = (float(np.median(times)), images, handle.batch_sizes.remote().result())
        finally:
            stop_worker()
    (one_s, one_images, one_batches), (bat_s, bat_images, bat_batches) = results.values()
    diff = max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(one_images, bat_images))
    print(f"{args.requests} concurrent requests, {args.steps} steps, {cfg.decoder_spec} decoder, {os.cpu_count()} CPUs; "
          f"median of {args.rounds} bursts")
    for (name, (s, _, batches)) in results.items():
        print(f"  {name}: {args.requests / s:.2f} images/s ({s:.2f} s per burst); batch sizes {batches}")
    print(f"  batched / one by one: x{one_s / bat_s:.2f} images per second; max |difference| {diff} grey level(s)")


if __name__ == "__main__":
    main()
