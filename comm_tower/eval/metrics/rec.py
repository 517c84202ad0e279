"""REC (referring expression comprehension): Acc@IoU 0.5 of the parsed box against the ground-truth box.

A sample needs the model's text, the ground-truth `bbox` in pixels of the original image (`[x1, y1, x2, y2]`,
or COCO `[x, y, w, h]` with `bbox_format="xywh"`), and the original `width` and `height` (the runner fills
these from the image). The parsed box is mapped from the model's frame (see `boxes.py`) before the IoU.
An answer without a box scores IoU 0, as does a degenerate (zero-area) box.
"""

from __future__ import annotations

from collections.abc import Sequence

from comm_tower.eval.metrics.base import METRICS, Sample, Scores, get_field, prediction_text, require_samples
from comm_tower.eval.metrics.boxes import BOX_FRAMES, iou, parse_box, to_original, xywh_to_xyxy


def sample_iou(sample: Sample, index: int, frame: str = "pad", bbox_format: str = "xyxy") -> float:
    """IoU between the box in a sample's answer (mapped to the original image) and its ground truth."""
    gt = get_field(sample, ("bbox", "gt_bbox"), index, "rec")
    if not isinstance(gt, (list, tuple)) or len(gt) != 4:
        raise ValueError(f"rec: sample {index} 'bbox' must be four numbers, got {gt!r}")
    gt_box = xywh_to_xyxy(gt) if bbox_format == "xywh" else tuple(float(v) for v in gt)
    width = int(get_field(sample, "width", index, "rec"))
    height = int(get_field(sample, "height", index, "rec"))
    pred = parse_box(prediction_text(sample, index, "rec"))
    if pred is None:
        return 0.0
    return iou(to_original(pred, width, height, frame), gt_box)


@METRICS.register("rec")
def rec_scores(
    samples: Sequence[Sample], frame: str = "pad", bbox_format: str = "xyxy", threshold: float = 0.5
) -> Scores:
    """Acc@IoU>=threshold and mean IoU (percent), plus the share of answers with no parsable box."""
    require_samples(samples, "rec")
    if bbox_format not in ("xyxy", "xywh"):
        raise ValueError(f"rec: bbox_format must be 'xyxy' or 'xywh', got {bbox_format!r}")
    BOX_FRAMES.get(frame)
    ious = [sample_iou(s, i, frame, bbox_format) for i, s in enumerate(samples)]
    unparsed = sum(parse_box(prediction_text(s, i, "rec")) is None for i, s in enumerate(samples))
    return {
        "accuracy": 100.0 * sum(v >= threshold for v in ious) / len(ious),
        "mean_iou": 100.0 * sum(ious) / len(ious),
        "no_box": 100.0 * unparsed / len(ious),
        "count": float(len(ious)),
    }
