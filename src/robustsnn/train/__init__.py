"""Training: the shared trainer loop and the objectives it optimises."""

from .objectives import available_objectives, make_objective, register_objective
from . import robust  # noqa: F401  (registers gaussian, fgsm, rfgsm, pgd, trades, mart)
from .parseval import ParsevalStep, parseval_step
from .trainer import TrainConfig, accuracy, fit

__all__ = ["ParsevalStep", "parseval_step", "TrainConfig", "fit", "accuracy", "make_objective", "register_objective", "available_objectives"]
