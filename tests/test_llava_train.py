"""LLaVA's own `train()` with `--vision_tower tiny-comm` on CPU: stage 1, stage 2, reload, generate, serve.

Runs only in `.venv-llava` (transformers 4.37, `llava-torch`); see docs/llava.md.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("llava", reason="LLaVA is not installed: run in .venv-llava (docs/llava.md)")

from _llava_helpers import (
    REPO_ROOT,
    draw,
    run_launcher,
)

pytestmark = pytest.mark.llava

PREFIX = "model.mm_projector."


@pytest.fixture(scope="module")
def runs(llava_runs: SimpleNamespace) -> SimpleNamespace:
    """Stage 1 then stage 2 of LLaVA's train() (the session's `llava_runs`, shared with test_llava_convert)."""
    return llava_runs


def losses(proc) -> list[float]:
    """The per-step losses the HF Trainer logged."""
    return [float(x) for x in re.findall(r"'loss': ([-\d.e+naif]+)", proc.stdout + proc.stderr)]


def test_both_stages_train_with_finite_losses(runs):
    for proc in runs.logs:
        values = losses(proc)
        assert len(values) == 3 and all(torch.isfinite(torch.tensor(values))), values
        assert "tokenization mismatch" not in proc.stdout  # LLaVA masks the whole sample on a mismatch


def test_stage1_adapter_holds_the_whole_comm_projector(runs):
    from llava.model.language_model.llava_llama import LlavaConfig

    import comm_tower

    saved = torch.load(runs.adapter, map_location="cpu")
    config = LlavaConfig.from_pretrained(runs.stage1)
    assert config.mm_vision_tower == "tiny-comm" and config.mm_comm["name"] == "tiny-comm"
    fresh = comm_tower.build_vision_projector(config)  # rebuilt from the saved config alone
    expected = {PREFIX + k: v.shape for k, v in fresh.state_dict().items()}
    assert {k: v.shape for k, v in saved.items()} == expected
    assert any(".mfm." in k for k in saved) and any(".align." in k for k in saved)


def test_stage1_trains_the_mfm_weights(runs):
    saved = torch.load(runs.adapter, map_location="cpu")
    scales = {k: v for k, v in saved.items() if k.endswith(".mfm.scale.weight")}
    norms = {k: v for k, v in saved.items() if k.endswith(".mfm.norm_weight")}
    assert len(scales) == 2 and len(norms) == 2  # one MFM per encoder branch
    for key, weight in scales.items():  # LayerScale starts at 1/L for each of the L layers
        start = torch.full_like(weight, 1.0 / weight.numel())
        assert not torch.equal(weight, start), f"{key} did not train"
    for key, weight in norms.items():  # per-layer LayerNorm gains start at 1
        assert not torch.equal(weight, torch.ones_like(weight)), f"{key} did not train"


def test_stage2_restores_the_adapter_bit_exactly(runs):
    from llava.model import LlavaLlamaForCausalLM

    import llava_patch

    saved = torch.load(runs.adapter, map_location="cpu")
    llava_patch.apply()
    try:
        model = LlavaLlamaForCausalLM.from_pretrained(runs.base)
        args = SimpleNamespace(
            vision_tower="tiny-comm",
            mm_vision_select_layer=-2,
            mm_vision_select_feature="patch",
            pretrain_mm_mlp_adapter=str(runs.adapter),
            mm_patch_merge_type="flat",
            mm_projector_type="mlp2x_gelu",
        )
        model.get_model().initialize_vision_modules(
            model_args=args
        )  # the call `--pretrain_mm_mlp_adapter` makes
    finally:
        llava_patch.remove()
    restored = model.get_model().mm_projector.state_dict()
    assert set(restored) == {k.removeprefix(PREFIX) for k in saved}
    for key, value in saved.items():
        assert torch.equal(restored[key.removeprefix(PREFIX)], value), key

    # The stage-2 run started from that adapter: 3 steps at lr 2e-5 move it by about 6e-5 at most.
    from safetensors.torch import load_file

    final = load_file(runs.stage2 / "model.safetensors")
    for key, value in saved.items():
        assert (final[key] - value).abs().max() < 1e-3, key


def _prompt(tokenizer, question: str) -> torch.Tensor:
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


def test_load_pretrained_model_rebuilds_comm_llava_and_generates(runs, monkeypatch):
    from llava.mm_utils import get_model_name_from_path, process_images
    from llava.model.builder import load_pretrained_model
    from safetensors.torch import load_file

    import llava_patch
    from comm_tower import CommVisionTower

    monkeypatch.setenv("COMM_TINY_DIR", runs.env["COMM_TINY_DIR"])
    llava_patch.apply()
    try:
        name = get_model_name_from_path(str(runs.stage2))
        tokenizer, model, processor, _ = load_pretrained_model(
            str(runs.stage2), None, name, device_map="cpu", device="cpu"
        )
    finally:
        llava_patch.remove()
    tower = model.get_vision_tower()
    assert isinstance(tower, CommVisionTower) and tower.is_loaded
    saved = load_file(runs.stage2 / "model.safetensors")
    for key, value in model.get_model().mm_projector.state_dict().items():
        assert torch.equal(value, saved[PREFIX + key].to(value.dtype)), key

    image = draw("red", "circle")
    pixels = process_images([image], processor, model.config).to(model.dtype)
    ids = _prompt(tokenizer, "What colour is the shape?")
    with torch.inference_mode():
        first = model.generate(
            ids, images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=1
        )
        logits = model(ids, images=pixels, image_sizes=[image.size]).logits[0, -1]
        other = process_images([draw("blue", "square")], processor, model.config).to(model.dtype)
        other_logits = model(ids, images=other, image_sizes=[image.size]).logits[0, -1]
        longer = model.generate(
            ids, images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=4
        )
    assert first[0, -1].item() == logits.argmax().item()  # greedy: the argmax of a plain forward pass
    assert not torch.equal(logits, other_logits)  # the picture reaches the LLM through tower and projector
    assert longer[0, : first.shape[1]].tolist() == first[0].tolist() and longer.shape[1] > first.shape[1]


def test_cli_chat_answers_about_an_image(runs):
    image = runs.root / "question.png"
    draw("green", "square").save(image)
    args = ["--model-path", str(runs.stage2), "--image-file", str(image), "--device", "cpu"]
    args += ["--temperature", "0", "--max-new-tokens", "4", "--conv-mode", "vicuna_v1"]
    proc = run_launcher("llava_patch.launch.cli", args, runs.env, runs.root, stdin="What colour is it?\n")
    assert "ASSISTANT:" in proc.stdout and "exit..." in proc.stdout
    assert "building COMM tower" in proc.stderr


def test_config_records_the_comm_spec_for_reloading(runs):
    config = json.loads((runs.stage2 / "config.json").read_text())
    assert config["mm_vision_tower"] == "tiny-comm"
    assert config["mm_hidden_size"] == sum(
        len(e["layers"]) * e["width"] for e in config["mm_comm"]["encoders"]
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(module: str, args: list[str], runs: SimpleNamespace, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=runs.env,
            cwd=runs.root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _wait_for(what: str, probe, procs: list[tuple[subprocess.Popen, Path]], timeout: float = 120):
    """Poll `probe()` until it returns a truthy value; fail early if a server process died."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        for proc, log in procs:
            assert proc.poll() is None, f"{log.name}: exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            value = probe()
            if value:
                return value
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{what} not ready after {timeout} s"
        time.sleep(1)


