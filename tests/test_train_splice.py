"""Splicing image features at IMAGE_TOKEN_INDEX, checked against a hand-built concatenation."""

import pytest
import torch

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.model.splice import splice_image_features

N, D = 3, 4


def _embed() -> torch.nn.Embedding:
    torch.manual_seed(0)
    return torch.nn.Embedding(20, D)


def test_each_image_id_becomes_n_rows_with_ignored_labels():
    emb = _embed()
    ids = torch.tensor([[1, 2, IMAGE_TOKEN_INDEX, 5, 6], [7, IMAGE_TOKEN_INDEX, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, 5, 6], [-100, -100, 8, -100, -100]])
    feats = torch.randn(2, N, D)
    out = splice_image_features(ids, mask, labels, feats, emb)

    row0 = torch.cat([emb(torch.tensor([1, 2])), feats[0], emb(torch.tensor([5, 6]))])
    row1 = torch.cat([emb(torch.tensor([7])), feats[1], emb(torch.tensor([8]))])
    assert out.inputs_embeds.shape == (2, 4 + N, D)
    torch.testing.assert_close(out.inputs_embeds[0], row0)
    torch.testing.assert_close(out.inputs_embeds[1, : 2 + N], row1)
    assert out.attention_mask.tolist() == [[1] * (4 + N), [1] * (2 + N) + [0] * 2]
    assert out.labels[0].tolist() == [-100, -100] + [IGNORE_INDEX] * N + [5, 6]
    assert out.labels[1].tolist() == [-100] + [IGNORE_INDEX] * N + [8] + [IGNORE_INDEX] * 2
    assert out.position_ids[1, : 2 + N].tolist() == list(range(2 + N))


def test_two_images_in_one_sample_are_used_in_order():
    emb = _embed()
    ids = torch.tensor([[IMAGE_TOKEN_INDEX, 3, IMAGE_TOKEN_INDEX]])
    feats = torch.randn(2, N, D)
    out = splice_image_features(ids, None, None, feats, emb)
    torch.testing.assert_close(out.inputs_embeds[0], torch.cat([feats[0], emb(torch.tensor([3])), feats[1]]))


def test_llava_layout_one_image_per_sample_with_a_text_only_sample():
    emb = _embed()
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX], [4, 5]])
    feats = torch.randn(2, N, D, requires_grad=True)
    out = splice_image_features(ids, None, None, feats, emb)
    torch.testing.assert_close(out.inputs_embeds[1, :2], emb(torch.tensor([4, 5])))
    out.inputs_embeds.sum().backward()  # the unused dummy image still reaches the graph (ZeRO-3 in step)
    assert feats.grad is not None and torch.all(feats.grad[1] == 0)


def test_left_padding_for_generation():
    emb = _embed()
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 2], [IMAGE_TOKEN_INDEX, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = splice_image_features(ids, mask, None, torch.randn(2, N, D), emb, padding_side="left")
    assert out.attention_mask[1].tolist() == [0, 0] + [1] * N


def test_image_count_mismatch_names_both_counts():
    emb = _embed()
    ids = torch.tensor([[IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, 1]])
    with pytest.raises(ValueError, match=r"2 <image> tokens.*3 images"):
        splice_image_features(ids, None, None, torch.randn(3, N, D), emb)
