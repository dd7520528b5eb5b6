"""Benchmark: `prepare_subject` on full-size NSD sessions.

Writes `--sessions` sessions in subj01's real geometry (81 x 104 x 83 volume, 750 trials,
int16, 15,724 nsdgeneral voxels, NSD's 30,000-trial design) to a temporary NSD tree, then
measures, each in a fresh process:
  - baseline: reading each betas file once (gzip decompression / HDF5 read, nothing kept),
  - `prepare_subject` over those sessions, writing its cache (checksums included):
    seconds per session and peak RSS.
Prints the ratio prepare/baseline per session (1.0 = bounded by file reading). With
`--whole-subject` (default) it then links sessions 3..37 to the written files and measures a
whole subject's 37 sessions (27,750 trials) the same way: the goal is a peak RSS under 2 GB.

    python bench/data_prepare.py [--sessions 2] [--format nii.gz|hdf5] [--no-whole-subject] [--dir DIR]
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
    ap.add_argument("--whole-subject", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure 37 sessions (links to the written files)")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the temporary NSD tree")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"writing {args.sessions} full-size session(s) of subj01 geometry {SHAPE} x {TRIALS} trials ...")
        write_tree(root, args.sessions, args.format)
        size = sum(data.betas_path(root, 1, s, args.format).stat().st_size for s in range(1, args.sessions + 1))
        base = child(root, "read", args.sessions)
        prep = child(root, "prepare", args.sessions)
        rows = [("baseline: read files only", args.sessions, base), ("prepare_subject", args.sessions, prep)]
        if args.whole_subject:
            for s in range(args.sessions + 1, 38):      # sessions 3..37 reuse the written files
                link = data.betas_path(root, 1, s, args.format)
                link.symlink_to(data.betas_path(root, 1, (s - 1) % args.sessions + 1, args.format))
            rows += [("baseline, 37 sessions", 37, child(root, "read", 37)),
                     ("prepare_subject, 37 sessions", 37, child(root, "prepare", 37))]
    print(f"\nformat {args.format}, {size / args.sessions / 2**20:.0f} MiB per session file on disk, subj01 geometry")
    for name, n, r in rows:
        print(f"{name:30s}: {r['seconds'] / n:6.2f} s/session, peak RSS {r['peak_rss_mb']:6.0f} MB"
              + (f"  shapes {r['shapes']}" if "shapes" in r else ""))
    for i in range(0, len(rows), 2):
        print(f"ratio prepare / read ({rows[i][1]} sessions): {rows[i + 1][2]['seconds'] / rows[i][2]['seconds']:.2f}x")
    if args.whole_subject:
        print(f"whole-subject peak RSS {rows[3][2]['peak_rss_mb']:.0f} MB (goal < 2048 MB)")

if __name__ == "__main__":
    main()
