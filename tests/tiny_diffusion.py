"""A tiny, randomly initialised Stable Diffusion pipeline, built offline for tests of image_generation.

Its pictures are noise, but it has the real layout (``save_pretrained``: model_index.json, tokenizer,
text_encoder, unet, vae, scheduler), so the job loads it exactly as it loads Stable Diffusion 1.5.
Nothing is downloaded: the tokenizer's vocabulary is written here (single characters, no merges).
"""

from __future__ import annotations

import json
import string
from pathlib import Path


def _write_tokenizer_files(folder: Path) -> tuple[Path, Path, dict[str, int]]:
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for ch in string.printable:
        if ch.isspace():
            continue
        tokens += [ch, ch + "</w>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n")
    return vocab_file, merges_file, vocab


def build_tiny_pipeline(folder: Path) -> Path:
    """Build (once: an existing ``model_index.json`` is kept) a tiny SD pipeline in ``folder``."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder

    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file, vocab = _write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)

    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        vocab_size=len(vocab), bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
        max_position_embeddings=77,
    ))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        cross_attention_dim=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
    )
    # Stable Diffusion's own scheduler settings (DDIMScheduler()'s defaults draw a deprecation warning).
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))
    return folder
