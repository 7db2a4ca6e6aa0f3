#!/usr/bin/env python3
"""Writes a full-size Stable Diffusion 1.4 GLIGEN pipeline with RANDOM weights in diffusers layout.

    /opt/glichen-venv/bin/python benches/make_full_size_model.py /tmp/gligen-full

StableDiffusionGLIGENPipeline.save_pretrained of a randomly initialised UNet (attention_type "gated", the
configuration of masterful/gligen-1-4-generation-text-box), CLIP ViT-L/14 text tower, SD VAE, PNDM scheduler
(SD 1.x settings, skip_prk_steps) and the CLIP tokenizer from tests/fixtures/vocab. About 4.3 GB in f32 (2.2 GB
with --dtype f16): write it outside the repository and never commit it. The pictures it renders are noise; it
exists to check that a full-size model loads and renders (`glichen generate --model DIR ...`) and for
`glichen bench --model DIR`. Needs the pinned requirements of tests/fixtures/requirements.txt.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from diffusers_bench import SD14_CLIP, SD14_GLIGEN_UNET, SD14_SCHEDULER, SD14_VAE, VOCAB_DIR  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (created; must not exist or be empty)")
    p.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bin", action="store_true", help="write .bin torch pickles instead of safetensors")
    args = p.parse_args()
    if os.path.isdir(args.out) and os.listdir(args.out):
        sys.exit(f"{args.out} exists and is not empty")

    import torch
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionGLIGENPipeline, UNet2DConditionModel
    from diffusers.models.attention import GatedSelfAttentionDense
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    unet = UNet2DConditionModel(**SD14_GLIGEN_UNET)
    with torch.no_grad():
        # diffusers initialises the gates and null features to zero; a trained model's are not.
        for m in unet.modules():
            if isinstance(m, GatedSelfAttentionDense):
                m.alpha_attn.fill_(0.5)
                m.alpha_dense.fill_(0.5)
        unet.position_net.null_positive_feature.normal_()
        unet.position_net.null_position_feature.normal_()
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD14_CLIP))
    vae = AutoencoderKL(**SD14_VAE)
    tok = CLIPTokenizer(os.path.join(VOCAB_DIR, "vocab.json"), os.path.join(VOCAB_DIR, "merges.txt"),
                        model_max_length=77)
    pipe = StableDiffusionGLIGENPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                         scheduler=PNDMScheduler(**SD14_SCHEDULER), safety_checker=None,
                                         feature_extractor=None, requires_safety_checker=False)
    if args.dtype == "f16":
        pipe.to(torch.float16)
    params = sum(p.numel() for m in (unet, text_encoder, vae) for p in m.parameters())
    print(f"built {params / 1e6:.0f} M parameters in {time.perf_counter() - started:.1f} s", flush=True)
    pipe.save_pretrained(args.out, safe_serialization=not args.bin)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"wrote {args.out} ({size / 1e9:.2f} GB) in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
