import numpy as np
import torch

from contrastseg.data import SYNTHETIC_CLASSES, SyntheticDataModule, SyntheticDataset


def test_items_are_deterministic_and_splits_differ() -> None:
    a, b = SyntheticDataset("train", num_samples=4), SyntheticDataset("train", num_samples=4)
    torch.testing.assert_close(a[3]["image"], b[3]["image"])
    assert torch.equal(a[3]["mask"], b[3]["mask"])
    assert not torch.equal(a[0]["mask"], SyntheticDataset("val", num_samples=4)[0]["mask"])
    assert not torch.equal(a[0]["mask"], SyntheticDataset("train", num_samples=4, seed=1)[0]["mask"])


def test_every_class_appears_and_is_imbalanced() -> None:
    ds = SyntheticDataset("train", num_samples=64, image_size=(96, 128))
    counts = np.zeros(len(SYNTHETIC_CLASSES))
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 96, 128) and item["mask"].shape == (96, 128)
        counts += np.bincount(item["mask"].numpy().ravel(), minlength=len(SYNTHETIC_CLASSES))
    freq = counts / counts.sum()
    assert (freq > 0).all(), "every class must occur"
    assert freq.max() > 0.3 and freq.min() < 0.005, "large background regions and rare small objects"


def test_colour_alone_does_not_give_the_class() -> None:
    # Mean colour of sky and water regions follows the same distribution: only context separates them.
    ds = SyntheticDataset("train", num_samples=200, image_size=(64, 64))
    means = {0: [], 2: []}
    for i in range(len(ds)):
        item = ds[i]
        for c in means:
            sel = item["mask"] == c
            if sel.any():
                means[c].append(item["image"][:, sel].mean(dim=1))
    sky, water = torch.stack(means[0]).mean(0), torch.stack(means[2]).mean(0)
    assert (sky - water).abs().max() < 0.35  # normalised units; per-image std is ~1


def test_datamodule_links_class_facts() -> None:
    dm = SyntheticDataModule(num_workers=0)
    assert dm.num_classes == 8 and dm.ignore_index == 255 and dm.class_names[0] == "sky"


def test_the_test_split_is_its_own_scenes() -> None:
    dm = SyntheticDataModule(num_train=4, num_val=3, num_test=5, image_size=(64, 64), num_workers=0)
    dm.setup("validate")
    dm.setup("test")
    val, test = dm.datasets["val"], dm.datasets["test"]
    assert (len(val), len(test)) == (3, 5)
    assert {val[i]["name"] for i in range(3)}.isdisjoint(test[i]["name"] for i in range(5))
    assert all(not torch.equal(val[i]["mask"], test[j]["mask"]) for i in range(3) for j in range(5))
    assert len(SyntheticDataModule(num_val=3).make_dataset("test")) == 3  # num_test None: as many as num_val


def test_contrastseg_test_scores_the_test_scenes(tmp_path) -> None:
    import json
    from pathlib import Path

    from contrastseg.cli import main

    repo = Path(__file__).resolve().parents[2]
    cli = main(["test", "--config", str(repo / "experiments" / "quickstart.yaml"),
                "--model.net.init_args.encoder.name=resnet18", "--data.init_args.num_val=2",
                "--data.init_args.num_test=3", "--data.init_args.image_size=[64, 64]", "--data.init_args.num_workers=0",
                "--trainer.accelerator=cpu", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert len(cli.datamodule.test_dataloader().dataset) == 3
    scores = json.loads(next(tmp_path.rglob("test_metrics.json")).read_text())
    assert sum(c["pixels"] for c in scores["per_class"]) == 3 * 64 * 64  # every pixel of the 3 scenes, once
