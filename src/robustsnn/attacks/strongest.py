"""An ensemble that orders its members from a calibration batch and drops the ones that settle nothing.

:class:`OrderedEnsemble` runs in two phases over the same per-sample worst case as
:class:`~robustsnn.attacks.ensemble.Ensemble`:

1. **Calibration**: every member, in the given order, with early exit, on the first
   ``calibration_size`` samples. Their verdicts are final (these samples saw every member).
2. **Main**: the other samples, members reordered: white-box members that broke
   samples in phase 1 first, most breaks per second first; then the ``essential``
   white-box members that broke none; black-box members last (a black-box success
   after the white-box members is the gradient-masking evidence). Prunable members
   that broke nothing in phase 1 do not run in phase 2 (``prune=True``): on a robust
   model most of PGD_ens's 19 members break nothing the others miss, and every one of
   them costs a full run on every survivor. (A member that found nothing left to
   attack in phase 1 is kept.) Focused members (``Member(focus=...)``: expensive
   closers that attack only the survivors with the smallest margin) come last, white-box
   before black-box, so that every other member's margins inform their choice.

Attack randomness is keyed by the sample's index in the whole set, so a sample's
verdict under a member is the same in either phase. The result lists every member
with its cost (seconds of both phases), what it did on the calibration batch, and
whether phase 2 dropped it.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from .ensemble import Ensemble, EnsembleResult, MemberRecord

__all__ = ["OrderedEnsemble", "order_members"]


def order_members(records: Sequence[MemberRecord], essential: Sequence[int] = (), prune: bool = True) -> list[int]:
    """Phase-2 order (member indices) from phase-1 records; see the module docstring."""
    essential = set(essential)
    focused = [r for r in records if (r.spec or {}).get("focus") is not None]
    free = [r for r in records if (r.spec or {}).get("focus") is None]
    white = [r for r in free if r.white_box]
    breaking = sorted((r for r in white if r.broke > 0), key=lambda r: (-r.broke / max(r.seconds, 1e-3), r.index))
    # a member that had nothing left to attack in phase 1 is not known to be idle: it stays
    keep = lambda r: r.broke > 0 or r.attacked == 0 or not prune or r.index in essential  # noqa: E731
    idle = [r for r in white if r.broke == 0 and keep(r)]
    black = [r for r in free if not r.white_box and keep(r)]
    # focused members choose their samples by the margins the others reached: they close, in their given order
    closing = [r for r in focused if r.white_box and keep(r)] + [r for r in focused if not r.white_box and keep(r)]
    return [r.index for r in breaking + idle + black + closing]


class OrderedEnsemble(Ensemble):
    """:class:`~robustsnn.attacks.ensemble.Ensemble` with calibration-batch ordering and pruning.

    Args:
        model, members, eps, norm, seed, votes, eot, batch_size, transfer_source,
            transfer_source_name, on_progress: as :class:`~robustsnn.attacks.ensemble.Ensemble`
            (always early exit, no member cache).
        calibration_size: samples of phase 1 (the first ones).
        essential: indices of members that phase 2 runs even if they broke nothing in phase 1.
        prune: drop the other members that broke nothing in phase 1.
    """

    def __init__(self, model, members, *, calibration_size: int = 32, essential: Sequence[int] = (), prune: bool = True,
                 **kwargs):
        kwargs.pop("early_exit", None)
        kwargs.pop("cache_dir", None)
        super().__init__(model, members, early_exit=True, **kwargs)
        self.calibration_size = int(calibration_size)
        self.essential = tuple(int(i) for i in essential)
        self.prune = bool(prune)

    def _phase(self, order: Sequence[int], x: torch.Tensor, y: torch.Tensor, offset: int) -> EnsembleResult:
        attacks, specs = self.attacks, self.specs
        self.attacks, self.specs, self.id_offset = [attacks[i] for i in order], [specs[i] for i in order], offset
        try:
            return Ensemble.run(self, x, y)
        finally:
            self.attacks, self.specs, self.id_offset = attacks, specs, 0

    def run(self, x: torch.Tensor, y: torch.Tensor) -> EnsembleResult:
        """Attack ``x`` [N, C, H, W] with labels ``y`` [N] in two phases; see the module docstring."""
        t_start = time.perf_counter()
        n, m = int(x.shape[0]), len(self.attacks)
        c = min(max(self.calibration_size, 0), n)
        cal = self._phase(range(m), x[:c], y[:c], 0)
        order = order_members(cal.members, self.essential, self.prune) if c < n else list(range(m))
        main = self._phase(order, x[c:], y[c:], c) if c < n else None
        final = order + [i for i in range(m) if i not in order]  # final position -> member index
        pos = {k: j for j, k in enumerate(final)}

        breaker = torch.full((n,), -1, dtype=torch.long)
        b_cal = cal.breaker.clone()
        b_cal[b_cal >= 0] = torch.tensor([pos[int(k)] for k in b_cal[b_cal >= 0]], dtype=torch.long)
        breaker[:c] = b_cal
        if main is not None:
            b_main = main.breaker.clone()
            b_main[b_main >= 0] = torch.tensor([pos[order[int(k)]] for k in b_main[b_main >= 0]], dtype=torch.long)
            breaker[c:] = b_main
        parts = [cal] + ([main] if main is not None else [])
        clean = torch.cat([p.clean_correct for p in parts])
        x_adv = torch.cat([p.x_adv for p in parts])
        margin = torch.cat([p.margin for p in parts]) if all(p.margin is not None for p in parts) else None

        records = []
        by_cal = {r.index: r for r in cal.members}
        by_main = {order[r.index]: r for r in main.members} if main is not None else {}
        for j, k in enumerate(final):
            rc, rm = by_cal[k], by_main.get(k)
            rec = MemberRecord(j, rc.label, rc.white_box, spec=rc.spec)
            rec.attacked = rc.attacked + (rm.attacked if rm else 0)
            rec.broke = int((breaker == j).sum())
            rec.seconds = rc.seconds + (rm.seconds if rm else 0.0)
            rec.running_acc = float((clean & ~((breaker >= 0) & (breaker <= j))).float().mean()) if n else 0.0
            rec.skipped = rc.skipped and (rm is None or rm.skipped)
            rec.messages = list(dict.fromkeys(rc.messages + (rm.messages if rm else [])))
            rec.calibration = {"samples": c, "attacked": rc.attacked, "broke": rc.broke, "seconds": rc.seconds,
                               "pruned": main is not None and rm is None, "position_given": k}
            records.append(rec)
        robust = clean & (breaker == -1)
        return EnsembleResult(eps=self.eps, norm=self.norm, clean_correct=clean, robust=robust, breaker=breaker,
                              x_adv=x_adv, members=records, seconds=time.perf_counter() - t_start, margin=margin)
