"""`comm-convert` in the main venv: a LLaVA-layout folder round-trips, and every bad input is one clear error
with nothing written. (Checkpoints saved by LLaVA's own train(), and LLaVA's logits: test_llava_convert.py.)

The LLaVA-layout folder is written here from an assembled model, as LLaVA saves `LlavaLlamaForCausalLM`: the
LLM's keys as `LlamaForCausalLM` has them, the projector under `model.mm_projector.*`, and a config that is the
LLM's plus LLaVA's `mm_*` fields, `model_type` `llava_llama`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comm_tower.hub.convert_cli import main
from comm_tower.model import CommLlavaForCausalLM, assemble_model
from comm_tower.model.assembly import load_comm_llava
from comm_tower.zoo.tiny_lm import build_tiny_llama

PROJECTOR = "model.mm_projector."


@pytest.fixture(scope="module")
def llava_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full LLaVA-layout checkpoint with the tiny COMM tower and a trained-looking (random) projector."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("llava-layout")
    lm = build_tiny_llama(root / "lm")
    model = assemble_model(str(lm), "tiny-comm", mm_projector_type="mlp2x_gelu")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.get_model().mm_projector.parameters():
            p.normal_(0, 0.1)
    state = {k.removeprefix("language_model."): v for k, v in model.state_dict().items()}
    state = {k: v.contiguous() for k, v in state.items() if not k.startswith("model.vision_tower.")}
    out = root / "llava-comm"
    out.mkdir()
    save_file(state, out / "model.safetensors")
    config = model.language_model.config.to_dict()
    config.update(
        model_type="llava_llama",
        architectures=["LlavaLlamaForCausalLM"],
        mm_vision_tower="tiny-comm",
        mm_comm=model.get_vision_tower().spec.to_dict(),
        mm_projector_type="mlp2x_gelu",
        mm_hidden_size=model.config.mm_hidden_size,
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_patch_merge_type="flat",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="pad",
        tokenizer_model_max_length=256,
        tokenizer_padding_side="right",
        use_mm_proj=True,
    )
    (out / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(lm).save_pretrained(out)
    return out


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """comm-convert's exit code and its stderr."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code, capsys.readouterr().err


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".partial")]


def _edited(llava_dir: Path, tmp_path: Path, **fields) -> Path:
    """A copy of the LLaVA folder with config fields changed (None deletes one)."""
    copy = tmp_path / "edited"
    shutil.copytree(llava_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    for key, value in fields.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_a_full_checkpoint_converts_with_its_weights_and_chat_format(llava_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    main([str(llava_dir), str(out), "--conv-mode", "plain", "--system-prompt", "Be brief."])
    assert capsys.readouterr().out.strip() == str(out)
    model = load_comm_llava(str(out))
    assert isinstance(model, CommLlavaForCausalLM)
    assert (model.config.conv_template, model.config.system_prompt) == ("plain", "Be brief.")
    assert model.config.tokenizer_model_max_length == 256 and model.config.image_aspect_ratio == "pad"
    saved = load_file(llava_dir / "model.safetensors")
    ours = {k.removeprefix("language_model."): v for k, v in model.state_dict().items()}
    for key, value in saved.items():
        assert torch.equal(ours[key], value), key
    assert any(k.startswith(PROJECTOR) for k in saved)
    assert (out / "tokenizer_config.json").is_file()
    _nothing_written(tmp_path / "absent")  # no temporary folder left beside the output


def test_a_stage1_run_converts_on_its_base(llava_dir, tmp_path):
    """LLaVA's stage 1 saves config.json + mm_projector.bin (projector keys only); the LLM is --model-base."""
    saved = load_file(llava_dir / "model.safetensors")
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    config = json.loads((llava_dir / "config.json").read_text())
    del config["image_aspect_ratio"]  # LLaVA's default: the processor takes the image as it is
    (stage1 / "config.json").write_text(json.dumps(config))
    torch.save({k: v for k, v in saved.items() if k.startswith(PROJECTOR)}, stage1 / "mm_projector.bin")
    out = tmp_path / "converted"
    main([str(stage1), str(out), "--model-base", str(llava_dir.parent / "lm"), "--conv-mode", "plain"])
    model = load_comm_llava(str(out))
    ours = {k.removeprefix("language_model."): v for k, v in model.state_dict().items()}
    for key, value in saved.items():  # the base LLM is the one the LLaVA-layout folder was written from
        assert torch.equal(ours[key], value), key
    assert model.config.conv_template == "plain" and model.config.image_aspect_ratio == "square"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"mm_comm": None, "mm_vision_tower": "openai/clip-vit-large-patch14-336"}, "not a COMM tower"),
        ({"model_type": "llama"}, "model_type 'llama'"),
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
        ({"mm_patch_merge_type": "spatial_unpad"}, "mm_patch_merge_type"),
        ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio"),
    ],
)
def test_a_config_that_does_not_convert_is_one_clear_error(llava_dir, tmp_path, capsys, edit, expected):
    src, out = _edited(llava_dir, tmp_path, **edit), tmp_path / "out"
    code, err = _run([str(src), str(out)], capsys)
    assert code == 2 and expected in err and str(src) in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("comm-convert: error:")
    _nothing_written(out)