def test_model_worker_serves_through_llavas_controller(runs):
    import requests

    controller_port, worker_port = _free_port(), _free_port()
    controller = f"http://127.0.0.1:{controller_port}"
    worker_url = f"http://127.0.0.1:{worker_port}"
    procs = []
    try:
        log = runs.root / "controller.log"
        procs.append(
            (
                _start(
                    "llava.serve.controller",
                    ["--host", "127.0.0.1", "--port", str(controller_port)],
                    runs,
                    log,
                ),
                log,
            )
        )
        _wait_for("controller", lambda: requests.post(f"{controller}/list_models", timeout=5).ok, procs)
        args = ["--host", "127.0.0.1", "--port", str(worker_port), "--worker-address", worker_url]
        args += ["--controller-address", controller, "--model-path", str(runs.stage2), "--device", "cpu"]
        log = runs.root / "worker.log"
        procs.append((_start("llava_patch.launch.model_worker", args, runs, log), log))
        name = runs.stage2.name
        listed = lambda: name in requests.post(f"{controller}/list_models", timeout=5).json()["models"]  # noqa: E731
        _wait_for("worker registration", listed, procs)
        address = requests.post(f"{controller}/get_worker_address", json={"model": name}, timeout=5).json()
        assert address["address"] == worker_url
        # LLaVA's worker registers before its HTTP server listens: wait for the server itself
        _wait_for(
            "worker server", lambda: requests.post(f"{worker_url}/worker_get_status", timeout=5).ok, procs
        )

        buffer = io.BytesIO()
        draw("yellow", "circle").save(buffer, format="PNG")
        params = {
            "model": name,
            "prompt": "USER: <image>\nWhat colour is the shape? ASSISTANT:",
            "images": [base64.b64encode(buffer.getvalue()).decode()],
            "temperature": 0,
            "max_new_tokens": 4,
            "stop": "</s>",
        }
        reply = requests.post(f"{worker_url}/worker_generate_stream", json=params, timeout=60)
        chunks = [json.loads(c) for c in reply.content.split(b"\0") if c.strip()]
        assert chunks and all(c["error_code"] == 0 for c in chunks), chunks[-1:]
        assert chunks[-1]["text"].startswith(params["prompt"])  # the worker streams prompt + answer
        assert "building COMM tower" in (runs.root / "worker.log").read_text()
    finally:
        for proc, _ in procs:
            _stop(proc)


