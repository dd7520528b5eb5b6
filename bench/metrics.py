"""Benchmark: `evaluate` (batched, each network built once) against a straightforward
one-image-at-a-time implementation of the same eight metrics, measured in the same run; and first,
PixCorr + SSIM (`pixel_scores`) scored 32 pairs at a time (before) against `PIXEL_BATCH` pairs at a
time (after), whose values must be equal to the last bit.

Images are random 425 x 425 ground truths and 512 x 512 reconstructions (SD 1.5's size).
Feature networks use RANDOM weights: this machine has no pretrained weights, and the cost
does not depend on the weights' values. Both implementations compute the same numbers; the
script checks that they agree.

    python bench/metrics.py [--n 982] [--quick] [--pixel-only] [--device cpu|cuda] [--batch-size 32]
"""
import argparse
import time

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from brainrecon import metrics as M


def one_at_a_time(gt, rec, device):
    "The straightforward way: every pair on its own, every image through each network alone."
    n = len(gt)
    pix, ss = [], []
    for g, r in zip(gt, rec):
        g425 = M.pixel_inputs(g[None], "thesis")[0].permute(1, 2, 0).numpy()
        r425 = M.pixel_inputs(r[None], "thesis")[0].permute(1, 2, 0).numpy()
        pix.append(np.corrcoef(g425.ravel(), r425.ravel())[0, 1])
        ss.append(structural_similarity(rgb2gray(r425), rgb2gray(g425), gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=1.0))
    out = {"pixcorr": np.mean(pix), "ssim": np.mean(ss)}
    for name, m in M.FEATURE_METRICS.items():
        net = M.FEATURE_NETWORKS[m.network]
        model = M.load_feature_network(m.network, [m.layer], random_weights=True, device=device)  # rebuilt per metric
        mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in net.norm)
        feats = {}
        with torch.inference_mode():
            for key, imgs in (("gt", gt), ("rec", rec)):
                feats[key] = np.stack([model((M.network_inputs(im[None], net.size, "thesis", device) - mean) / std)[m.layer]
                                       .flatten().float().cpu().numpy() for im in imgs])
        r = np.corrcoef(feats["gt"], feats["rec"])[:n, n:]
        if m.kind == "identification":
            out[name] = np.mean([np.mean([r[i, j] < r[j, j] for i in range(n) if i != j]) for j in range(n)])
        else:
            out[name] = np.mean(1 - np.diag(r))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=982, help="image pairs (NSD's test set: 982)")
    ap.add_argument("--quick", action="store_true", help="64 pairs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pixel-only", action="store_true", help="only PixCorr + SSIM, batches of 32 against PIXEL_BATCH")
    args = ap.parse_args()
    n = 64 if args.quick else args.n
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (n, 425, 425, 3), dtype=np.uint8)
    rec = np.clip(M.resized(gt, 512, "torch-aa").permute(0, 2, 3, 1).numpy() * 255 + rng.normal(0, 40, (n, 512, 512, 3)),
                  0, 255).astype(np.uint8)
    print(f"{n} pairs (425 x 425 ground truth, 512 x 512 reconstructions), device {args.device}, "
          f"torch threads {torch.get_num_threads()}, RANDOM network weights")
    for protocol in M.PROTOCOLS:
        t0 = time.perf_counter(); before = M.pixel_scores(gt, rec, protocol, batch_size=32); t_before = time.perf_counter() - t0
        t0 = time.perf_counter(); after = M.pixel_scores(gt, rec, protocol); t_after = time.perf_counter() - t0
        assert all(np.array_equal(before[k], after[k]) for k in before), protocol
        print(f"PixCorr + SSIM, {protocol:>14}: 32 pairs at a time {t_before:6.2f} s, {M.PIXEL_BATCH} at a time "
              f"{t_after:6.2f} s, x{t_before / t_after:.2f}, values equal")
    if args.pixel_only: return
    t0 = time.perf_counter()
    ours = M.evaluate(gt, rec, device=args.device, batch_size=args.batch_size, random_weights=True, progress=False)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = one_at_a_time(gt, rec, args.device)
    t_base = time.perf_counter() - t0
    for k in M.METRICS:
        assert abs(ours[k] - base[k]) < 1e-4, (k, ours[k], base[k])
    print(f"one image at a time : {t_base:8.1f} s  ({t_base / n * 1000:.0f} ms per pair)")
    print(f"evaluate (batched)  : {t_ours:8.1f} s  ({t_ours / n * 1000:.0f} ms per pair)")
    print(f"speed-up            : {t_base / t_ours:.2f}x; all eight metrics agree within 1e-4")


if __name__ == "__main__":
    main()
