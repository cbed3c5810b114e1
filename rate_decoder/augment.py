"""Image augmentation of float batches: STL-10's crop + flip and ImageNet's RandomResizedCrop + flip (docs/algorithm.md §5).

Used by the readout (features recomputed per batch) and by ImageNet's unsupervised epoch. The pixels
are moved by torchvision's functional transforms; the draws are made here, a whole batch at a time
from a given CPU generator or torch's global one, so a seeded epoch is reproducible and a
data-parallel rank's share gets the draws of its rows.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: ``"none"``, STL-10's ``RandomCrop(pad, reflect)`` + flip, ImageNet's ``RandomResizedCrop`` + flip
AUGMENTATIONS = ("none", "crop_flip", "resized_crop_flip")
#: torchvision's ``RandomResizedCrop`` defaults, which the reference code keeps for ImageNet / ImageNette (docs/algorithm.md §5)
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
#: attempts per image before torchvision's fallback box, as in ``RandomResizedCrop.get_params``
_RESIZED_CROP_TRIES = 10


def augment(x: Tensor, kind: str, pad: int = 4, scale: tuple[float, float] = RESIZED_CROP_SCALE,
            ratio: tuple[float, float] = RESIZED_CROP_RATIO, generator: torch.Generator | None = None,
            rows: tuple[int, int] | None = None) -> Tensor:
    """Augmentation of a float batch ``(B, C, H, W)`` (readout, or ImageNet's unsupervised epoch); same shape out.

    ``"crop_flip"`` (STL-10's ``RandomCrop(96, pad 4, reflect)`` + flip, docs/algorithm.md §5): each image is
    reflect-padded by ``pad``, cropped back to its size at a uniformly drawn offset, and flipped
    horizontally with probability 1/2.

    ``"resized_crop_flip"`` (ImageNet / ImageNette's ``RandomResizedCrop(160)`` + flip, docs/algorithm.md §5,
    which names no scale or ratio, so torchvision's defaults ``scale`` (0.08, 1) and ``ratio`` (3/4, 4/3)):
    each image's box is drawn as :func:`resized_crop_params` says and resized back to ``H x W`` (the
    preset's image size) bilinearly, then flipped with probability 1/2; ``pad`` is unused. One
    difference from the reference code: it crops the image file as decoded (imagenette2-160: 160 px
    on the short side; ImageNet: full size), this crops the stored ``Resize((S, S))`` copy. The area
    fraction is the same, but the aspect ratio is drawn relative to the squeezed square image, and a
    small box has the resolution of the S-px copy, not of the file.

    Draws come from ``generator`` (a CPU one), else torch's global generator (on the CPU, whatever
    ``x``'s device), so a seeded epoch is reproducible. ``"none"`` returns ``x``.

    ``rows = (start, total)``: ``x`` is rows ``start:start + B`` of a batch of ``total`` images, and gets
    the draws those rows would get if the whole batch were augmented (a data-parallel rank's shard).
    """
    if kind == "none":
        return x
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; choose one of {AUGMENTATIONS}")
    B, _, H, W = x.shape
    start, total = rows if rows is not None else (0, B)
    if not (0 <= start and start + B <= total):
        raise ValueError(f"rows {rows} do not hold a shard of {B} images")
    if B == 0:
        return x
    keep = slice(start, start + B)
    from torchvision.transforms.v2 import functional as TF  # here: importing the package must stay cheap

    if kind == "resized_crop_flip":
        params = resized_crop_params(total, H, W, scale, ratio, generator)
        return resized_crop(x, *(t[keep] for t in params))
    padded = TF.pad(x, [pad], padding_mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (total, 2), generator=generator)[keep].tolist()
    flips = (torch.rand(total, generator=generator)[keep] < 0.5).tolist()
    crops = [TF.crop(padded[b], i, j, H, W) for b, (i, j) in enumerate(offsets)]
    return torch.stack([TF.horizontal_flip(c) if f else c for c, f in zip(crops, flips)])


def resized_crop_params(batch: int, height: int, width: int, scale: tuple[float, float] = RESIZED_CROP_SCALE,
                        ratio: tuple[float, float] = RESIZED_CROP_RATIO,
                        generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
    """Per-image boxes ``(top, left, h, w)`` and flips of ``RandomResizedCrop`` + ``RandomHorizontalFlip``.

    torchvision's ``get_params``, batched: up to 10 tries of an area fraction ~ U(scale) and a
    log-uniform aspect ratio w/h in ``ratio``, ``w = round(sqrt(area * ratio))``, ``h = round(sqrt(area /
    ratio))``; the first try that fits is placed at a uniform offset; if none fits, the centred box
    torchvision falls back to (the whole image when its own aspect ratio lies in ``ratio``). The
    distribution is torchvision's; the sequence of draws is not (all tries of the batch are drawn at
    once), so the same seed gives other boxes than torchvision would.

    Draws come from ``generator`` (a CPU one; default: torch's global generator). Returns int64 CPU
    tensors ``top, left, h, w`` and a bool tensor ``flip``, each of length ``batch``.
    """
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"resized-crop scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"resized-crop ratio must satisfy 0 < low <= high, got {ratio}")
    area = height * width
    shape = (batch, _RESIZED_CROP_TRIES)
    target = area * torch.empty(shape, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    aspect = torch.empty(shape, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                             generator=generator).exp_()
    w = (target * aspect).sqrt_().round_().long()  # round half to even, as Python's round()
    h = (target / aspect).sqrt_().round_().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # index of the first try that fits (0 if none does)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_h, fallback_w = round(width / ratio[0]), width
    elif in_ratio > ratio[1]:
        fallback_h, fallback_w = height, round(height * ratio[1])
    else:
        fallback_h, fallback_w = height, width
    h = torch.where(found, h, fallback_h)
    w = torch.where(found, w, fallback_w)
    offsets = torch.rand(2, batch, dtype=torch.float64, generator=generator)
    top = torch.where(found, (offsets[0] * (height - h + 1)).long().clamp_(max=height - h), (height - h) // 2)
    left = torch.where(found, (offsets[1] * (width - w + 1)).long().clamp_(max=width - w), (width - w) // 2)
    flip = torch.rand(batch, generator=generator) < 0.5
    return top, left, h, w, flip


def resized_crop(x: Tensor, top: Tensor, left: Tensor, h: Tensor, w: Tensor, flip: Tensor) -> Tensor:
    """Each image's box ``x[b, :, top:top+h, left:left+w]`` resized bilinearly to ``x``'s ``H x W``, maybe flipped.

    torchvision's ``resized_crop`` and ``horizontal_flip`` (``transforms.v2.functional``) per image, with
    the draws above: torchvision's ``RandomResizedCrop`` draws from the global generator image by image,
    which would tie the crops to the number of processes and loader workers. Antialiasing is off: a box
    is never larger than the image, so every resize is an upsampling, where it does not act (with it on,
    torch's antialiased kernel rounds differently, by 1e-5) and PIL's bilinear filter (the reference
    code's) is the same interpolation up to PIL's rounding to uint8. Only pixels inside the box are read.
    """
    from torchvision.transforms.v2 import functional as TF

    H, W = x.shape[-2:]
    out = torch.empty_like(x)
    for b, (i, j, hb, wb, f) in enumerate(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist(), flip.tolist())):
        resized = TF.resized_crop(x[b], i, j, hb, wb, [H, W], antialias=False)
        out[b] = TF.horizontal_flip(resized) if f else resized
    return out
