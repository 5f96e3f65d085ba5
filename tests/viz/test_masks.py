import numpy as np
import pytest
import torch

from contrastseg.data.transforms import to_tensors
from contrastseg.viz import colourise, denormalize, overlay, plot_predictions

PALETTE = [(10, 20, 30), (200, 0, 0), (0, 200, 0)]


def test_colourise_uses_the_palette_and_paints_ignore_black() -> None:
    labels = np.array([[0, 1], [2, 255]])
    rgb = colourise(labels, PALETTE)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [200, 0, 0]
    assert rgb[1, 0].tolist() == [0, 200, 0] and rgb[1, 1].tolist() == [0, 0, 0]
    assert (colourise(torch.from_numpy(labels), PALETTE) == rgb).all()  # tensors too


def test_colourise_names_a_label_without_colour() -> None:
    with pytest.raises(ValueError, match="label value 7"):
        colourise(np.array([[0, 7]]), PALETTE)


def test_overlay_blends_labelled_pixels_and_keeps_ignored_ones() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[1, 255], [0, 0]])
    out = overlay(image, labels, PALETTE, alpha=0.5)
    assert out[0, 0].tolist() == [150, 50, 50]  # (100 + 200) / 2, (100 + 0) / 2
    assert out[0, 1].tolist() == [100, 100, 100]
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, np.zeros((3, 2), int), PALETTE)


def test_denormalize_inverts_to_tensors() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x, _ = to_tensors(image, np.zeros((5, 7), np.uint8))
    assert (denormalize(x) == image).all()


def test_plot_predictions_has_four_panels_per_row_and_marks_errors() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    target = np.zeros((4, 4), int)
    target[0, 0] = 255
    pred = target.copy()
    pred[0, 0] = 1  # wrong where ignored: not an error
    pred[1, 1] = 2  # a real error
    fig = plot_predictions([image, image], [target, target], [pred, pred], palette=PALETTE,
                           class_names=["a", "b", "c"])
    panels = [ax for ax in fig.axes]
    assert len(panels) == 8
    errors = panels[3].images[0].get_array()
    assert errors[1, 1].tolist() == [230, 30, 30] and errors[0, 0].tolist() == [0, 0, 0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
