"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same policy is applied to every discriminator input, real and generated, in both the D and the
G step, so D cannot tell real from fake by the augmentation and G gets gradients through it. The
policy is translation + cutout (the paper's choice for small data sets); colour transforms are left
out because the nodule's intensity is what some gene programs drive. Plain differentiable torch ops,
random draws from torch's global RNG on the tensor's device, no host syncs.
"""

from __future__ import annotations

import torch

TRANSLATION = 1 / 8
"""Largest shift, as a fraction of the side (DiffAugment's default)."""
CUTOUT = 1 / 2
"""Side of the square cutout, as a fraction of the image side (DiffAugment's default)."""


def translate(x: torch.Tensor, ratio: float = TRANSLATION) -> torch.Tensor:
    """Shift each sample by its own random (dy, dx) in [-ratio*S, ratio*S] pixels, all channels alike.

    Pixels shifted in from outside repeat the edge (a CT slice padded with zeros would get a band of
    soft-tissue grey; for a mask the edge is background unless the nodule touches it).
    """
    b, _, h, w = x.shape
    dy = torch.randint(-int(h * ratio + 0.5), int(h * ratio + 0.5) + 1, (b, 1), device=x.device)
    dx = torch.randint(-int(w * ratio + 0.5), int(w * ratio + 0.5) + 1, (b, 1), device=x.device)
    rows = (torch.arange(h, device=x.device) - dy).clamp(0, h - 1)  # (B, H): source row of each output row
    cols = (torch.arange(w, device=x.device) - dx).clamp(0, w - 1)  # (B, W)
    x = x.gather(2, rows[:, None, :, None].expand(-1, x.shape[1], -1, w))
    return x.gather(3, cols[:, None, None, :].expand(-1, x.shape[1], h, -1))


def cutout(x: torch.Tensor, ratio: float = CUTOUT) -> torch.Tensor:
    """Set a random square of side ratio*S (centre anywhere, clipped at the border) to 0 in every channel."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (b, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (b, 1, 1), device=x.device) - cw // 2
    y = torch.arange(h, device=x.device)[None, :, None]
    xx = torch.arange(w, device=x.device)[None, None, :]
    inside = (y >= top) & (y < top + ch) & (xx >= left) & (xx < left + cw)  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


POLICIES = {"diffaugment": lambda x: cutout(translate(x)), "translation": translate}
"""train.augment value -> transform. translation alone keeps the whole nodule visible: a cutout of half the
side can hide most of it, and with it the size and density that the genes drive."""


def diff_augment(*tensors: torch.Tensor, policy: str = "diffaugment") -> tuple[torch.Tensor, ...]:
    """Augment (B, 1, S, S) tensors jointly: one random transform per sample, the same for every tensor
    given (an image and its masks), fresh draws on every call."""
    sizes = [t.shape[1] for t in tensors]
    stacked = torch.cat([t.to(tensors[0].dtype) for t in tensors], dim=1)
    return tuple(POLICIES[policy](stacked).split(sizes, dim=1))
