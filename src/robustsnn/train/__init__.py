"""Training: the shared trainer loop and the objectives it optimises."""

from .objectives import available_objectives, make_objective, register_objective
from .trainer import TrainConfig, accuracy, fit

__all__ = ["TrainConfig", "fit", "accuracy", "make_objective", "register_objective", "available_objectives"]
