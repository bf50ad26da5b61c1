r"""ANN -> SNN conversion: weight copy, threshold balancing, batch-norm adaptation.

Follows Özdenizci & Legenstein (TMLR 2024), as used by Schmolli et al. (CPAL 2025)
for sparse networks (DESIGN.md section 6, step 3).

**Weight copy.** The SNN twin is built from the ANN's config (``kind="snn"``, IF
neurons, :math:`\lambda = 1`). The twins share ``state_dict`` keys by design, so
the ANN's state (weights, biases, BN, and ``weight_mask`` buffers, registered on
the SNN first) is copied verbatim: masks carry over unchanged.

**Threshold balancing**, layer by layer over the spiking layers
:math:`l = 1, \dots, L` in forward order. With the thresholds of the layers before
:math:`l` already set, the SNN runs for :math:`T_c` steps (``calib_time_steps``,
100) on each calibration batch :math:`b`; the input current :math:`I_l` into layer
:math:`l` (shape [T_c, B, ...]: all steps, samples and neurons pooled) gives

.. math::

    \theta_l = \max_b\ P_q\big(I_l^{(b)}\big), \qquad
    P_q(z) = z_{(k)},\quad k = 1 + \mathrm{round}\big(\tfrac{q}{100}(n - 1)\big)

(:math:`z_{(k)}` the :math:`k`-th smallest of the :math:`n` values, :math:`q = 99.7`),
which is set before layer :math:`l + 1` is balanced. Then every threshold is scaled
for the short simulation, :math:`\theta_l \leftarrow \alpha\, \theta_l` (``scale``,
:math:`\alpha = 0.3` at :math:`T = 8`), and is a learnable parameter
(``learn_threshold``) clamped to :math:`\ge` ``threshold_floor`` (0.03) in the forward
pass. The readout does not spike and has no threshold.

**Batch-norm adaptation** (``bn_adapt``). Order as in the reference code: *during*
balancing every BN layer normalises with the batch statistics of the SNN's own
currents (the reference code drops the ANN's running statistics before balancing);
*after* balancing and scaling, the running statistics are reset and re-estimated from
the SNN at the target ``time_steps`` on the calibration batches, layer by layer in
forward order with the model in eval mode: mean and unbiased variance of each BN
layer's input pooled over all batches (the cumulative average, ``momentum=None``) and
over :math:`T \cdot B` (BN is shared over time). The affine parameters
:math:`\gamma, \beta` are kept. (The reference code leaves the re-estimation to the
adversarial finetuning; doing it here makes the converted SNN usable in eval mode at
once.) With ``bn_adapt=False`` the ANN's running statistics are used throughout.

**Bias correction** (``bias_correction``, an addition to the reference method). A
spiking layer emits spikes in {0, 1}, so the rate :math:`r` reaching the next layer is
the ANN activation :math:`a` divided by a scale :math:`\Lambda` (about the product of
the thresholds since the last BN). A layer with a bias that is not followed by BN then
sees :math:`W a / \Lambda + b` instead of :math:`(W a + b) / \Lambda`. Each such bias
is replaced by :math:`b / \Lambda`, with :math:`\Lambda = \sum a\, \bar r / \sum \bar r^2`
the least-squares ratio between the ANN's input to that layer and the SNN's
time-averaged input (:math:`\bar r`) over the calibration batches, measured in
forward order during balancing and again in the final pass. The reference ANNs have no
biases, where this is the identity; for biased ANNs it lifts the agreement of a long
simulation with the ANN from ~75 % to ~97 % on a small Fashion-MNIST CNN.

**Reset.** The reference conversion scripts run without ``--soft_reset``, i.e. with
the hard reset (:math:`v \leftarrow 0` after a spike), the default here too;
``reset="soft"`` (subtract :math:`\theta`) keeps the residual charge and follows the
ANN more closely.

Differences from the reference code: the same ``n_calib_batches`` batches serve every
layer (the reference draws fresh shuffled training batches per layer, 11 of them), and
no data augmentation is applied to them.

**Recipes.** Everything above is the ``seed`` recipe. :class:`ConversionRecipe` names the
low-latency techniques of the conversion literature, each an option recorded in the
checkpoint (DESIGN.md section 6):

* ``reset="soft"``: reset by subtraction keeps the residual charge.
* ``init_potential=0.5``: :math:`v[-1] = \theta/2` centres the rounding error: an IF neuron
  with soft reset fires :math:`\mathrm{round}(T a / \theta)` times for a constant input
  :math:`0 \le a \le \theta`.
* ``spike_amplitude="threshold"``: a layer emits :math:`\theta\, s`, so every layer works in
  the ANN's units and the ANN's BN statistics and biases stay valid (no BN adaptation, no
  bias rescaling); the amplitude folds into the next layer's weights on hardware.
* ``thresholds``: ``"snn-percentile"`` (the seed's balancing above), ``"ann-percentile"``
  (:math:`\theta_l = \max_b P_q` of the ANN's activation of layer :math:`l`, Rueckauer et al.
  2017) or ``"clip"`` (the learnt clip :math:`\lambda_l` of a QCFS ANN, Bu et al. ICLR 2022:
  :math:`h(x) = \lambda\,\mathrm{clip}(\lfloor x L/\lambda + 1/2\rfloor / L, 0, 1)`; an IF
  neuron with threshold :math:`\lambda`, soft reset and :math:`\lambda/2` start reproduces it
  at :math:`T = L` for constant inputs).
* ``calibrate="bias"`` (Li et al. ICML 2021, bias correction): layer by layer in forward order,
  the per-channel mean error :math:`e_l = E[a_l - \bar o_l]` between the ANN's activation and
  the SNN's time-averaged output (both in ANN units) on the calibration batches is added to
  the bias of the layer that produces the neuron's input current (a BN shift or a
  Conv/Linear bias), ``calib_iterations`` times.

``recipe="auto"`` (the default) is ``qcfs-calib`` for a QCFS ANN and ``rate-calib`` for a ReLU
ANN; ``benchmarks/conversion_loss.py`` measures every recipe.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import torch
from torch import nn

from .checkpoint import attach_buffers
from .errors import UsageError, refuse_unknown_fields
from .models import TwinModel, build_from_config, spiking_layers
from .neurons import NeuronConfig, SpikingNeuron

__all__ = [
    "convert", "balance_thresholds", "adapt_batchnorm", "percentile", "calibration_batches",
    "ConversionRecipe", "RECIPES", "resolve_recipe", "ann_thresholds", "calibrate_biases",
]

Log = Callable[[str], None]


class _Captured(Exception):
    """Raised from a forward pre-hook to stop the forward once a layer's input is recorded."""


