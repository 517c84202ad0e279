"""The real scripts on CPU with tiny models: pretrain.sh (ZeRO-2, 2 processes) -> finetune.sh (ZeRO-3, 2
processes, from stage 1's mm_projector.bin) -> finetune_lora.sh; resume; ZeRO-3 loading; reload logits."""

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

import comm_tower.model  # noqa: F401 - registers comm_llava with the Auto classes
from comm_tower import build_vision_projector, build_vision_tower
from comm_tower.constants import IMAGE_TOKEN_INDEX
from comm_tower.zoo.tiny import ensure_tiny_encoders
from comm_tower.zoo.tiny_lm import build_tiny_llama

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def make_data(root: Path) -> dict[str, Path]:
    """16 coloured images with captions (stage 1) and questions (stage 2), plus one text-only sample."""
    images = root / "images"
    images.mkdir(parents=True)
    caption, instruct = [], []
    for i in range(16):
        name = list(COLORS)[i % 4]
        Image.new("RGB", (48 + 8 * (i % 3), 40), COLORS[name]).save(images / f"{i}.png")
        caption.append(
            {
                "id": str(i),
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>"},
                    {"from": "gpt", "value": f"A {name} square."},
                ],
            }
        )
        instruct.append(
            {
                "id": str(i),
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat color is the square?"},
                    {"from": "gpt", "value": f"The square is {name}."},
                ],
            }
        )
    instruct.append(
        {
            "id": "t",
            "conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "Hello."}],
        }
    )
    (root / "caption.json").write_text(json.dumps(caption))
    (root / "instruct.json").write_text(json.dumps(instruct))
    return {"images": images, "caption": root / "caption.json", "instruct": root / "instruct.json"}


def run_script(name: str, port: int, **env: str) -> None:
    """Run scripts/<name> with torchrun on 2 CPU processes; fail with its log tail."""
    full = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "LAUNCHER": "torchrun",
        "NUM_GPUS": "2",
        "PYTHON": sys.executable,
        "MASTER_PORT": str(port),
        "BATCH": "2",
        "MAX_STEPS": "6",
        "MAX_LEN": "256",
        "WORKERS": "0",
        "PRECISION": "--bf16 False",
        "GRAD_CKPT": "False",
        "VISION_TOWER": "tiny-comm",
        **env,
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / name)],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, f"{name} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"


