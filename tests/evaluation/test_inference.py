import pytest
import torch

from contrastseg.errors import ConfigError
from contrastseg.evaluation import EvalConfig, infer, slide_inference


class PixelModel(torch.nn.Module):
    """Logits depend on each pixel's own value only (a 1x1 conv), so every inference mode must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.conv(x)


def test_slide_equals_whole_for_a_pixelwise_model() -> None:
    model, images = PixelModel(), torch.randn(2, 3, 37, 53)
    whole = model(images)
    for crop, stride in (((16, 16), None), ((20, 30), (7, 11)), ((64, 64), None)):  # the last pads
        out = slide_inference(model, images, 5, crop, stride, window_batch=3)
        assert out.shape == whole.shape
        torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)


def test_flip_is_undone() -> None:
    model, images = PixelModel(), torch.randn(1, 3, 20, 30)
    flip = infer(model, images, 5, EvalConfig(flip=True))
    torch.testing.assert_close(flip, model(images).softmax(1), rtol=1e-5, atol=1e-5)

    class LeftBiased(torch.nn.Module):  # scores depend on the column: a flip that is not undone shows
        def forward(self, x):
            cols = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], -1)
            return torch.cat([cols, 1 - cols], dim=1) * 10

    out = infer(LeftBiased(), images, 2, EvalConfig(flip=True))
    assert out[0, 0, 0, -1] > 0.45 and out[0, 0, 0, 0] < 0.55
    torch.testing.assert_close(out[..., 0], out.flip(-1)[..., 0].flip(1))  # symmetric after averaging


def test_multiscale_shape_and_agreement() -> None:
    smooth = torch.nn.functional.interpolate(torch.randn(2, 3, 4, 6), size=(32, 48), mode="bilinear")
    model, images = PixelModel(), smooth  # smooth images: rescaling barely changes a pixel's value
    out = infer(model, images, 5, EvalConfig(scales=(0.5, 1.0, 1.5), flip=True))
    assert out.shape == (2, 5, 32, 48)
    torch.testing.assert_close(out.sum(1), torch.ones(2, 32, 48))  # averaged probabilities
    agree = (out.argmax(1) == model(images).argmax(1)).float().mean()
    assert agree > 0.9


def test_slide_mode_with_scales() -> None:
    model, images = PixelModel(), torch.randn(1, 3, 40, 60)
    out = infer(model, images, 5, EvalConfig(mode="slide", crop_size=(24, 24), scales=(1.0, 1.25)))
    assert out.shape == (1, 5, 40, 60)


@pytest.mark.parametrize("options,match", [
    ({"mode": "slid"}, r"model.evaluation.mode must be 'whole' or 'slide'"),
    ({"mode": "slide"}, r"needs model.evaluation.crop_size"),
    ({"mode": "slide", "crop_size": (8, 8), "stride": (12, 12)}, r"model.evaluation.stride \[12, 12\] is larger"),
    ({"mode": "slide", "crop_size": (8, 0)}, r"model.evaluation.crop_size must be two positive"),
    ({"scales": ()}, r"model.evaluation.scales must be one or more positive"),
    ({"scales": (1.0, -0.5)}, r"model.evaluation.scales"),
    ({"window_batch": 0}, r"model.evaluation.window_batch must be at least 1"),
])
def test_bad_config_names_the_key(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EvalConfig(**options)
