"""LLaVA 1.2.2's own `train()` under its ZeRO-3 config on CPU: stock CLIP first, then `--vision_tower comm`.

LLaVA-1.5's stage 2 (`finetune.sh`: `--deepspeed zero3.json`, from a stage-1 `mm_projector.bin`) with 2
processes over gloo, through `tests/_llava_zero3_probe.py`. Each tower must train under a DeepSpeed engine
with its parameters partitioned, and afterwards give the same features on both ranks as the tower loaded
whole in this process; the saved checkpoint holds the whole tower. docs/llava.md, "ZeRO-3".

Two settings differ from a GPU run, both outside LLaVA's code: no `--use_cpu` (accelerate uses DeepSpeed only
when not told CPU; without a GPU it picks gloo), and the probe's no-op `torch.cuda.synchronize`.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("llava", reason="LLaVA is not installed: run in .venv-llava (docs/llava.md)")

from _llava_helpers import (
    REPO_ROOT,
    build_tiny_llama,
    build_tiny_openai_clip,
    llava_env,
    train_args,
    write_dataset,
)
from _llava_zero3_probe import fixed_pixels

pytestmark = pytest.mark.llava

LLAVA_ZERO3 = REPO_ROOT / "scripts" / "llava" / "zero3.json"  # LLaVA 1.2.2's scripts/zero3.json settings
TOWER_PREFIX = "model.vision_tower."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zero3_config(out: Path, hidden_size: int) -> Path:
    """LLaVA's zero3.json with `stage3_prefetch_bucket_size` as the integer transformers 4.37 would fill in.

    For `auto` it writes 0.9 * hidden_size**2, a float (3686.4 here, 15099494.4 for a 4096-wide LLM), which
    DeepSpeed 0.19 refuses (`Input should be a valid integer, got a number with a fractional part`).
    """
    config = json.loads(LLAVA_ZERO3.read_text())
    config["zero_optimization"]["stage3_prefetch_bucket_size"] = int(0.9 * hidden_size**2)
    out.write_text(json.dumps(config))
    return out


def extensions_dir() -> str:
    """Where DeepSpeed JIT-builds its CPU shared-memory op (once, about a minute): one folder per venv.

    The default `~/.cache/torch_extensions/py311_cpu` is shared by every venv with the same Python and torch,
    and each venv's DeepSpeed sources are at other paths, so two venvs would rebuild it for each other.
    """
    default = Path.home() / ".cache" / "torch_extensions" / Path(sys.prefix).name
    return os.environ.get("TORCH_EXTENSIONS_DIR", str(default))


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


def _two_stages(root: Path, base: Path, data: dict, tower: str, flavour: str, env: dict) -> SimpleNamespace:
    """Stage 1 in one process (no DeepSpeed), stage 2 under ZeRO-3 in two; `flavour` is stock or comm."""
    stage1, stage2 = root / f"{flavour}-stage1", root / f"{flavour}-stage2"
    runner = ["-m", "llava.train.train"] if flavour == "stock" else ["-m", "llava_patch.launch.train"]

    def flags(out: Path, stage: int, adapter: Path | None = None) -> list[str]:
        args = train_args(base, data, out, stage, adapter)
        args[args.index("--vision_tower") + 1] = tower
        return args

    _run([sys.executable, *runner, *flags(stage1, 1)], env, root)
    adapter = stage1 / "mm_projector.bin"
    args = flags(stage2, 2, adapter)
    del args[args.index("--use_cpu") : args.index("--use_cpu") + 2]  # with it accelerate leaves DeepSpeed out
    args += ["--deepspeed", str(zero3_config(root / "zero3.json", hidden_size=64))]
    probe = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    probe += ["--master_port", str(_free_port()), str(REPO_ROOT / "tests" / "_llava_zero3_probe.py")]
    log = _run([*probe, str(root / flavour), flavour, *args], env, root)
    ranks = [torch.load(root / f"{flavour}.rank{r}.pt") for r in range(2)]
    return SimpleNamespace(adapter=adapter, out=stage2, log=log, ranks=ranks)


@pytest.fixture(scope="module")
def setup(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    import accelerate
    from packaging.version import Version

    if Version(accelerate.__version__) < Version("0.34"):  # constraints/llava.txt
        pytest.fail(
            f"accelerate {accelerate.__version__} starts DeepSpeed over NCCL only: rebuild .venv-llava"
        )
    root = tmp_path_factory.mktemp("llava-zero3")
    return SimpleNamespace(
        root=root,
        base=build_tiny_llama(root / "tiny-llama"),
        clip=build_tiny_openai_clip(root),
        data=write_dataset(root / "data"),
        env=dict(llava_env(tiny_dir), TORCH_EXTENSIONS_DIR=extensions_dir()),
    )


@pytest.fixture(scope="module")
def stock(setup) -> SimpleNamespace:
    """Stock LLaVA: its own module, the stock CLIP tower (an existing folder: LLaVA's CLIP branch), no patch."""
    env = dict(setup.env, COMM_LLAVA_PATCH="0")  # the start-up hook, if installed, stays off
    return _two_stages(setup.root, setup.base, setup.data, str(setup.clip), "stock", env)


@pytest.fixture(scope="module")
def comm(setup, stock) -> SimpleNamespace:  # after the stock run: COMM is measured against it
    return _two_stages(setup.root, setup.base, setup.data, "tiny-comm", "comm", setup.env)


def _stock_clip_tower(folder: Path) -> torch.nn.Module:
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    args = SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="patch")
    return CLIPVisionTower(str(folder), args=args)


