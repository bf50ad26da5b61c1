"""PGD_ens: an ensemble of (attack, gradient estimator) members with a per-sample worst case.

Each member attacks from the clean image. With early exit (the default) a
member only sees the samples that every earlier member failed to break; the
robust accuracy is the share of samples that no member breaks. A record says
which member broke each sample (DESIGN.md section 7; the conversion paper's
PGD_ens over 19 gradient estimators).

Verdicts are the model's prediction on the adversarial image (the majority over
``votes`` passes for a stochastic model). Because attack randomness is keyed by
sample index, not by batch position, early exit gives the same verdicts as
running every member on every sample (``early_exit=False``), which also records
each member's accuracy on its own.

>>> ens = Ensemble(model, [Member("pgd", e, {"steps": 20}) for e in SEED_ESTIMATORS], eps=0.1)
>>> res = ens.run(x, y); res.robust_acc, res.members[0].broke
"""

from __future__ import annotations

import json
import math

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .. import distributed as D
from ..estimators import Estimator, parse_estimator
from .apgd import APGD, APGDT
from .base import DEFAULT_EPS, Attack, _margin, check_eps, check_norm, lp_norm, project
from .cache import MemberCache, fingerprint, next_link
from .eot import default_votes, predict
from .fab import FAB
from .fgsm import FGSM
from .hart import DEFAULT_GAMMAS, HART
from .noise import GaussianNoise
from .pgd import PGD
from .rfgsm import RFGSM, RFGSMStable
from .rga import RGA
from .sapgd import SAPGD
from .square import Square
from .transfer import Transfer

__all__ = ["ATTACKS", "Member", "MemberRecord", "EnsembleResult", "Ensemble", "as_member"]

#: Attack registry: name -> (class, fixed keyword arguments).
ATTACKS: dict[str, tuple[type[Attack], dict]] = {
    "fgsm": (FGSM, {}),
    "rfgsm": (RFGSM, {}),
    "rfgsm-stable": (RFGSMStable, {}),
    "pgd": (PGD, {}),
    "apgd-ce": (APGD, {"loss": "ce"}),
    "apgd-dlr": (APGD, {"loss": "dlr"}),
    "apgd-t": (APGDT, {}),
    "fab-t": (FAB, {"targeted": True}),
    "fab": (FAB, {"targeted": False}),
    "square": (Square, {}),
    "transfer": (Transfer, {}),
    "noise": (GaussianNoise, {}),
    "sa-pgd": (SAPGD, {}),
    "hart": (HART, {}),
    "rga": (RGA, {}),
}

#: Default estimator of the attacks that bring their own (used when a member gives none).
OWN_ESTIMATOR = {"sa-pgd": "assg", "rga": "rga"}