def percentile(t: torch.Tensor, q: float = 99.7) -> float:
    r"""The :math:`q`-th percentile of all entries of ``t``, without interpolation.

    :math:`z_{(k)}`, the :math:`k`-th smallest entry with
    :math:`k = 1 + \mathrm{round}(0.01\, q\, (n - 1))` (``q=100``: the maximum, ``q=0``: the minimum).
    """
    flat = t.detach().reshape(-1)
    k = 1 + int(round(0.01 * float(q) * (flat.numel() - 1)))
    return float(flat.float().kthvalue(k).values)


def calibration_batches(batches: Iterable, n: int, device: torch.device | None = None) -> list[torch.Tensor]:
    """The first ``n`` image batches of ``batches`` (tensors or ``(x, y)`` pairs), checked to be pixels in [0, 1]."""
    out = []
    for item in batches:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise UsageError("calibration batches must be image tensors [B, C, H, W] or (x, y) pairs")
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise UsageError("calibration images must be pixels in [0, 1] (the model normalises them itself)")
        out.append(x.to(device) if device is not None else x)
        if len(out) >= n:
            break
    if not out:
        raise UsageError("no calibration batches: give at least one batch of training images")
    return out


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _is_biased(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.bias is not None


def _layer_input(model: nn.Module, module: nn.Module, x: torch.Tensor, time_steps: int | None = None) -> torch.Tensor:
    """The input of ``module`` when ``model`` runs on ``x`` (the forward stops there)."""
    seen: list[torch.Tensor] = []

    def record(mod, args):
        seen.append(args[0])
        raise _Captured

    handle = module.register_forward_pre_hook(record)
    try:
        if getattr(model, "is_snn", False):
            model(x, time_steps=time_steps)
        else:
            model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"a {type(module).__name__} layer was not reached by the forward pass")
    return seen[0]


