"""Batched augmentation on the training device: the SMLF-Net set for whole uint8 batches at once.

The same transforms as conf/augment/smlf.yaml (random resized crop, rotation, mirror, brightness /
contrast, grayscale, Gaussian blur, normalisation to [-1, 1]), done as one affine resample plus a
few tensor ops per batch. Used when the CPU can't feed the GPU (``data.augment_on=device``): the
loader then only gathers uint8 crops from the memory-mapped cache.

The per-face parameters are drawn on the CPU (a few numbers per face) and copied over without
waiting: the host then knows which faces to gray or blur, so only those are touched, and nothing is
ever read back from the device (a read-back, or a blocking copy, stalls the CPU until the GPU has
caught up, every step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return u * (high - low) + low


def _rank() -> int:
    """This process's rank under torch.distributed, 0 otherwise."""
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor onto ``device`` without a sync (on CUDA a copy from pageable memory waits for the
    device; from pinned memory it is queued like a kernel)."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


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
        self._cpu_generator: torch.Generator | None = None

    def _generator(self) -> torch.Generator | None:
        """The CPU generator of the draws (None: torch's global one). The stream is the same on any
        device; under DDP each process draws its own (seed + rank), or every rank would augment its
        share of the batch alike."""
        if self.seed is None:
            return None
        if self._cpu_generator is None:
            self._cpu_generator = torch.Generator().manual_seed(self.seed + _rank())
        return self._cpu_generator

    def rng_state(self) -> torch.Tensor | None:
        """The draws' generator state, saved with checkpoints so a resumed run augments on as an
        unbroken one would (None when unseeded: torch's global state is saved elsewhere)."""
        g = self._generator()
        return None if g is None else g.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Go on from a saved state. A checkpoint holds the first process's; under DDP each other
        process goes on from it re-seeded with its rank, so the processes still draw apart."""
        g = self._generator()
        if g is None:
            return
        g.set_state(state)
        if _rank():
            g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)) + _rank())

    def _draw(self, n: int) -> dict[str, torch.Tensor]:
        """Per-face parameters, on the CPU: ``theta`` (N, 2, 3) maps output coords in [-1, 1] to input
        coords (crop, scale, rotate, mirror); ``alpha``/``beta`` contrast and brightness; ``gray`` and
        ``blur`` the indices of the faces picked for them, ``sigma`` a blur strength per face."""
        u = torch.rand(13, n, generator=self._generator())
        area = _uniform(u[0], *self.scale)
        log_r = _uniform(u[1], math.log(self.ratio[0]), math.log(self.ratio[1]))
        w = torch.sqrt(area * log_r.exp()).clamp(max=1.0)  # half-widths in normalised coords (1 = full image)
        h = torch.sqrt(area / log_r.exp()).clamp(max=1.0)
        cx, cy = (u[2] * 2 - 1) * (1 - w), (u[3] * 2 - 1) * (1 - h)
        angle = _uniform(u[4], -self.rotate_limit, self.rotate_limit) * math.pi / 180 * (u[5] < self.rotate_p)
        flip = torch.where(u[6] < self.hflip_p, -1.0, 1.0)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([w * cos * flip, -h * sin, cx], 1),
                             torch.stack([w * sin * flip, h * cos, cy], 1)], 1)
        apply = (u[7] < self.bc_p).float()
        return {"theta": theta, "alpha": 1 + _uniform(u[8], *self.contrast) * apply,
                "beta": _uniform(u[9], *self.brightness) * apply, "gray": (u[10] < self.gray_p).nonzero().flatten(),
                "blur": (u[11] < self.blur_p).nonzero().flatten(), "sigma": _uniform(u[12], *self.blur_sigma)}

    def _eval_crop(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the margin size, then the whole-pixel centre crop, as the CPU eval does. A cache
        already at the margin size (the usual case) is sliced: exact, whatever the matmul precision."""
        size, margin = self.output_size, self._margin()
        top = (margin - size) // 2
        if images.shape[1] == images.shape[2] == margin:
            return images[:, top:top + size, top:top + size].permute(0, 3, 1, 2).float()
        return self._resample(images, self._eval_theta(len(images)))

    def _margin(self) -> int:
        return int(round(self.output_size / self.crop_fraction))

    def _eval_theta(self, n: int) -> torch.Tensor:
        """(N, 2, 3): the eval crop as an affine map (see ``_draw``)."""
        size, margin = self.output_size, self._margin()
        half, shift = size / margin, (2 * ((margin - size) // 2) + size) / margin - 1
        return torch.tensor([[half, 0.0, shift], [0.0, half, shift]]).expand(n, 2, 3).contiguous()

    def _resample(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, size, size) in 0..255, bilinear, borders reflected."""
        x = images.permute(0, 3, 1, 2).float()
        grid = F.affine_grid(_to_device(theta, images.device), [len(images), 3, self.output_size, self.output_size],
                             align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    @staticmethod
    def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """5-tap Gaussian blur of each face of (k, C, H, W) with its own sigma (k,), reflected borders."""
        n, c = x.shape[:2]
        taps = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None].to(x) ** 2))
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (k*C, 5)
        y = x.contiguous().reshape(1, n * c, *x.shape[2:])
        y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
        y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="reflect"), kernel[:, None, :, None], groups=n * c)
        return y.reshape(x.shape)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = images.device
        lo, hi = -self.mean / self.std, (1 - self.mean) / self.std  # [0, 1] normalised
        if not self.train_mode:
            x = self._eval_crop(images)
            out = torch.empty(x.shape, device=device, memory_format=torch.channels_last)
            return torch.mul(x, 1 / (255 * self.std), out=out).sub_(self.mean / self.std)
        p = self._draw(len(images))
        x = self._resample(images, p["theta"])
        # Contrast, brightness, the clip to [0, 1] and the normalisation in one pass, written channels_last
        # (gray and blur below are weighted means, so they commute with the normalisation).
        scale = _to_device(torch.stack([p["alpha"] / (255 * self.std), (p["beta"] - self.mean) / self.std]), device)
        out = torch.empty(x.shape, device=device, memory_format=torch.channels_last)
        torch.addcmul(scale[1][:, None, None, None], x, scale[0][:, None, None, None], out=out).clamp_(lo, hi)
        if len(p["gray"]):
            rows = _to_device(p["gray"], device)
            picked = out.index_select(0, rows)
            gray = sum(picked[:, c:c + 1] * w for c, w in enumerate(GRAY_WEIGHTS))
            out.index_copy_(0, rows, gray.expand_as(picked))
        if len(p["blur"]):
            rows = _to_device(p["blur"], device)
            out.index_copy_(0, rows, self._blur(out.index_select(0, rows), _to_device(p["sigma"][p["blur"]], device)))
        return out
