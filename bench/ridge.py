"""Benchmark: RidgeDecoder (10 alphas, GCV, one Gram matrix) against the thesis' ridge
loop and himalaya's KernelRidgeCV, on synthetic data of real NSD subj01 shapes, same run.

  (a) thesis baseline: sklearn Ridge(alpha=60000), one fit per token (16 x 768 targets), float64
  (b) himalaya KernelRidgeCV, torch backend, the same 10-alpha grid
  (c) brainrecon RidgeDecoder, the same grid, cv="gcv" (solver "auto": the band reduction at NSD size, the
      eigendecomposition below 2048 images, e.g. --preset small: 2000 images); cv="loo" with --loo

Each runs in a fresh process (fit + test predictions, imports excluded); prints seconds, peak RSS, ratios, and
the achieved fraction of this machine's float32 matrix-multiply rate for the dominant steps.

    python bench/ridge.py                 # full size: 8859 x 15724 train, 982 test, 12288 targets
    python bench/ridge.py --preset small  # 2000 x 4000, 200 test, 16 x 96 targets (quick)
"""
import argparse
import json
import subprocess
import sys
import tempfile

import numpy as np

PRESETS = {"nsd": dict(n=8859, p=15724, n_test=982, tokens=16, width=768),
           "small": dict(n=2000, p=4000, n_test=200, tokens=16, width=96)}
ALPHAS = sorted(set(float(a) for a in np.logspace(2, 6.5, 10)))

CHILD = r"""
import json, sys, time
import numpy as np
which, folder, alphas = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
d = np.load(folder + "/data.npz")
X, Y, Xt, tokens = d["X"], d["Y"], d["Xt"], int(d["tokens"])
if which == "sklearn":
    from sklearn.linear_model import Ridge
elif which == "himalaya":
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV
    set_backend("torch")
else:
    from brainrecon.ridge import RidgeDecoder
t0 = time.perf_counter()                       # imports done: only the computation is timed
if which == "sklearn":
    w = Y.shape[1] // tokens
    X64, Xt64 = X.astype(np.float64), Xt.astype(np.float64)
    pred = np.concatenate([Ridge(alpha=60000.0).fit(X64, Y[:, k * w:(k + 1) * w].astype(np.float64)).predict(Xt64)
                           for k in range(tokens)], 1)
    info = {"alpha": 60000.0}
elif which == "himalaya":
    m = KernelRidgeCV(alphas=np.array(alphas), kernel="linear", cv=5).fit(X, Y)
    pred = np.asarray(m.predict(Xt)); info = {"alpha": float(np.median(np.asarray(m.best_alphas_)))}
else:
    m = RidgeDecoder(alphas=alphas, cv=which).fit(X, Y)
    pred = m.predict(Xt); info = {"alpha": m.alpha_}
seconds = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
np.save(folder + f"/pred_{which}.npy", pred.astype(np.float32))
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm / 1024, **info}))
"""

STEPS = r"""
import json, sys, time
import numpy as np, torch
from brainrecon.solvers import gram, center_gram, band_reduce, shift_factors
d = np.load(sys.argv[1] + "/data.npz"); X, Y = torch.from_numpy(d["X"]), torch.from_numpy(d["Y"])
alphas = json.loads(sys.argv[2])
n, p, t = X.shape[0], X.shape[1], Y.shape[1]
a = torch.randn(4096, 4096); b = torch.randn(4096, 4096); a @ b
t0 = time.perf_counter(); [a @ b for _ in range(3)]; peak = 3 * 2 * 4096 ** 3 / (time.perf_counter() - t0)
t0 = time.perf_counter(); K = center_gram(gram(X, full=False), X @ X.mean(0), lower=True); t_gram = time.perf_counter() - t0
t0 = time.perf_counter(); band = band_reduce(K); t_band = time.perf_counter() - t0
del K
t0 = time.perf_counter(); Z = band.qt(Y - Y.mean(0)); t_qt = time.perf_counter() - t0
t0 = time.perf_counter(); factors = shift_factors(band, alphas, torch.float32); t_fac = time.perf_counter() - t0
work = torch.empty(n, 2048)
t0 = time.perf_counter()
for f in factors:
    for c in range(0, t, 2048): f.solve(Z[:, c:c + 2048], norms=True, out=work[:, :min(2048, t - c)])
t_solve = time.perf_counter() - t0
print(json.dumps({"gemm_gflops": peak / 1e9, "gram_s": t_gram, "gram_frac": (n * n * p) / t_gram / peak,
                  "band_s": t_band, "band_frac": (4 / 3 * n ** 3) / t_band / peak, "qt_s": t_qt, "qt_frac": (2 * n * n * t) / t_qt / peak,
                  "factor_s": t_fac, "solve_s": t_solve, "solve_frac": len(alphas) * 6 * n * 64 * t / t_solve / peak}))
"""


