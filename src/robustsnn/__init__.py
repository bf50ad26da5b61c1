"""robustsnn: adversarially robust, sparse and energy-efficient spiking neural networks."""

__version__ = "0.1.0"

from .models import build  # noqa: E402

__all__ = ["build", "__version__"]