def test_missing_encoder_folders_are_named_with_the_fix(llava_dir, tmp_path, capsys):
    config = json.loads((llava_dir / "config.json").read_text())
    spec = config["mm_comm"]
    spec["encoders"][1]["path"] = str(tmp_path / "gone" / "dinov2")
    src, out = _edited(llava_dir, tmp_path, mm_comm=spec), tmp_path / "out"
    code, err = _run([str(src), str(out)], capsys)
    assert code == 2 and "gone/dinov2" in err and "COMM_ENCODER_PATHS=dinov2=" in err
    _nothing_written(out)


def test_missing_files_are_named(llava_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run([str(tmp_path / "nowhere"), str(out)], capsys)
    assert code == 2 and "is not a folder" in err
    bare = tmp_path / "bare"
    bare.mkdir()
    code, err = _run([str(bare), str(out)], capsys)
    assert code == 2 and "config.json does not exist" in err
    shutil.copy(llava_dir / "config.json", bare / "config.json")
    code, err = _run([str(bare), str(out)], capsys)
    assert code == 2 and "holds no weights" in err
    _nothing_written(out)


def test_a_lora_run_needs_its_base_and_its_projector(llava_dir, tmp_path, capsys):
    lora = tmp_path / "llava-lora"
    lora.mkdir()
    shutil.copy(llava_dir / "config.json", lora / "config.json")
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    out = tmp_path / "out"
    code, err = _run([str(lora), str(out)], capsys)
    assert code == 2 and "--model-base" in err
    code, err = _run([str(lora), str(out), "--model-base", str(llava_dir)], capsys)
    assert code == 2 and "non_lora_trainables.bin" in err
    _nothing_written(out)


def test_an_unknown_conv_mode_is_named_with_the_choices(llava_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run([str(llava_dir), str(out), "--conv-mode", "llava_v2"], capsys)
    assert code == 2 and "--conv-mode 'llava_v2'" in err and "vicuna_v1" in err
    _nothing_written(out)


def test_an_existing_output_folder_is_refused_and_left_alone(llava_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _run([str(llava_dir), str(out)], capsys)
    assert code == 2 and "already exists" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failure_while_saving_leaves_nothing(llava_dir, tmp_path, capsys, monkeypatch):
    def save_half(self, folder, **kwargs):
        (Path(folder) / "config.json").write_text("{}")
        raise OSError("No space left on device")

    monkeypatch.setattr(CommLlavaForCausalLM, "save_pretrained", save_half)
    out = tmp_path / "out"
    code, err = _run([str(llava_dir), str(out)], capsys)
    assert code == 2 and "No space left on device" in err
    _nothing_written(out)


def test_help_says_what_it_converts(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0
    assert "--vision_tower comm" in text and "--model-base" in text and "non_lora_trainables.bin" in text
