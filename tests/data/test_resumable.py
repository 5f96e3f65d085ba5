import numpy as np
import torch
from torch.utils.data import DistributedSampler

from contrastseg.data.resumable import (
    ResumableSampler,
    SeededItems,
    describe_item,
    files_being_read,
    item_seed,
    reading_table,
)


def _sampler(epoch_fn=None) -> ResumableSampler:
    return ResumableSampler(DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=3), seed=3,
                            epoch_fn=epoch_fn)


def test_epoch_order_is_fixed_and_a_resume_yields_the_remaining_suffix() -> None:
    sampler = _sampler()
    sampler.set_epoch(2)
    whole = list(sampler)
    assert sorted(i for i, _ in whole) == list(range(10))
    assert [s for _, s in whole] == [item_seed(3, 2, 0, p) for p in range(10)]  # seeds by (seed, epoch, rank, pos)
    sampler.set_epoch(1)
    assert list(sampler) != whole  # another epoch, another order
    sampler.resume(2, 6)
    assert list(sampler) == whole[6:]  # the same items with the same seeds as the uninterrupted epoch
    assert list(_sampler(epoch_fn=lambda: 2)) == whole  # the trainer's epoch wins over set_epoch


class _Noisy(torch.utils.data.Dataset):
    pairs = [("/data/a.png", None), ("/data/b.png", None)]

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return float(torch.rand(())) + 10 * i, float(np.random.random())


def test_seeded_items_are_a_function_of_the_seed_and_leave_the_main_rng_alone() -> None:
    items = SeededItems(_Noisy())
    torch.manual_seed(0)
    expected_next = torch.rand(()).item()
    torch.manual_seed(0)
    a, b = items[(1, 42)], items[(1, 42)]
    assert a == b and items[(1, 43)] != a and a[0] >= 10
    assert torch.rand(()).item() == expected_next  # the global stream was restored


def test_reading_table_round_trip_and_descriptions() -> None:
    table = reading_table(2)
    assert files_being_read(table) == [] and reading_table(0) is None
    table[1, :3] = torch.tensor(list(b"x.p"), dtype=torch.uint8)
    assert files_being_read(table) == ["x.p"]
    assert describe_item(_Noisy(), 1) == "/data/b.png" and describe_item(range(3), 2) == "range[2]"


def test_item_seed_is_the_seed_sequence_hash_of_its_coordinates() -> None:
    s0, s1 = (int(w) for w in np.random.SeedSequence([7, 2, 1, 40]).generate_state(2, np.uint32))
    assert item_seed(7, 2, 1, 40) == s0 * 2**31 + s1
    assert item_seed(7, 2, 1, 41) != item_seed(7, 2, 1, 40) != item_seed(7, 3, 1, 40)
