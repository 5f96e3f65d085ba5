"""contrastseg.ops.resize, the one bilinear resize of the models, the losses and evaluation."""

import pytest
import torch
import torch.nn.functional as F

from contrastseg.ops import resize


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("size", [(24, 36), (5, 7), (12, 40)])  # up, down, mixed
def test_resize_is_bilinear_without_corner_alignment_or_antialiasing(dtype, size) -> None:
    x = torch.randn(2, 3, 12, 18, generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    for given in (size, list(size), torch.Size(size)):
        out = resize(x, given)
        assert out.dtype == dtype and out.shape == (2, 3, *size)
        assert torch.equal(out, expected)


def test_resize_to_the_same_size_is_the_input_itself() -> None:
    x = torch.randn(1, 4, 6, 9, requires_grad=True)
    assert resize(x, x.shape[-2:]) is x
    # ... which is what bilinear interpolation to the same size computes.
    assert torch.equal(F.interpolate(x, size=(6, 9), mode="bilinear", align_corners=False), x)


def test_resize_passes_gradients() -> None:
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    resize(x, (8, 8)).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 4.0))  # each input pixel spreads over 2 x 2 outputs
