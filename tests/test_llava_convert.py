"""`comm-convert` on checkpoints LLaVA's own train() saved: the logits of LLaVA's `load_pretrained_model`.

Runs in `.venv-llava` (LLaVA 1.2.2, transformers 4.37) for the LLaVA side; the conversion and the comm_llava
side run in the main venv (transformers 5, where comm_llava lives): `COMM_MAIN_PYTHON`, default `.venv/bin/python`
(`tests/_convert_worker.py`, one process for every case).

LLaVA's loader runs as shipped (float16) and, for the tight checks, with its float16 switched to float32. Given
the same tower features the converted model's logits equal LLaVA's (bit for bit here). With each side's own
tower, the DINOv2 branch differs slightly because transformers 4.37 and 5 interpolate its position embeddings
differently (below); that bound is stated apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("llava", reason="LLaVA is not installed: run in .venv-llava (docs/llava.md)")

from _llava_helpers import REPO_ROOT, build_tiny_openai_clip, draw, run_launcher, train_args

pytestmark = pytest.mark.llava

MAIN_PYTHON = Path(os.environ.get("COMM_MAIN_PYTHON") or REPO_ROOT / ".venv/bin/python")
QUESTION = "What colour is the shape?"
ATOL = 1e-5  # same weights, same inputs, float32; measured 0 (bit-identical)
# transformers 4.37 interpolates DINOv2's position embeddings with `scale_factor` (+0.1), 5.x with `size`: at the
# tiny tower's 64 px (trained at 72) its features differ by about 2.5e-2, the logits by about 2e-3
DINOV2_FEATURE_ATOL = 5e-2
END_TO_END_ATOL = 1e-2
FLOAT16_ATOL = (
    5e-3  # LLaVA merges LoRA into float16 weights, comm-convert in the saved float32; measured 4e-4
)


@pytest.fixture(scope="module")
def lora_run(llava_runs: SimpleNamespace) -> Path:
    """LLaVA-1.5's LoRA fine-tune (`--lora_enable`), shrunk: adapters + non_lora_trainables.bin + config.json."""
    out = llava_runs.root / "llava-tiny-comm-lora"  # LLaVA's loader wants 'llava' and 'lora' in the name
    args = train_args(llava_runs.base, llava_runs.data, out, 2, llava_runs.adapter)
    # a high learning rate so that the adapters move the logits far more than ATOL
    args += ["--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--learning_rate", "1e-2"]
    args += ["--mm_projector_lr", "2e-5"]
    run_launcher("llava_patch.launch.train", args, llava_runs.env, llava_runs.root)
    return out


@pytest.fixture(scope="module")
def clip_llava(llava_runs: SimpleNamespace) -> Path:
    """A LLaVA checkpoint with LLaVA's own CLIP tower, saved as LLaVA's train() saves a model."""
    from llava.model import LlavaLlamaForCausalLM

    clip = build_tiny_openai_clip(llava_runs.root / "clip")
    model = LlavaLlamaForCausalLM.from_pretrained(llava_runs.base)
    args = SimpleNamespace(
        vision_tower=str(clip),
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        pretrain_mm_mlp_adapter=None,
        mm_patch_merge_type="flat",
        mm_projector_type="mlp2x_gelu",
    )
    model.get_model().initialize_vision_modules(model_args=args)
    out = llava_runs.root / "llava-clip"
    model.save_pretrained(out)
    return out


class _TorchInFloat32:
    """`torch` as `llava.model.builder` sees it, with `float16` meaning float32: its loader hard-codes float16
    (weights, tower, LoRA merge) on every path but 4/8 bits; this runs the same code in float32."""

    float16 = torch.float32

    def __getattr__(self, name: str):
        return getattr(torch, name)


