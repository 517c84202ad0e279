"""Stock LLaVA 1.2.2 (stock CLIP tower, no COMM, no patch) under its own ZeRO-3 config on CPU: it stops.

The stage-2 command of LLaVA-1.5's `finetune.sh` (`--deepspeed zero3.json`, from a stage-1 `mm_projector.bin`)
with 2 processes over gloo, run with LLaVA's own `llava/train/train.py`. It fails while loading the LLM,
before any vision tower exists, so a COMM tower cannot get further; the path that does run ZeRO-3 with a
COMM tower, LLaVA's data and flags is `comm-train` (tests/test_train_llava_zero3.py). docs/llava.md, "ZeRO-3".
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("llava", reason="LLaVA is not installed: run in .venv-llava (docs/llava.md)")

from _llava_helpers import (
    REPO_ROOT,
    build_tiny_llama,
    build_tiny_openai_clip,
    llava_env,
    train_args,
    write_dataset,
)

pytestmark = pytest.mark.llava

ZERO3 = REPO_ROOT / "scripts" / "llava" / "zero3.json"  # LLaVA 1.2.2's scripts/zero3.json settings
# DeepSpeed's batch check, with the world size it sees: 1 (its communication was never set up), not 2
WORLD_OF_ONE = (
    "train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 4 != 2 * 1 * 1"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stock(tower: Path, args: list[str]) -> list[str]:
    """LLaVA's arguments with the stock CLIP folder as `--vision_tower` (LLaVA sends existing paths to CLIP)."""
    args = list(args)
    args[args.index("--vision_tower") + 1] = str(tower)
    return args


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Stage 1 with LLaVA's own train.py in one process, then stage 2 under ZeRO-3 in two."""
    root = tmp_path_factory.mktemp("llava-zero3")
    base = build_tiny_llama(root / "tiny-llama")
    clip = build_tiny_openai_clip(root)
    data = write_dataset(root / "data")
    env = dict(llava_env(root), COMM_LLAVA_PATCH="0")  # stock LLaVA: the start-up hook, if installed, is off
    stage1 = subprocess.run(
        [sys.executable, "-m", "llava.train.train", *_stock(clip, train_args(base, data, root / "s1", 1))],
        env=env, cwd=root, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert stage1.returncode == 0, stage1.stderr[-4000:]
    adapter = root / "s1" / "mm_projector.bin"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_port", str(_free_port()), "-m", "llava.train.train"]
    stage2_args = _stock(clip, train_args(base, data, root / "s2", 2, adapter))
    stage2 = subprocess.run(
        [*launcher, *stage2_args, "--deepspeed", str(ZERO3)],
        env=env, cwd=root, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    return SimpleNamespace(adapter=adapter, stage2=stage2, out=root / "s2")


def test_stock_llava_stage1_writes_the_adapter_stage2_starts_from(stock):
    import torch

    saved = torch.load(stock.adapter, map_location="cpu")
    assert saved and all(k.startswith("model.mm_projector.") for k in saved)


def test_stock_llava_zero3_on_cpu_stops_loading_the_llm(stock):
    """`--use_cpu`: accelerate 0.27 sets up gloo but not DeepSpeed's communication, and transformers still
    loads the LLM inside `deepspeed.zero.Init`, whose config check then sees a world of one process."""
    log = stock.stage2.stdout + stock.stage2.stderr
    assert stock.stage2.returncode != 0, log[-4000:]
    assert WORLD_OF_ONE in log, log[-4000:]
    assert "LlavaLlamaForCausalLM.from_pretrained(" in log and "deepspeed.zero.Init(" in log
    assert not (stock.out / "config.json").exists()  # nothing was trained or saved


def test_stock_llava_full_save_under_deepspeed_needs_cuda(tmp_path):
    """Past training, stage 2 saves through `torch.cuda.synchronize()` whenever DeepSpeed is on."""
    from llava.train.train import safe_save_model_for_hf_trainer

    trainer = SimpleNamespace(args=SimpleNamespace(tune_mm_mlp_adapter=False), deepspeed=object())
    with pytest.raises(AssertionError, match="Torch not compiled with CUDA enabled"):
        safe_save_model_for_hf_trainer(trainer, str(tmp_path))
