"""LLaVA-1.5's ZeRO-3 stage 2 with a COMM tower, on the path that runs on CPU: `comm-train` with LLaVA's own
`zero3.json` settings (scripts/llava/zero3.json), LLaVA's JSON data and LLaVA's training flags, 2 processes
over gloo, from a stage-1 `mm_projector.bin`. LLaVA 1.2.2's own `train()` stops under ZeRO-3 on CPU with
the stock CLIP tower (tests/test_llava_zero3.py); docs/llava.md, "ZeRO-3".

After training, every rank runs the (partitioned) tower on the same pixels (tests/_zero3_probe.py); the
features must agree across ranks and with the tower loaded whole in this process.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _llava_helpers import REPO_ROOT, llava_env, train_args, write_dataset
from _zero3_probe import fixed_pixels
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import comm_tower.model  # noqa: F401 - registers comm_llava with the Auto classes
from comm_tower import build_vision_tower
from comm_tower.zoo.tiny_lm import build_tiny_llama

pytestmark = pytest.mark.slow
ZERO3 = REPO_ROOT / "scripts" / "llava" / "zero3.json"
TOWER = "tiny-comm"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _comm_train(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc


def _args(base: Path, data: dict[str, Path], out: Path, stage: int, adapter: Path | None = None) -> list[str]:
    args = train_args(base, data, out, stage, adapter)  # LLaVA-1.5's flags, shrunk to 3 CPU steps
    args[args.index("--vision_tower") + 1] = TOWER
    return args


@pytest.fixture(scope="module")
def run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("zero3")
    base = build_tiny_llama(root / "llm")
    data = write_dataset(root / "data")
    env = llava_env(tiny_dir)
    stage1, stage2 = root / "stage1", root / "stage2"
    _comm_train([sys.executable, "-m", "comm_tower.train", *_args(base, data, stage1, 1)], env, root)
    adapter = stage1 / "mm_projector.bin"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_port", str(_free_port()), str(REPO_ROOT / "tests" / "_zero3_probe.py")]
    argv = [*launcher, str(root / "probe"), *_args(base, data, stage2, 2, adapter), "--deepspeed", str(ZERO3)]
    log = _comm_train(argv, env, root)
    ranks = [torch.load(root / f"probe.rank{r}.pt", weights_only=True) for r in range(2)]
    return SimpleNamespace(adapter=adapter, out=stage2, log=log.stdout + log.stderr, ranks=ranks)


@pytest.fixture(scope="module")
def whole_tower(run):
    """The tower loaded in one process, no DeepSpeed: the reference for every rank."""
    tower = build_vision_tower(SimpleNamespace(mm_vision_tower=TOWER))
    return tower.eval()


def test_stage2_trains_two_partitioned_ranks_from_the_stage1_adapter(run):
    for record in run.ranks:
        assert record["world"] == 2
        # every tower parameter is a ZeRO-3 parameter and (outside a gather) this rank holds shards only
        assert record["zero"] == record["count"] > 0 and record["empty"] > 0, record
    state = json.loads((run.out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    # stage 2 started from the adapter: 3 steps at lr 2e-5 move it by about 6e-5 at most
    saved, final = torch.load(run.adapter, weights_only=True), load_file(run.out / "model.safetensors")
    assert saved and all((final[k] - v).abs().max() < 1e-3 for k, v in saved.items())


def test_tower_features_agree_across_ranks_and_with_a_whole_load(run, whole_tower):
    first, second = (r["features"] for r in run.ranks)
    assert torch.equal(first, second)
    with torch.no_grad():
        expected = whole_tower(fixed_pixels(whole_tower.config.image_size))
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-6)


def test_saved_tower_equals_the_encoders_on_disk(run, whole_tower):
    """ZeRO-3 gathers the shards on save (stage3_gather_16bit_weights_on_model_save): no weight is lost.
    The reload takes the tower's weights from the saved checkpoint, not from the encoder folders."""
    reloaded = AutoModelForCausalLM.from_pretrained(run.out).get_vision_tower().state_dict()
    reference = whole_tower.state_dict()
    assert reloaded.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(reloaded[key], value), key