def _set_threshold(snn, name, neuron, batches, q, time_steps, floor, log) -> float:
    values = [percentile(_layer_input(snn, neuron, x, time_steps), q) for x in batches]
    theta = max(values)
    if theta <= 0:
        lowest = neuron.config.threshold_floor if floor is None else floor
        warnings.warn(f"{name}: the {q}th percentile of its input current is {theta:.4g} <= 0 "
                      f"(the layer never fires); threshold set to {lowest}", stacklevel=3)
        theta = lowest
    neuron.threshold.fill_(theta)
    if log:
        log(f"{name}: theta = {theta:.4f} ({q}th percentile of the input current, max over {len(values)} batches)")
    return theta


def _correct_bias(snn, ann, name, layer, bias, batches, time_steps) -> float:
    """``layer.bias = bias / Lambda``; Lambda = least-squares ratio of ANN input to SNN mean input."""
    ann_layer = ann.get_submodule(name)
    num = den = 0.0
    for x in batches:
        a = _layer_input(ann, ann_layer, x)
        r = _layer_input(snn, layer, x, time_steps).mean(0)
        num += float((a.double() * r.double()).sum())
        den += float((r.double() * r.double()).sum())
    lam = num / den if den > 0 and num > 0 else 1.0
    layer.bias.copy_(bias / lam)
    return lam


def _bn_statistics(model, bn, batches, time_steps) -> None:
    """Running mean / unbiased variance of ``bn`` := statistics of its input pooled over all batches."""
    total = total_sq = None
    n = 0
    for x in batches:
        z = _layer_input(model, bn, x, time_steps)
        if getattr(model, "is_snn", False):
            z = z.flatten(0, 1)  # [T, B, C, ...] -> [T*B, C, ...]: BN is shared over time
        dims = [0] + list(range(2, z.dim()))
        z = z.double()
        s, sq = z.sum(dims), (z * z).sum(dims)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        n += z.numel() // z.shape[1]
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0) * (n / max(1, n - 1))
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.fill_(len(batches))


def _ann_biases(ann: nn.Module | None) -> dict[str, torch.Tensor]:
    if ann is None:
        return {}
    return {n: m.bias.detach().clone() for n, m in ann.named_modules() if _is_biased(m)}


