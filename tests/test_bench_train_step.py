"""The training-step benchmark: tokens per step and per second, peak memory, and what each stage trains."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from comm_tower.bench.__main__ import main
from comm_tower.bench.llm import comm_model
from comm_tower.bench.sizes import SIZES, comm_spec
from comm_tower.bench.train_step import run


def test_stage_one_trains_the_projector_only(tmp_path: Path):
    size = SIZES.get("tiny")
    comm_spec(size, tmp_path)
    model = comm_model(size, tmp_path / "tiny" / "comm.json", vocab=512)
    projector = sum(p.numel() for p in model.model.mm_projector.parameters())
    llm_before = model.language_model.lm_head.weight.detach().clone()
    proj_before = next(model.model.mm_projector.parameters()).detach().clone()
    rows = run(model, "tiny", batch=2, repeats=1, text_tokens=16, stage=1)
    whole = next(r for r in rows if r.name == "whole_step")
    assert whole.extra["trainable_params"] == projector and whole.extra["stage"] == 1
    assert torch.equal(model.language_model.lm_head.weight, llm_before)
    assert not torch.equal(next(model.model.mm_projector.parameters()), proj_before)


def test_cli_reports_tokens_per_second_and_peak_memory(tmp_path: Path):
    out = tmp_path / "bench.json"
    argv = ["--sizes", "tiny", "--parts", "train_step", "--tiny-repeats", "1", "--text-tokens", "128"]
    assert main([*argv, "--weights-dir", str(tmp_path / "w"), "--out", str(out)]) == 0
    whole = next(r for r in json.loads(out.read_text())["rows"] if r["name"] == "whole_step")
    assert whole["extra"]["tokens_per_step"] == 4 * (128 + 64)  # batch x (text + 8x8 visual tokens)
    assert whole["extra"]["tokens_per_s"] == 4 * (128 + 64) / whole["median_s"]
    assert whole["peak_mib"] > 0 and whole["extra"]["stage"] == 2
