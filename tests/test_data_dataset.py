"""The supervised dataset: JSON and JSONL, image conversion, `pad`, bad-data errors and the skip mode."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from _data_helpers import MEAN, SIZE, STD, conv, processor, save_image, tokenizer, write_json
from PIL import Image

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.data import DataArguments, DataError, LazySupervisedDataset, make_supervised_data_module
from comm_tower.data.templates import Message, get_template


def _dataset(tmp_path, records, suffix=".json", **kw):
    path = write_json(tmp_path / f"data{suffix}", records)
    args = DataArguments(data_path=str(path), image_folder=str(tmp_path), **kw)
    return make_supervised_data_module(tokenizer(), processor(), args)["train_dataset"]


def _good(tmp_path, n=3):
    img = save_image(tmp_path / "red.png")
    recs = [
        {"id": str(i), "image": img, "conversations": conv("<image>\nWhat colour?", f"Red {i}.")}
        for i in range(n)
    ]
    recs.append({"id": "t", "conversations": conv("Say hi.", "Hi there.")})
    return recs


def test_json_and_jsonl_give_the_same_items_and_template_layout(tmp_path):
    recs = _good(tmp_path)
    a = _dataset(tmp_path, recs, ".json")
    b = _dataset(tmp_path, recs, ".jsonl")
    assert len(a) == len(b) == 4
    tok = tokenizer()
    want_ids, want_labels = get_template("vicuna_v1").encode(
        [Message("user", "<image>\nWhat colour?"), Message("assistant", "Red 0.")], tok
    )
    for i in range(4):
        x, y = a[i], b[i]
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["images"], y["images"])
    assert a[0]["input_ids"].tolist() == want_ids and a[0]["labels"].tolist() == want_labels
    assert a[0]["images"].shape == (1, 3, SIZE, SIZE)
    assert a[3]["images"].shape == (0, 3, SIZE, SIZE)  # text-only: no image, no dummy
    assert IMAGE_TOKEN_INDEX not in a[3]["input_ids"].tolist()


def test_modality_lengths_are_positive_for_images_and_negative_for_text(tmp_path):
    ds = _dataset(tmp_path, _good(tmp_path, n=2))
    words = 3 + 2  # "<image>\nWhat colour?" + "Red 0." split on whitespace: LLaVA counts the tag as a word
    text_words = 2 + 2  # "Say hi." + "Hi there."
    assert ds.modality_lengths == [words, words, -text_words]
    assert ds.lengths == [words + 128, words + 128, text_words]  # LLaVA's 128 per image by default


ODD_MODES = [
    ("RGBA", (9, 9, 9, 0), (255, 255, 255)),  # fully transparent: the white background shows
    ("L", 90, (90, 90, 90)),
    ("I;16", 40000, (round(40000 / 65535 * 255),) * 3),  # scaled to 8 bits, not clipped to 255
    ("CMYK", (0, 255, 0, 0), (255, 0, 255)),  # magenta
]


@pytest.mark.parametrize("mode,color,rgb", ODD_MODES)
def test_odd_image_modes_are_converted_not_rejected(tmp_path, mode, color, rgb):
    name = f"odd_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    if mode == "I;16":
        Image.fromarray(np.full((12, 12), color, dtype=np.uint16)).save(tmp_path / name)
    else:
        Image.new(mode, (12, 12), color).save(tmp_path / name, **({"quality": 100} if mode == "CMYK" else {}))
    pixels = _dataset(tmp_path, [{"image": name, "conversations": conv("<image>", "x")}])[0]["images"]
    assert pixels.shape == (1, 3, SIZE, SIZE)
    want = torch.tensor([(v / 255 - m) / s for v, m, s in zip(rgb, MEAN, STD)])
    assert torch.allclose(pixels[0, :, SIZE // 2, SIZE // 2], want, atol=0.15 if mode == "CMYK" else 0.02)


def test_pad_fills_the_short_side_with_the_mean_colour(tmp_path):
    name = save_image(tmp_path / "wide.png", size=(32, 8), color=(255, 255, 255))
    rec = [{"image": name, "conversations": conv("<image>", "wide")}]
    padded = _dataset(tmp_path, rec, image_aspect_ratio="pad")[0]["images"][0]
    squashed = _dataset(tmp_path, rec, image_aspect_ratio="square")[0]["images"][0]
    # the padded band, once normalised, is (int(255*m)/255 - m)/s: about 0 (independent of the processor)
    band = torch.tensor([(int(255 * m) / 255 - m) / s for m, s in zip(MEAN, STD)])
    assert torch.allclose(padded[:, 0, :].mean(1), band, atol=1e-2)
    white = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)])
    assert torch.allclose(padded[:, SIZE // 2, SIZE // 2], white, atol=1e-2)
    assert torch.allclose(squashed[:, 0, :].mean(1), white, atol=1e-2)  # centre crop: no padding


def test_text_only_run_strips_tags_and_has_no_images(tmp_path):
    recs = _good(tmp_path, n=1)
    path = write_json(tmp_path / "d.json", recs)
    args = DataArguments(data_path=str(path), is_multimodal=False)
    ds = make_supervised_data_module(tokenizer(), None, args)["train_dataset"]
    item = ds[0]
    assert "images" not in item and IMAGE_TOKEN_INDEX not in item["input_ids"].tolist()


BAD_CASES = [
    (
        {"image": "nope.png", "conversations": conv("<image>", "x")},
        "image 'nope.png' in sample 1 (field 'image'): file not found",
    ),
    ({"conversations": []}, "sample 1 (field 'conversations'): the conversation is empty"),
    (
        {"image": "red.png", "conversations": conv("<image><image>", "x")},
        "sample 1 (field 'conversations'): 2 '<image>' tag(s) but 1 image(s)",
    ),
    (
        {"conversations": [{"from": "robot", "value": "x"}]},
        "sample 1 (field 'conversations[0].from'): unknown speaker 'robot'",
    ),
    (
        {"conversations": [{"from": "human", "value": 3}]},
        "sample 1 (field 'conversations[0].value'): expected text",
    ),
    ({"image": 5, "conversations": conv("<image>", "x")}, "sample 1 (field 'image'): expected a file name"),
    ({"conversations": conv("q", "")}, "sample 1 (field 'conversations'): no non-empty gpt answer"),
    ([1, 2], "sample 1: expected an object"),
]


@pytest.mark.parametrize("record,message", BAD_CASES)
def test_bad_sample_raises_naming_index_and_field(tmp_path, record, message):
    recs = [_good(tmp_path, 1)[0], record]
    with pytest.raises(DataError) as info:
        _dataset(tmp_path, recs)
    assert str(info.value).startswith(message)
    assert "fix:" in str(info.value) or "expected" in str(info.value)


def test_skip_mode_reports_every_bad_sample_and_keeps_the_good_ones(tmp_path, caplog):
    recs = [_good(tmp_path, 1)[0]] + [case for case, _ in BAD_CASES] + [_good(tmp_path, 1)[0]]
    with caplog.at_level(logging.WARNING):
        ds = _dataset(tmp_path, recs, skip_bad_samples=True)
    assert len(ds) == 2
    assert ds.num_skipped == len(BAD_CASES)
    assert [s.index for s in ds.skipped] == list(range(1, len(BAD_CASES) + 1))
    assert ds.skipped[0].field == "image" and "file not found" in ds.skipped[0].reason
    assert "skipped 8 sample(s)" in ds.skip_report() and "sample 3:" in ds.skip_report()
    assert sum("skipping" in r.message for r in caplog.records) == len(BAD_CASES)


def test_corrupt_image_found_while_training_is_skipped_and_logged_across_workers(tmp_path):
    recs = _good(tmp_path, 2)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    recs[0]["image"] = "broken.png"
    log = tmp_path / "skipped.jsonl"
    ds = _dataset(tmp_path, recs, skip_bad_samples=True, skip_log_path=str(log))
    item = ds[0]  # sample 0 fails to decode: sample 1 is served instead
    assert item["input_ids"].tolist() == ds[1]["input_ids"].tolist()
    assert [(s.index, s.field) for s in ds.skipped] == [(0, "image")]
    assert "cannot identify image file" in ds.skipped[0].reason
    # in DataLoader worker processes the skips reach the main process through the log file
    log2 = tmp_path / "skipped_workers.jsonl"
    fresh = _dataset(tmp_path, recs, skip_bad_samples=True, skip_log_path=str(log2))
    loader = torch.utils.data.DataLoader(fresh, batch_size=None, num_workers=1)
    assert len(list(loader)) == 3
    assert fresh._skipped == {}  # nothing was skipped in this process...
    assert [(s.index, s.field) for s in fresh.skipped] == [(0, "image")]  # ...but the report has it


def test_corrupt_image_without_skip_raises_with_index(tmp_path):
    recs = _good(tmp_path, 2)
    (tmp_path / "broken.png").write_bytes(b"junk")
    recs[1]["image"] = "broken.png"
    ds = _dataset(tmp_path, recs)
    with pytest.raises(DataError, match=r"image 'broken.png' in sample 1 \(field 'image'\): cannot identify"):
        ds[1]


def test_malformed_json_file_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"conversations": [}\n]')
    args = DataArguments(data_path=str(path))
    with pytest.raises(DataError, match=r"data file '.*bad.json': malformed JSON at line 2, column 20"):
        make_supervised_data_module(tokenizer(), processor(), args)


def test_malformed_jsonl_line_is_a_bad_sample_that_can_be_skipped(tmp_path):
    good = write_json(tmp_path / "g.jsonl", _good(tmp_path, 2)).read_text().splitlines()
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good[0], '{"conversations": [', good[1]]) + "\n")
    with pytest.raises(DataError, match=r"sample 1: malformed JSON on line 2"):
        LazySupervisedDataset(path, tokenizer(), processor(), DataArguments(image_folder=str(tmp_path)))
    ds = LazySupervisedDataset(
        path, tokenizer(), processor(), DataArguments(image_folder=str(tmp_path), skip_bad_samples=True)
    )
    assert len(ds) == 2 and [s.index for s in ds.skipped] == [1]


def test_labels_only_cover_answers_in_the_dataset_items(tmp_path):
    ds = _dataset(tmp_path, _good(tmp_path, 1), template="plain")
    item = ds[0]
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    assert ids[:2] == [tokenizer().bos_token_id, IMAGE_TOKEN_INDEX] and labels[:2] == [IGNORE_INDEX] * 2
    assert labels[2:] == ids[2:]