def llava_reference(path: Path, base: Path | None, image_file: Path) -> dict:
    """LLaVA's `load_pretrained_model` (with llava_patch) on one image and question: prompt ids, pixels,
    tower features and logits in float32, and the last position's logits as it loads (float16)."""
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
    from llava.model import builder
    from PIL import Image

    import llava_patch

    def load(float32: bool):
        with pytest.MonkeyPatch.context() as mp:
            if float32:
                mp.setattr(builder, "torch", _TorchInFloat32())
            llava_patch.apply()
            try:
                name = get_model_name_from_path(str(path))
                return builder.load_pretrained_model(
                    str(path), None if base is None else str(base), name, device_map="cpu", device="cpu"
                )
            finally:
                llava_patch.remove()

    tokenizer, model, processor, _ = load(float32=True)
    assert model.dtype == torch.float32 and model.get_vision_tower().dtype == torch.float32
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{QUESTION}")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    image = Image.open(image_file).convert("RGB")
    pixels = process_images([image], processor, model.config)
    with torch.inference_mode():
        logits = model(ids, images=pixels, image_sizes=[image.size]).logits[0]
        features = model.get_vision_tower()(pixels)
        half = load(float32=False)[1]
        assert half.dtype == torch.float16
        last16 = half(ids, images=pixels.half(), image_sizes=[image.size]).logits[0, -1].float()
    return {
        "ids": ids,
        "pixels": pixels,
        "logits": logits,
        "features": features,
        "last_logits_float16": last16,
    }


