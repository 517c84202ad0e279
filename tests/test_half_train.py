"""comm-train in bf16 on CPU (stage 1, stage 2 full / LoRA / QLoRA with bf16 compute; from a plain LLM + stage-1
adapter and from a comm_llava checkpoint), and scripts/finetune_lora.sh with BITS=4: every step's loss finite
and within BF16_LOSS_RTOL of the fp32 run's (same seed, data and steps); every trainable parameter gets a
finite gradient at every step."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _half_helpers import BF16_LOSS_RTOL, assert_close_losses, common_flags, make_data, run_train
from _serve_helpers import random_checkpoint

from comm_tower.errors import UsageError
from comm_tower.zoo.tiny_lm import build_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
LORA = ("--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8", "--mm_projector_lr", "1e-3")
QLORA = (*LORA, "--bits", "4")  # NF4, double quantisation; compute dtype = bf16 under --bf16 True


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory, monkeypatch_module) -> dict[str, Path]:
    """A tiny LLM, the data, a stage-1 adapter (an fp32 stage-1 run) and an untrained comm_llava checkpoint."""
    root = tmp_path_factory.mktemp("half")
    llm = build_tiny_llama(root / "llm")
    data = make_data(root / "data")
    out = {"root": root, "llm": llm, **data}
    stage1 = [*common_flags(root / "adapter"), *_stage1(llm, data), "--bf16", "False"]
    run_train(stage1, monkeypatch_module)
    out["adapter"] = root / "adapter" / "mm_projector.bin"
    torch.manual_seed(0)
    out["comm_llava"] = random_checkpoint(llm, root / "comm_llava", tower="tiny-comm")
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _stage1(model: Path, data: dict[str, Path]) -> list[str]:
    """Stage 1 (projector only) on the captions."""
    flags = ["--model_name_or_path", str(model), "--version", "plain", "--tune_mm_mlp_adapter", "True"]
    return flags + _data(data, "caption", "1e-2")


def _stage2(model: Path, data: dict[str, Path], adapter: Path | None) -> list[str]:
    """Stage 2 on the questions, from stage 1's projector when `adapter` is given."""
    flags = ["--model_name_or_path", str(model), "--version", "v1", "--image_aspect_ratio", "pad"]
    flags += _data(data, "instruct", "1e-3")
    return flags + (["--pretrain_mm_mlp_adapter", str(adapter)] if adapter else [])


def _data(data: dict[str, Path], kind: str, lr: str) -> list[str]:
    return ["--data_path", str(data[kind]), "--image_folder", str(data["images"]), "--learning_rate", lr]


