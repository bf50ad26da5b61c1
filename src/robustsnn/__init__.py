"""robustsnn: adversarially robust, sparse and energy-efficient spiking neural networks.

>>> import robustsnn
>>> model = robustsnn.load("runs/demo/model")      # safetensors + JSON, no pickle
>>> logits = model(images)                           # images in [0, 1], [B, C, H, W]
"""

__version__ = "0.1.1"

from .allocator import tune_allocator  # noqa: E402
from .checkpoint import load, save  # noqa: E402
from .estimators import estimator  # noqa: E402
from .evaluate import EvalResult, evaluate  # noqa: E402  (rebinds robustsnn.evaluate to the function)
from .models import build  # noqa: E402

__all__ = ["build", "load", "save", "estimator", "evaluate", "EvalResult", "tune_allocator", "__version__"]
