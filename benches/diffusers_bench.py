#!/usr/bin/env python3
"""The diffusers side of `glichen bench`: the same shapes, timed in diffusers / torch on this machine.

Full-size Stable Diffusion 1.4 GLIGEN networks (CLIP ViT-L/14 text tower, the gated UNet, the KL VAE) with
random weights, built in memory (nothing is downloaded), or a model folder (--model). Prints one JSON object
per line on stdout: first {"meta": {...}}, then {"row": KEY, "dtype": ..., "median_s": ..., "times_s": [...],
"peak_rss_bytes": ..., "error": ...} per row; progress goes to stderr.

Run it alone:
    /opt/glichen-venv/bin/python benches/diffusers_bench.py --threads 2 --runs 3
or beside Glichen, one table with the ratio per row:
    target/release/glichen bench --compare --threads 2

Requirements: tests/fixtures/requirements.txt (torch 2.15, diffusers 0.42.1, transformers 5.24);
bash tests/fixtures/setup_venv.sh makes /opt/glichen-venv. The row keys, the inputs' shapes, the phrases,
boxes and token ids are the ones src/cli/bench.rs uses.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time

ROW_KEYS = ["clip_prompt", "clip_phrases", "position_net", "unet_fuser_on", "unet_fuser_off", "vae_decode",
            "taesd_decode", "generation", "first_preview", "cancel_latency"]
PHRASE_TOKENS = 8
PROMPT_TOKENS = 20
BENCH_TIMESTEP = 981
FULL_PROMPT = "a photograph of a cosy living room full of objects, highly detailed"
MAX_OBJS = 30
HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_DIR = os.path.join(HERE, "..", "tests", "fixtures", "vocab")

# unet/config.json of masterful/gligen-1-4-generation-text-box
SD14_GLIGEN_UNET = dict(
    act_fn="silu",
    attention_head_dim=8,
    attention_type="gated",
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-05,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)
# text_encoder/config.json of SD 1.x (CLIP ViT-L/14's text tower)
SD14_CLIP = dict(
    hidden_act="quick_gelu",
    hidden_size=768,
    intermediate_size=3072,
    layer_norm_eps=1e-05,
    max_position_embeddings=77,
    num_attention_heads=12,
    num_hidden_layers=12,
    projection_dim=768,
    vocab_size=49408,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
# vae/config.json of SD 1.x
SD14_VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=512,
    scaling_factor=0.18215,
)
# scheduler/scheduler_config.json of SD 1.x and the GLIGEN checkpoints
SD14_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, prediction_type="epsilon",
)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj), flush=True)


def bench_token(i, j):
    return 400 + (i * 97 + j * 31) % 40000


def bench_phrase(i):
    colors = ["red", "blue", "green", "yellow", "black", "white"]
    things = ["umbrella", "dog", "chair", "lamp", "car"]
    return f"a {colors[i % 6]} {things[(i // 6) % 5]}"


def bench_box(i):
    c, r = i % 6, (i // 6) % 5
    return [c / 6.0, r / 5.0, (c + 1) / 6.0, (r + 1) / 5.0]


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    # ru_maxrss is in KiB on Linux and cannot be reset: the process's peak so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_ticks():
    """(machine-wide busy ticks, this process's ticks), USER_HZ = 100."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        busy = sum(v for i, v in enumerate(cpu[:8]) if i not in (3, 4))
        with open("/proc/self/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return busy, int(rest[11]) + int(rest[12])
    except (OSError, ValueError, IndexError):
        return None


class LoadProbe:
    """Share of the machine's CPU time other processes used since start (a contention flag)."""

    def __init__(self):
        self.ticks, self.at = cpu_ticks(), time.perf_counter()

    def other_load(self):
        now = cpu_ticks()
        wall = time.perf_counter() - self.at
        if self.ticks is None or now is None or wall < 0.5:
            return None
        other = max(0.0, (now[0] - self.ticks[0]) - (now[1] - self.ticks[1])) / 100.0
        return other / (wall * (os.cpu_count() or 1))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", default="f32", help="f32, bf16, f16, a comma list, or all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default=",".join(ROW_KEYS[:6]), help="comma separated: " + ", ".join(ROW_KEYS))
    p.add_argument("--full", action="store_true", help="add the generation and first_preview rows")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--boxes", type=int, default=30)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--scheduler", default="pndm",
                   help="the --full generation's sampler: ddim, pndm, dpmpp_2m, dpmpp_2m_karras, euler, unipc")
    p.add_argument("--full-runs", type=int, default=1)
    p.add_argument("--model", default=None, help="a diffusers GLIGEN folder instead of random weights")
    return p.parse_args()


