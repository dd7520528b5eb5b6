"""Decoding speed of SD 1.5 + IP-Adapter Plus at 512 x 512 on a GPU: images per second for the thesis' setting (DDIM
100, fp16, batch 1) and other sampler settings and batch sizes, in the same run, through the real loader
(`load_decoder("sd15")`) and `reconstruct`. Weights: `--models` (a models_root with IP-Adapter/,
Realistic_Vision_V4.0_noVAE/, sd-vae-ft-mse/; the real ones, or a rehearsal's random ones: the speed is the same).

    python bench/decoding_gpu.py --models runs/rehearsal/models [--setting ddim:100 --setting dpm++:20:8 ...]

Writes bench/results/decoding_gpu.json. Without CUDA it says so and exits (a CPU run of SD 1.5 at 512 takes about
30 s per image and step; `--device cpu` forces it anyway, for checking the script)."""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from brainrecon.decoding import load_decoder, reconstruct  # noqa: E402


def images_per_second(decoder, tokens, scheduler: str, steps: int, batch: int, repeats: int) -> dict:
    "Decode `batch` images per call, `repeats` calls after one warm-up call; images per second and seconds per image."
    batch_tokens = tokens[np.arange(batch) % len(tokens)]
    reconstruct(decoder, batch_tokens, steps=steps, scheduler=scheduler, guidance_scale=7.5, batch_size=batch,
                progress=False)   # warm-up
    if decoder.device.startswith("cuda"): torch.cuda.synchronize()
    t0 = time.perf_counter()
    for r in range(repeats):
        reconstruct(decoder, batch_tokens, steps=steps, scheduler=scheduler, guidance_scale=7.5, batch_size=batch,
                    seed=list(range(r * batch, (r + 1) * batch)), progress=False)
    if decoder.device.startswith("cuda"): torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / (repeats * batch)
    return dict(scheduler=scheduler, steps=steps, batch=batch, seconds_per_image=round(seconds, 4),
                images_per_second=round(1 / seconds, 3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "runs" / "rehearsal" / "models",
                    help="models_root holding the three weight folders (default: make rehearse's)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--setting", action="append",
                    help="SCHEDULER:STEPS[:BATCH] (default: ddim:100:1, the thesis' setting, and dpm++:25:8); the first is the baseline")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decoding_gpu.json")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("decoding_gpu: no CUDA device here; nothing measured (run it on a GPU machine)")
        return
    if not (args.models / "Realistic_Vision_V4.0_noVAE").is_dir():
        print(f"decoding_gpu: no weight folders in {args.models}; run `make rehearse` (random weights) or pass --models")
        return
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    decoder = load_decoder("sd15", device=args.device, dtype=dtype, models_root=args.models)
    tokens = np.random.default_rng(0).standard_normal((4, *decoder.token_shape)).astype(np.float32)
    tokens *= 16 / np.linalg.norm(tokens.reshape(4, -1), axis=1)[:, None, None]   # a token set's typical norm
    settings = [(s.split(":") + ["1"])[:3] for s in (args.setting or ["ddim:100:1", "dpm++:25:8"])]
    rows = [images_per_second(decoder, tokens, name, int(steps), int(batch), args.repeats) for name, steps, batch in settings]
    base = rows[0]["seconds_per_image"]
    for r in rows: r["speedup_vs_first"] = round(base / r["seconds_per_image"], 2)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    result = dict(device=device, dtype=str(dtype), resolution=decoder.image_size, guidance=7.5,
                  models=str(args.models), torch=torch.__version__, rows=rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for r in rows: print(f"{r['scheduler']:6s} {r['steps']:4d} steps, batch {r['batch']}: {r['images_per_second']:.3f} images/s "
                         f"({r['seconds_per_image']:.3f} s per image, x{r['speedup_vs_first']} vs the first setting)")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
