r"""HYDRA pruning (Sehwag et al., NeurIPS 2020): learn which weights to keep with the robust objective.

Every prunable layer (see :func:`robustsnn.sparsity.prune.prunable_layers`) gets an
importance score :math:`s` per weight, initialised from the pretrained weights as

.. math::  s = \sqrt{6 / \mathrm{fan\_in}}\ \frac{w}{\max |w|}

(per layer). In the forward pass the layer uses

.. math::  \tilde w = w \odot M(s), \qquad M(s) = \mathrm{top}_k(|s|) \in \{0, 1\}^n,
           \quad k = \max(1, \mathrm{round}((1 - \mathrm{sparsity})\, n)),

and the backward pass treats the top-k selection as the identity (straight-through):
:math:`\partial L / \partial s = (\partial L / \partial \tilde w) \odot w \odot \mathrm{sign}(s)`.
The weights themselves are frozen (``requires_grad = False``), so training the model
with the ordinary trainer (:func:`robustsnn.train.fit`, any objective) trains only the
scores. :func:`finalize_scores` then fixes the mask :math:`M(s)` with
:func:`robustsnn.sparsity.set_mask`, removes the scores and unfreezes the weights,
which are finetuned with the mask fixed by the same trainer.

Mechanics. The score is an ``nn.Parameter`` named ``weight_score`` registered on the
layer itself, and the layer's class is swapped for a subclass whose ``weight``
attribute is a property returning :math:`w \odot M(s)` (the way
``torch.nn.utils.parametrize`` works, without moving the weight). The weight stays
in ``module._parameters["weight"]``, so parameter names and ``state_dict`` keys are
unchanged (plus ``*.weight_score``). A checkpoint written during the score phase
(``fit`` saves one per epoch) loads with :func:`robustsnn.checkpoint.load` as the dense
model with ``weight_score`` buffers; :func:`finalize_scores` accepts such a model too.

Differences from the HYDRA code: BN affine parameters are frozen during the score
phase by default (DESIGN.md: "train only the scores"); ``train_bn=True`` restores
HYDRA's default of training them. BN running statistics follow the masked network in
train mode either way.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from ..train import fit
from .masks import set_mask
from .prune import check_sparsity, keep_count, prunable_layers, topk_mask

__all__ = [
    "attach_scores",
    "finalize_scores",
    "scored_layers",
    "init_scores",
    "prune_hydra",
    "SCORE",
]

SCORE = "weight_score"
_SAVED_FLAGS = "_hydra_requires_grad"
_SCORED_CLASSES: dict[type, type] = {}


class _TopKSTE(torch.autograd.Function):
    """Forward: {0,1} mask of the k largest entries. Backward: identity (straight-through)."""

    @staticmethod
    def forward(ctx, score: torch.Tensor, k: int) -> torch.Tensor:
        return topk_mask(score, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _scored_weight(self: nn.Module) -> torch.Tensor:
    w = self._parameters["weight"]
    score = self._parameters[SCORE]
    return w * _TopKSTE.apply(score.abs(), self._hydra_k)


def _scored_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``weight`` is w * topk_mask(|weight_score|) (cached per class)."""
    if getattr(cls, "_hydra_base", None) is not None:
        return cls
    if cls not in _SCORED_CLASSES:
        _SCORED_CLASSES[cls] = type(
            f"Scored{cls.__name__}",
            (cls,),
            {"weight": property(_scored_weight, doc="w * top-k mask of |weight_score| (HYDRA score phase)"),
             "_hydra_base": cls},
        )
    return _SCORED_CLASSES[cls]


def init_scores(weight: torch.Tensor) -> torch.Tensor:
    r"""HYDRA's score initialisation :math:`\sqrt{6/\mathrm{fan\_in}}\, w / \max|w|` for one layer."""
    fan_in = weight[0].numel()  # in_channels/groups * kernel elements, or in_features
    peak = weight.detach().abs().max()
    scale = math.sqrt(6.0 / fan_in)
    if peak == 0:
        return torch.full_like(weight, scale)
    return scale * weight.detach() / peak


