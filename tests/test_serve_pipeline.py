"""Checkpoints written by comm-train load for inference: stage-1 projector-only and LoRA (merged on load)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _serve_helpers import QUESTION_1, one_thread, red_image
from PIL import Image
from transformers import AutoModelForCausalLM, CLIPVisionModel

from comm_tower.inference.generation import pixel_values
from comm_tower.inference.loading import load_pretrained_model, part_dtypes
from comm_tower.zoo.tiny_lm import build_tiny_llama

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    """comm-train, one process, no DeepSpeed: stage 1 (projector only) then LoRA from its projector."""
    root = tmp_path_factory.mktemp("serve_pipeline")
    lm = build_tiny_llama(root / "lm")
    red_image(root / "red.png")
    record = {
        "image": "red.png",
        "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION_1}"},
            {"from": "gpt", "value": "A red square."},
        ],
    }
    (root / "data.json").write_text(json.dumps([{"id": str(i), **record} for i in range(4)]))
    common = [
        "--data_path",
        str(root / "data.json"),
        "--image_folder",
        str(root),
        "--vision_tower",
        "tiny-comm",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "2",
        "--learning_rate",
        "1e-2",
        "--use_cpu",
        "True",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--model_max_length",
        "256",
        "--dataloader_num_workers",
        "0",
        "--model_name_or_path",
        str(lm),
    ]
    stage1 = [
        *common,
        "--version",
        "plain",
        "--tune_mm_mlp_adapter",
        "True",
        "--output_dir",
        str(root / "s1"),
    ]
    lora = [
        *common,
        "--version",
        "v1",
        "--lora_enable",
        "True",
        "--lora_r",
        "8",
        "--lora_alpha",
        "16",
        "--pretrain_mm_mlp_adapter",
        str(root / "s1" / "mm_projector.bin"),
        "--output_dir",
        str(root / "lora"),
    ]
    script = textwrap.dedent(f"""
        from comm_tower.train.cli import main
        main({stage1!r})
        main({lora!r})
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return root


def _logits(bundle_or_model, tokenizer, root: Path) -> torch.Tensor:
    model = bundle_or_model
    ids = tokenizer(f"USER: <image>\n{QUESTION_1} ASSISTANT:")["input_ids"]  # plain ids; -200 spliced below
    ids = [*ids[:3], -200, *ids[3:]]
    pixels = pixel_values(Image.open(root / "red.png"), model.get_vision_tower().image_processor)
    with one_thread(), torch.no_grad():
        return model(input_ids=torch.tensor([ids]), images=pixels.unsqueeze(0)).logits[0]


def _generates(bundle, root: Path) -> None:
    tokenizer, model, processor, _ = bundle
    pixels = pixel_values(Image.open(root / "red.png"), processor).unsqueeze(0)
    with one_thread():
        out = model.generate(
            torch.tensor([[tokenizer.bos_token_id, -200, 5, 6]]),
            images=pixels,
            max_new_tokens=4,
            min_new_tokens=4,
            do_sample=False,
        )
    assert out.shape == (1, 4)


def test_stage1_projector_only_on_base_llm(trained, tiny_dir):
    assert sorted(p.name for p in (trained / "s1").iterdir() if p.suffix != ".json") == ["mm_projector.bin"]
    with one_thread():
        bundle = load_pretrained_model(str(trained / "s1"), model_base=str(trained / "lm"))
    _, model, _, context_len = bundle
    assert context_len == 256  # the training run's --model_max_length, from the stage-1 config
    saved = torch.load(trained / "s1" / "mm_projector.bin", weights_only=True)
    projector = model.get_model().mm_projector.state_dict()
    assert len(saved) == len(projector)
    for key, value in saved.items():
        assert torch.equal(projector[key.split("mm_projector.", 1)[1]], value), key
    base = AutoModelForCausalLM.from_pretrained(trained / "lm")
    for (name, p), (_, q) in zip(model.language_model.state_dict().items(), base.state_dict().items()):
        assert torch.equal(p, q), name
    clip = CLIPVisionModel.from_pretrained(tiny_dir / "clip").state_dict()  # the tower's frozen encoder
    tower_clip = model.get_vision_tower().encoders[0].model.state_dict()
    assert all(torch.equal(tower_clip[k], clip[k]) for k in tower_clip)
    _generates(bundle, trained)


