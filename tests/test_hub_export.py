"""comm-export and CommProcessor with comm_tower installed: auto classes without remote code, the chat
template, the pipeline, the card, the generated code, and bad input (scripts/test_remote_code.sh covers the
same export in venvs without comm_tower)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _hub_helpers import EXPECTED, MAX_NEW_TOKENS, QUESTION, prepare
from _serve_helpers import one_thread
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hub")
    with one_thread():
        prepare(root)
    return {"root": root, **json.loads((root / EXPECTED).read_text())}


def _messages(image_path: str) -> list[dict]:
    image = Image.open(image_path)
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}
    ]


def _greedy() -> dict:
    return {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}


def test_auto_classes_without_remote_code_match_comm_chat(prepared: dict) -> None:
    export = prepared["root"] / "hf"
    with one_thread():
        model = AutoModelForImageTextToText.from_pretrained(export).eval()
        processor = AutoProcessor.from_pretrained(export)
        assert (
            type(model).__module__ == "comm_tower.model.modeling"
        )  # the installed package, not the folder's code
        assert type(processor).__module__ == "comm_tower.inference.processing"
        inputs = processor.apply_chat_template(_messages(prepared["image"]), tokenize=True, return_dict=True)
        assert model.generate(**inputs, **_greedy())[0].tolist() == prepared["tokens"]
        pipe = pipeline("image-text-to-text", model=str(export))
        out = pipe(text=_messages(prepared["image"]), return_tensors=True, generate_kwargs=_greedy())
        assert torch.as_tensor(out[0]["generated_token_ids"]).tolist() == prepared["tokens"]


def test_processor_of_the_training_checkpoint_matches_comm_chat(prepared: dict) -> None:
    """The un-exported comm-train folder (no processor_config.json) gets its processor from config.json."""
    checkpoint = prepared["root"] / "ckpt"
    with one_thread():
        model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
        processor = AutoProcessor.from_pretrained(checkpoint)
        text = processor.apply_chat_template(_messages(prepared["image"]))
        assert text.count("<image>") == 1 and text.rstrip().endswith("ASSISTANT:")
        inputs = processor(images=Image.open(prepared["image"]), text=text)
        assert model.generate(**inputs, **_greedy())[0].tolist() == prepared["tokens"]


def test_generated_code_is_self_contained(prepared: dict) -> None:
    export = prepared["root"] / "hf"
    config = json.loads((export / "config.json").read_text())
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModelForCausalLM",
        "AutoModelForImageTextToText",
        "AutoProcessor",
    }
    tops = set()
    for path in export.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                assert (export / f"{node.module}.py").is_file(), f"{path.name} imports missing .{node.module}"
    assert not tops & {"comm_tower", "peft", "bitsandbytes", "deepspeed", "llava"}
    assert tops - set(sys.stdlib_module_names) <= {"torch", "transformers", "numpy", "PIL"}


def test_model_card(prepared: dict) -> None:
    card = (prepared["root"] / "hf" / "README.md").read_text()
    front = card.split("---")[1]
    assert "pipeline_tag: image-text-to-text" in front and "library_name: transformers" in front
    for needed in ("tiny-comm", "`clip` (clip): layers [1, 2, 3, 4]", "`dinov2` (dinov2): layers [3, 4]"):
        assert needed in card
    assert "trust_remote_code=True" in card and "import comm_tower" in card and "llava_patch" in card


def test_card_reads_run_and_scores(tmp_path: Path, prepared: dict) -> None:
    from comm_tower.hub.card import found_eval_files, read_eval_scores, render_card
    from comm_tower.model.configuration import CommLlavaConfig

    checkpoint = tmp_path / "run"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(
        json.dumps({"global_step": 42, "num_train_epochs": 1, "log_history": [{"loss": 2.5}, {"loss": 1.25}]})
    )
    (checkpoint / "eval").mkdir()
    (checkpoint / "eval" / "pope_random.json").write_text(json.dumps({"accuracy": 0.875, "f1": 0.9}))
    config = CommLlavaConfig.from_pretrained(prepared["root"] / "ckpt")
    config.train_data = "data/stage2.json"
    card = render_card(config, checkpoint, read_eval_scores(found_eval_files(checkpoint)))
    assert "- Steps: 42" in card and "- Last logged loss: 1.25" in card and "data/stage2.json" in card
    assert "| pope_random | accuracy | 0.875 |" in card


def _export(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """comm-export's exit status, stdout and stderr (in process: the console script's own `main`)."""
    from comm_tower.hub.export import main

    with pytest.raises(SystemExit) as stop:
        main(list(args))
    out = capsys.readouterr()
    return int(stop.value.code or 0), out.out, out.err


def test_bad_input_one_line_and_nothing_written(tmp_path: Path, prepared: dict, capsys) -> None:
    not_comm = tmp_path / "llama"
    not_comm.mkdir()
    (not_comm / "config.json").write_text(json.dumps({"model_type": "llama"}))
    code, _, err = _export(capsys, str(not_comm), str(tmp_path / "out1"))
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"comm-export: error: {not_comm} is not a comm_llava checkpoint (model_type 'llama' in config.json); "
        "give a comm-train output folder (a LLaVA checkpoint trained through llava_patch is converted with "
        "comm-convert first)"
    ]
    # a checkpoint without recorded encoder structure whose encoder folders are gone
    moved = tmp_path / "moved"
    moved.mkdir()
    config = json.loads((prepared["root"] / "ckpt" / "config.json").read_text())
    config.pop("mm_encoder_configs")
    for enc in config["mm_comm"]["encoders"]:
        enc["path"] = str(tmp_path / "gone" / enc["name"])
    (moved / "config.json").write_text(json.dumps(config))
    (moved / "model.safetensors").write_bytes((prepared["root"] / "ckpt" / "model.safetensors").read_bytes())
    code, _, err = _export(capsys, str(moved), str(tmp_path / "out2"))
    assert code == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "COMM_ENCODER_PATHS" in line
    assert f"clip: {tmp_path / 'gone' / 'clip'}" in line and f"dinov2: {tmp_path / 'gone' / 'dinov2'}" in line
    # an existing output folder is never written into
    code, _, err = _export(capsys, str(prepared["root"] / "ckpt"), str(prepared["root"] / "hf"))
    assert code == 2 and "already exists" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama", "moved"]


def test_checkpoint_without_encoder_configs_exports_from_its_encoder_folders(
    tmp_path: Path, prepared: dict
) -> None:
    """config.json without mm_encoder_configs, encoder folders in place: the export records their structure."""
    from safetensors.torch import load_file

    old = tmp_path / "old"
    shutil.copytree(prepared["root"] / "ckpt", old)
    config = json.loads((old / "config.json").read_text())
    recorded = config.pop("mm_encoder_configs")
    (old / "config.json").write_text(json.dumps(config))
    from comm_tower.hub.export import main

    assert main([str(old), str(tmp_path / "hf")]) == 0
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())["mm_encoder_configs"]
    strip = lambda configs: [{k: v for k, v in c.items() if k != "_name_or_path"} for c in configs]  # noqa: E731
    assert strip(exported) == strip(recorded)  # what a training run records, less where it was read from
    before, after = load_file(old / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())


def test_help_explains(capsys) -> None:
    code, out, _ = _export(capsys, "--help")
    assert code == 0
    for needed in ("trust_remote_code", "COMM_ENCODER_PATHS", "--no-remote-code", "--eval-results"):
        assert needed in out


def test_import_comm_tower_registers_the_auto_classes_without_loading_torch() -> None:
    code = (
        "import sys, comm_tower\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from transformers import AutoConfig, AutoProcessor\n"
        "from transformers.models.auto import modeling_auto as m, processing_auto as p\n"
        "config = AutoConfig.for_model('comm_llava')\n"
        "names = [type(config).__module__, m.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)].__name__,\n"
        "         m.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].__name__, p.PROCESSOR_MAPPING[type(config)].__name__]\n"
        "print(' '.join(names))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == [
        "comm_tower.model.configuration",
        "CommLlavaForCausalLM",
        "CommLlavaForCausalLM",
        "CommProcessor",
    ], res.stderr


def test_expected_tokens_are_what_comm_chat_answers(prepared: dict) -> None:
    """comm-chat itself, typed into on the exported folder, answers the decoded expected tokens."""
    from transformers import AutoTokenizer

    export = prepared["root"] / "hf"
    args = ["--model-path", str(export), "--image-file", prepared["image"], "--device", "cpu"]
    args += ["--temperature", "0", "--max-new-tokens", str(MAX_NEW_TOKENS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "comm_tower.serve.cli", *args],
        input=f"{QUESTION}\n",
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    answer = run.stdout.split("ASSISTANT: ")[1].split("\nUSER:")[0].strip()
    want = AutoTokenizer.from_pretrained(export).decode(prepared["tokens"], skip_special_tokens=True).strip()
    assert want and answer == want