@dataclass(frozen=True)
class Member:
    """One ensemble member: an attack by registry name, a gradient estimator and parameters.

    Attributes:
        attack: a name in :data:`ATTACKS` (``"pgd"``, ``"apgd-t"``, ``"square"``, ...).
        estimator: ``None`` (each neuron's own surrogate), a spec string or an Estimator.
        params: keyword arguments of the attack class (``{"steps": 20}``).
        focus: None (attack every sample still standing) or a fraction in (0, 1]: attack only
            that share of them, those with the smallest logit margin the earlier members reached
            (:attr:`EnsembleResult.margin`; at least :data:`FOCUS_MIN` samples). For expensive
            closing attacks: the samples they break are the ones earlier attacks came close on.
    """

    attack: str
    estimator: Estimator | None = None
    params: dict = field(default_factory=dict)
    focus: float | None = None

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of {', '.join(ATTACKS)}")
        if self.focus is not None and not 0 < float(self.focus) <= 1:
            raise ValueError(f"focus={self.focus!r} must be a fraction in (0, 1] (or None: every sample)")
        if self.estimator is not None and not isinstance(self.estimator, Estimator):
            object.__setattr__(self, "estimator", parse_estimator(self.estimator))
        object.__setattr__(self, "params", dict(self.params))

    @property
    def white_box(self) -> bool:
        return ATTACKS[self.attack][0].white_box

    def build(self, model: nn.Module, eps: float, norm: str = "Linf", seed: int = 0, eot: int | None = None, **context) -> Attack:
        """The attack object for ``model`` at budget ``eps``. ``context`` may give ``transfer_source``."""
        cls, fixed = ATTACKS[self.attack]
        kwargs = {**fixed, **self.params}
        if cls is Transfer:
            src = context.get("transfer_source")
            if src is not None:
                kwargs.setdefault("source", src)
                kwargs.setdefault("source_name", context.get("transfer_source_name"))
        return cls(model, eps=eps, norm=norm, estimator=self.estimator, seed=seed, eot=eot, **kwargs)

    def label(self) -> str:
        """Label without a model, e.g. ``pgd-20@bptt:triangle(w=1)``, ``square-5000``."""
        p = self.params
        if self.attack == "pgd":
            base = f"pgd-{p.get('steps', 10)}" + (f"x{p['restarts']}" if p.get("restarts", 1) > 1 else "")
        elif self.attack == "square":
            base = f"square-{p.get('n_queries', 5000)}"
        elif self.attack == "transfer":
            return f"transfer[{p.get('source_name') or 'source'}]"
        elif self.attack == "hart":
            return f"hart-pgd-{p.get('steps', 10)}[gamma={','.join(f'{g:g}' for g in p.get('gammas', DEFAULT_GAMMAS))}]"
        elif self.attack in OWN_ESTIMATOR:
            steps = p.get("steps", 100 if self.attack == "sa-pgd" else 10)
            base = f"sa-pgd-{steps}" if self.attack == "sa-pgd" else f"rga-pgd-{steps}"
            base += f"x{p['restarts']}" if p.get("restarts", 1) > 1 else ""
            return f"{base}@{(self.estimator or parse_estimator(OWN_ESTIMATOR[self.attack])).label()}"
        elif self.attack in ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "fab") and p.get("steps", 100) != 100:
            base = f"{self.attack}-{p['steps']}"
        else:
            base = self.attack
        if self.attack == "apgd-t" and p.get("n_target_classes", 9) != 9:
            base += f"[{p['n_target_classes']} targets]"
        if not self.white_box:
            return base + focus_suffix(self.focus)
        return f"{base}@{self.estimator.label() if self.estimator else 'default'}" + focus_suffix(self.focus)

    def to_dict(self) -> dict:
        params = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in self.params.items()}
        return {
            "attack": self.attack,
            "estimator": self.estimator.to_dict() if self.estimator else None,
            "estimator_label": self.estimator.label() if self.estimator else None,
            "params": params,
            "white_box": self.white_box,
            "label": self.label(),
            **({"focus": float(self.focus)} if self.focus is not None else {}),
        }


#: The fewest samples a focused member attacks (all of them when fewer stand).
FOCUS_MIN = 8


def focus_suffix(focus: float | None) -> str:
    """Label suffix of a focused member: ``" [lowest-margin 25%]"``."""
    return "" if focus is None else f" [lowest-margin {float(focus):.0%}]"


