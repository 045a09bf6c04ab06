"""CycleGAN networks: shapes, any image size, PatchGAN output, image pool behaviour, pixel-space round trip."""

from __future__ import annotations

import pytest
import torch

from syn2real.models.gan import (
    GeneratorConfig,
    ImagePool,
    PatchDiscriminator,
    PixelSpace,
    ResnetGenerator,
)


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (1, 3, 30, 45), (2, 3, 64, 64)])
def test_generator_keeps_shape_and_range(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    gen = ResnetGenerator(shape[1], ngf=8, n_blocks=2)
    y = gen(torch.rand(shape) * 2 - 1)
    assert y.shape == shape and y.min() >= -1 and y.max() <= 1
    y.mean().backward()
    assert all(p.grad is not None for p in gen.parameters())


def test_generator_defaults_and_errors() -> None:
    gen = GeneratorConfig().build()
    # CycleGAN 9-block generator at ngf 64: reflection padding + instance norm
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in gen.modules()) == 2 + 2 * 9 + 2 + 1
    assert any(isinstance(m, torch.nn.ReflectionPad2d) for m in gen.modules())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        gen(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="ngf"):
        ResnetGenerator(3, ngf=0)


def test_patchgan_map_sizes_and_small_images() -> None:
    d = PatchDiscriminator(3, ndf=8, n_layers=3)
    assert d(torch.zeros(2, 3, 256, 256)).shape == (2, 1, 30, 30)  # the CycleGAN 70x70 PatchGAN map at 256 px
    assert d(torch.zeros(2, 3, 28, 28)).shape[:2] == (2, 1)
    assert PatchDiscriminator(1, ndf=8, n_layers=2)(torch.zeros(1, 1, 28, 28)).shape == (1, 1, 5, 5)


def test_image_pool_fills_then_swaps_half() -> None:
    pool = ImagePool(size=4, generator=torch.Generator().manual_seed(0))
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool.images) == 4
    second = torch.full((200, 1, 1, 1), 100.0)
    out = pool.query(second)
    from_history = (out != 100.0).sum().item()
    assert 0 < from_history <= 4  # old images come back (each at most once, they are replaced by new ones)
    assert ImagePool(0).query(first).data_ptr() != 0 and torch.equal(ImagePool(0).query(first), first)
    with pytest.raises(ValueError):
        ImagePool(-1)
    restored = ImagePool(size=4)
    restored.load_state_dict(pool.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.images, pool.images)) and len(restored.images) == 4


def test_image_pool_is_reproducible_under_a_seed() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        pool = ImagePool(size=3)
        pool.query(torch.arange(3.0).view(3, 1))
        outs.append(pool.query(torch.arange(10.0, 40.0).view(30, 1)))
    assert torch.equal(outs[0], outs[1])


def test_pixel_space_round_trip() -> None:
    imagenet = PixelSpace((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(imagenet.from_gan(imagenet.to_gan(x)), x, atol=1e-5)
    white = (torch.ones(1, 3, 1, 1) - imagenet.mean) / imagenet.std
    assert torch.allclose(imagenet.to_gan(white), torch.ones(1, 3, 1, 1), atol=1e-6)
    digits = PixelSpace()
    assert torch.allclose(digits.to_gan(x[:, :1]), x[:, :1], atol=1e-6)  # mean = std = 0.5: both spaces coincide