def _comm_tower() -> torch.nn.Module:
    from comm_tower import build_vision_tower

    return build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"))


def _check_zero3_run(run: SimpleNamespace, whole: torch.nn.Module) -> None:
    losses = [float(x) for x in re.findall(r"'loss': ([-\d.e+naif]+)", run.log)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    for record in run.ranks:
        assert record["engine"] == "DeepSpeedEngine" and record["world"] == 2, record
        # every tower parameter is a ZeRO-3 parameter; outside a gather this rank holds only shards of some
        assert record["zero"] == record["count"] > 0 and record["empty"] > 0, record
    first, second = (r["features"] for r in run.ranks)
    assert torch.equal(first, second)
    # LLaVA's train() casts the tower to fp16 (no --bf16); a tower loaded as shards (stock CLIP under
    # zero.Init) keeps its fp32 shards, one built whole (COMM) is cast before DeepSpeed partitions it
    dtype = getattr(torch, run.ranks[0]["dtype"])
    whole = whole.eval().to(dtype)
    with torch.no_grad():
        expected = whole(fixed_pixels(whole.config.image_size).to(dtype))
    torch.testing.assert_close(first, expected, rtol=1e-3, atol=1e-3)

    from safetensors.torch import load_file

    saved = load_file(run.out / "model.safetensors")
    tower = {k.removeprefix(TOWER_PREFIX): v for k, v in saved.items() if k.startswith(TOWER_PREFIX)}
    reference = whole.state_dict()
    assert tower.keys() == reference.keys()
    for key, value in reference.items():  # gathered on save: no weight lost or left as a shard
        assert torch.equal(tower[key], value), key
    adapter = torch.load(run.adapter, map_location="cpu")  # stage 2 started from stage 1's projector
    assert adapter and all((saved[k].float() - v).abs().max() < 1e-3 for k, v in adapter.items())


def test_stock_clip_trains_under_llavas_zero3(stock, setup):
    _check_zero3_run(stock, _stock_clip_tower(setup.clip))


def test_comm_trains_under_llavas_zero3_with_the_tower_intact_on_every_rank(comm):
    assert "building COMM tower" in comm.log
    _check_zero3_run(comm, _comm_tower())


def test_stock_llava_full_save_under_deepspeed_calls_cuda(tmp_path):
    """Why the probe stands in for `torch.cuda.synchronize`: LLaVA's stage-2 save calls it under DeepSpeed."""
    from llava.train.train import safe_save_model_for_hf_trainer

    trainer = SimpleNamespace(args=SimpleNamespace(tune_mm_mlp_adapter=False), deepspeed=object())
    with pytest.raises(AssertionError, match="Torch not compiled with CUDA enabled"):
        safe_save_model_for_hf_trainer(trainer, str(tmp_path))
