"""The reference's generation values (VGen's I2VGen-XL inference configs and ModelScope's MS-Vid2Vid-XL), named once.

Torch-free, the lowest layer: the pipelines use these as their defaults, the application layer falls back to them
where a model folder suggests nothing, and the command line's --help quotes them without importing torch.
"""

from __future__ import annotations

BASE_MODEL = "ali-vilab/i2vgen-xl"  # the Hub id of the released base model (diffusers layout)

# Base stage (VGen inference_i2vgen_entrance / i2vgen_xl_infer.yaml)
NUM_FRAMES = 16
WIDTH, HEIGHT = 1280, 704  # the base stage alone
CASCADE_WIDTH, CASCADE_HEIGHT = 640, 352  # the base stage when the refiner follows (I2VGen-XL's two stages)
TARGET_FPS = 16  # the fps condition
SAVE_FPS = 8.0  # the frame rate VGen writes its mp4 files with
STEPS = 50
GUIDANCE = 9.0
NEGATIVE_PROMPT = (
    "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, disconnected limbs, "
    "Ugly faces, incomplete arms"
)

# Refinement stage (ModelScope MS-Vid2Vid-XL)
REFINE_WIDTH, REFINE_HEIGHT = 1280, 720
STRENGTH = 0.6  # noise to t = round(1000 * 0.6) - 1 = 599 (ModelScope's total_noise_levels = 600)
REFINE_GUIDANCE = 7.5
REFINE_GUIDANCE_RESCALE = 0.2
POSITIVE_SUFFIX = (
    ", cinematic, High Contrast, highly detailed, unreal engine, taken using a Canon EOS R camera, hyper detailed "
    "photo - realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore "
    "detailing, hyper sharpness, perfect without deformations, Unreal Engine 5, 4k render"
)
REFINE_NEGATIVE_PROMPT = (
    "worst quality, normal quality, low quality, low res, blurry, text, watermark, logo, banner, extra digits, "
    "cropped, jpeg artifacts, signature, username, error, sketch ,duplicate, ugly, monochrome, horror, geometry, "
    "mutation, disgusting"
)