@torch.no_grad()
def balance_thresholds(
    snn: TwinModel,
    batches: list[torch.Tensor],
    *,
    q: float = 99.7,
    time_steps: int = 100,
    scale: float = 1.0,
    batch_stats: bool = True,
    ann: TwinModel | None = None,
    floor: float | None = None,
    log: Log | None = None,
) -> list[float]:
    r"""Set each spiking layer's threshold to :math:`\alpha \max_b P_q(I_l^{(b)})`, layer by layer (in place).

    Args:
        snn: the SNN twin (left in eval mode).
        batches: calibration images, each [B, C, H, W] in [0, 1].
        q: percentile of the input current (99.7).
        time_steps: simulation length :math:`T_c` during balancing (100).
        scale: :math:`\alpha`, applied once all layers are balanced.
        batch_stats: BN layers normalise with the SNN's batch statistics during balancing
            (their running statistics stay untouched; re-estimate them afterwards with
            :func:`adapt_batchnorm`). False: BN uses its running statistics.
        ann: the ANN twin, to correct the biases of the layers before the last spiking
            layer on the way (see the module docstring; the readout's bias is corrected by
            :func:`adapt_batchnorm` with ``ann``); None leaves the biases alone.
        floor: threshold given to a layer whose percentile is :math:`\le 0` (it never
            fires; default: its ``threshold_floor``).
        log: optional callback receiving one line per layer.
    Returns:
        The final thresholds :math:`\alpha \theta_l`, in layer order.
    """
    if not getattr(snn, "is_snn", False):
        raise UsageError("balance_thresholds needs an SNN")
    bns = [m for m in snn.modules() if _is_bn(m)]
    tracked = [bn.track_running_stats for bn in bns]
    biases = _ann_biases(ann)
    neurons, found = [], []
    snn.eval()
    if batch_stats:
        for bn in bns:  # batch statistics, running ones neither used nor updated
            bn.train()
            bn.track_running_stats = False
    order = list(snn.named_modules())
    last = max((i for i, (_, m) in enumerate(order) if isinstance(m, SpikingNeuron)), default=-1)
    try:
        for i, (name, m) in enumerate(order):
            if isinstance(m, SpikingNeuron):
                found.append(_set_threshold(snn, name, m, batches, q, time_steps, floor, log))
                neurons.append(m)
            elif name in biases and _is_biased(m) and i < last:  # the readout's bias is fixed later
                _correct_bias(snn, ann, name, m, biases[name], batches, time_steps)
    finally:
        for bn, track in zip(bns, tracked):
            bn.track_running_stats = track
        snn.eval()
    for neuron, theta in zip(neurons, found):
        neuron.threshold.fill_(theta * scale)
    return [theta * scale for theta in found]


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    batches: list[torch.Tensor],
    *,
    time_steps: int | None = None,
    ann: nn.Module | None = None,
    bn: bool = True,
    log: Log | None = None,
) -> int:
    r"""Re-estimate every BN layer's running statistics from ``model``'s own activations (in place).

    Layer by layer in forward order, with the model in eval mode: the running mean and
    unbiased variance of BN layer :math:`l` become those of its input pooled over all
    calibration batches (and over :math:`T \cdot B` and space in an SNN), computed with
    the already re-estimated layers before it; this equals a cumulative average
    (``momentum=None``) of the batch statistics. Affine parameters are untouched.
    With ``ann`` given, biased layers met on the way are corrected as in :func:`convert`.

    Args:
        model: a TwinModel (ANN or SNN), e.g. after pruning or conversion.
        batches: images [B, C, H, W] in [0, 1].
        time_steps: SNN simulation length (None: the model's own T).
        ann: the ANN twin for the bias correction, or None.
        bn: re-estimate BN statistics (False: only the bias correction).
        log: optional progress callback.
    Returns:
        The number of BN layers re-estimated.
    """
    model.eval()
    biases = _ann_biases(ann)
    count = 0
    for name, m in model.named_modules():
        if bn and _is_bn(m) and m.track_running_stats:
            _bn_statistics(model, m, batches, time_steps)
            count += 1
        elif name in biases and _is_biased(m):
            lam = _correct_bias(model, ann, name, m, biases[name], batches, time_steps)
            if log and abs(lam - 1.0) > 1e-6:
                log(f"{name}: bias / {lam:.4f} (ANN input = {lam:.4f} x the SNN's mean input)")
    if log and count:
        log(f"re-estimated the running statistics of {count} BN layers at T={time_steps} on {len(batches)} batches")
    return count


THRESHOLD_RULES = ("snn-percentile", "ann-percentile", "clip")


