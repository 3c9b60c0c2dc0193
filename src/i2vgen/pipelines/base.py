"""`I2VGenPipeline`: one image + a prompt -> a video, the base stage of I2VGen-XL.

Defaults are the released model's recipe (spec 1.3): 16 frames at 1280x704, fps condition 16, DDIM 50 steps
(981 ... 1), classifier-free guidance 9.0 with the negative prompt + a zero CLIP image vector as the unconditional
branch, the first-frame latent and fps kept. DPM-Solver++ 2M / 2M SDE and UniPC are faster options.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from i2vgen import reference
from i2vgen.diffusion import (
    base_alphas_cumprod,
    classifier_free_guidance,
    guidance_min_t,
    make_timesteps,
    vpred_denoiser,
)
from i2vgen.diffusion.registry import get_sampler
from i2vgen.diffusion.sampler_table import DEFAULT_SAMPLERS, sampler_names
from i2vgen.errors import CheckpointError, InputError
from i2vgen.io.image import ImageSource, clip_preprocess, latent_preprocess, load_image
from i2vgen.model_paths import check_model_folder, resolve_model_path
from i2vgen.models.encoders import ImageEncoder, TextEncoder
from i2vgen.models.loading import load_unet, read_json_object
from i2vgen.models.unet import I2VGenUNet, StepCache, UNetCondition
from i2vgen.models.vae import VideoVAE
from i2vgen.pipelines.common import (
    ModelConventions,
    OutputType,
    StagePipeline,
    check_generation_args,
    check_generator,
    frames_to_output,
)

# VGen tools/modules/config.py:236 (diffusers' port defaults to "").
DEFAULT_NEGATIVE_PROMPT = reference.NEGATIVE_PROMPT
SAMPLERS = sampler_names("base")  # `diffusion.sampler_table`
COMPONENTS = ["unet", "vae", "text_encoder", "tokenizer", "image_encoder"]
ABLATIONS = ("image", "first_frame")  # conditions `ablate=` can zero
StepCallback = Callable[[int, float, Tensor], None]


class I2VGenPipeline(StagePipeline):
    """Image-to-video with the I2VGen-XL base stage. Components are passed in; `from_pretrained` loads a folder."""

    def __init__(self, unet: I2VGenUNet, vae: VideoVAE, text_encoder: TextEncoder, image_encoder: ImageEncoder,
                 *, alphas_cumprod: Tensor | None = None, device: torch.device | str = "cpu",
                 conventions: ModelConventions | None = None) -> None:
        self.unet, self.vae = unet.eval(), vae.eval()
        self.text_encoder, self.image_encoder = text_encoder.eval(), image_encoder.eval()
        self.alphas_cumprod = base_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        self.conventions = conventions or ModelConventions()
        self.to(device)  # sets self.placement

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                        variant: str | None = None, device: torch.device | str = "cpu",
                        concat_scale: float | None = None, vae_scaling_factor: float | None = None,
                        ) -> I2VGenPipeline:
        """Load a diffusers-format folder (model_index.json, unet/, vae/, text_encoder/, image_encoder/, tokenizer/),
        a built-in model name (`tiny-shapes`), or download a Hub id such as `ali-vilab/i2vgen-xl`.

        `concat_scale` defaults to what the UNet folder says (2.0, the released VGen behaviour, for diffusers
        folders, whose weights are converted from VGen's); `vae_scaling_factor` defaults to 0.18215, not the Hub
        config's 0.18125 typo.
        """
        root = resolve_model_path(path_or_hub_id, components=COMPONENTS, variant=variant)
        check_model_folder(root, COMPONENTS)
        sched = root / "scheduler" / "scheduler_config.json"
        if sched.exists():
            pred = read_json_object(sched).get("prediction_type", "v_prediction")
            if pred != "v_prediction":
                raise CheckpointError(f"{sched} says prediction_type={pred!r}; I2VGen-XL models predict v")
        unet = load_unet(root / "unet", dtype, variant=variant, concat_scale=concat_scale)
        if not isinstance(unet, I2VGenUNet):
            raise CheckpointError(f"{root / 'unet'} holds a refiner (text-only) UNet, not an I2VGen-XL base UNet")
        vae_kw = {} if vae_scaling_factor is None else {"scaling_factor": vae_scaling_factor}
        vae = VideoVAE.from_model_folder(root, dtype, variant, **vae_kw)
        text = TextEncoder.from_model_folder(root, dtype, variant)
        image = ImageEncoder.from_model_folder(root, dtype, variant)
        _check_dims(unet, text, image, vae)
        return cls(unet, vae, text, image, device=device, conventions=ModelConventions.from_folder(root))

    def _modules(self) -> list[torch.nn.Module]:
        return [self.text_encoder, self.image_encoder, self.vae, self.unet]

    # ---- steps -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str) -> tuple[Tensor, Tensor]:
        """-> (cond, uncond) text contexts, each (1, 77, D)."""
        with self.placement.use(self.text_encoder) as te:
            both = te.encode([prompt, negative_prompt])  # (2, 77, D)
        return both[:1], both[1:]

    @torch.no_grad()
    def encode_image(self, image: ImageSource, width: int, height: int, *, generator: torch.Generator | None,
                     sample_posterior: bool = True, vae_tile: int | None = None) -> tuple[Tensor, Tensor]:
        """-> (CLIP image embedding (1, D), first-frame latent (1, 4, height/8, width/8))."""
        img = load_image(image)
        size = self.image_encoder.model.config.image_size  # 224 for the real model
        pixels = clip_preprocess(img, width, size=size)[None]  # (1, 3, 224, 224)
        with self.placement.use(self.image_encoder) as ie:
            embeds = ie.encode(pixels)
        frame = latent_preprocess(img, width, height)[None]  # (1, 3, H, W) in [-1, 1]
        with self.placement.use(self.vae) as vae:
            latent = vae.encode_image(frame, generator=generator, sample=sample_posterior, tile=vae_tile)
        return embeds, latent

    @torch.no_grad()
    def __call__(
        self,
        image: ImageSource,
        prompt: str,
        *,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        num_frames: int = 16,
        height: int = 704,
        width: int = 1280,
        target_fps: int = 16,
        num_inference_steps: int = 50,
        guidance_scale: float = reference.GUIDANCE,
        guidance_rescale: float = 0.0,
        sampler: str = DEFAULT_SAMPLERS["base"],
        eta: float = 0.0,
        timestep_spacing: str | None = None,
        generator: torch.Generator | None = None,
        latents: Tensor | None = None,
        decode_chunk_size: int = 2,
        vae_tile: int | None = None,
        output_type: OutputType = "np",
        callback: StepCallback | None = None,
        sequential_cfg: bool = False,
        cfg_until: float = 1.0,
        cache_interval: int = 1,
        cache_depth: int = 1,
        sample_posterior: bool | None = None,
        set_alpha_to_one: bool = False,
        ablate: tuple[str, ...] = (),
    ) -> Any:
        """Generate a video of `num_frames` frames at `width` x `height` from `image` and `prompt`.

        Args:
            image: path, PIL image, numpy array or tensor; converted to RGB, EXIF orientation applied.
            prompt / negative_prompt: texts; the negative one forms the unconditional branch of guidance.
            target_fps: the fps condition (not the file's frame rate).
            sampler: one of `SAMPLERS` (`diffusion.sampler_table`); "ddim" is the reference, and `eta` and
                `set_alpha_to_one` apply to it only.
            timestep_spacing: "leading" (reference grid 981 ... 1), "trailing" or "linspace"; default per sampler.
            generator: draws the VAE posterior sample of the first frame, then the initial noise, then any sampler
                noise, in that order.
            latents: initial noise (1, 4, F, height/8, width/8) instead of drawing it.
            decode_chunk_size: frames decoded at once; memory is bounded by the chunk.
            vae_tile: run the VAE (the first frame's encoding and the decode) in strips of this many latent rows,
                layer by layer (`VideoVAE.decode`): the same frames for about half the memory of a frame. None:
                whole frames.
            output_type: "np" (1, F, H, W, 3) float in [0, 1], "pt" (1, 3, F, H, W) in [0, 1], "pil" (a list of
                lists of images) or "latent" (the final latents).
            callback: called after each step with (step index, timestep, current x0 prediction (1, 4, F, h, w)).
            sequential_cfg: run the conditional and unconditional branches as two forwards (less memory) instead
                of one batched forward.
            cfg_until: guide the first `cfg_until` share of the steps only; the rest run the conditional branch
                alone (half the UNet work per step). 1.0: every step, the reference.
            cache_interval / cache_depth: step caching (`models.unet.StepCache`): every `cache_interval`-th step
                runs the whole UNet, the steps between reuse its deep features and recompute only the outer
                `cache_depth` levels. 1: off, the reference.
            sample_posterior: sample the first frame's VAE posterior as the reference does (False: its mean; None:
                as the model was trained, `self.conventions`).
            set_alpha_to_one: DDIM's last step goes to alpha_bar = 1 (diffusers) instead of alpha_bar[0] (VGen).
            ablate: conditions to replace with zeros in both guidance branches, for ablation studies: "image" (the
                global CLIP image embedding) and/or "first_frame" (the detail encoder's input: the first-frame
                latent behind the latent context tokens and the concat branch).
        """
        check_generation_args(num_frames=num_frames, num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale, sampler=sampler, samplers=SAMPLERS,
                              output_type=output_type, decode_chunk_size=decode_chunk_size)
        check_generator(generator)
        self.vae.check_tile(vae_tile)
        if isinstance(cfg_until, bool) or not isinstance(cfg_until, (int, float)) or not 0 < cfg_until <= 1:
            raise InputError(f"cfg_until must be a number in (0, 1], got {cfg_until!r}")
        cache = None if cache_interval == 1 else StepCache(cache_interval, cache_depth)  # checks its settings
        f = self.vae.downscale
        if not (isinstance(height, int) and isinstance(width, int)) or height < f or width < f \
                or height % f or width % f:
            raise InputError(f"height and width must be positive multiples of {f}, got {width}x{height}")
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise InputError("prompt and negative_prompt must be strings")
        if target_fps <= 0:
            raise InputError(f"target_fps must be > 0, got {target_fps}")
        unknown = set(ablate) - set(ABLATIONS)
        if unknown or isinstance(ablate, str):
            raise InputError(f"ablate takes a tuple of {', '.join(ABLATIONS)}, got {ablate!r}")
        shape = (1, self.unet.config.in_channels, num_frames, height // f, width // f)
        if latents is not None and tuple(latents.shape) != shape:
            raise InputError(f"latents have shape {tuple(latents.shape)}, expected {shape}")

        # 1. conditions
        text, neg_text = self.encode_prompt(prompt, negative_prompt)
        if sample_posterior is None:
            sample_posterior = self.conventions.sample_posterior
        image_embeds, first_latent = self.encode_image(image, width, height, generator=generator,
                                                       sample_posterior=sample_posterior, vae_tile=vae_tile)
        if "image" in ablate:
            image_embeds = torch.zeros_like(image_embeds)
        if "first_frame" in ablate:
            first_latent = torch.zeros_like(first_latent)
        # 2. initial noise, drawn in float32 on the generator's device so a seed gives the same video anywhere
        if latents is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            latents = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
        # 3. denoise
        with self.placement.use(self.unet) as unet:
            x = self._denoise(unet, latents.float(), text, neg_text, image_embeds, first_latent, target_fps,
                              sampler=sampler, steps=num_inference_steps, guidance_scale=guidance_scale,
                              guidance_rescale=guidance_rescale, eta=eta, spacing=timestep_spacing,
                              generator=generator, callback=callback, sequential_cfg=sequential_cfg,
                              set_alpha_to_one=set_alpha_to_one, cfg_until=cfg_until,
                              cache=cache)
        if output_type == "latent":
            return x
        # 4. decode
        with self.placement.use(self.vae) as vae:
            frames = vae.decode(x, chunk_size=decode_chunk_size, tile=vae_tile)  # (1, 3, F, H, W)
        return frames_to_output(frames, output_type)

    def _denoise(self, unet: I2VGenUNet, latents: Tensor, text: Tensor, neg_text: Tensor, image_embeds: Tensor,
                 first_latent: Tensor, fps: int, *, sampler: str, steps: int, guidance_scale: float,
                 guidance_rescale: float, eta: float, spacing: str | None, generator: torch.Generator | None,
                 callback: StepCallback | None, sequential_cfg: bool, set_alpha_to_one: bool,
                 cfg_until: float = 1.0, cache: StepCache | None = None) -> Tensor:
        device, dtype = self.placement.device, unet.dtype
        num_frames = latents.shape[2]

        def prepare(txt: Tensor, img: Tensor) -> dict[str, Tensor]:
            c = unet.prepare_condition(txt.to(device, dtype), img.to(device, dtype),
                                       first_latent.to(device, dtype), num_frames)
            return {"context": c.context, "concat": c.concat, "fps": torch.tensor([fps], device=device)}

        # Unconditional: negative-prompt text and a zero CLIP image vector; same first-frame latent and fps.
        cond = prepare(text, image_embeds)
        uncond = prepare(neg_text, torch.zeros_like(image_embeds))

        def net(x: Tensor, t: Tensor, context: Tensor, concat: Tensor, fps: Tensor) -> Tensor:
            v = unet(x.to(dtype), t, condition=UNetCondition(context, concat), fps=fps, cache=cache)
            return v.float()

        spec = get_sampler(sampler, "base")
        timesteps = make_timesteps(steps, spacing or spec.spacing)
        guided = classifier_free_guidance(net, cond, uncond, guidance_scale, rescale=guidance_rescale,
                                          batched=not sequential_cfg, min_t=guidance_min_t(timesteps, cfg_until))
        denoise = vpred_denoiser(guided, self.alphas_cumprod)
        kw: dict[str, Any] = {"generator": generator, "callback": callback}
        if spec.takes_eta:
            kw.update(eta=eta, set_alpha_to_one=set_alpha_to_one)
        x = latents.to(device)
        return spec.fn(denoise, x, self.alphas_cumprod, timesteps, **kw)


def load_pipeline(path_or_hub_id: str | os.PathLike, **kwargs: Any) -> I2VGenPipeline:
    """Short alias of `I2VGenPipeline.from_pretrained`."""
    return I2VGenPipeline.from_pretrained(path_or_hub_id, **kwargs)


def _check_dims(unet: I2VGenUNet, text: TextEncoder, image: ImageEncoder, vae: VideoVAE) -> None:
    d = unet.config.cross_attention_dim
    td = text.model.config.hidden_size
    idim = image.model.config.projection_dim
    if td != d or idim != d:
        raise CheckpointError(f"component sizes do not match: UNet context {d}, text encoder {td}, "
                              f"image encoder projection {idim}")
    if vae.latent_channels != unet.config.in_channels:
        raise CheckpointError(f"VAE latent channels {vae.latent_channels} != UNet input channels "
                              f"{unet.config.in_channels}")
