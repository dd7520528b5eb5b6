"""The rehearsal from nothing (`brainrecon rehearse`): real-size models with random weights in the published layouts,
random data at NSD's geometry, the study's stages, `brainrecon reconstruct` once. Then the written files are checked
against the published layouts, restated here from the repositories' pages and code, with loaders that are not ours
(diffusers' pipeline and IP-Adapter loader, transformers, torchvision, huggingface_hub)."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from conftest import BIN, ROOT, start_tagged, stop_and_check, tagged_processes, wait_until

METRICS = ["pixcorr", "ssim", "alexnet2", "alexnet5", "inception", "clip", "effnet", "swav"]


def _tree_rss(proc: psutil.Process) -> int:
    "Resident memory of a process and all its descendants, bytes."
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try: total += p.memory_info().rss
        except psutil.Error: pass
    return total


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """Run `brainrecon rehearse` into an empty folder, stop it by SIGTERM during stage 02, run it again to the end (its
    time and the peak memory of its process tree are printed and kept in tests/artifacts/rehearsal.json); the folder
    (about 14 GB) is removed after the module's tests."""
    out = tmp_path_factory.mktemp("rehearsal")
    try: yield _run_rehearsal(out)
    finally: shutil.rmtree(out, ignore_errors=True)


def _stop_rehearsal(out, env) -> float:
    """Start `brainrecon rehearse`, stop it with SIGTERM once stage 01 is done and stage 02's kernel runs, check that
    its whole tree ended and that the written models are kept (the rerun resumes). Returns the seconds it ran."""
    t0 = time.perf_counter()
    proc, tag = start_tagged([BIN / "brainrecon", "rehearse", "--out", out], env)
    kernel = lambda: any("ipykernel" in " ".join(p.cmdline()) for p in tagged_processes(tag))
    wait_until(lambda: (out / "run" / "notebooks" / "01_prepare_data.stage.json").is_file() and kernel(), 1200,
               "stage 02's kernel", proc, step=0.5)
    err = stop_and_check(proc, tag, signal.SIGTERM)
    assert "Rerun the same command to resume" in err, err[-2000:]
    assert (out / "models" / "REHEARSAL.json").is_file() and not list(out.glob(".tmp*")), sorted(p.name for p in out.iterdir())
    assert not list((out / "run" / "notebooks").glob(".tmp*"))
    return time.perf_counter() - t0


