"""Batching (padding, masks, images in token order) and length grouping by modality."""

from __future__ import annotations

import pytest
import torch
from _data_helpers import tokenizer

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.data import DataCollatorForSupervisedDataset, ModalityLengthGroupedSampler
from comm_tower.data.sampler import modality_grouped_indices

IMG = IMAGE_TOKEN_INDEX


def _item(ids, labels, n_images, fill=0.0):
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "images": torch.full((n_images, 3, 4, 4), fill),
    }


def test_collator_pads_right_masks_padding_and_keeps_images_in_token_order():
    tok = tokenizer()
    batch = DataCollatorForSupervisedDataset(tok)(
        [
            _item([1, IMG, 5, 6], [-100, -100, 5, 6], 1, fill=1.0),
            _item([1, 7], [-100, 7], 0),  # text-only: adds no image
            _item([1, IMG, IMG, 8, 9, 10], [-100, -100, -100, 8, 9, 10], 2, fill=3.0),
        ]
    )
    pad = tok.pad_token_id
    assert batch["input_ids"].tolist() == [
        [1, IMG, 5, 6, pad, pad],
        [1, 7, pad, pad, pad, pad],
        [1, IMG, IMG, 8, 9, 10],
    ]
    assert batch["labels"][1].tolist() == [-100, 7] + [IGNORE_INDEX] * 4
    assert batch["attention_mask"].tolist() == [[1] * 4 + [0] * 2, [1] * 2 + [0] * 4, [1] * 6]
    assert batch["attention_mask"].dtype == torch.bool
    # images line up with IMAGE_TOKEN_INDEX ids read row by row
    assert batch["images"].shape == (3, 3, 4, 4)
    assert batch["images"][:, 0, 0, 0].tolist() == [1.0, 3.0, 3.0]
    assert (batch["input_ids"] == IMG).sum(1).tolist() == [1, 0, 2]


def test_collator_gives_an_empty_image_tensor_for_a_text_only_batch_and_cuts_to_max_length():
    batch = DataCollatorForSupervisedDataset(tokenizer(), model_max_length=3)(
        [_item([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], 0)]
    )
    assert batch["images"].shape == (0, 3, 4, 4)
    assert batch["input_ids"].tolist() == [[1, 2, 3]] and batch["labels"].tolist() == [[1, 2, 3]]


def test_grouping_keeps_each_global_batch_to_one_modality_except_the_leftovers():
    gen = torch.Generator().manual_seed(0)
    lengths = [i + 1 for i in range(37)] + [-(i + 1) for i in range(29)]  # 37 image, 29 text samples
    batch, world = 4, 2
    order = modality_grouped_indices(lengths, batch, world, gen)
    assert sorted(order) == list(range(len(lengths)))
    step = batch * world
    groups = [order[i : i + step] for i in range(0, len(order), step)]
    n_pure = 37 // step + 29 // step  # whole global batches of one modality
    assert all(len({lengths[i] > 0 for i in g}) == 1 and len(g) == step for g in groups[:n_pure])
    # the 5 + 5 leftovers finish the epoch, in the only batches that may mix modalities
    assert len(groups) == n_pure + 2 and len(groups[-1]) == (37 + 29) % step


def test_grouping_gives_each_rank_similar_lengths_within_a_global_batch():
    lengths = [7, 100, 3, 55, 20, 90, 1, 60]
    order = modality_grouped_indices(
        lengths, batch_size=2, world_size=4, generator=torch.Generator().manual_seed(1)
    )
    # one global batch of 8: sorted longest first and dealt so rank r gets ranks' r-th and (r+4)-th longest
    ranked = sorted(lengths, reverse=True)
    per_rank = [[lengths[i] for i in order[r * 2 : r * 2 + 2]] for r in range(4)]
    assert per_rank == [[ranked[r], ranked[r + 4]] for r in range(4)]


def test_sampler_is_seeded_and_changes_order_per_epoch():
    lengths = [5, -3, 8, -1, 2, 9, -7, 4, -2, 6]
    a, b = ModalityLengthGroupedSampler(lengths, 2, seed=3), ModalityLengthGroupedSampler(lengths, 2, seed=3)
    assert list(a) == list(b) and len(a) == len(lengths)
    first = list(a)
    a.set_epoch(1)
    assert sorted(a) == sorted(first) and list(a) != first


def test_grouping_several_batches_by_length_cuts_padding_and_keeps_a_permutation():
    lengths = [int(v) for v in torch.randint(10, 100, (256,), generator=torch.Generator().manual_seed(2))]
    batch = 8

    def padded(order: list[int]) -> int:  # positions a right-padded batch holds: longest sample x batch
        return sum(max(lengths[i] for i in order[s : s + batch]) * batch for s in range(0, len(order), batch))

    one = modality_grouped_indices(lengths, batch, generator=torch.Generator().manual_seed(0))
    eight = modality_grouped_indices(
        lengths, batch, generator=torch.Generator().manual_seed(0), group_batches=8
    )
    assert sorted(eight) == list(range(len(lengths)))
    assert padded(eight) < 0.8 * padded(one)
    # batch order stays random: the longest batches are not served first in a row
    maxima = [max(lengths[i] for i in eight[s : s + batch]) for s in range(0, len(eight), batch)]
    assert maxima != sorted(maxima, reverse=True)


def test_group_batches_must_be_positive():
    with pytest.raises(ValueError, match="group_batches"):
        modality_grouped_indices([1, 2, 3], 1, group_batches=0)