CASES = {
    # name: (stage, extra flags, start from a comm_llava checkpoint)
    "stage1-llm": (1, (), False),
    "stage1-comm_llava": (1, (), True),
    "stage2-full-llm+adapter": (2, (), False),
    "stage2-full-comm_llava": (2, (), True),
    "stage2-lora-llm+adapter": (2, LORA, False),
    "stage2-lora-comm_llava": (2, LORA, True),
    "qlora-bf16-llm+adapter": (2, QLORA, False),
    "qlora-bf16-comm_llava": (2, QLORA, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_run_matches_fp32_and_every_trainable_parameter_gets_a_gradient(
    setup, case, tmp_path, monkeypatch
):
    stage, extra, from_comm_llava = CASES[case]
    start = setup["comm_llava"] if from_comm_llava else setup["llm"]
    adapter = None if from_comm_llava else setup["adapter"]
    task = _stage1(start, setup) if stage == 1 else _stage2(start, setup, adapter)
    runs = {}
    for precision in ("False", "True"):
        argv = [*common_flags(tmp_path / precision), *task, *extra, "--bf16", precision]
        runs[precision] = run_train(argv, monkeypatch)
    fp32, bf16 = runs["False"], runs["True"]
    for run in (fp32, bf16):
        assert run.trainable > 0 and not run.missing_grads, (
            f"{case}: no finite gradient for {run.missing_grads}"
        )
    assert fp32.param_dtypes == {torch.float32}
    # bf16 really ran in bf16: the projector (and, stage 2 full, the LLM) trains in bf16; peft keeps LoRA
    # adapters in fp32
    assert torch.bfloat16 in bf16.param_dtypes, bf16.param_dtypes
    assert_close_losses(bf16.losses, fp32.losses)


@pytest.mark.slow
def test_finetune_lora_script_with_bits_4_trains_in_bf16(setup, tmp_path, monkeypatch):
    """scripts/finetune_lora.sh BITS=4 --bf16 True (one process, DeepSpeed, the LLaVA-1.5 recipe's gradient
    checkpointing), against comm-train in fp32 with the exact flags the script passed."""
    recorder = tmp_path / "record_argv"
    recorder.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp_path / "argv.txt"}\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "BITS": "4",
        "PRECISION": "--bf16 True",
        "MODEL": str(setup["llm"]),
        "DATA_PATH": str(setup["instruct"]),
        "IMAGE_FOLDER": str(setup["images"]),
        "PRETRAIN_ADAPTER": str(setup["adapter"]),
        "PROJECTOR": "linear",
        "VISION_TOWER": "tiny-comm",
        **{"BATCH": "2", "MAX_STEPS": "3", "MAX_LEN": "256", "WORKERS": "0", "GRAD_CKPT": "True"},
        **{"LORA_R": "4", "LORA_ALPHA": "8", "LR": "1e-3", "MM_PROJECTOR_LR": "1e-3", "MASTER_PORT": "29681"},
        "EXTRA_ARGS": "--use_cpu True --seed 0 --save_strategy no",
    }
    # the flags the script builds (LAUNCHER=python runs "$PYTHON -m comm_tower.train FLAGS")
    script = ROOT / "scripts" / "finetune_lora.sh"
    subprocess.run(
        ["bash", str(script)],
        env={**env, "LAUNCHER": "python", "PYTHON": str(recorder), "OUTPUT_DIR": str(tmp_path / "x")},
        check=True,
    )
    flags = (tmp_path / "argv.txt").read_text().splitlines()[2:]  # drop "-m comm_tower.train"
    assert flags[flags.index("--deepspeed") + 1].endswith("zero2.json")  # ZeRO-3 cannot shard 4-bit layers
    # the real launch: torchrun, one process, DeepSpeed ZeRO-2, bf16
    out = tmp_path / "script"
    proc = subprocess.run(
        ["bash", str(script)],
        env={
            **env,
            "LAUNCHER": "torchrun",
            "NUM_GPUS": "1",
            "PYTHON": sys.executable,
            "OUTPUT_DIR": str(out),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (out / "adapter_model.safetensors").is_file() and (out / "non_lora_trainables.bin").is_file()
    script_losses = _logged_losses(out)
    # the same flags in this process, fp32, without DeepSpeed (ZeRO-2 on one process steps the same AdamW)
    i = flags.index("--deepspeed")
    ref_flags = [*flags[:i], *flags[i + 2 :]]
    ref_flags[ref_flags.index("--output_dir") + 1] = str(tmp_path / "fp32")
    ref_flags[ref_flags.index("--bf16") + 1] = "False"
    fp32 = run_train(ref_flags, monkeypatch)
    assert fp32.trainable > 0 and not fp32.missing_grads
    # the Trainer logs losses rounded to 4 significant digits: allow that rounding on top of the bound
    rounding = 5e-4 / min(fp32.losses)
    assert_close_losses(script_losses, fp32.losses, rtol=BF16_LOSS_RTOL + rounding)


def _logged_losses(out: Path) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def test_qlora_with_a_zero3_config_is_refused_naming_the_flag(setup, tmp_path, monkeypatch):
    argv = [*common_flags(tmp_path), *_stage2(setup["llm"], setup, setup["adapter"]), *QLORA]
    argv += ["--deepspeed", str(ROOT / "scripts" / "zero3.json")]
    with pytest.raises(UsageError, match=r"scripts/zero2\.json"):
        run_train(argv, monkeypatch)


def test_fp16_without_deepspeed_is_refused_not_trained_into_nan(setup, tmp_path, monkeypatch):
    # fp16 weights stepped by AdamW in place: the run's second loss was NaN before this check
    argv = [*common_flags(tmp_path), *_stage2(setup["llm"], setup, setup["adapter"]), "--fp16", "True"]
    with pytest.raises(UsageError, match=r"--fp16 True without --deepspeed.*--bf16 True"):
        run_train(argv, monkeypatch)
