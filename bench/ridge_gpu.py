"""GPU check of the ridge solvers: the same RidgeDecoder code on CUDA, at real NSD subj01 shapes.

Synthetic data (8859 x 15724 train, 982 test, 12,288 targets, as bench/ridge.py), 10 alphas, GCV.
Times fit + test predictions for the band reduction (the default) and the eigendecomposition
(solver="eigh"), checks that both choose the same alpha and predict the same, and that a small
fixed-alpha fit equals scikit-learn's Ridge on the CPU (1e-4 relative, float32).

    python bench/ridge_gpu.py                  # on a CUDA machine
    python bench/ridge_gpu.py --preset small   # 2000 x 4000, quick
"""
import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import Ridge

from brainrecon.ridge import RidgeDecoder
from ridge import ALPHAS, PRESETS, synthetic     # bench/ridge.py: the same data and alpha grid as the CPU benchmark


def timed(device, **kw):
    torch.cuda.synchronize() if device == "cuda" else None
    t0 = time.perf_counter()
    model = RidgeDecoder(**{"alphas": ALPHAS, "device": device, **kw})
    model.fit(X, Y)
    pred = model.predict(Xt)
    torch.cuda.synchronize() if device == "cuda" else None
    return time.perf_counter() - t0, model, pred


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="nsd")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    P = PRESETS[args.preset]
    n, p, t, m = P["n"], P["p"], P["tokens"] * P["width"], P["n_test"]
    X, Y, Xt = synthetic(P)
    print(f"device {torch.cuda.get_device_name() if args.device == 'cuda' else args.device}, torch {torch.__version__}; "
          f"X {n} x {p}, Y {n} x {t}, test {m}, {len(ALPHAS)} alphas", flush=True)
    timed(args.device, cv=None, alphas=[1e4]) if args.device == "cuda" else None   # warm-up (CUDA context, cuSOLVER)
    s_band, band, pred_band = timed(args.device, solver="band")
    print(f"band          : fit + predict {s_band:.2f} s, alpha {band.alpha_:g}", flush=True)
    s_eigh, eig, pred_eigh = timed(args.device, solver="eigh")
    print(f"eigh          : fit + predict {s_eigh:.2f} s, alpha {eig.alpha_:g}", flush=True)
    rel = np.abs(pred_band - pred_eigh).max() / np.abs(pred_eigh).max()
    print(f"same alpha: {band.alpha_ == eig.alpha_}; max |band - eigh| / max |eigh| = {rel:.2e}; "
          f"GCV curves max rel. difference {np.abs(band.cv_errors_ / eig.cv_errors_ - 1).max():.2e}")
    t0 = time.perf_counter(); band.coef_; torch.cuda.synchronize() if args.device == "cuda" else None
    print(f"coef_ from the dual state: {time.perf_counter() - t0:.2f} s; predictions from it equal: "
          f"{np.abs(band.predict(Xt) - pred_band).max() / np.abs(pred_band).max():.2e}")
    small = np.random.default_rng(1)
    Xs, Ys = small.normal(size=(300, 900)), small.normal(size=(300, 40))
    worst = {"auto": 0.0, "band": 0.0, "eigh": 0.0}
    for intercept in (True, False):
        for alpha in (0.5, 30.0, 1e4):
            ref = Ridge(alpha=alpha, fit_intercept=intercept).fit(Xs, Ys).predict(Xs[:50])
            for solver in worst:
                ours = RidgeDecoder([alpha], cv=None, fit_intercept=intercept, device=args.device, solver=solver).fit(Xs, Ys)
                worst[solver] = max(worst[solver], np.abs(ours.predict(Xs[:50]) - ref).max() / np.abs(ref).max())
    print(f"small fixed-alpha fits (300 x 900) on {args.device} vs scikit-learn, worst relative difference (goal < 1e-4): "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    assert worst["auto"] < 1e-4 and band.alpha_ == eig.alpha_ and rel < 1e-3