def main():
    args = parse_args()
    # Before torch starts its OpenMP pool.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    import torch
    import diffusers
    import transformers

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()

    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    names = ["f32", "bf16", "f16"] if args.dtype == "all" else [d.strip() for d in args.dtype.split(",")]
    for n in names:
        if n not in dtypes:
            sys.exit(f"unknown dtype {n!r}")
    rows = [r for r in args.rows.split(",") if r]
    if args.full:
        rows += [r for r in ("generation", "first_preview") if r not in rows]
    for r in rows:
        if r not in ROW_KEYS:
            sys.exit(f"unknown row {r!r}")
    device = torch.device(args.device)
    meta = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
    }
    if device.type == "cuda":
        meta["device_name"] = torch.cuda.get_device_name(device)
    emit({"meta": meta})
    log(f"diffusers bench: {meta}")

    for name in names:
        dtype = dtypes[name]
        try:
            bench_dtype(args, rows, name, dtype, device, torch)
        except Exception as e:  # noqa: BLE001 - a dtype the device cannot run is reported, not fatal
            log(f"diffusers {name}: {type(e).__name__}: {e}")
            for r in rows:
                emit({"row": r, "dtype": name, "median_s": None, "times_s": [], "peak_rss_bytes": None,
                      "error": f"{type(e).__name__}: {e}"})
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def build_random(torch, dtype, device):
    """A full-size SD 1.4 GLIGEN pipeline with diffusers' own random initialisation; non-zero gates."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.models.attention import GatedSelfAttentionDense
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD14_GLIGEN_UNET)
    with torch.no_grad():
        for m in unet.modules():
            if isinstance(m, GatedSelfAttentionDense):
                m.alpha_attn.fill_(0.5)
                m.alpha_dense.fill_(0.5)
        unet.position_net.null_positive_feature.normal_()
        unet.position_net.null_position_feature.normal_()
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD14_CLIP))
    vae = AutoencoderKL(**SD14_VAE)
    scheduler = PNDMScheduler(**SD14_SCHEDULER)
    return [x.to(device=device, dtype=dtype).eval() for x in (unet, text_encoder, vae)] + [scheduler]


def make_scheduler(name, config):
    """The sampler a diffusers user makes from the model's scheduler config (as Glichen's samplers
    are checked against)."""
    import diffusers
    classes = {
        "pndm": (diffusers.PNDMScheduler, {}),
        "ddim": (diffusers.DDIMScheduler, {}),
        "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, {}),
        "dpmpp_2m_karras": (diffusers.DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
        "euler": (diffusers.EulerDiscreteScheduler, {}),
        "unipc": (diffusers.UniPCMultistepScheduler, {}),
    }
    cls, extra = classes[name]
    return cls.from_config(config, **extra)


def make_pipeline(torch, unet, text_encoder, vae, scheduler):
    from diffusers import StableDiffusionGLIGENPipeline
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(os.path.join(VOCAB_DIR, "vocab.json"), os.path.join(VOCAB_DIR, "merges.txt"),
                        model_max_length=77)
    pipe = StableDiffusionGLIGENPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                         scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_dtype(args, rows, name, dtype, device, torch):
    started = time.perf_counter()
    pipe = None
    if args.model:
        from diffusers import StableDiffusionGLIGENPipeline

        pipe = StableDiffusionGLIGENPipeline.from_pretrained(args.model, safety_checker=None, feature_extractor=None,
                                                             requires_safety_checker=False, dtype=dtype).to(device)
        pipe.set_progress_bar_config(disable=True)
        unet, text_encoder, vae = pipe.unet.eval(), pipe.text_encoder.eval(), pipe.vae.eval()
        scheduler = pipe.scheduler
    else:
        unet, text_encoder, vae, scheduler = build_random(torch, dtype, device)
    log(f"diffusers {name}: built in {time.perf_counter() - started:.1f} s")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def measure(key, fn):
        reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            with torch.inference_mode():
                for i in range(args.warmup):
                    t = time.perf_counter()
                    fn()
                    sync()
                    log(f"  diffusers {name} {key}: warm-up {i + 1}/{args.warmup} {time.perf_counter() - t:.3f} s")
                times = []
                probe = LoadProbe()
                for i in range(args.runs):
                    t = time.perf_counter()
                    fn()
                    sync()
                    times.append(time.perf_counter() - t)
                    log(f"  diffusers {name} {key}: run {i + 1}/{args.runs} {times[-1]:.3f} s")
        except Exception as e:  # noqa: BLE001
            log(f"  diffusers {name} {key}: {type(e).__name__}: {e}")
            emit({"row": key, "dtype": name, "median_s": None, "times_s": [], "peak_rss_bytes": None,
                  "error": f"{type(e).__name__}: {e}"})
            return
        row = {"row": key, "dtype": name, "median_s": statistics.median(times), "times_s": times,
               "peak_rss_bytes": peak_rss_bytes(), "error": None, "other_load": probe.other_load()}
        if device.type == "cuda":
            row["peak_device_bytes"] = torch.cuda.max_memory_allocated(device)
        emit(row)

    n = args.boxes
    lat = args.size // 8
    hidden = text_encoder.config.hidden_size
    max_len = text_encoder.config.max_position_embeddings
    bos, eos = 49406, 49407
    prompt_ids = [bos] + [bench_token(0, j) for j in range(PROMPT_TOKENS)] + [eos]
    prompt_ids += [eos] * (max_len - len(prompt_ids))
    prompt_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    phrase_ids = torch.tensor(
        [[bos] + [bench_token(i + 1, j) for j in range(PHRASE_TOKENS - 2)] + [eos] for i in range(n)],
        dtype=torch.long, device=device)
    phrase_mask = torch.ones_like(phrase_ids)
    boxes = torch.zeros(2, MAX_OBJS, 4, dtype=dtype, device=device)
    masks = torch.zeros(2, MAX_OBJS, dtype=dtype, device=device)
    for i in range(n):
        boxes[:, i] = torch.tensor(bench_box(i), dtype=dtype)
    masks[1, :n] = 1  # classifier-free guidance: the unconditional half has every mask 0
    g = torch.Generator().manual_seed(0)
    positive = torch.randn(2, MAX_OBJS, hidden, generator=g).to(device=device, dtype=dtype)
    sample = torch.randn(2, unet.config.in_channels, lat, lat, generator=g).to(device=device, dtype=dtype)
    context = torch.randn(2, max_len, hidden, generator=g).to(device=device, dtype=dtype)
    latents = torch.randn(1, vae.config.latent_channels, lat, lat, generator=g).to(device=device, dtype=dtype)
    gligen = {"boxes": boxes, "positive_embeddings": positive, "masks": masks}

    from diffusers.models.attention import GatedSelfAttentionDense

    def fuser(enabled):
        for m in unet.modules():
            if type(m) is GatedSelfAttentionDense:
                m.enabled = enabled

    def unet_step():
        # As the pipeline calls it: the position net runs inside every UNet call.
        return unet(sample, BENCH_TIMESTEP, encoder_hidden_states=context,
                    cross_attention_kwargs={"gligen": dict(gligen)}).sample

    for key in rows:
        if key == "clip_prompt":
            measure(key, lambda: text_encoder(prompt_ids).last_hidden_state)
        elif key == "clip_phrases":
            measure(key, lambda: text_encoder(input_ids=phrase_ids, attention_mask=phrase_mask).pooler_output)
        elif key == "position_net":
            measure(key, lambda: unet.position_net(**gligen))
        elif key == "unet_fuser_on":
            fuser(True)
            measure(key, unet_step)
        elif key == "unet_fuser_off":
            fuser(False)
            measure(key, unet_step)
            fuser(True)
        elif key == "vae_decode":
            measure(key, lambda: vae.decode(latents / vae.config.scaling_factor).sample)
        elif key == "taesd_decode":
            # madebyollin/taesd's sizes (AutoencoderTiny's defaults), random weights
            from diffusers import AutoencoderTiny
            taesd = AutoencoderTiny().to(device=device, dtype=dtype).eval()
            measure(key, lambda: taesd.decode(latents / taesd.config.scaling_factor).sample)
        elif key == "cancel_latency":
            # diffusers only stops between steps (callback_on_step_end + pipe._interrupt)
            continue

    if "generation" in rows or "first_preview" in rows:
        bench_generation(args, rows, name, torch, pipe or make_pipeline(torch, unet, text_encoder, vae, scheduler),
                         device, sync)


def bench_generation(args, rows, name, torch, pipe, device, sync):
    n = args.boxes
    totals, firsts = [], []
    reset_peak_rss()
    probe = LoadProbe()
    try:
        for run in range(max(1, args.full_runs)):
            first = []
            start = time.perf_counter()

            def callback(step, t, latents):
                if not first:
                    sync()
                    first.append(time.perf_counter() - start)
                print(f"\r  diffusers {name} generation {run + 1}: step {step}/{args.steps} "
                      f"{time.perf_counter() - start:.1f} s   ", end="", file=sys.stderr, flush=True)

            pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
            with torch.inference_mode():
                pipe(prompt=FULL_PROMPT, negative_prompt="", height=args.size, width=args.size,
                     gligen_phrases=[bench_phrase(i) for i in range(n)], gligen_boxes=[bench_box(i) for i in range(n)],
                     gligen_scheduled_sampling_beta=0.3, num_inference_steps=args.steps, guidance_scale=7.5,
                     generator=torch.Generator().manual_seed(42), output_type="np", callback=callback,
                     callback_steps=1)
            sync()
            totals.append(time.perf_counter() - start)
            firsts.extend(first[:1])
            log(f"\n  diffusers {name} generation: {totals[-1]:.1f} s (first preview {firsts[-1] if firsts else 0:.1f} s)")
    except Exception as e:  # noqa: BLE001
        log(f"  diffusers {name} generation: {type(e).__name__}: {e}")
        for key in ("generation", "first_preview"):
            if key in rows:
                emit({"row": key, "dtype": name, "median_s": None, "times_s": [], "peak_rss_bytes": None,
                      "error": f"{type(e).__name__}: {e}"})
        return
    peak = peak_rss_bytes()
    load = probe.other_load()
    for key, times in (("generation", totals), ("first_preview", firsts)):
        if key in rows:
            emit({"row": key, "dtype": name, "median_s": statistics.median(times) if times else None,
                  "times_s": times, "peak_rss_bytes": peak, "error": None, "other_load": load})


if __name__ == "__main__":
    main()