@dataclass(frozen=True)
class ConversionRecipe:
    """How an ANN becomes an SNN (JSON-serialisable; stored in the converted checkpoint).

    Attributes:
        name: the recipe's name (``RECIPES`` key, or ``"custom"`` after overrides).
        thresholds: ``"snn-percentile"``, ``"ann-percentile"`` or ``"clip"`` (module docstring).
        percentile: q of the percentile rules.
        calib_time_steps: T_c of ``snn-percentile`` balancing.
        scale: alpha, multiplies the balanced thresholds.
        reset: ``"hard"`` or ``"soft"``.
        init_potential: v[-1] / theta.
        spike_amplitude: ``"one"`` or ``"threshold"`` (spikes theta * s).
        bn_adapt: re-estimate BN statistics from the SNN (seed).
        bias_correction: rescale biases to the spike-rate scale (seed, amplitude one only).
        calibrate: ``"none"`` or ``"bias"`` (Li et al. 2021).
        calib_iterations: passes of the calibration over all layers.
    """

    name: str = "custom"
    thresholds: str = "snn-percentile"
    percentile: float = 99.7
    calib_time_steps: int = 100
    scale: float = 0.3
    reset: str = "hard"
    init_potential: float = 0.0
    spike_amplitude: str = "one"
    bn_adapt: bool = True
    bias_correction: bool = True
    calibrate: str = "none"
    calib_iterations: int = 2

    def __post_init__(self) -> None:
        if self.thresholds not in THRESHOLD_RULES:
            raise UsageError(f"unknown threshold rule {self.thresholds!r}; choose one of {', '.join(THRESHOLD_RULES)}")
        if self.reset not in ("hard", "soft"):
            raise UsageError(f"reset must be 'hard' or 'soft', got {self.reset!r}")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise UsageError(f"percentile must be in (0, 100], got {self.percentile}")
        if int(self.calib_time_steps) < 1:
            raise UsageError(f"calib_time_steps must be >= 1, got {self.calib_time_steps}")
        if not float(self.scale) > 0.0:
            raise UsageError(f"scale must be > 0, got {self.scale}")
        if not 0.0 <= float(self.init_potential) <= 1.0:
            raise UsageError(f"init_potential is a fraction of the threshold in [0, 1], got {self.init_potential}")
        if self.spike_amplitude not in ("one", "threshold"):
            raise UsageError(f"spike_amplitude must be 'one' or 'threshold', got {self.spike_amplitude!r}")
        if self.calibrate not in ("none", "bias"):
            raise UsageError(f"calibrate must be 'none' or 'bias', got {self.calibrate!r}")
        if self.calibrate != "none" and self.spike_amplitude != "threshold":
            raise UsageError("calibrate='bias' compares the SNN's output with the ANN's activation in the ANN's "
                             "units: it needs spike_amplitude='threshold'")
        if int(self.calib_iterations) < 1:
            raise UsageError(f"calib_iterations must be >= 1, got {self.calib_iterations}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ConversionRecipe":
        refuse_unknown_fields(cls, d, "conversion recipe field")
        return cls(**d)


_SEED = ConversionRecipe("seed")
_RATE = ConversionRecipe("rate", thresholds="ann-percentile", percentile=99.9, scale=1.0, reset="soft",
                         init_potential=0.5, spike_amplitude="threshold", bn_adapt=False, bias_correction=False)
_QCFS = replace(_RATE, name="qcfs", thresholds="clip", percentile=100.0)

#: Named recipes; ``auto`` resolves to ``qcfs-calib`` (QCFS ANN) or ``rate-calib`` (ReLU ANN).
RECIPES: dict[str, ConversionRecipe] = {
    "seed": _SEED,
    "seed-soft": replace(_SEED, name="seed-soft", reset="soft", init_potential=0.5),
    "rate": _RATE,
    "rate-calib": replace(_RATE, name="rate-calib", calibrate="bias"),
    "qcfs": _QCFS,
    "qcfs-calib": replace(_QCFS, name="qcfs-calib", calibrate="bias"),
}
RECIPE_NAMES = ("auto", *RECIPES)


def _is_qcfs(ann: nn.Module) -> bool:
    return getattr(getattr(ann, "config", None), "activation", "relu") == "qcfs"


def resolve_recipe(ann: TwinModel, recipe: str | ConversionRecipe | dict = "auto", **overrides) -> ConversionRecipe:
    """The :class:`ConversionRecipe` that ``convert(ann, recipe=..., **overrides)`` uses.

    Args:
        ann: the ANN twin (``auto`` and ``clip`` look at its activation).
        recipe: a name of ``RECIPE_NAMES``, a recipe, or its dict.
        **overrides: recipe fields to change (None values are ignored); the name becomes
            ``"<name>+custom"`` when a value really changes.
    """
    if isinstance(recipe, dict):
        base = ConversionRecipe.from_dict(recipe)
    elif isinstance(recipe, ConversionRecipe):
        base = recipe
    elif recipe == "auto":
        base = RECIPES["qcfs-calib" if _is_qcfs(ann) else "rate-calib"]
    elif recipe in RECIPES:
        base = RECIPES[recipe]
    else:
        raise UsageError(f"unknown conversion recipe {recipe!r}; choose one of {', '.join(RECIPE_NAMES)}")
    known = {f.name for f in fields(ConversionRecipe)} - {"name"}
    bad = sorted(set(overrides) - known)
    if bad:
        raise UsageError(f"unknown conversion option(s) {', '.join(bad)}; valid: {', '.join(sorted(known))}")
    changes = {k: v for k, v in overrides.items() if v is not None and getattr(base, k) != v}
    out = replace(base, **changes, name=f"{base.name}+custom" if changes else base.name) if changes else base
    if out.thresholds == "clip" and not _is_qcfs(ann):
        raise UsageError(f"recipe {out.name!r} takes the thresholds from a QCFS ANN's clip, but this ANN uses "
                         f"{getattr(ann.config, 'activation', 'relu')}; train it with --activation qcfs or use "
                         "recipe 'rate-calib' / 'seed'")
    return out


def _activations(model: nn.Module, names: list[str], x: torch.Tensor, time_steps: int | None = None) -> dict:
    """Outputs of the named modules when ``model`` runs on ``x`` ({name: tensor})."""
    seen: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda mod, args, out, n=n: seen.__setitem__(n, out)) for n in names]
    try:
        model(x, time_steps=time_steps) if getattr(model, "is_snn", False) else model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
