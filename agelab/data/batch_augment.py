"""Batched augmentation on the training device: the SMLF-Net set for whole uint8 batches at once.

The same transforms as conf/augment/smlf.yaml (random resized crop, rotation, mirror, brightness /
contrast, grayscale, Gaussian blur, normalisation to [-1, 1]), done as one affine resample plus a
few tensor ops per batch. Used when the CPU can't feed the GPU (``data.augment_on=device``): the
loader then only gathers uint8 crops from the memory-mapped cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


class BatchAugment(nn.Module):
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) normalised, channels_last.

    ``train=False`` gives the eval transform: resize to ``round(output_size / crop_fraction)``, then
    the centre ``output_size`` crop (albumentations Resize + CenterCrop).
    """

    def __init__(self, output_size: int, train: bool = True, scale=(0.75, 1.0), ratio=(0.9, 1.1),
                 rotate_limit: float = 10.0, rotate_p: float = 0.5, hflip_p: float = 0.5,
                 brightness=(-0.2, 0.2), contrast=(-0.1, 0.1), brightness_contrast_p: float = 0.5,
                 gray_p: float = 0.1, blur_p: float = 0.1, blur_sigma=(0.3, 1.2), crop_fraction: float = 0.875,
                 mean: float = 0.5, std: float = 0.5, seed: int | None = None):
        super().__init__()
        self.output_size, self.train_mode = int(output_size), train
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.rotate_limit, self.rotate_p, self.hflip_p = rotate_limit, rotate_p, hflip_p
        self.brightness, self.contrast, self.bc_p = tuple(brightness), tuple(contrast), brightness_contrast_p
        self.gray_p, self.blur_p, self.blur_sigma = gray_p, blur_p, tuple(blur_sigma)
        self.crop_fraction, self.mean, self.std = crop_fraction, mean, std
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _affine(self, n: int, device, g) -> torch.Tensor:
        """(N, 2, 3) maps output coords in [-1, 1] to input coords: crop, scale, rotate, mirror."""
        if not self.train_mode:
            # Resize to the margin size, then the whole-pixel centre crop, as the CPU eval does: on a
            # cache already at the margin size this samples exactly the pixels CenterCrop slices.
            size = self.output_size
            margin = int(round(size / self.crop_fraction))
            half = torch.full((n,), size / margin, device=device)
            shift = torch.full((n,), (2 * ((margin - size) // 2) + size) / margin - 1, device=device)
            return torch.stack([torch.stack([half, 0 * half, shift], 1),
                                torch.stack([0 * half, half, shift], 1)], 1)
        area = _uniform(n, *self.scale, g, device)
        log_r = _uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), g, device)
        w = torch.sqrt(area * log_r.exp()).clamp(max=1.0)  # half-widths in normalised coords (1 = full image)
        h = torch.sqrt(area / log_r.exp()).clamp(max=1.0)
        cx = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - h)
        angle = _uniform(n, -self.rotate_limit, self.rotate_limit, g, device) * math.pi / 180
        angle = angle * (torch.rand(n, generator=g, device=device) < self.rotate_p)
        flip = torch.where(torch.rand(n, generator=g, device=device) < self.hflip_p, -1.0, 1.0)
        cos, sin = angle.cos(), angle.sin()
        row0 = torch.stack([w * cos * flip, -h * sin, cx], 1)
        row1 = torch.stack([w * sin * flip, h * cos, cy], 1)
        return torch.stack([row0, row1], 1)

    def _blur(self, x: torch.Tensor, g) -> torch.Tensor:
        # Blur the whole batch and keep the picked faces: asking which were picked would stall
        # the CPU until the GPU catches up (a host-device sync every step).
        n, c = x.shape[:2]
        pick = torch.rand(n, generator=g, device=x.device) < self.blur_p
        sigma = _uniform(n, *self.blur_sigma, g, x.device)
        taps = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 5)
        y = x.reshape(1, n * c, *x.shape[2:])
        y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
        y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="reflect"), kernel[:, None, :, None], groups=n * c)
        return torch.where(pick[:, None, None, None], y.reshape_as(x), x)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device
        g = self._generator(device)
        x = images.permute(0, 3, 1, 2).float().div_(255)
        grid = F.affine_grid(self._affine(n, device, g), [n, 3, self.output_size, self.output_size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.train_mode:
            apply = (torch.rand(n, generator=g, device=device) < self.bc_p).float()
            alpha = 1 + _uniform(n, *self.contrast, g, device) * apply
            beta = _uniform(n, *self.brightness, g, device) * apply
            x = (x * alpha[:, None, None, None] + beta[:, None, None, None]).clamp_(0, 1)
            gray = (x * torch.tensor(GRAY_WEIGHTS, device=device)[None, :, None, None]).sum(1, keepdim=True)
            x = torch.where((torch.rand(n, generator=g, device=device) < self.gray_p)[:, None, None, None],
                            gray.expand_as(x), x)
            x = self._blur(x, g)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)