def losses(out_dir: Path) -> list[float]:
    """Per-step training losses from trainer_state.json."""
    state = json.loads((out_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The three scripts chained, plus a resumed stage 1, sharing one tiny LLM and data set."""
    root = tmp_path_factory.mktemp("train")
    ensure_tiny_encoders()
    llm = build_tiny_llama(root / "llm")
    data = make_data(root / "data")
    out = {"llm": llm, "data": root / "data", "images": data["images"]}
    stage1 = dict(
        MODEL=str(llm),
        DATA_PATH=str(data["caption"]),
        IMAGE_FOLDER=str(data["images"]),
        LR="1e-2",
        SAVE_STEPS="3",
        EXTRA_ARGS="--use_cpu True --save_total_limit 5",
    )
    out["pretrain"] = root / "pretrain"
    run_script("pretrain.sh", 29631, OUTPUT_DIR=str(out["pretrain"]), **stage1)
    # a run killed after step 3's checkpoint and again while writing step 6's: the same command, rerun,
    # resumes from the newest complete checkpoint (ZeRO-2, two processes)
    out["resumed"] = root / "resumed"
    shutil.copytree(out["pretrain"] / "checkpoint-3", out["resumed"] / "checkpoint-3")
    (out["resumed"] / "checkpoint-6").mkdir()
    (out["resumed"] / "checkpoint-6" / "mm_projector.bin").write_bytes(b"cut off")
    run_script("pretrain.sh", 29632, OUTPUT_DIR=str(out["resumed"]), **stage1)
    stage2 = dict(
        MODEL=str(llm),
        DATA_PATH=str(data["instruct"]),
        IMAGE_FOLDER=str(data["images"]),
        PRETRAIN_ADAPTER=str(out["pretrain"] / "mm_projector.bin"),
        PROJECTOR="linear",
        SAVE_STEPS="100",
        EXTRA_ARGS="--use_cpu True",
    )
    out["finetune"] = root / "finetune"
    run_script("finetune.sh", 29633, OUTPUT_DIR=str(out["finetune"]), LR="1e-3", **stage2)
    out["lora"] = root / "lora"
    run_script(
        "finetune_lora.sh",
        29634,
        OUTPUT_DIR=str(out["lora"]),
        LR="1e-2",
        LORA_R="8",
        LORA_ALPHA="16",
        MM_PROJECTOR_LR="1e-3",
        **stage2,
    )
    return out


@pytest.mark.parametrize("stage", ["pretrain", "finetune", "lora"])
def test_losses_are_finite_and_fall(runs, stage):
    values = losses(runs[stage])
    assert len(values) == 6 and all(math.isfinite(v) for v in values)
    assert sum(values[-2:]) / 2 < sum(values[:2]) / 2, values


def test_stage1_writes_only_projector_keys_in_llava_format(runs):
    state = torch.load(runs["pretrain"] / "mm_projector.bin", weights_only=True)
    assert state and all(k.startswith("model.mm_projector.") for k in state)
    assert not list(runs["pretrain"].glob("*.safetensors"))
    config = AutoConfig.from_pretrained(runs["pretrain"])
    projector = build_vision_projector(config)  # the saved config alone rebuilds the projector
    assert {f"model.mm_projector.{k}" for k in projector.state_dict()} == set(state)


def test_resume_continues_the_same_run(runs):
    full = torch.load(runs["pretrain"] / "mm_projector.bin", weights_only=True)
    resumed = torch.load(runs["resumed"] / "mm_projector.bin", weights_only=True)
    for key, value in full.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6)
    # steps 4-6 were computed by the resumed process; they match the uninterrupted run's
    assert losses(runs["resumed"])[3:] == pytest.approx(losses(runs["pretrain"])[3:], rel=1e-5)


def test_stage1_checkpoint_holds_deepspeeds_zero2_partitions(runs):
    """`--use_cpu True` does not make the Trainer leave DeepSpeed out: pretrain.sh's zero2.json checkpoint is
    DeepSpeed's, with each of the 2 ranks' partition of the optimizer state."""
    folder = runs["pretrain"] / "checkpoint-3" / "global_step3"
    for rank in range(2):
        saved = torch.load(folder / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", weights_only=False)
        state = saved["optimizer_state_dict"]
        assert int(state["zero_stage"]) == 2 and set(state["partition_count"]) == {2}, state.keys()


def _reference_logits(folder: Path, ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Logits computed without CommLlavaForCausalLM: a LlamaForCausalLM from the saved `language_model.*`
    weights, the tower from its encoder folders, the projector from `model.mm_projector.*`, spliced by hand."""
    config = AutoConfig.from_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    llm = LlamaForCausalLM(config.text_config).eval()
    llm.load_state_dict(
        {k.removeprefix("language_model."): v for k, v in saved.items() if k.startswith("language_model.")}
    )
    tower = build_vision_tower(config)
    projector = build_vision_projector(config)
    projector.load_state_dict(
        {
            k.removeprefix("model.mm_projector."): v
            for k, v in saved.items()
            if k.startswith("model.mm_projector.")
        }
    )
    with torch.no_grad():
        feats = projector(tower(pixels))[0]
        pos = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
        emb = llm.get_input_embeddings()
        embeds = torch.cat([emb(ids[0, :pos]), feats, emb(ids[0, pos + 1 :])])[None]
        return llm(inputs_embeds=embeds).logits


def test_stage2_model_reloads_with_the_same_logits(runs, tmp_path):
    folder = runs["finetune"]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([[1, 20, IMAGE_TOKEN_INDEX, 33, 44, 55]])
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels).logits
    torch.testing.assert_close(logits, _reference_logits(folder, ids, pixels), rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, images=pixels).logits, logits)