def ann_thresholds(ann: TwinModel, snn: TwinModel, batches: list[torch.Tensor], *, q: float = 99.9,
                   clip: bool = False, floor: float = 0.03, log: Log | None = None) -> list[float]:
    r"""Set each spiking layer's threshold from the ANN twin's activation of the same name (in place).

    ``clip=False``: :math:`\theta_l = \max_b P_q(a_l^{(b)})` over the calibration batches
    (Rueckauer et al. 2017's robust normalisation). ``clip=True``: :math:`\theta_l` = the QCFS
    clip :math:`\lambda_l` of the ANN's activation. Thresholds below ``floor`` are raised to it.

    Returns:
        The thresholds in layer order.
    """
    names = [n for n, _ in spiking_layers(snn)]
    values: dict[str, float] = {}
    if clip:
        values = {n: float(ann.get_submodule(n).threshold.detach().clamp_min(1e-3)) for n in names}
    else:
        for x in batches:
            acts = _activations(ann, names, x)
            for n in names:
                values[n] = max(values.get(n, float("-inf")), percentile(acts[n], q))
    out = []
    for n in names:
        theta = max(values[n], floor)
        snn.get_submodule(n).threshold.fill_(theta)
        out.append(theta)
        if log:
            rule = "the ANN's QCFS clip" if clip else f"{q}th percentile of the ANN's activation"
            log(f"{n}: theta = {theta:.4f} ({rule})")
    return out


