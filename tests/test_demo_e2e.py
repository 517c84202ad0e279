"""A shortened `comm-demo`: both stages train (loss falls), every artefact exists, the blind baseline is blind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from comm_tower.demo.__main__ import build_parser, config_from_args, main
from comm_tower.demo.evaluation import blind, load_model
from comm_tower.demo.models import LlmSize, ensure_demo_models
from comm_tower.demo.runner import METRIC_ROWS, DemoConfig
from comm_tower.demo.training import losses
from comm_tower.inference.generation import pixel_values

pytestmark = pytest.mark.slow
N_TEST = 6
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("demo")
    out, cache = root / "out", root / "cache"
    argv = ["--out", str(out), "--cache-dir", str(cache), "--train", "200", "--test", str(N_TEST)]
    argv += ["--stage1-steps", "10", "--steps", "40", "--batch-size", "8", "--lr", "3e-3"]
    argv += ["--score-every", "20"]  # checkpoints at steps 20 and 40, each scored after training
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(argv)
    return out, cache, buf.getvalue()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_every_stage_leaves_its_artefacts(demo):
    out, _, _ = demo
    for name in ("stage1.json", "stage2.json", "test.jsonl", "meta.json"):
        assert (out / "data" / name).is_file(), name
    run = out / "runs" / "comm"
    for stage in ("stage1", "stage2"):  # the paper's recipe: the whole model is saved after each stage
        assert (run / stage / "config.json").is_file()
        assert list((run / stage).glob("*.safetensors"))
    questions = (out / "data" / "test.jsonl").read_text().splitlines()
    for name in ("answers.jsonl", "answers_blind.jsonl"):
        assert len((run / name).read_text().splitlines()) == len(questions) == 5 * N_TEST
    with Image.open(out / "loss_curves.png") as img:
        assert img.format == "PNG" and img.size[0] > 100
    result = json.loads((run / "result.json").read_text())
    for _, key in METRIC_ROWS:
        assert 0.0 <= result["scores"][key] <= 100.0 and 0.0 <= result["blind"][key] <= 100.0


def test_scored_checkpoints_form_a_learning_curve_ending_at_the_final_model(demo):
    out, _, printed = demo
    run = out / "runs" / "comm"
    result = json.loads((run / "result.json").read_text())
    by_step = result["by_step"]
    assert sorted(int(step) for step in by_step) == [20, 40]
    for step in (20, 40):
        folder = run / "stage2" / f"checkpoint-{step}"
        assert len((folder / "answers.jsonl").read_text().splitlines()) == 5 * N_TEST
        assert len((folder / "answers_blind.jsonl").read_text().splitlines()) == 5 * N_TEST
    # the last checkpoint holds the final weights: scored again, it must give the final table's scores
    assert by_step["40"] == [result["scores"], result["blind"]]
    assert "held-out scores (blind) of the stage-2 checkpoints" in printed
    assert "held-out scores (blind) of the stage-2 checkpoints" in (out / "results.md").read_text()


def test_a_rerun_trains_afresh_instead_of_resuming_an_earlier_runs_checkpoints(tmp_path):
    out = tmp_path / "out"
    stale = out / "runs" / "comm" / "stage2" / "checkpoint-999"
    stale.mkdir(parents=True)  # left by an earlier run: comm-train would try to resume from it
    argv = ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--train", "40", "--test", "2"]
    argv += ["--stage1-steps", "2", "--steps", "4", "--batch-size", "4", "--score-every", "2"]
    main(argv)
    assert not stale.exists()
    run = out / "runs" / "comm"
    assert sorted(int(s) for s in json.loads((run / "result.json").read_text())["by_step"]) == [2, 4]
    assert [step for step, _ in losses(run / "stage2")][-1] == 4  # trained all 4 steps, from step 0


def test_score_every_outside_the_run_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--score-every"):
        main(["--out", str(tmp_path), "--steps", "10", "--score-every", "11"])


def test_llm_init_std_flag_sets_the_config_and_nonsense_is_refused(tmp_path):
    cfg = config_from_args(build_parser().parse_args(["--llm-init-std", "0.05"]))
    assert cfg.llm == LlmSize(init_std=0.05)
    assert config_from_args(build_parser().parse_args([])).llm == LlmSize()
    with pytest.raises(SystemExit, match="--llm-init-std"):
        main(["--out", str(tmp_path), "--llm-init-std", "0"])


def test_demo_llm_weights_have_the_configured_spread(demo):
    _, cache, _ = demo
    (llm_dir,) = [p for p in cache.iterdir() if p.name.startswith("llm-")]
    assert llm_dir.name.endswith(f"-i{LlmSize().init_std:g}")
    embed = load_file(str(llm_dir / "model.safetensors"))["model.embed_tokens.weight"]
    assert abs(embed.float().std().item() - LlmSize().init_std) < 0.1 * LlmSize().init_std


def test_training_lowered_the_loss_in_both_stages(demo):
    out, _, _ = demo
    for stage in ("stage1", "stage2"):
        values = [v for _, v in losses(out / "runs" / "comm" / stage)]
        assert len(values) >= 4 and all(math.isfinite(v) for v in values), values
        assert _mean(values[-2:]) < _mean(values[:2]), (stage, values)


def test_prints_the_table_and_a_chat_answer(demo):
    out, _, printed = demo
    for label, _ in METRIC_ROWS:
        assert label in printed
    assert "comm blind" in printed
    assert "ASSISTANT:" in printed and str(out / "loss_curves.png") in printed


def test_models_are_cached_for_the_next_run(demo):
    out, cache, _ = demo
    (llm_dir,) = [p for p in cache.iterdir() if p.name.startswith("llm-")]
    before = {p.name: p.stat().st_mtime_ns for p in llm_dir.iterdir()}
    paths = ensure_demo_models(out / "data", cache)
    assert paths["llm"] == llm_dir
    assert {p.name: p.stat().st_mtime_ns for p in llm_dir.iterdir()} == before


def test_blind_baseline_ignores_the_image(demo):
    out, _, _ = demo
    assistant = load_model(out / "runs" / "comm" / "stage2")
    tokenizer, model, processor = assistant.tokenizer, assistant.model, assistant.image_processor
    a = pixel_values(Image.new("RGB", (128, 128), (220, 40, 40)), processor)
    b = pixel_values(Image.new("RGB", (128, 128), (40, 80, 220)), processor)
    ids = tokenizer("USER: Is there a red circle? ASSISTANT:", return_tensors="pt").input_ids
    ids = torch.cat([ids[:, :1], torch.tensor([[-200]]), ids[:, 1:]], dim=1)

    def logits(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids, images=pixels[None]).logits[0, -1]

    assert not torch.allclose(logits(a), logits(b))
    with blind(model):
        assert torch.equal(logits(a), logits(b))


def test_recipes_map_to_the_comm_train_flags(tmp_path):
    from comm_tower.demo.training import StageSettings, stage_argv

    s = StageSettings(steps=10, batch_size=2, lr=1e-3)
    out = tmp_path / "runs" / "comm"

    def flags(stage: int, recipe: str) -> list[str]:
        return stage_argv(stage, Path("llm"), "tower.json", tmp_path, out / f"stage{stage}", s, recipe=recipe)

    llava1, llava2 = flags(1, "llava"), flags(2, "llava")
    assert llava1[llava1.index("--tune_mm_mlp_adapter") + 1] == "True"
    assert llava2[llava2.index("--pretrain_mm_mlp_adapter") + 1] == str(out / "stage1" / "mm_projector.bin")
    comm1, comm2 = flags(1, "comm"), flags(2, "comm")
    assert "--tune_mm_mlp_adapter" not in comm1 and "--pretrain_mm_mlp_adapter" not in comm2
    assert comm2[comm2.index("--model_name_or_path") + 1] == str(out / "stage1")
    assert comm1[comm1.index("--version") + 1] == "plain" and comm2[comm2.index("--version") + 1] == "v1"


def test_checkpoints_record_the_chat_format_they_were_trained_with(demo):
    out, _, _ = demo
    run = out / "runs" / "comm"
    stage1 = json.loads((run / "stage1" / "config.json").read_text())
    stage2 = json.loads((run / "stage2" / "config.json").read_text())
    assert (stage1["conv_template"], stage1["system_prompt"]) == ("plain", None)
    assert (stage2["conv_template"], stage2["system_prompt"]) == ("vicuna_v1", DemoConfig().system)
    mid = json.loads((run / "stage2" / "checkpoint-20" / "config.json").read_text())
    assert (mid["conv_template"], mid["system_prompt"]) == ("vicuna_v1", DemoConfig().system)


def test_comm_chat_with_only_model_and_image_gives_the_demos_chat_answer(demo):
    """`comm-chat --model-path M --image-file I`, nothing else: the checkpoint says how to prompt it."""
    out, _, _ = demo
    image, question, answer, _ = json.loads((out / "runs" / "comm" / "result.json").read_text())["chat"]
    args = ["--model-path", str(out / "runs" / "comm" / "stage2"), "--image-file", str(out / "data" / image)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "comm_tower.serve.cli", *args],
        input=f"{question}\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "CUDA_VISIBLE_DEVICES": ""},
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "comm-chat: error" not in run.stderr, run.stderr[-2000:]
    printed = run.stdout.split("ASSISTANT: ", 1)[1].rsplit("USER: ", 1)[0]  # up to the prompt Ctrl-D answered
    assert printed.strip() == answer
    assert answer  # the demo's model said something


def test_stages_group_batches_by_length_unless_told_not_to(tmp_path):
    from comm_tower.demo.training import StageSettings, stage_argv

    def flags(settings: StageSettings) -> list[str]:
        return stage_argv(2, Path("llm"), "tower.json", tmp_path, tmp_path / "runs" / "stage2", settings)

    grouped = flags(StageSettings(steps=10, batch_size=2, lr=1e-3, length_group=8))
    assert grouped[grouped.index("--group_by_modality_length") + 1] == "True"
    assert grouped[grouped.index("--length_group_batches") + 1] == "8"
    plain = flags(StageSettings(steps=10, batch_size=2, lr=1e-3, length_group=0))
    assert "--group_by_modality_length" not in plain and "--length_group_batches" not in plain
