"""The comm_tower side of `test_llava_convert.py`, run by the main venv's Python (transformers 5).

`python tests/_convert_worker.py JOB.json`: for each case, run `comm-convert` (its `main`, exit code and stderr
recorded) and, when it converted, load the result the way comm-chat does (`Assistant.load`) and record the
prompt ids and pixels it builds and its logits on the inputs LLaVA used. Results go to the job's `out` file.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import torch
from PIL import Image


def convert(argv: list[str]) -> dict:
    """Run comm-convert's entry point; its exit code and what it wrote to stderr."""
    from comm_tower.hub.convert_cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    return {"code": code, "stderr": err.getvalue()}


def logits(case: dict) -> dict:
    """Load the converted checkpoint as comm-chat does, in float32: logits with its own tower, and with the
    tower's output replaced by the features LLaVA's tower gave; in float16, the last position's logits."""
    from comm_tower.inference.assistant import Assistant

    inputs = torch.load(case["inputs"])
    image = Image.open(case["image"]).convert("RGB")
    assistant = Assistant.load(case["checkpoint"], device="cpu", dtype=torch.float32)
    model = assistant.model
    tower = model.get_vision_tower()
    with torch.inference_mode():
        out = model(input_ids=inputs["ids"], images=inputs["pixels"]).logits[0]
        features = tower(inputs["pixels"])
        tower.forward = lambda images: inputs["features"]  # LLaVA's tower output, as if computed here
        given = model(input_ids=inputs["ids"], images=inputs["pixels"]).logits[0]
        half = Assistant.load(case["checkpoint"], device="cpu", dtype=torch.float16).model
        last16 = half(input_ids=inputs["ids"], images=inputs["pixels"].half()).logits[0, -1].float()
    return {
        "logits": out,
        "logits_given_features": given,
        "last_logits_float16": last16,
        "features": features,
        "ids": torch.tensor(assistant.question_ids(case["question"], with_image=True)),
        "pixels": assistant.pixels(image),
        "conv_template": model.config.conv_template,
    }


def main() -> None:
    with open(sys.argv[1]) as fh:
        job = json.load(fh)
    results = {}
    for name, case in job["cases"].items():
        result = convert(case["argv"])
        if result["code"] in (0, None) and "inputs" in case:
            result.update(logits(case))
        results[name] = result
    torch.save(results, job["out"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