def synthetic(P: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train voxels X (z-scored), train targets Y and test voxels Xt of preset `P`: voxels with correlated structure,
    targets linear in 256 latent dimensions plus noise (the cost does not depend on the values)."""
    rng = np.random.default_rng(seed)
    n, p, t, m = P["n"], P["p"], P["tokens"] * P["width"], P["n_test"]
    latent = rng.standard_normal((n + m, 256), dtype=np.float32)
    X = latent @ rng.standard_normal((256, p), dtype=np.float32) * 0.1 + rng.standard_normal((n + m, p), dtype=np.float32)
    X = (X - X[:n].mean(0)) / X[:n].std(0)
    Y = latent @ rng.standard_normal((256, t), dtype=np.float32) * 0.05 + rng.standard_normal((n + m, t), dtype=np.float32)
    return X[:n], Y[:n], X[n:]


def run(code, *args):
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode: raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="nsd")
    ap.add_argument("--loo", action="store_true", help="also time cv='loo'")
    ap.add_argument("--skip", nargs="*", default=[], help="baselines to skip: sklearn himalaya")
    args = ap.parse_args()
    P = PRESETS[args.preset]
    n, p, t = P["n"], P["p"], P["tokens"] * P["width"]
    with tempfile.TemporaryDirectory() as folder:
        X, Y, Xt = synthetic(P)
        np.savez(folder + "/data.npz", X=X, Y=Y, Xt=Xt, tokens=P["tokens"])
        del X, Y, Xt
        size_mb = (n * p + n * t) * 4 / 2**20
        print(f"preset {args.preset}: X {n} x {p}, Y {n} x {t} ({size_mb:.0f} MB in float32), test {P['n_test']}; "
              f"alphas {len(ALPHAS)}: {ALPHAS[0]:g} .. {ALPHAS[-1]:g}", flush=True)
        results = {}
        for which in ["gcv"] + (["loo"] if args.loo else []) + [w for w in ("sklearn", "himalaya") if w not in args.skip]:
            results[which] = run(CHILD, which, folder, json.dumps(ALPHAS))
            print(f"  {which:9s} {results[which]['seconds']:8.1f} s  peak RSS {results[which]['peak_rss_mb']:7.0f} MB", flush=True)
        steps = run(STEPS, folder, json.dumps(ALPHAS))
        ours = np.load(folder + "/pred_gcv.npy")
        agree = {k: float(np.corrcoef(ours.ravel(), np.load(folder + f"/pred_{k}.npy").ravel())[0, 1]) for k in results if k != "gcv"}
    g = results["gcv"]
    print(f"\nRidgeDecoder (GCV, {len(ALPHAS)} alphas): {g['seconds']:.1f} s, peak RSS {g['peak_rss_mb']:.0f} MB "
          f"= {g['peak_rss_mb'] / size_mb:.2f}x the size of X and Y (goal < 3x), alpha {g['alpha']:g}")
    for k, label in (("sklearn", "(a) thesis loop, sklearn Ridge(60000) x 16, float64"), ("himalaya", "(b) himalaya KernelRidgeCV (torch)"),
                     ("loo", "RidgeDecoder, exact LOO")):
        if k in results:
            r = results[k]
            print(f"{label:52s}: {r['seconds']:7.1f} s, peak RSS {r['peak_rss_mb']:6.0f} MB; "
                  f"RidgeDecoder is {r['seconds'] / g['seconds']:.1f}x faster" + (f"; predictions r = {agree[k]:.4f}" if k in agree else ""))
    print(f"dominant steps (sgemm {steps['gemm_gflops']:.0f} GFLOP/s on 4096^3, the reference): Gram (lower triangle, n^2 p) "
          f"{steps['gram_s']:.1f} s at {100 * steps['gram_frac']:.0f}%; band reduction (lower triangle, 4/3 n^3) {steps['band_s']:.1f} s at "
          f"{100 * steps['band_frac']:.0f}%; Q^T Y (2 n^2 t) {steps['qt_s']:.1f} s at {100 * steps['qt_frac']:.0f}%; "
          f"{len(ALPHAS)} shifted factorisations {steps['factor_s']:.1f} s; GCV solves ({len(ALPHAS)} x 6 n b t) "
          f"{steps['solve_s']:.1f} s at {100 * steps['solve_frac']:.0f}%")


if __name__ == "__main__":
    main()
