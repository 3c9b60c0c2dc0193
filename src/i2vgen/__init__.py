"""i2vgen: a complete implementation of I2VGen-XL (cascaded image-to-video diffusion).

Heavy modules are imported lazily so that `import i2vgen` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "I2VGenUNet": "i2vgen.models.unet",
    "UNetConfig": "i2vgen.models.configs",
    "load_unet": "i2vgen.models.loading",
    "save_unet": "i2vgen.models.loading",
    "I2VGenRefinerUNet": "i2vgen.models.refiner",
    "I2VGenPipeline": "i2vgen.pipelines.base",
    "load_pipeline": "i2vgen.pipelines.base",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'i2vgen' has no attribute {name!r}")
