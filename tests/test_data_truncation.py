"""Truncation to model_max_length: text is cut, an image never is (the sample is dropped with a log line)."""

from __future__ import annotations

import logging

import pytest
from _data_helpers import processor, save_image, tokenizer, write_json

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.data import DataArguments, make_supervised_data_module
from comm_tower.data.truncation import SampleTooLong, expanded_length, truncate

IMG = IMAGE_TOKEN_INDEX


def test_truncate_leaves_fitting_samples_alone_and_counts_visual_tokens():
    ids, labels = [1, IMG, 5, 6, 7], [IGNORE_INDEX, IGNORE_INDEX, 5, 6, 7]
    assert truncate(ids, labels, 5) == (ids, labels, False)
    assert expanded_length(ids, image_tokens=10) == 4 + 10
    # with 10 visual tokens the image ends at position 11: room for 1 more text token in 12
    assert truncate(ids, labels, 12, image_tokens=10) == ([1, IMG, 5], [IGNORE_INDEX, IGNORE_INDEX, 5], True)


def test_truncate_refuses_to_cut_an_image_or_every_answer():
    with pytest.raises(SampleTooLong, match="would cut an image"):
        truncate([1, 5, 6, IMG, 7], [IGNORE_INDEX] * 4 + [7], 3)
    with pytest.raises(SampleTooLong, match="would cut an image"):
        truncate([1, IMG, 5], [IGNORE_INDEX, IGNORE_INDEX, 5], 8, image_tokens=10)
    with pytest.raises(SampleTooLong, match="no answer token would be left"):
        truncate([1, 2, 3, 4, 5], [IGNORE_INDEX] * 3 + [4, 5], 3)


def _module(tmp_path, records, max_length, **kw):
    path = write_json(tmp_path / "d.json", records)
    args = DataArguments(data_path=str(path), image_folder=str(tmp_path), model_max_length=max_length, **kw)
    return make_supervised_data_module(tokenizer(), processor(), args)


def test_long_answer_after_an_image_is_shortened_with_a_log_line(tmp_path, caplog):
    img = save_image(tmp_path / "a.png")
    long_answer = " ".join(["word"] * 200)
    recs = [
        {
            "image": img,
            "conversations": [
                {"from": "human", "value": "<image>\nTell me."},
                {"from": "gpt", "value": long_answer},
            ],
        }
    ]
    with caplog.at_level(logging.WARNING):
        item = _module(tmp_path, recs, 64, template="plain")["train_dataset"][0]
    assert len(item["input_ids"]) == 64 and item["input_ids"].tolist().count(IMG) == 1
    assert item["images"].shape[0] == 1
    assert any("sample 0: text cut to fit model_max_length 64" in r.message for r in caplog.records)


def test_image_that_would_be_cut_drops_the_sample_with_a_log_line_never_a_shape_error(tmp_path, caplog):
    img = save_image(tmp_path / "a.png")
    long_q = " ".join(["question"] * 100)
    late_image = {
        "image": img,
        "conversations": [
            {"from": "human", "value": long_q},
            {"from": "gpt", "value": "ok"},
            {"from": "human", "value": "<image>\nAnd this?"},
            {"from": "gpt", "value": "A red box."},
        ],
    }
    short = {
        "image": img,
        "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "Red."}],
    }
    module = _module(tmp_path, [late_image, short], 96, image_tokens=4)
    ds, collate = module["train_dataset"], module["data_collator"]
    with caplog.at_level(logging.WARNING):
        batch = collate([ds[0], ds[1]])  # sample 0 is replaced by the next good one
    assert batch["images"].shape[0] == (batch["input_ids"] == IMG).sum() == 2
    assert [s.index for s in ds.skipped] == [0] and "would cut an image" in ds.skipped[0].reason
    assert any("skipping sample 0" in r.message and "dropped" in r.message for r in caplog.records)


def test_image_tokens_make_the_limit_count_visual_positions(tmp_path):
    img = save_image(tmp_path / "a.png")
    recs = [
        {
            "image": img,
            "conversations": [
                {"from": "human", "value": "<image>"},
                {"from": "gpt", "value": " ".join(["word"] * 50)},
            ],
        }
    ]
    item = _module(tmp_path, recs, 40, template="plain", image_tokens=16)["train_dataset"][0]
    assert expanded_length(item["input_ids"].tolist(), 16) == 40
    assert len(item["input_ids"]) == 40 - 15
