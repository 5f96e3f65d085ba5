import numpy as np
import pytest
import torch

from contrastseg.losses import sample_balanced_anchors
from contrastseg.losses.multiscale import downsample_labels
from contrastseg.viz import pair_pixel_counts, plot_anchors, sample_anchor_sets


def _labels(b: int = 2, h: int = 64, w: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (b, h // 8, w // 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    labels[0, :5] = 255
    labels[1, 10:12, 40:45] = 5  # a small class
    return labels


@pytest.mark.parametrize("size", [(64, 96), (61, 90)])  # strided and interpolated downsampling
def test_every_anchor_sits_on_a_pixel_of_its_class(size) -> None:
    labels = _labels()[:, : size[0], : size[1]]
    for a in sample_anchor_sets(labels, (4, 8, 16, 32), min_views_per_class=1,
                                generator=torch.Generator().manual_seed(1)):
        assert a.image.numel() == a.views * a.pairs > 0
        assert (labels[a.image, a.y, a.x] == a.label).all()
        assert (a.label != 255).all()
        assert (a.y % a.stride == 0).all() if size == (64, 96) else True


def test_anchor_sets_are_the_losses_draw() -> None:
    """Same labels, same generator seed: the same anchors as the loss's sampler picks."""
    labels = _labels()
    ours = sample_anchor_sets(labels, (8,), max_anchors=300, generator=torch.Generator().manual_seed(3))[0]
    labels_s = downsample_labels(labels, (8, 12), 8)
    coords = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(12), indexing="ij")).float()  # (2, 8, 12)
    emb = coords[None].expand(2, 2, 8, 12) + 100 * torch.arange(2).view(2, 1, 1, 1)  # (B, 2, h, w): y, x + 100 b
    rows, anchor_labels = sample_balanced_anchors(emb, labels_s, max_anchors=300,
                                                  generator=torch.Generator().manual_seed(3))
    assert torch.equal(anchor_labels, ours.label)
    assert torch.equal(rows[:, 0] % 100 * 8, ours.y.float()) and torch.equal(rows[:, 1] % 100 * 8, ours.x.float())
    assert ours.views * ours.pairs <= 300


def test_large_class_ids_are_drawn_and_counted_as_pairs() -> None:
    """Ids >= 256 (and >= 65536) are classes: drawn, and T and V count their pairs (they once collided)."""
    labels = _labels().clone()
    labels[labels == 1] = 300
    labels[labels == 2] = 65536  # (image 0, 65536) and (image 1, 0) had the same image * 65536 + class
    labels[labels == 3] = 3 * 65536
    a = sample_anchor_sets(labels, (8,), generator=torch.Generator().manual_seed(0))[0]
    pairs = {(b, c) for b in range(2) for c in labels[b, ::8, ::8].unique().tolist()
             if c != 255 and int((labels[b, ::8, ::8] == c).sum()) >= 5}
    assert {300, 65536, 196608} <= set(a.label.tolist())
    assert a.pairs == len(pairs) and a.views * a.pairs == a.image.numel()
    assert (labels[a.image, a.y, a.x] == a.label).all()


def test_pair_pixel_counts_matches_a_loop() -> None:
    labels = _labels()
    labels[1, 0, :3] = 9  # out of range: not counted (nor folded into the last class)
    counts = pair_pixel_counts(labels, 6)
    for b in range(2):
        for c in range(6):
            assert counts[b, c] == int((labels[b] == c).sum())


def test_plot_anchors_draws_each_anchor_at_its_coordinates() -> None:
    labels = _labels()
    sets = sample_anchor_sets(labels, (4, 16), generator=torch.Generator().manual_seed(0))
    image = np.zeros((64, 96, 3), np.uint8)
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (1, 2, 3), (4, 5, 6)]
    fig = plot_anchors(image, sets, palette=palette, class_names=list("abcdef"), batch_index=1)
    assert len(fig.axes) == 2
    for ax, a in zip(fig.axes, sets):
        mine = a.image == 1
        offsets = ax.collections[0].get_offsets()
        assert np.array_equal(offsets, np.stack([a.x[mine].numpy(), a.y[mine].numpy()], 1))
        colours = ax.collections[0].get_facecolors()[:, :3]
        assert np.allclose(colours, np.asarray(palette, float)[a.label[mine].numpy()] / 255)
        assert f"V={a.views}" in ax.get_title()


@pytest.mark.parametrize("legend", [False, True])
def test_plot_anchors_titles_fit_in_the_figure(legend: bool) -> None:
    """The two-line titles stay inside the figure on a plain savefig (no bbox_inches="tight")."""
    labels = torch.zeros(1, 360, 480, dtype=torch.long)
    labels[0, :, 240:] = 1
    sets = sample_anchor_sets(labels, (4, 8, 16, 32), generator=torch.Generator().manual_seed(0))
    fig = plot_anchors(np.zeros((360, 480, 3), np.uint8), sets, palette=[(255, 0, 0), (0, 255, 0)],
                       class_names=["a", "b"] if legend else None, batch_index=0)
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.title.get_window_extent().y1 <= fig.bbox.y1
