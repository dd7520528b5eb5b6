"""Benchmark: `prepare_subject` on full-size NSD sessions.

Writes `--sessions` sessions in subj01's real geometry (81 x 104 x 83 volume, 750 trials,
int16, 15,724 nsdgeneral voxels, NSD's 30,000-trial design) to a temporary NSD tree, then
measures, each in a fresh process:
  - baseline: reading each betas file once (gzip decompression / HDF5 read, nothing kept),
  - `prepare_subject` over those sessions, writing its cache (checksums included):
    seconds per session and peak RSS.
Prints the ratio prepare/baseline per session (1.0 = bounded by file reading) and the peak
RSS projected to a whole subject (37 sessions) from the measured parts.

    python bench/data_prepare.py [--sessions 2] [--format nii.gz|hdf5] [--dir DIR]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.io

from brainrecon import data

SHAPE, N_ROI, TRIALS = (81, 104, 83), 15724, 750


def write_tree(root: Path, n_sessions: int, fmt: str) -> None:
    rng = np.random.default_rng(0)
    mo, subjectim, sharedix = data.random_design(rng, 73000, 40, TRIALS, 1000, 9000)
    data.expdesign_path(root).parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(data.expdesign_path(root), {"masterordering": mo[None].astype(float),
                                                 "subjectim": subjectim.astype(float), "sharedix": sharedix[None].astype(float)})
    mask = data.roi_volume(SHAPE, N_ROI)
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    data.mask_path(root, 1).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask, affine), data.mask_path(root, 1))
    brain = mask >= 0
    for s in range(1, n_sessions + 1):
        t0 = time.perf_counter()
        vol = np.zeros((*SHAPE, TRIALS), np.int16)
        for a in range(0, TRIALS, 50):   # ~2 % signal change x 300, in blocks to keep this process small
            vol[..., a:a + 50][brain] = rng.normal(0, 600, (int(brain.sum()), min(50, TRIALS - a))).astype(np.int16)
        data.write_betas(data.betas_path(root, 1, s, fmt), vol, affine, fmt)
        del vol
        print(f"  wrote session {s} ({fmt}) in {time.perf_counter() - t0:.1f} s", flush=True)


CHILD = r"""
import json, sys, time
from pathlib import Path
root, mode, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
from brainrecon import data
import h5py, nibabel as nib
t0 = time.perf_counter()
if mode == "read":
    for s in range(1, n + 1):
        p = data.find_betas(root, 1, s)
        if p.name.endswith(".hdf5"):
            with h5py.File(p, "r") as f:
                ds = f["betas"]
                for a in range(0, len(ds), 50): ds[a:a + 50]
        else:
            with nib.openers.ImageOpener(p, "rb") as f:
                while f.read(1 << 26): pass
else:
    prep = data.prepare_subject(root, 1, sessions=range(1, n + 1), out_dir=root / "prepared", progress=False)
    shapes = {k: list(getattr(prep, k).shape) for k in ("train_fmri", "test_fmri", "trial_betas")}
elapsed = time.perf_counter() - t0
# VmHWM is this process image's own peak (ru_maxrss would include the parent's before exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": elapsed, "peak_rss_mb": hwm / 1024,
                  **({"shapes": shapes} if mode == "prepare" else {})}))
"""


def child(root: Path, mode: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), mode, str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--format", choices=data.BETAS_FORMATS, default="nii.gz")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the temporary NSD tree")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"writing {args.sessions} full-size session(s) of subj01 geometry {SHAPE} x {TRIALS} trials ...")
        write_tree(root, args.sessions, args.format)
        size = sum(data.betas_path(root, 1, s, args.format).stat().st_size for s in range(1, args.sessions + 1))
        base = child(root, "read", args.sessions)
        prep = child(root, "prepare", args.sessions)
    n = args.sessions
    print(f"\nformat {args.format}, {n} session(s), {size / n / 2**20:.0f} MiB per file on disk")
    print(f"baseline, read files only : {base['seconds'] / n:6.2f} s/session, peak RSS {base['peak_rss_mb']:6.0f} MB")
    print(f"prepare_subject           : {prep['seconds'] / n:6.2f} s/session, peak RSS {prep['peak_rss_mb']:6.0f} MB")
    print(f"ratio prepare / read      : {prep['seconds'] / base['seconds']:.2f}x")
    # Whole subject: what grows with sessions is the int16 trial store; the averages grow with images.
    per_trial = N_ROI * 2 / 2**20
    trials_37, images_37 = 37 * TRIALS, 8859 + 982
    fixed = prep["peak_rss_mb"] - n * TRIALS * per_trial - sum(prep["shapes"][k][0] for k in ("train_fmri", "test_fmri")) * N_ROI * 4 / 2**20
    projected = fixed + trials_37 * per_trial + images_37 * N_ROI * 4 / 2**20
    print(f"projected peak RSS, 37 sessions ({trials_37} trials, {images_37} images): {projected:.0f} MB "
          f"(measured minus this run's trial store and averages, plus a whole subject's; goal < 2048 MB)")


if __name__ == "__main__":
    main()
