"""The mini decoder on the CPU: images per second of the main job's decoding (experiment 5: 2 pipelines x 4 subjects x
3 seeds x 16 test images, DDIM 100, guidance 3) as it was done (one call per pipeline, subject and seed: 16 images
per batch) against one batched call per pipeline (every subject and seed: 96 images per batch), in the same run.
The outputs must agree within 1e-4 (batching changes nothing: bit for bit).

    python bench/mini_decoding.py [--steps 100]
"""
import argparse
import os
import time

import numpy as np
import torch

from brainrecon.decoding import load_decoder, reconstruct


def timed(fn):
    t0 = time.perf_counter(); out = fn(); return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--calls", type=int, default=12, help="calls of 16 images in the old pattern (experiment 5: 12 per pipeline)")
    args = ap.parse_args()
    torch.manual_seed(0)
    decoder = load_decoder("mini")
    n = 16 * args.calls
    tokens = np.random.default_rng(0).standard_normal((n, *decoder.token_shape)).astype(np.float32) * 2
    seeds = list(np.arange(n) % 3)
    kw = dict(steps=args.steps, guidance_scale=3.0, progress=False, output="float")
    reconstruct(decoder, tokens[:2], **{**kw, "steps": 2})                                          # warm-up
    old, t_old = timed(lambda: np.concatenate([reconstruct(decoder, tokens[a:a + 16], seed=seeds[a:a + 16], batch_size=25, **kw)
                                               for a in range(0, n, 16)]))
    new, t_new = timed(lambda: reconstruct(decoder, tokens, seed=seeds, batch_size=96, **kw))
    print(f"{n} images, {args.steps} steps, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    print(f"  one call per 16 images (before): {n / t_old:.2f} images/s ({t_old / n / args.steps * 1000:.2f} ms per image-step)")
    print(f"  one call, batches of 96 (after): {n / t_new:.2f} images/s ({t_new / n / args.steps * 1000:.2f} ms per image-step), "
          f"x{t_old / t_new:.2f}; max |difference| {np.abs(new - old).max():.1e}")
    assert np.abs(new - old).max() <= 1e-4


if __name__ == "__main__":
    main()