def test_stage1_reload_gives_the_logits_of_the_model_training_builds(trained, tmp_path):
    from comm_tower.train.arguments import ModelArguments, TrainingArguments
    from comm_tower.train.cli import build_model

    # what comm-train builds for stage 2 from this stage 1: base LLM + tower + the saved projector
    margs = ModelArguments(
        model_name_or_path=str(trained / "lm"),
        vision_tower="tiny-comm",
        pretrain_mm_mlp_adapter=str(trained / "s1" / "mm_projector.bin"),
    )
    targs = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    with one_thread():
        for_training = build_model(margs, targs).eval()
        tokenizer, loaded, _, _ = load_pretrained_model(str(trained / "s1"), model_base=str(trained / "lm"))
    want = _logits(for_training, tokenizer, trained)
    got = _logits(loaded, tokenizer, trained)
    assert torch.equal(got, want), (got - want).abs().max()


def test_stage1_in_4bit_keeps_tower_and_projector_float(trained):
    with one_thread():
        bundle = load_pretrained_model(str(trained / "s1"), model_base=str(trained / "lm"), load_4bit=True)
    dtypes = part_dtypes(bundle[1])
    assert dtypes == {"llm": "cpu 4-bit+float32", "tower": "cpu float32", "projector": "cpu float32"}
    _generates(bundle, trained)


def test_lora_merged_on_load_equals_the_unmerged_adapters(trained):
    from peft import PeftModel

    from comm_tower.model import assemble_model, load_projector

    with one_thread():
        tokenizer, merged, _, _ = load_pretrained_model(str(trained / "lora"), model_base=str(trained / "lm"))
    assert not any("lora_" in name for name, _ in merged.named_modules())
    # independent reference: base LLM + fresh tower, stage-2 projector, adapters applied by peft, NOT merged
    base = assemble_model(AutoModelForCausalLM.from_pretrained(trained / "lm"), "tiny-comm", "linear")
    load_projector(base, str(trained / "lora" / "non_lora_trainables.bin"))
    without = _logits(base, tokenizer, trained)
    unmerged = PeftModel.from_pretrained(base, trained / "lora").eval()
    want = _logits(unmerged, tokenizer, trained)
    got = _logits(merged, tokenizer, trained)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (want - without).abs().max() > 1e-3  # the adapters change the model, so the merge was tested
    _generates((tokenizer, merged, merged.get_vision_tower().image_processor, 0), trained)


def test_lora_in_4bit_generates_with_float_tower(trained):
    with one_thread():
        bundle = load_pretrained_model(str(trained / "lora"), model_base=str(trained / "lm"), load_4bit=True)
    assert part_dtypes(bundle[1]) == {
        "llm": "cpu 4-bit+float32",
        "tower": "cpu float32",
        "projector": "cpu float32",
    }
    assert not any("lora_" in name for name, _ in bundle[1].named_modules())
    _generates(bundle, trained)


def test_stage1_projector_on_a_comm_llava_base_keeps_its_tower(trained, tiny_dir):
    from _serve_helpers import trained_checkpoint

    full = trained_checkpoint(tiny_dir) / "full"  # same tiny-comm tower and LLM width as the stage-1 run
    with one_thread():
        _, model, _, _ = load_pretrained_model(str(trained / "s1"), model_base=str(full))
    reference = AutoModelForCausalLM.from_pretrained(full)
    saved = torch.load(trained / "s1" / "mm_projector.bin", weights_only=True)
    projector = model.get_model().mm_projector.state_dict()
    assert all(torch.equal(projector[k.split("mm_projector.", 1)[1]], v) for k, v in saved.items())
    for part in ("language_model", "model.vision_tower"):  # both from the comm_llava base checkpoint
        ours, ref = model.get_submodule(part).state_dict(), reference.get_submodule(part).state_dict()
        assert all(torch.equal(ours[k], ref[k]) for k in ref), part
    plain = AutoModelForCausalLM.from_pretrained(trained / "lm").state_dict()
    llm = model.language_model.state_dict()
    assert not all(torch.equal(llm[k], plain[k]) for k in plain)  # the trained LLM, not a plain one