@pytest.fixture(scope="module")
def converted(
    llava_runs: SimpleNamespace, lora_run: Path, clip_llava: Path, tmp_path_factory
) -> SimpleNamespace:
    """Every case converted by comm-convert in the main venv, with LLaVA's references computed here."""
    if not MAIN_PYTHON.is_file():
        pytest.skip(f"no main venv Python at {MAIN_PYTHON}: run `make install` or set COMM_MAIN_PYTHON")
    work = tmp_path_factory.mktemp("convert")
    image = work / "question.png"
    draw("red", "circle").save(image)
    existing = work / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    stage1 = work / "llava-tiny-comm-stage1"  # LLaVA's loader wants 'llava' in the name
    shutil.copytree(llava_runs.stage1, stage1)
    refs = {
        "full": llava_reference(llava_runs.stage2, None, image),
        "lora": llava_reference(lora_run, llava_runs.base, image),
        "stage1": llava_reference(stage1, llava_runs.base, image),
    }
    base = ["--model-base", str(llava_runs.base)]
    cases: dict[str, dict] = {
        "full": {"argv": [str(llava_runs.stage2), str(work / "full")]},
        "lora": {"argv": [str(lora_run), str(work / "lora"), *base]},
        "stage1": {"argv": [str(stage1), str(work / "stage1"), *base, "--conv-mode", "plain"]},
        "clip": {"argv": [str(clip_llava), str(work / "clip")]},
        "exists": {"argv": [str(llava_runs.stage2), str(existing)]},
    }
    for name, ref in refs.items():
        torch.save({k: ref[k] for k in ("ids", "pixels", "features")}, work / f"{name}-inputs.pt")
        cases[name].update(
            checkpoint=str(work / name),
            inputs=str(work / f"{name}-inputs.pt"),
            image=str(image),
            question=QUESTION,
        )
    job = work / "job.json"
    job.write_text(json.dumps({"cases": cases, "out": str(work / "results.pt")}))
    proc = subprocess.run(
        [str(MAIN_PYTHON), str(REPO_ROOT / "tests/_convert_worker.py"), str(job)],
        env=llava_runs.env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return SimpleNamespace(work=work, refs=refs, results=torch.load(work / "results.pt"), existing=existing)


def _feature_channels(config_file: Path) -> list[tuple[str, slice]]:
    """Each encoder's channels in the tower's output (its layers concatenated, encoders in spec order)."""
    out, start = [], 0
    for enc in json.loads(config_file.read_text())["mm_comm"]["encoders"]:
        width = enc["width"] * len(enc["layers"])
        out.append((enc["family"], slice(start, start + width)))
        start += width
    return out


@pytest.mark.parametrize("case", ["full", "lora", "stage1"])
def test_on_llavas_tower_features_the_logits_are_llavas(converted, case):
    """Projector, splice, LLM and merged LoRA: the same logits at every position, image tokens included."""
    got, ref = converted.results[case], converted.refs[case]
    assert got["code"] == 0, got["stderr"]
    assert got["logits_given_features"].shape == ref["logits"].shape  # text + the image's tokens
    diff = (got["logits_given_features"] - ref["logits"]).abs().max().item()
    assert diff <= ATOL, f"{case}: max |logit difference| {diff:.2e}"


@pytest.mark.parametrize("case", ["full", "lora", "stage1"])
def test_end_to_end_only_dinov2_position_interpolation_differs(converted, llava_runs, case):
    """With its own tower: CLIP features equal, DINOv2's differ by transformers' interpolation, logits close."""
    got, ref = converted.results[case], converted.refs[case]
    for family, channels in _feature_channels(llava_runs.stage2 / "config.json"):
        diff = (got["features"][..., channels] - ref["features"][..., channels]).abs().max().item()
        assert diff <= (DINOV2_FEATURE_ATOL if family == "dinov2" else ATOL), (family, diff)
    diff = (got["logits"] - ref["logits"]).abs().max().item()
    assert diff <= END_TO_END_ATOL, f"{case}: max |logit difference| {diff:.2e}"
    assert torch.equal(got["logits"][-1].argmax(), ref["logits"][-1].argmax())  # the same greedy token


@pytest.mark.parametrize("case", ["full", "lora", "stage1"])
def test_as_llavas_loader_loads_it_in_float16_the_next_token_logits_agree(converted, case):
    got, ref = converted.results[case], converted.refs[case]
    diff = (got["last_logits_float16"] - ref["last_logits_float16"]).abs().max().item()
    assert diff <= FLOAT16_ATOL, f"{case}: max |logit difference| {diff:.2e}"
    assert torch.equal(got["last_logits_float16"].argmax(), ref["last_logits_float16"].argmax())


@pytest.mark.parametrize("case", ["full", "lora"])
def test_comm_chat_builds_llavas_prompt_and_pixels(converted, case):
    """The recorded chat format (vicuna_v1), the saved tokenizer and `pad` pixels, as comm-chat uses them."""
    got, ref = converted.results[case], converted.refs[case]
    assert got["conv_template"] == "vicuna_v1"
    assert got["ids"].tolist() == ref["ids"][0].tolist()
    assert torch.allclose(got["pixels"], ref["pixels"][0], atol=1e-6)


def test_the_lora_adapters_move_the_weights(lora_run):
    """Trained adapters (lora_B starts at 0): a conversion that dropped them could not match LLaVA's logits."""
    from safetensors.torch import load_file

    adapters = load_file(lora_run / "adapter_model.safetensors")
    moved = [v.abs().max().item() for k, v in adapters.items() if "lora_B" in k]
    assert moved and min(moved) > 1e-3, moved


def test_a_non_comm_llava_checkpoint_is_refused_and_nothing_written(converted):
    got = converted.results["clip"]
    assert got["code"] == 2
    lines = got["stderr"].strip().splitlines()
    assert lines[-1].startswith("comm-convert: error:") and "not a COMM tower" in lines[-1]
    assert "llava-clip" in lines[-1]
    assert not (converted.work / "clip").exists()
    assert not [p.name for p in converted.work.iterdir() if p.name.endswith(".partial")]


def test_an_existing_output_folder_is_refused_and_left_alone(converted):
    got = converted.results["exists"]
    assert got["code"] == 2 and "already exists" in got["stderr"]
    assert [p.name for p in converted.existing.iterdir()] == ["keep.txt"]
