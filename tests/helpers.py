"""Shared test utilities (imported by test modules; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch

from i2vgen.models.configs import UNetConfig


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Fill every parameter with random values: zero-initialised layers hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(".weight") and p.ndim == 1:  # norm gains around 1
                p.copy_(1.0 + scale * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def diffusers_kwargs(cfg: UNetConfig) -> dict:
    """Constructor arguments of diffusers' I2VGenXLUNet / UNet3DConditionModel for one of our configs."""
    return {k: v for k, v in cfg.to_diffusers_config().items() if not k.startswith("_") and k != "concat_scale"}


def image_latents_with_positions(latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The diffusers pipeline's `image_latents` input: frame 0 = latent, frame k = k/(F-1). (B,4,H,W)->(B,4,F,H,W)"""
    frames = [latent[:, :, None]]
    frames += [torch.ones_like(latent[:, :, None]) * (k / (num_frames - 1)) for k in range(1, num_frames)]
    return torch.cat(frames, dim=2)


def write_tiny_model_folder(root, *, seed: int = 0, cross_dim: int = 16):  # noqa: ANN001, ANN201
    """A tiny diffusers-format I2VGen-XL folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    image_encoder/, feature_extractor/, scheduler/) with every parameter randomised, written by diffusers'
    `I2VGenXLPipeline.save_pretrained`. Returns the folder."""
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet

    from i2vgen.models.encoders import tiny_text_config, tiny_vision_config, write_tiny_clip_tokenizer
    from i2vgen.models.vae import tiny_vae_config

    torch.manual_seed(seed)
    unet_cfg = UnetTiny.replace(cross_attention_dim=cross_dim)
    unet = randomize_(I2VGenXLUNet(**diffusers_kwargs(unet_cfg)), seed)
    vae = randomize_(AutoencoderKL(**tiny_vae_config()), seed + 1, scale=0.1)
    text = randomize_(transformers.CLIPTextModel(tiny_text_config(hidden_size=cross_dim, projection_dim=cross_dim)),
                      seed + 2)
    vision = randomize_(transformers.CLIPVisionModelWithProjection(
        tiny_vision_config(hidden_size=cross_dim, projection_dim=cross_dim)), seed + 3)
    tok_dir = write_tiny_clip_tokenizer(f"{root}/_tok")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True,
                              prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1,
                              set_alpha_to_one=True, clip_sample=False)
    fe = transformers.CLIPImageProcessor(crop_size=32, size=32)
    pipe = I2VGenXLPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            image_encoder=vision, feature_extractor=fe)
    pipe.save_pretrained(root)
    import shutil

    shutil.rmtree(tok_dir)
    return root


UnetTiny = UNetConfig(block_out_channels=(16, 32), attention_levels=(True, False), layers_per_block=1,
                      norm_num_groups=4, cross_attention_dim=16, attention_head_dim=8, concat_scale=1.0)