def _input_producers(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[str, nn.Module] | None]:
    """For each spiking layer, the (name, module) whose output is its input current (None if none is)."""
    produced: dict[int, tuple[str, nn.Module, torch.Tensor]] = {}  # keeps the tensors alive: ids stay unique
    found: dict[str, tuple[str, nn.Module] | None] = {}
    neuron_names = {id(m): n for n, m in spiking_layers(model)}

    def before_neuron(mod, args):
        hit = produced.get(id(args[0]))
        found[neuron_names[id(mod)]] = hit[:2] if hit else None

    def after(name):
        def hook(mod, args, out):
            if isinstance(out, torch.Tensor):
                produced[id(out)] = (name, mod, out)
        return hook

    handles = []
    for name, m in model.named_modules():
        if m is model:
            continue
        if id(m) in neuron_names:
            handles.append(m.register_forward_pre_hook(before_neuron))
        handles.append(m.register_forward_hook(after(name)))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def _bias_of(module: nn.Module) -> torch.Tensor | None:
    if _is_bn(module):
        return module.bias if module.affine else None
    return module.bias if _is_biased(module) else None


@torch.no_grad()
def calibrate_biases(snn: TwinModel, ann: TwinModel, batches: list[torch.Tensor], *, iterations: int = 2,
                     log: Log | None = None) -> dict[str, float]:
    r"""Li et al. (ICML 2021) bias correction, layer by layer in forward order (in place).

    For spiking layer :math:`l` the per-channel error :math:`e_l = E[a_l - \bar o_l]` (mean over
    calibration images, space and, for the SNN, time; ANN activation :math:`a_l`, SNN output
    :math:`\bar o_l` in the ANN's units, i.e. ``spike_amplitude="threshold"``) is added to the
    bias of the module that produces the layer's input current (BN shift or Conv/Linear bias),
    with the layers before it already corrected; the whole pass runs ``iterations`` times.

    Returns:
        {layer: mean |e_l| of the last pass, before its correction}.
    """
    snn.eval()
    ann.eval()
    producers = _input_producers(snn, batches[0][:2])
    names = [n for n, _ in spiking_layers(snn)]
    targets = [_activations(ann, names, x) for x in batches]  # the ANN does not change: run it once
    last: dict[str, float] = {}
    for it in range(int(iterations)):
        for n in names:
            prod = producers.get(n)
            bias = _bias_of(prod[1]) if prod else None
            if bias is None:
                if it == 0 and log:
                    log(f"{n}: its input is not made by one BN / biased layer; not calibrated")
                continue
            total, count = None, 0
            for x, acts in zip(batches, targets):
                a = acts[n]
                o = _activations(snn, [n], x)[n].mean(0)
                dims = [0] + list(range(2, a.dim()))
                err = (a.double() - o.double()).sum(dims)
                total = err if total is None else total + err
                count += a.numel() // a.shape[1]
            e = (total / count).to(bias.dtype)
            bias.add_(e)
            last[n] = float(e.abs().mean())
            if log and it == int(iterations) - 1:
                log(f"{n}: bias of {prod[0]} corrected by mean |e| = {last[n]:.4f} (pass {it + 1})")
    return last