def scored_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer carrying a HYDRA score (parameter or, after loading, buffer)."""
    return [(n, m) for n, m in model.named_modules() if SCORE in m._parameters or SCORE in m._buffers]


def attach_scores(
    model: nn.Module,
    sparsity: float,
    *,
    first: bool = True,
    last: bool = True,
    train_bn: bool = False,
) -> list[nn.Parameter]:
    """Start HYDRA's score phase on ``model`` in place.

    Registers ``weight_score`` on every prunable layer (initialised by
    :func:`init_scores`), makes each layer compute with :math:`w \\odot \\mathrm{top}_k(|s|)`,
    and freezes every other parameter (weights, biases, thresholds, gains; BN affine
    too unless ``train_bn``). Train with :func:`robustsnn.train.fit`, then call
    :func:`finalize_scores`.

    Args:
        model: a dense model (masked layers are refused: HYDRA chooses the mask itself).
        sparsity: fraction of weights each layer loses, in [0, 1).
        first, last: score (and so prune) the first conv / the last linear layer too.
        train_bn: also train the BN affine parameters (HYDRA's code does by default).
    Returns:
        The score parameters, in layer order.
    """
    s = check_sparsity(sparsity)
    if scored_layers(model):
        raise UsageError("the model already carries HYDRA scores; call finalize_scores(model) first")
    layers = prunable_layers(model, first=first, last=last)
    masked = [n for n, m in layers if "weight_mask" in m._buffers]
    if masked:
        raise UsageError(f"HYDRA prunes a dense model, but {masked[0]} already has a mask")
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        p.requires_grad_(train_bn and isinstance(owner, nn.modules.batchnorm._BatchNorm))
    scores = []
    for _, m in layers:
        w = m._parameters["weight"]
        score = nn.Parameter(init_scores(w).to(w.dtype))
        m.register_parameter(SCORE, score)
        m._hydra_k = keep_count(w.numel(), s)
        m.__class__ = _scored_class(type(m))
        scores.append(score)
    object.__setattr__(model, _SAVED_FLAGS, saved)
    return scores


@torch.no_grad()
def finalize_scores(model: nn.Module, sparsity: float | None = None) -> dict[str, float]:
    """End the score phase: fix each layer's mask to the top-k of its scores, drop the scores.

    Calls :func:`robustsnn.sparsity.set_mask` (so pruned weights become exactly 0),
    restores the layers' own classes and the parameters' ``requires_grad`` flags, and
    leaves a model whose ``state_dict`` has the plain keys plus ``*.weight_mask``.

    Args:
        model: a model after :func:`attach_scores` (and training), or one loaded from a
            score-phase checkpoint (scores as buffers).
        sparsity: needed only for a loaded model (whose k is not recorded); otherwise the
            k chosen by :func:`attach_scores` is used.
    Returns:
        {layer name: sparsity reached}.
    """
    layers = scored_layers(model)
    if not layers:
        raise UsageError("the model has no HYDRA scores (attach_scores was not called)")
    if sparsity is None and any(getattr(m, "_hydra_k", None) is None for _, m in layers):
        raise UsageError("finalize_scores needs the sparsity for a model loaded from a score-phase checkpoint")
    s = None if sparsity is None else check_sparsity(sparsity)
    reached = {}
    for name, m in layers:
        score = m._parameters.pop(SCORE, None)
        if score is None:
            score = m._buffers.pop(SCORE)
        k = m.__dict__.pop("_hydra_k", None)
        if k is None:
            k = keep_count(score.numel(), s)
        base = getattr(type(m), "_hydra_base", None)
        if base is not None:
            m.__class__ = base
        mask = topk_mask(score.detach().abs(), k)
        set_mask(m, mask)
        reached[name] = 1.0 - float(mask.sum()) / mask.numel()
    saved = model.__dict__.pop(_SAVED_FLAGS, None)
    for n, p in model.named_parameters():
        p.requires_grad_(True if saved is None else saved.get(n, True))
    return reached


def prune_hydra(
    model: nn.Module,
    sparsity: float,
    train_set,
    test_set,
    score_config,
    out: str | Path,
    *,
    finetune_config=None,
    first: bool = True,
    last: bool = True,
    train_bn: bool = False,
    progress: bool = True,
    meta: dict | None = None,
) -> dict:
    """HYDRA end to end: score phase, fixed mask, optional weight finetuning (in place).

    Args:
        model: the dense pretrained model.
        sparsity: target sparsity per layer, in [0, 1).
        train_set, test_set: data for :func:`robustsnn.train.fit`.
        score_config: :class:`robustsnn.train.TrainConfig` of the score phase (its
            objective is the robust objective; HYDRA: SGD lr 0.1, cosine).
        out: run directory; the score phase runs in ``out/scores``, the finetuning in
            ``out`` (so ``out/model`` is the final checkpoint when finetuning runs).
        finetune_config: TrainConfig of the weight finetuning with the mask fixed
            (None: no finetuning).
        first, last, train_bn: see :func:`attach_scores`.
        progress: live progress bars.
        meta: extra checkpoint fields (dataset, command, ...).
    Returns:
        ``{"sparsity": {layer: reached}, "score_history": [...], "finetune_history": [...]}``.
    """
    out = Path(out)
    meta = dict(meta or {})
    attach_scores(model, sparsity, first=first, last=last, train_bn=train_bn)
    record = {**meta.get("pruning", {}), "method": "hydra", "sparsity": sparsity}
    score_history = fit(model, train_set, test_set, score_config, out / "scores", progress=progress,
                        meta={**meta, "pruning": {**record, "phase": "scores"}})
    reached = finalize_scores(model)
    finetune_history: list[dict] = []
    if finetune_config is not None:
        finetune_history = fit(model, train_set, test_set, finetune_config, out, progress=progress,
                               meta={**meta, "pruning": {**record, "layers": reached}})
    return {"sparsity": reached, "score_history": score_history, "finetune_history": finetune_history}
