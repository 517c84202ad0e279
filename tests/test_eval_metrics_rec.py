"""REC: box parsing, frame conversion to the original image, clipping, degenerate boxes, Acc@0.5."""

import pytest

from comm_tower.eval.metrics import METRICS
from comm_tower.eval.metrics.boxes import iou, parse_box, to_original


def test_parse_box_takes_first_group_and_rejects_text():
    assert parse_box("It is at [0.1, 0.25,0.5 ,1.0] and [0,0,1,1]") == (0.1, 0.25, 0.5, 1.0)
    assert parse_box("(0.2,.3,1,1)") == (0.2, 0.3, 1.0, 1.0)
    assert parse_box("") is None
    assert parse_box("[0.1, 0.2, 0.3]") is None


def test_frames_by_hand():
    # wide 200x100 image padded to a 200 square: the image sits 50 px down
    assert to_original((0.1, 0.3, 0.6, 0.55), 200, 100, "pad") == pytest.approx((20, 10, 120, 60))
    # tall 100x200 image: 50 px to the right
    assert to_original((0.25, 0.0, 0.5, 0.5), 100, 200, "pad") == pytest.approx((0, 0, 50, 100))
    assert to_original((0.1, 0.1, 0.5, 0.5), 200, 100, "resize") == pytest.approx((20, 10, 100, 50))
    assert to_original((0.1, 0.1, 0.5, 0.5), 200, 100, "crop") == pytest.approx((60, 10, 100, 50))


def test_iou_by_hand():
    assert iou((0, 0, 50, 100), (25, 0, 75, 100)) == pytest.approx(1 / 3)
    assert iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # no area: no division by zero


def _sample(pred, bbox, w, h):
    return {"prediction": pred, "bbox": bbox, "width": w, "height": h}


def test_rec_accuracy_with_edge_cases():
    samples = [
        _sample("[0.1, 0.3, 0.6, 0.55]", [20, 10, 120, 60], 200, 100),  # exact in the padded frame: 1
        _sample("[0.6, 0.55, 0.1, 0.3]", [20, 10, 120, 60], 200, 100),  # corners swapped: 1
        _sample("[0.0, 0.0, 0.2, 0.2]", [0, 0, 50, 50], 100, 200),  # entirely in the padding: 0
        _sample("[-0.5, 0.0, 0.5, 0.5]", [0, 0, 50, 100], 100, 200),  # clipped to the image: 1
        _sample("[0.3, 0.3, 0.3, 0.5]", [0, 0, 50, 100], 100, 100),  # degenerate: 0
        _sample("I cannot see it.", [0, 0, 50, 100], 100, 100),  # no box: 0
        _sample("[0, 0, 0.5, 1.0]", [0, 0, 100, 100], 100, 100),  # IoU exactly 0.5: counted correct
        _sample("[0.25, 0, 0.75, 1]", [0, 0, 50, 100], 100, 100),  # IoU 1/3: wrong
    ]
    s = METRICS.get("rec")(samples)
    assert s["accuracy"] == pytest.approx(100 * 4 / 8)
    assert s["mean_iou"] == pytest.approx(100 * (1 + 1 + 0 + 1 + 0 + 0 + 0.5 + 1 / 3) / 8)
    assert s["no_box"] == pytest.approx(100 / 8)


def test_rec_coco_xywh_ground_truth():
    s = METRICS.get("rec")(
        [_sample("[0.1, 0.3, 0.6, 0.55]", [20, 10, 100, 50], 200, 100)], bbox_format="xywh"
    )
    assert s["accuracy"] == 100.0


def test_rec_missing_size_names_field():
    with pytest.raises(ValueError, match="'width'"):
        METRICS.get("rec")([{"prediction": "[0,0,1,1]", "bbox": [0, 0, 1, 1]}])


def test_boxes_rewritten_to_original_fractions():
    from comm_tower.eval.metrics.boxes import boxes_to_original_fractions

    # 200x100 padded to 200: the model's [0.1, 0.3, 0.6, 0.55] is pixels [20, 10, 120, 60]
    text = "It is at [0.1, 0.3, 0.6, 0.55]."
    assert boxes_to_original_fractions(text, 200, 100, "pad") == "It is at [0.100, 0.100, 0.600, 0.600]."
    assert boxes_to_original_fractions("no box", 200, 100, "pad") == "no box"
