"""Data augmentation as pure tensor functions on float batches ``[B, C, H, W]`` (no torchvision).

Randomness comes only from the ``torch.Generator`` passed in, so a seeded
generator gives the same augmentation every time. Each sample gets its own
random crop offset and flip decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .info import canonical_name

__all__ = ["random_crop", "random_flip", "Augmentation", "default_augmentation"]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad with zeros by ``padding`` pixels on every side, then crop back to H x W at a random offset per sample.

    Equivalent to shifting each image by (dy, dx), each uniform in ``-padding .. padding``
    pixels, filling the uncovered border with 0.

    Args:
        x: float batch ``[B, C, H, W]``.
        padding: zero padding in pixels; 0 returns ``x`` unchanged.
        generator: source of the B offsets, drawn as ``randint(0, 2*padding+1, (2, B))``.

    Returns:
        Tensor of the same shape, dtype and device as ``x``.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    # advanced indices around a slice: the result is [B, H, W, C]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right (along W) with probability ``p``.

    Args:
        x: batch ``[B, C, H, W]``.
        generator: source of the B decisions, drawn as ``rand(B) < p``.
        p: flip probability.

    Returns:
        Tensor of the same shape, dtype and device as ``x``.
    """
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@dataclass(frozen=True)
class Augmentation:
    """A training-time augmentation: random zero-padded crop, then random horizontal flip.

    Attributes:
        crop_padding: padding in pixels of :func:`random_crop`; 0 disables the crop.
        flip: whether to apply :func:`random_flip`.
    """

    crop_padding: int = 0
    flip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a float batch ``[B, C, H, W]``; same shape out."""
        x = random_crop(x, self.crop_padding, generator)
        return random_flip(x, generator) if self.flip else x

    @property
    def is_identity(self) -> bool:
        """True when the augmentation changes nothing."""
        return self.crop_padding == 0 and not self.flip


_DEFAULTS = {
    "fashion-mnist": Augmentation(),
    "mnist": Augmentation(),
    "cifar10": Augmentation(crop_padding=4, flip=True),
    "cifar100": Augmentation(crop_padding=4, flip=True),
    "svhn": Augmentation(crop_padding=4),  # flipped digits are other digits
    "tiny-imagenet": Augmentation(crop_padding=4, flip=True),
}


def default_augmentation(name: str) -> Augmentation:
    """The standard training augmentation of data set ``name``: none for (Fashion-)MNIST,
    crop(4) + flip for CIFAR and Tiny-ImageNet, crop(4) only for SVHN."""
    return _DEFAULTS[canonical_name(name)]