CPU_OVERRIDES = (  # GPU-only flags of the LLaVA-1.5 scripts, and a 2-step run; later flags win. No
    # --use_cpu: with it accelerate leaves DeepSpeed out; without it, and without a GPU, DeepSpeed runs over gloo
    "--bf16 False --tf32 False --max_steps 2 --per_device_train_batch_size 2 "
    "--save_strategy no --dataloader_num_workers 0 --report_to none --model_max_length 256"
)


def _script_env(runs: SimpleNamespace, **values: str) -> dict[str, str]:
    env = dict(runs.env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{runs.env['PATH']}")
    env.update(MODEL=str(runs.base), VISION_TOWER="tiny-comm", IMAGE_FOLDER=str(runs.data["images"]))
    env.update(
        LAUNCHER=str(REPO_ROOT / "llava_patch/launch/train.py"), EXTRA_ARGS=CPU_OVERRIDES
    )  # no flash-attn
    env.update(values)
    return env


def test_pretrain_script_runs_llava_train_under_the_deepspeed_launcher(runs):
    """scripts/llava/pretrain.sh: `deepspeed <launcher file> --deepspeed zero2.json ...`, as LLaVA's script.

    The launcher is llava_patch/launch/train.py plus one log line saying what LLaVA's trainer trained in: a
    DeepSpeed engine under zero2.json (no `--use_cpu`: with it accelerate leaves DeepSpeed out; without a GPU
    DeepSpeed runs over gloo).
    """
    out = runs.root / "stage1-script"
    env = _script_env(
        runs,
        LAUNCHER=str(REPO_ROOT / "tests/_llava_engine_probe.py"),
        DATA_PATH=str(runs.data["stage1"]),
        OUTPUT_DIR=str(out),
        DEEPSPEED_ARGS=f"--num_gpus 1 --master_port {_free_port()}",
    )
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/llava/pretrain.sh")],
        env=env, cwd=runs.root, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "--local_rank=0" in proc.stdout + proc.stderr and len(losses(proc)) == 2
    log = proc.stdout + proc.stderr
    assert "trained in DeepSpeedEngine, ZeRO stage 2, world size 1" in log, log[-4000:]
    saved, reference = torch.load(out / "mm_projector.bin"), torch.load(runs.adapter)
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in reference.items()}


@pytest.mark.parametrize("script", ["pretrain.sh", "finetune.sh"])
def test_llava15_scripts_pass_llavas_own_argument_parser(runs, script):
    """Every flag of both scripts is one LLaVA's `train()` accepts, with `--vision_tower comm`."""
    import argparse
    import shlex

    import transformers
    from llava.train.train import DataArguments, ModelArguments, TrainingArguments

    env = dict(runs.env, DRY_RUN="1")
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/llava" / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    assert argv[0] == "deepspeed" and argv[1].endswith("llava_patch/launch/train_mem.py")
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    namespace = argparse.ArgumentParser.parse_args(parser, argv[2:])  # flags and types, no GPU checks
    assert namespace.vision_tower == "comm" and Path(namespace.deepspeed).is_file()
    if script == "finetune.sh":
        assert namespace.pretrain_mm_mlp_adapter.endswith("-comm-pretrain/mm_projector.bin")
