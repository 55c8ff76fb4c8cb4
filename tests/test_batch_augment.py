"""The device augmentation against the CPU albumentations pipeline, both as conf/augment/smlf.yaml sets them:
the same eval pixels, the same blur strength, the same rotation borders."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agelab.config import crop_margin

from conftest import compose_config


def augment_config(tmp_path, input_size: int = 112):
    return compose_config(tmp_path, [f"model.input_size={input_size}"]).augment


def cpu_step(cfg, name: str, **changes) -> A.Compose:
    """One transform of the CPU train pipeline, alone, with some of its settings changed."""
    step = next(t for t in cfg.train.transforms if t._target_.endswith(f".{name}"))
    return A.Compose([instantiate(OmegaConf.merge(step, changes))], seed=0)


def device_train(cfg, **changes):
    """The device train transform with only the named ops switched on."""
    off = {"rotate_p": 0.0, "hflip_p": 0.0, "brightness_contrast_p": 0.0, "gray_p": 0.0, "blur_p": 0.0,
           "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}
    return instantiate(OmegaConf.merge(cfg.device_train, off, changes))


@pytest.mark.parametrize("input_size", [64, 112, 227])
def test_device_eval_gives_the_pixels_of_resize_and_centre_crop(tmp_path, input_size):
    cfg = augment_config(tmp_path, input_size)
    margin = crop_margin(input_size)  # the size of the cached crops
    image = np.random.default_rng(0).integers(0, 256, (margin, margin, 3), dtype=np.uint8)
    cpu = instantiate(cfg.eval)(image=image)["image"]
    device = instantiate(cfg.device_eval)(torch.from_numpy(image)[None])[0]
    assert device.shape == cpu.shape == (3, input_size, input_size)
    assert torch.allclose(device, cpu, atol=1e-4)


def test_device_eval_slices_a_cache_at_the_margin_size_as_the_resample_would(tmp_path):
    augment = instantiate(augment_config(tmp_path, 112).device_eval)
    images = torch.randint(0, 256, (3, crop_margin(112), crop_margin(112), 3), dtype=torch.uint8)
    sliced = augment._eval_crop(images)
    assert torch.allclose(sliced, augment._resample(images, augment._eval_theta(3)), atol=0.01)  # of 255
    other = torch.randint(0, 256, (3, 150, 150, 3), dtype=torch.uint8)  # another size: resized, then cropped
    assert augment._eval_crop(other).shape == (3, 3, 112, 112)


def test_device_augmentation_draws_resume_where_the_checkpoint_left_them(tmp_path, monkeypatch):
    cfg = compose_config(tmp_path, ["data.augment_on=device"])
    first = instantiate(cfg.data)
    augment = first.device_transforms["train"]
    augment._draw(8)
    saved = first.state_dict()
    expected = augment._draw(8)["theta"]
    resumed = instantiate(cfg.data)
    assert not torch.equal(resumed.device_transforms["train"]._draw(8)["theta"], expected)  # a fresh stream differs
    resumed = instantiate(cfg.data)
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.device_transforms["train"]._draw(8)["theta"], expected)
    assert instantiate(compose_config(tmp_path, ["data.augment_on=cpu"]).data).state_dict() == {}
    # Under DDP the checkpoint holds the first process's state; another process re-seeds from it by rank.
    import agelab.data.batch_augment as batch_augment

    other = instantiate(cfg.data)
    monkeypatch.setattr(batch_augment, "_rank", lambda: 1)
    other.load_state_dict(saved)
    apart = other.device_transforms["train"]._draw(8)["theta"]
    assert not torch.equal(apart, expected)
    again = instantiate(cfg.data)
    again.load_state_dict(saved)
    assert torch.equal(again.device_transforms["train"]._draw(8)["theta"], apart)  # reproducible


def test_device_blur_is_as_strong_as_the_cpu_blur(tmp_path):
    cfg = augment_config(tmp_path)
    impulse = np.zeros((33, 33, 3), np.uint8)
    impulse[16, 16] = 255
    blur = cpu_step(cfg, "GaussianBlur", p=1.0)
    cpu = np.array([blur(image=impulse)["image"][16, 16, 0] / 255 for _ in range(4000)])
    batch = torch.from_numpy(impulse).permute(2, 0, 1).float().div(255)[None].repeat(4000, 1, 1, 1)
    aug = device_train(cfg, blur_p=1.0)
    device = aug._blur(batch, aug._draw(4000)["sigma"])[:, 0, 16, 16].numpy()
    # the share of the pixel left in place: the same range and mean either way (one in [0.16, 0.6])
    assert abs(cpu.mean() - device.mean()) < 0.03
    assert abs(cpu.min() - device.min()) < 0.03 and abs(cpu.max() - device.max()) < 0.03


def test_rotation_leaves_no_black_corners_on_either_path(tmp_path):
    cfg = augment_config(tmp_path)
    white = np.full((112, 112, 3), 255, np.uint8)
    cpu = cpu_step(cfg, "Rotate", limit=[10, 10], p=1.0)(image=white)["image"]
    device = device_train(cfg, rotate_p=1.0, rotate_limit=10)(torch.from_numpy(white)[None].repeat(4, 1, 1, 1))
    assert cpu.min() == 255
    assert device.min().item() == pytest.approx(1.0)  # white, normalised to [-1, 1]


def test_levi_augmentation_crops_and_mirrors_only_on_both_paths(tmp_path):
    cfg = compose_config(tmp_path, ["augment=levi", "model=levi_hassner", "model.input_size=112"]).augment
    margin = crop_margin(112)
    image = np.random.default_rng(0).integers(0, 256, (margin, margin, 3), dtype=np.uint8)
    cpu = instantiate(cfg.train)(image=image)["image"]
    device = instantiate(cfg.device_train)(torch.from_numpy(image)[None].repeat(8, 1, 1, 1))
    assert cpu.shape == device.shape[1:] == (3, 112, 112)
    # an unscaled crop of the stored face: every output pixel is a pixel of the face (up to sampling)
    pixels = (np.asarray(cpu) + 1) * 127.5
    assert np.allclose(pixels - np.round(pixels), 0, atol=1e-3)
    assert instantiate(cfg.device_train).scale == (0.765625, 0.765625)  # (112 / 128) ** 2
    eval_cpu = instantiate(cfg.eval)(image=image)["image"]
    assert torch.allclose(instantiate(cfg.device_eval)(torch.from_numpy(image)[None])[0], eval_cpu, atol=1e-4)
