"""GPU benchmark of decoding: the thesis setting against faster settings, same model, same run.

Builds an SD 1.5-size UNet and VAE with random weights and attaches a random IP-Adapter Plus
(16 tokens x 768), so it needs no weights: the cost does not depend on the weights' values.
Every setting runs through `brainrecon.decoding.reconstruct`, the code path of real runs.

  thesis : DDIM 100 steps, batch 1, fp16
  fast   : DPM-Solver++ 25 steps, batch 8, fp16, SDPA attention, channels-last
  fast+c : fast + torch.compile of the UNet (compile time reported, excluded from throughput)

Prints images per second and the ratio to the thesis setting (goal: >= 10x).

    python bench/decoding_gpu.py                      # on a CUDA machine
    python bench/decoding_gpu.py --device cpu --quick # smoke test of the script (64 x 64, 2 steps)
"""
import argparse
import time

import numpy as np
import torch

from brainrecon.decoding import Decoder, _pipeline, attach_ip_adapter, reconstruct
from brainrecon.embeddings import ip_attention_keys, resampler_to_ip_adapter_keys


def sd15_random(device, dtype, size):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.embeddings import IPAdapterPlusImageProjection
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=size // 8, cross_attention_dim=768, attention_head_dim=8)   # SD 1.5's UNet
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=size)
    resampler = IPAdapterPlusImageProjection(embed_dims=1280, output_dims=768, hidden_dims=1280, heads=20, num_queries=16)
    pipe = _pipeline(unet.eval(), vae.eval())
    attach_ip_adapter(pipe, {"image_proj": resampler_to_ip_adapter_keys(resampler), "ip_adapter": ip_attention_keys(unet)})
    pipe.to(device, dtype)
    uncond = torch.zeros(16, 768)
    return Decoder(pipe, torch.randn(1, 77, 768, device=device, dtype=dtype), uncond, image_size=size,
                   spec="sd15-random", device=device, dtype=dtype)


def throughput(decoder, n, sync, **kw):
    tokens = np.random.default_rng(0).normal(0, 1, (n, 16, 768)).astype(np.float32)
    reconstruct(decoder, tokens[: kw.get("batch_size", 1)], progress=False, **kw)      # warm-up
    sync(); t0 = time.perf_counter()
    reconstruct(decoder, tokens, seed=list(range(n)), progress=False, **kw)
    sync()
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="64 x 64 images, 2/1 steps: checks the script, not the speed")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available(): raise SystemExit("no CUDA device; use --device cpu --quick to check the script")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.float16 if cuda else torch.float32
    size, thesis_steps, fast_steps = (64, 2, 1) if args.quick else (512, 100, 25)
    n_thesis, n_fast = (2, 8) if args.quick else (6, 48)
    dec = sd15_random(args.device, dtype, size)
    print(f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, {dtype}, {size} x {size}, random SD 1.5-size weights")
    rows = [("thesis: DDIM 100, batch 1", throughput(dec, n_thesis, sync, steps=thesis_steps, scheduler="ddim", batch_size=1))]
    dec.pipe.unet.to(memory_format=torch.channels_last)
    dec.pipe.vae.to(memory_format=torch.channels_last)
    rows.append(("fast: DPM++ 25, batch 8, channels-last", throughput(dec, n_fast, sync, steps=fast_steps, scheduler="dpm++", batch_size=8)))
    if not args.no_compile and cuda:
        t0 = time.perf_counter()
        dec.pipe.unet = torch.compile(dec.pipe.unet, mode="max-autotune-no-cudagraphs", fullgraph=False)
        throughput(dec, 8, sync, steps=2, scheduler="dpm++", batch_size=8)
        print(f"torch.compile warm-up: {time.perf_counter() - t0:.0f} s")
        rows.append(("fast + torch.compile", throughput(dec, n_fast, sync, steps=fast_steps, scheduler="dpm++", batch_size=8)))
    base = rows[0][1]
    for name, ips in rows:
        print(f"{name:42s}: {ips:7.3f} images/s  ({ips / base:5.1f}x the thesis setting)")


if __name__ == "__main__":
    main()