def lowest_margin(pool: torch.Tensor, margin: torch.Tensor, focus: float) -> torch.Tensor:
    """The ``focus`` share of sample indices ``pool`` [P] with the smallest ``margin`` (ties: lower
    index; at least :data:`FOCUS_MIN`), in increasing index order; all of ``pool`` if a margin is NaN."""
    n = int(pool.numel())
    keep = min(n, max(FOCUS_MIN, math.ceil(focus * n - 1e-9)))
    m = margin[pool.cpu()]
    if keep >= n or bool(torch.isnan(m).any()):
        return pool
    order = sorted(range(n), key=lambda i: (float(m[i]), int(pool[i])))[:keep]
    return pool[torch.tensor(sorted(order), dtype=torch.long, device=pool.device)]


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per sample ([B, K] logits, [B] labels -> [B]; negative = misclassified)."""
    return -_margin(logits, y)


def as_member(spec: Any) -> "Member | Attack":
    """Accept a :class:`Member`, a built :class:`Attack`, ``(attack, estimator)`` or ``(attack, estimator, params)``."""
    if isinstance(spec, (Member, Attack)):
        return spec
    if isinstance(spec, str):
        return Member(spec)
    if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3:
        attack = spec[0]
        est = spec[1] if len(spec) > 1 else None
        params = dict(spec[2]) if len(spec) > 2 else {}
        if isinstance(attack, type) and issubclass(attack, Attack):
            names = [n for n, (c, fixed) in ATTACKS.items() if c is attack and not fixed]
            names = names or [n for n, (c, _) in ATTACKS.items() if c is attack]
            if not names:
                raise ValueError(f"attack class {attack.__name__} is not in the registry; pass an instance instead")
            attack = names[0]
        return Member(attack, est, params)
    raise TypeError(f"cannot make an ensemble member from {spec!r}")


@dataclass
class MemberRecord:
    """What one member did in one ensemble run.

    Attributes:
        index: position in the ensemble.
        label: attack and estimator.
        white_box: uses gradients of the target.
        attacked: samples it ran on.
        broke: samples it broke first (no earlier member had).
        running_acc: ensemble robust accuracy after this member (share of all samples).
        alone_acc: accuracy under this member alone (only when run without early exit).
        seconds: wall time.
        skipped: no sample was left to attack.
        messages: warnings the attack emitted (e.g. AutoAttack's zero-gradient warning).
        cached: taken from the member cache (a finished earlier run), not run again;
            ``seconds`` is then the original run's time.
        calibration: what the member did on the calibration batch of an ordered ensemble
            (:class:`~robustsnn.attacks.strongest.OrderedEnsemble`), else None.
    """

    index: int
    label: str
    white_box: bool
    attacked: int = 0
    broke: int = 0
    running_acc: float = 0.0
    alone_acc: float | None = None
    seconds: float = 0.0
    skipped: bool = False
    messages: list[str] = field(default_factory=list)
    spec: dict | None = None
    cached: bool = False
    calibration: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class EnsembleResult:
    """Per-sample outcome of an ensemble run.

    Attributes:
        clean_correct: [N] bool, correct on the clean image.
        robust: [N] bool, correct under every member.
        breaker: [N] int; -2 wrong on the clean image, -1 robust, k = first member that broke it.
        x_adv: [N, ...] the adversarial image of the breaking member (clean image where robust).
        members: one :class:`MemberRecord` per member.
        fooled: [M, N] bool, member k alone fools sample n (only without early exit).
        margin: [N] float, the smallest logit margin z_y - max_{j != y} z_j seen at the clean
            image and at every adversarial image the members returned for the sample (negative:
            broken; for a robust sample, how close the attacks came). NaN for a stochastic model
            (verdicts by vote) and for samples wrong on the clean image. Members taken from the
            cache add nothing to it.
    """

    eps: float
    norm: str
    clean_correct: torch.Tensor
    robust: torch.Tensor
    breaker: torch.Tensor
    x_adv: torch.Tensor
    members: list[MemberRecord]
    fooled: torch.Tensor | None = None
    seconds: float = 0.0
    margin: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.robust.shape[0])

    @property
    def clean_acc(self) -> float:
        return float(self.clean_correct.float().mean()) if self.n else 0.0

    @property
    def robust_acc(self) -> float:
        return float(self.robust.float().mean()) if self.n else 0.0


class Ensemble:
    """Run members in order, each from the clean image, keeping the per-sample worst case.

    Args:
        model: the target, pixels [B, C, H, W] in [0, 1] -> logits.
        members: :class:`Member` specs, built :class:`Attack` objects, or
            ``(attack, estimator[, params])`` tuples (attack: registry name or class).
        eps, norm: the threat model; every adversarial image is projected onto it.
        seed: attack randomness.
        votes: passes per verdict (default: 9 for stochastic models, else 1).
        eot: EOT samples per gradient for members built here (default: by model).
        early_exit: a member only attacks samples that no earlier member broke.
        batch_size: samples per attack call.
        transfer_source, transfer_source_name: source model for ``"transfer"`` members.
        on_progress: ``fn(description, advance)``; ``advance`` in member units (sums to M).
        cache_dir: keep each finished member in this folder (:mod:`~robustsnn.attacks.cache`), so
            a killed run resumes after its last finished member and a later run whose members
            start with the same ones reuses them. Early exit only; None: no cache.
        distributed: under torchrun, split each member's work across the ranks: the
            samples it attacks are cut into the same ``batch_size`` chunks as in one process,
            rank r attacks chunks r, r+N, ..., and every rank folds all chunks in order, so the
            per-sample outcome is exactly one process's. Rank 0 reads and writes the cache
            (whose links are therefore shared with one-process runs). Every rank must call
            :meth:`run` with the same data.
    """

    def __init__(
        self,
        model: nn.Module,
        members: Sequence,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        seed: int = 0,
        votes: int | None = None,
        eot: int | None = None,
        early_exit: bool = True,
        batch_size: int = 256,
        transfer_source: nn.Module | None = None,
        transfer_source_name: str | None = None,
        on_progress: Callable[[str, float], None] | None = None,
        cache_dir: "str | Path | None" = None,
        distributed: bool = False,
    ):
        self.model = model
        #: added to sample positions to make the ids that key attack randomness (a slice of a larger set)
        self.id_offset = 0
        self.distributed = bool(distributed) and D.active()
        self.cache_dir = cache_dir
        self.eot = eot
        self.transfer_source = transfer_source
        self.norm = check_norm(norm)
        self.eps = check_eps(eps, self.norm)
        self.seed = int(seed)
        self.votes = int(votes) if votes else default_votes(model)
        self.early_exit = bool(early_exit)
        self.batch_size = int(batch_size)
        self.on_progress = on_progress
        self.specs = [as_member(m) for m in members]
        if not self.specs:
            raise ValueError("an ensemble needs at least one member")
        ctx = {"transfer_source": transfer_source, "transfer_source_name": transfer_source_name}
        self.attacks: list[Attack] = []
        for m in self.specs:
            if isinstance(m, Attack):
                if abs(m.eps - self.eps) > 1e-12 or m.norm != self.norm:
                    raise ValueError(
                        f"member {m.label()} has eps={m.eps:g} {m.norm}, the ensemble eps={self.eps:g} {self.norm}"
                    )
                self.attacks.append(m)
            else:
                self.attacks.append(m.build(model, self.eps, self.norm, self.seed, eot, **ctx))

    def labels(self) -> list[str]:
        """Member labels in order."""
        return [a.label() for a in self.attacks]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Worst-case adversarial images (clean image where no member succeeds)."""
        return self.run(x, y).x_adv

    @torch.no_grad()
    def _verdict(self, x: torch.Tensor) -> torch.Tensor:
        return predict(self.model, x, self.votes, self.batch_size)

    @torch.no_grad()
    def _verdict_margin(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted labels [B], logit margins [B]); margins are NaN for a stochastic model (votes)."""
        if self.votes > 1 or x.shape[0] == 0:
            return self._verdict(x), torch.full((x.shape[0],), float("nan"), device=x.device)
        z = torch.cat([self.model(xb) for xb in x.split(self.batch_size)])
        return z.argmax(1), logit_margin(z, y)

    def _cache(self, x: torch.Tensor, y: torch.Tensor) -> MemberCache | None:
        if self.cache_dir is None or not self.early_exit:
            return None
        key = fingerprint(self.model, x, y, extra_models=(self.transfer_source,), eps=self.eps, norm=self.norm,
                          seed=self.seed, votes=self.votes, eot=self.eot, batch_size=self.batch_size)
        return MemberCache(self.cache_dir, key)

    def _reuse(self, hit, k: int, alive, breaker, x_adv, records: list[MemberRecord]) -> bool:
        """Apply a cached member's outcome; False (recompute) if it does not fit this run's state."""
        broke, xa, record = hit
        if broke.numel() and (broke.min() < 0 or broke.max() >= alive.numel() or not bool(alive[broke.to(alive.device)].all())):
            return False
        if xa.shape[1:] != x_adv.shape[1:] or xa.shape[0] != broke.numel() or record.get("broke", broke.numel()) != broke.numel():
            return False
        spec = json.loads(json.dumps(self.specs[k].to_dict(), default=str))
        if record.get("spec", spec) != spec:
            return False  # another member's record
        try:
            rec = MemberRecord(**{**record, "index": k, "cached": True})
        except TypeError:
            return False
        if broke.numel():
            x_adv[broke.to(x_adv.device)] = xa.to(x_adv)
            breaker[broke] = k
            alive[broke.to(alive.device)] = False
        records.append(rec)
        return True

    def run(self, x: torch.Tensor, y: torch.Tensor) -> EnsembleResult:
        """Attack ``x`` [N, C, H, W] in [0, 1] with labels ``y`` [N]; see :class:`EnsembleResult`."""
        t_start = time.perf_counter()
        y = y.long()
        n = x.shape[0]
        training = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            pred, margin = self._verdict_margin(x, y)
            correct = pred == y
            margin = margin.float().cpu()
            margin[~correct.cpu()] = float("nan")
            alive = correct.clone()
            breaker = torch.full((n,), -1, dtype=torch.long)
            breaker[~correct.cpu()] = -2
            x_adv = x.clone()
            fooled = None if self.early_exit else torch.zeros(len(self.attacks), n, dtype=torch.bool)
            records: list[MemberRecord] = []
            cache = self._cache(x, y)
            link = cache.key if cache is not None else None
            for k, attack in enumerate(self.attacks):
                spec = self.specs[k]
                if cache is not None and isinstance(spec, Member):
                    link = next_link(link, spec.to_dict())
                    hit = cache.load(link) if D.is_main() or not self.distributed else None
                    if self.distributed:  # rank 0 reads the shared cache; everyone applies the same hit
                        hit = D.broadcast_object(hit)
                    if hit is not None and self._reuse(hit, k, alive, breaker, x_adv, records):
                        if self.on_progress:
                            self.on_progress(f"{records[-1].label} (from the cache)", 1.0)
                        continue
                else:
                    cache = None  # a member that cannot be cached ends reuse for the rest of the chain
                focus = spec.focus if isinstance(spec, Member) else None
                rec = MemberRecord(k, attack.label() + focus_suffix(focus), attack.white_box,
                                   spec=spec.to_dict() if isinstance(spec, Member) else {"label": attack.label()})
                pool = (alive if self.early_exit else correct).nonzero().squeeze(1)
                if focus is not None and pool.numel():
                    pool = lowest_margin(pool, margin, focus)
                rec.attacked = int(pool.numel())
                t0 = time.perf_counter()
                if pool.numel() == 0:
                    rec.skipped = True
                    if self.on_progress:
                        self.on_progress(f"{rec.label} (skipped: nothing left)", 1.0)
                chunks = pool.split(self.batch_size)
                mine = range(D.rank(), len(chunks), D.world_size()) if self.distributed else range(len(chunks))

                def apply(j: int, fool: torch.Tensor, xa_fooled: torch.Tensor, marg: torch.Tensor) -> None:
                    """Fold chunk ``j``'s verdicts (and the images that fooled) into the ensemble state."""
                    chunk = chunks[j]
                    c = chunk.cpu()
                    margin[c] = torch.fmin(margin[c], marg.float().cpu())
                    fool = fool.to(alive.device)
                    new = fool & alive[chunk]
                    if new.any():
                        sel = chunk[new]
                        x_adv[sel] = xa_fooled.to(x_adv)[new[fool]]
                        breaker[sel.cpu()] = k
                        rec.broke += int(new.sum())
                    alive[chunk[fool]] = False
                    if fooled is not None:
                        fooled[k, chunk[fool].cpu()] = True

                outcomes = []
                for j in mine:
                    chunk = chunks[j]
                    xa = attack(x[chunk], y[chunk], ids=chunk.cpu() + self.id_offset)
                    xa = project(xa, x[chunk], self.eps, self.norm)  # the ensemble defines the threat model
                    pred, marg = self._verdict_margin(xa, y[chunk])
                    fool = pred != y[chunk]
                    if self.distributed:  # every rank folds every chunk in order after the gather
                        outcomes.append((j, fool.cpu(), xa[fool].cpu(), marg.cpu()))
                    else:
                        apply(j, fool, xa[fool], marg)
                    if self.on_progress:
                        self.on_progress(f"{rec.label}  robust {float(alive.float().mean()):.1%}", 1.0 / len(chunks))
                if self.distributed:
                    gathered = D.all_gather_object((outcomes, list(getattr(attack, "messages", []))))
                    for j, fool, xa_fooled, marg in sorted((o for part, _ in gathered for o in part), key=lambda o: o[0]):
                        apply(j, fool, xa_fooled, marg)
                    messages = list(dict.fromkeys(msg for _, msgs in gathered for msg in msgs))
                    if self.on_progress and chunks:
                        self.on_progress(f"{rec.label}  robust {float(alive.float().mean()):.1%}", 1.0 - len(mine) / len(chunks))
                else:
                    messages = list(getattr(attack, "messages", []))
                rec.seconds = time.perf_counter() - t0
                rec.running_acc = float(alive.float().mean()) if n else 0.0
                if fooled is not None:
                    rec.alone_acc = float((correct.cpu() & ~fooled[k]).float().mean()) if n else 0.0
                rec.messages = messages
                records.append(rec)
                if cache is not None and D.is_main():
                    broke = (breaker == k).nonzero().squeeze(1)
                    cache.store(link, broke, x_adv[broke.to(x_adv.device)], rec.to_dict())
            dist = lp_norm(x_adv - x, self.norm)
            if n and float(dist.max()) > self.eps * (1 + 1e-4) + 1e-6:  # pragma: no cover - a bug, not a user error
                raise RuntimeError(f"an adversarial image is outside the budget ({float(dist.max()):.6g} > {self.eps:g})")
        finally:
            for m, t in training:
                m.training = t
        return EnsembleResult(
            eps=self.eps, norm=self.norm, clean_correct=correct.cpu(), robust=alive.cpu(), breaker=breaker,
            x_adv=x_adv, members=records, fooled=fooled, seconds=time.perf_counter() - t_start, margin=margin,
        )