def _run_rehearsal(out):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINRECON_")}
    stopped = _stop_rehearsal(out, env)
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "brainrecon"), "rehearse", "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()
    def sample():
        ps = psutil.Process(proc.pid)
        while not done.wait(0.5):
            try: peak[0] = max(peak[0], _tree_rss(ps))
            except psutil.Error: pass
    threading.Thread(target=sample, daemon=True).start()
    try: stdout, stderr = proc.communicate(timeout=1800)
    finally: done.set()
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, stdout + stderr[-5000:]
    assert "01_prepare_data: up to date, skipped" in stdout and "02_tokens: ran" in stdout, stdout   # resumed
    record = dict(stopped_run_seconds=round(stopped, 1), seconds=round(seconds, 1), peak_tree_rss_gb=round(peak[0] / 2**30, 2),
                  stdout=stdout.splitlines())
    (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
    (ROOT / "tests" / "artifacts" / "rehearsal.json").write_text(json.dumps(record, indent=1))
    print(f"\nrehearsal: stopped by SIGTERM after {stopped:.0f} s, resumed: {seconds:.0f} s, peak RSS of its process tree {peak[0] / 2**30:.2f} GB\n{stdout}")
    return out


def test_stages_ran_and_figures(rehearsal):
    quant = pd.read_csv(rehearsal / "figures" / "quantitative.csv")
    ours = quant[quant.method.str.startswith("this run")].set_index("method")
    assert list(ours.index) == ["this run: RR (ridge)", "this run: BG (federated)"]
    assert ours.source.str.contains("rehearsal").all()                  # labelled as a rehearsal, not NSD
    values = ours[METRICS].astype(float)                                   # all eight computed: a number in every cell
    assert np.isfinite(values.values).all(), ours[METRICS]
    for name in ("quantitative", "qualitative", "efficiency", "data_overview"):
        assert (rehearsal / "figures" / f"{name}.png").stat().st_size > 10_000, name
    metrics = pd.read_csv(rehearsal / "run" / "evaluation" / "metrics.csv")
    assert set(metrics.metric) >= set(METRICS) and set(metrics.pipeline) == {"RR", "BG"}
    # 425 x 425 stimuli against 512 x 512 reconstructions, both pipelines decoded
    from brainrecon.data import load_stimuli
    for p in ("RR", "BG"):
        rec = np.load(rehearsal / "run" / "reconstructions" / p / "subj01" / "seed0.npy")
        assert rec.shape == (2, 512, 512, 3) and rec.dtype == np.uint8, (p, rec.shape)
        ids = np.load(rehearsal / "run" / "reconstructions" / p / "subj01" / "test_ids.npy")
        assert load_stimuli(rehearsal / "nsd", ids).shape == (2, 425, 425, 3)
    assert Image.open(rehearsal / "figures" / "reconstruct_cli.png").size == (512, 512)
    rounds = pd.read_csv(rehearsal / "run" / "federated" / "rounds.csv")
    assert set(rounds["round"]) == {1} and set(rounds.subject) == {1, 2}
    # the BG network at its real size: a 15,724 -> 2048 input layer for subject 1, the shared backbone's 16 x 768 head
    with safe_open(rehearsal / "run" / "federated" / "subj01" / "model.safetensors", "pt") as f:
        shapes = {tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        n_params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    assert (2048, 15724) in shapes and (16 * 768, 2048) in shapes, sorted(shapes)
    print(f"BG personalised model of subject 1: {n_params / 1e6:.1f} M parameters")


def test_log_names_every_folder_loaded(rehearsal):
    text = (rehearsal / "rehearsal.log").read_text()
    models = rehearsal / "models"
    expected = [models / "IP-Adapter" / "models" / "image_encoder", models / "IP-Adapter" / "models" / "ip-adapter-plus_sd15.safetensors",
                models / "Realistic_Vision_V4.0_noVAE" / "unet", models / "sd-vae-ft-mse"]
    ckpt = models / "cache" / "torch" / "hub" / "checkpoints"
    expected += [ckpt / f for f in ("alexnet-owt-7be5be79.pth", "inception_v3_google-0cc3c7bd.pth", "efficientnet_b1-c27df63c.pth",
                                    "swav_800ep_pretrain.pth.tar")]
    expected += [models / "cache" / "huggingface" / "hub" / "models--openai--clip-vit-large-patch14" / "snapshots"]
    for path in expected: assert str(path) in text, path
    assert "reconstruct: subject 1, BG, sd15 decoder" in text


# --- the written files against the published layouts -------------------------------------------------------------
# file lists and sizes as the repositories' pages show them (sizes of weights within 1%; configs byte-exact)
PUBLISHED = {
    "IP-Adapter": {"models/image_encoder/config.json": 560, "models/image_encoder/model.safetensors": 2.53e9,
                   "models/ip-adapter-plus_sd15.safetensors": 98.2e6},
    "Realistic_Vision_V4.0_noVAE": {"model_index.json": None, "scheduler/scheduler_config.json": 548,
                                    "text_encoder/config.json": 612, "text_encoder/model.safetensors": 492e6,
                                    "tokenizer/merges.txt": None, "tokenizer/special_tokens_map.json": 472,
                                    "tokenizer/tokenizer_config.json": 737, "tokenizer/vocab.json": None,
                                    "unet/config.json": 1547, "unet/diffusion_pytorch_model.safetensors": 3.44e9,
                                    "vae/config.json": 577, "vae/diffusion_pytorch_model.safetensors": 335e6},
    "sd-vae-ft-mse": {"config.json": 547, "diffusion_pytorch_model.safetensors": 335e6},
}


def test_files_and_sizes_as_published(rehearsal):
    for folder, files in PUBLISHED.items():
        root = rehearsal / "models" / folder
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(files), folder
        for rel, size in files.items():
            got = (root / rel).stat().st_size
            if size is None: continue
            if rel.endswith(".json"): assert got == size, (folder, rel, got)       # the published text, byte for byte
            else: assert abs(got - size) / size < 0.01, (folder, rel, got)          # the published dtype and architecture
    index = json.loads((rehearsal / "models" / "Realistic_Vision_V4.0_noVAE" / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["scheduler"] == ["diffusers", "DEISMultistepScheduler"]


def test_ip_adapter_file_in_ip_adapters_key_layout(rehearsal):
    # IP-Adapter's resampler.py: per layer i, a PerceiverAttention (norm1, norm2, to_q, to_kv, to_out) then a FeedForward
    # (LayerNorm, Linear x4, GELU, Linear back); 16 latent queries of 768; proj_in from the encoder's 1280
    want = {"image_proj.latents": (1, 16, 768), "image_proj.proj_in.weight": (768, 1280), "image_proj.proj_in.bias": (768,),
            "image_proj.proj_out.weight": (768, 768), "image_proj.proj_out.bias": (768,),
            "image_proj.norm_out.weight": (768,), "image_proj.norm_out.bias": (768,)}
    for i in range(4):
        p = f"image_proj.layers.{i}"
        want.update({f"{p}.0.norm1.weight": (768,), f"{p}.0.norm1.bias": (768,), f"{p}.0.norm2.weight": (768,),
                     f"{p}.0.norm2.bias": (768,), f"{p}.0.to_q.weight": (768, 768), f"{p}.0.to_kv.weight": (1536, 768),
                     f"{p}.0.to_out.weight": (768, 768), f"{p}.1.0.weight": (768,), f"{p}.1.0.bias": (768,),
                     f"{p}.1.1.weight": (3072, 768), f"{p}.1.3.weight": (768, 3072)})
    # one (to_k_ip, to_v_ip) pair per cross-attention, numbered as the UNet lists its attention processors (self- and
    # cross-attention alternate, so the cross ones are odd): 6 in the down blocks, 9 in the up blocks, then the middle
    widths = [320, 320, 640, 640, 1280, 1280] + [1280] * 3 + [640] * 3 + [320] * 3 + [1280]
    for k, width in enumerate(widths):
        want.update({f"ip_adapter.{2 * k + 1}.to_k_ip.weight": (width, 768), f"ip_adapter.{2 * k + 1}.to_v_ip.weight": (width, 768)})
    with safe_open(rehearsal / "models" / "IP-Adapter" / "models" / "ip-adapter-plus_sd15.safetensors", "pt") as f:
        got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert got == want
    assert dtypes == {"F16"}


def test_diffusers_loads_the_folders_as_its_users_do(rehearsal):
    "A diffusers user's code, not ours: the full pipeline with its text encoder and tokenizer, IP-Adapter from the folder."
    from diffusers import AutoencoderKL, DEISMultistepScheduler, StableDiffusionPipeline
    models = rehearsal / "models"
    vae = AutoencoderKL.from_pretrained(models / "sd-vae-ft-mse", local_files_only=True)
    pipe = StableDiffusionPipeline.from_pretrained(models / "Realistic_Vision_V4.0_noVAE", vae=vae, local_files_only=True)
    assert isinstance(pipe.scheduler, DEISMultistepScheduler) and pipe.safety_checker is None
    assert pipe.tokenizer("a photo").input_ids == [pipe.tokenizer.bos_token_id, *pipe.tokenizer.convert_tokens_to_ids(["a</w>", "photo</w>"]),
                                                   pipe.tokenizer.eos_token_id]
    pipe.load_ip_adapter(str(models / "IP-Adapter"), subfolder="models", weight_name="ip-adapter-plus_sd15.safetensors",
                         local_files_only=True)
    image = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    out = pipe("a photo", ip_adapter_image=image, num_inference_steps=1, height=64, width=64, output_type="np").images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_metric_networks_load_as_published(rehearsal):
    import torchvision.models as tvm
    from huggingface_hub import snapshot_download
    from transformers import CLIPModel
    ckpt = rehearsal / "models" / "cache" / "torch" / "hub" / "checkpoints"
    for file, model in (("alexnet-owt-7be5be79.pth", tvm.alexnet()),
                        ("inception_v3_google-0cc3c7bd.pth", tvm.inception_v3(init_weights=False)),
                        ("efficientnet_b1_rwightman-bac287d4.pth", tvm.efficientnet_b1()),
                        ("efficientnet_b1-c27df63c.pth", tvm.efficientnet_b1())):
        model.load_state_dict(torch.load(ckpt / file, weights_only=True))           # torchvision's strict load
    # SwAV's hubconf: strip "module." and load into torchvision's ResNet-50 with strict=False; only fc is missing
    state = torch.load(ckpt / "swav_800ep_pretrain.pth.tar", map_location="cpu", weights_only=True)
    missing, unexpected = tvm.resnet50().load_state_dict({k.replace("module.", ""): v for k, v in state.items()}, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and len(unexpected) == 10
    cache = rehearsal / "models" / "cache" / "huggingface" / "hub"
    snapshot = snapshot_download("openai/clip-vit-large-patch14", cache_dir=cache, local_files_only=True)
    assert (cache / "models--openai--clip-vit-large-patch14" / "refs" / "main").read_text() in snapshot
    clip = CLIPModel.from_pretrained(snapshot, local_files_only=True)
    assert clip.visual_projection.weight.shape == (768, 1024) and clip.text_projection.weight.shape == (768, 768)


def test_the_download_commands_files_suffice(rehearsal, tmp_path):
    "A models folder holding only the files `brainrecon models` tells users to download loads the encoder and decoder."
    from brainrecon.decoding import load_decoder
    from brainrecon.embeddings import WEIGHTS, check_weights, download_command, load_encoder
    for role, (repo, name, files) in WEIGHTS.items():
        assert download_command(role).split()[:3] == ["hf", "download", repo]
        for rel in files:
            (tmp_path / name / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(rehearsal / "models" / name / rel, tmp_path / name / rel)
    assert all(r["status"] == "ok" for r in check_weights(tmp_path))
    encoder = load_encoder("ip-adapter-plus", models_root=tmp_path)
    decoder = load_decoder("sd15", models_root=tmp_path)
    assert encoder.token_shape == decoder.token_shape == (16, 768) and decoder.image_size == 512