def convert(
    ann: TwinModel,
    calib_batches: Iterable,
    *,
    recipe: str | ConversionRecipe | dict = "auto",
    time_steps: int = 8,
    neuron: str = "if",
    n_calib_batches: int = 10,
    learn_threshold: bool = True,
    threshold_floor: float = 0.03,
    surrogate=None,
    log: Log | None = None,
    **overrides,
) -> TwinModel:
    r"""Convert an ANN twin into its SNN twin (a new model; the ANN is not changed).

    Args:
        ann: a TwinModel built with ``kind="ann"`` (masked or not; ReLU or QCFS).
        calib_batches: training images (tensors [B, C, H, W] in [0, 1] or ``(x, y)``
            pairs); the first ``n_calib_batches`` are used. Memory grows with
            :math:`B \cdot T_c`: a few dozen images per batch suffice.
        recipe: a name of ``RECIPE_NAMES`` (``"auto"``: ``qcfs-calib`` for a QCFS ANN,
            ``rate-calib`` for a ReLU ANN; ``"seed"``: the reference method), a
            :class:`ConversionRecipe` or its dict. :func:`resolve_recipe` gives the one used.
        time_steps: T of the returned SNN.
        neuron: ``"if"`` (:math:`\lambda = 1`, the method's neuron) or ``"lif"``.
        n_calib_batches: calibration batches (10).
        learn_threshold: thresholds become trainable parameters.
        threshold_floor: lower clamp of the thresholds in the forward pass.
        surrogate: surrogate for later training (a ``Surrogate`` or a string such as
            ``"triangle:1"``); None keeps the default (triangle, width 1).
        log: optional callback receiving progress lines.
        **overrides: recipe fields (``reset``, ``percentile``, ``calib_time_steps``, ``scale``,
            ``bn_adapt``, ``bias_correction``, ``init_potential``, ``spike_amplitude``,
            ``thresholds``, ``calibrate``, ``calib_iterations``); None leaves the recipe's value.
    Returns:
        The SNN twin in eval mode with the recipe's thresholds and neurons and the ANN's masks.
    """
    if not isinstance(ann, TwinModel) or ann.config.kind != "ann":
        raise UsageError("convert needs an ANN twin (a model built with kind='ann')")
    if neuron not in ("if", "lif"):
        raise UsageError(f"convert builds IF or LIF neurons, got {neuron!r} (DLIF's per-step gain fixes T)")
    if int(time_steps) < 1:
        raise UsageError(f"time steps must be >= 1, got time_steps={time_steps}")
    if int(n_calib_batches) < 1:
        raise UsageError(f"n_calib_batches must be >= 1, got {n_calib_batches}")
    if not float(threshold_floor) > 0.0:
        raise UsageError(f"threshold_floor must be > 0, got {threshold_floor}")
    r = resolve_recipe(ann, recipe, **overrides)

    fields_ = dict(kind=neuron, leak=None, reset=r.reset, learn_threshold=bool(learn_threshold),
                   threshold_floor=float(threshold_floor), threshold=1.0, init_potential=float(r.init_potential),
                   spike_amplitude=r.spike_amplitude)
    if surrogate is not None:
        fields_["surrogate"] = surrogate
    snn = build_from_config(ann.config.with_(kind="snn", time_steps=int(time_steps), neuron=NeuronConfig(**fields_)))
    device = next(ann.parameters()).device
    snn.to(device)
    state = ann.state_dict()
    attach_buffers(snn, state)
    result = snn.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UsageError(f"the SNN twin does not match the ANN (missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]})")

    batches = calibration_batches(calib_batches, int(n_calib_batches), device)
    was_training = ann.training
    ann.eval()
    reference = ann if r.bias_correction else None
    if log:
        log(f"recipe {r.name}: thresholds {r.thresholds}, {r.reset} reset, v[-1] = {r.init_potential:g} theta, "
            f"spikes {'theta*s' if r.spike_amplitude == 'threshold' else 's'}, calibrate {r.calibrate}")
    try:
        if r.thresholds == "snn-percentile":
            balance_thresholds(snn, batches, q=float(r.percentile), time_steps=int(r.calib_time_steps),
                               scale=float(r.scale), batch_stats=bool(r.bn_adapt), ann=reference,
                               floor=float(threshold_floor), log=log)
        else:
            thetas = ann_thresholds(ann, snn, batches, q=float(r.percentile), clip=r.thresholds == "clip",
                                    floor=float(threshold_floor), log=log)
            if r.scale != 1.0:
                with torch.no_grad():
                    for (_, m), theta in zip(spiking_layers(snn), thetas):
                        m.threshold.fill_(theta * float(r.scale))
        if r.bn_adapt or r.bias_correction:
            adapt_batchnorm(snn, batches, time_steps=int(time_steps), ann=reference, bn=bool(r.bn_adapt), log=log)
        if r.calibrate == "bias":
            calibrate_biases(snn, ann, batches, iterations=int(r.calib_iterations), log=log)
    finally:
        ann.train(was_training)
    return snn.eval()