PROBE = textwrap.dedent("""
    import sys, torch, deepspeed
    from comm_tower.train.arguments import ModelArguments, TrainingArguments
    from comm_tower.train.cli import build_model, ensure_deepspeed_comm
    cases, ds_config, out = sys.argv[1], sys.argv[2], sys.argv[3]
    args = TrainingArguments(output_dir=out + ".tmp", deepspeed=ds_config, use_cpu=True, report_to=[],
                             per_device_train_batch_size=1)
    ensure_deepspeed_comm(args)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    result = {}
    for case in cases.split(";"):
        name, model_path, adapter = case.split(",")
        margs = ModelArguments(model_name_or_path=model_path, vision_tower="tiny-comm",
                               pretrain_mm_mlp_adapter=adapter or None, mm_projector_type="linear")
        model = build_model(margs, args)
        at_load = {part: all(hasattr(p, "ds_id") for p in mod.parameters())
                   for part, mod in [("llm", model.language_model), ("tower", model.model.vision_tower)]}
        engine, *_ = deepspeed.initialize(model=model, config={"train_micro_batch_size_per_gpu": 1,
                                                                "zero_optimization": {"stage": 3}})
        params = list(engine.module.model.parameters())
        sharded = all(hasattr(p, "ds_id") and p.numel() == 0 for p in params)
        with torch.no_grad():
            result[name] = (engine.module.encode_images(pixels), sharded, at_load)
    if torch.distributed.get_rank() == 0:
        torch.save(result, out)
""")


def test_zero3_loads_tower_and_projector_with_real_weights(runs, tmp_path):
    from comm_tower.train.arguments import ModelArguments, TrainingArguments
    from comm_tower.train.cli import build_model

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    adapter = runs["pretrain"] / "mm_projector.bin"
    cases = {"llm+adapter": (runs["llm"], adapter), "comm_llava": (runs["finetune"], "")}
    spec = ";".join(f"{k},{p},{a}" for k, (p, a) in cases.items())
    out = tmp_path / "feats.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29635",
        str(probe),
        spec,
        str(ROOT / "scripts" / "zero3.json"),
        str(out),
    ]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = torch.load(out, weights_only=False)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    single = TrainingArguments(output_dir=str(tmp_path / "single"), use_cpu=True, report_to=[])
    for name, (path, adapter_path) in cases.items():
        margs = ModelArguments(
            model_name_or_path=str(path),
            vision_tower="tiny-comm",
            pretrain_mm_mlp_adapter=str(adapter_path) or None,
            mm_projector_type="linear",
        )
        with torch.no_grad():
            expected = build_model(margs, single).eval().encode_images(pixels)
        feats, sharded, at_load = result[name]
        assert sharded, f"{name}: parameters were not ZeRO-3 partitioned in the probe"
        # the LLM always loads through zero.Init; a saved comm_llava model loads its tower sharded too
        assert at_load["llm"] and at_load["tower"] == (name == "comm_llava"), at_load
        torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_lora_output_holds_llm_adapters_and_projector_and_merges(runs):
    from comm_tower.model import assemble_model, load_lora

    adapter = load_file(runs["lora"] / "adapter_model.safetensors")
    assert adapter and all("language_model." in k and "vision_tower" not in k for k in adapter)
    projector = torch.load(runs["lora"] / "non_lora_trainables.bin", weights_only=True)
    assert projector and all(k.startswith("model.mm_projector.") for k in projector)
    ids = torch.tensor([[1, 20, IMAGE_TOKEN_INDEX, 33, 44, 55]])
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    config = AutoConfig.from_pretrained(runs["lora"])  # the run's tower and projector settings
    merged = load_lora(assemble_model(str(runs["llm"]), config), str(runs["lora"])).eval()
    unmerged = load_lora(assemble_model(str(runs["llm"]), config), str(runs["lora"]), merge=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=ids, images=pixels).logits, unmerged(input_ids=ids, images=pixels).logits
        )
    for key, value in projector.items():
        torch.testing.assert_close(merged.state_dict()[key], value)
