"""Two nodes simulated on one machine: scripts/finetune.sh (ZeRO-3, stage 2) through DeepSpeed's launcher with a
hostfile, one launcher per node (`HOSTFILE NUM_NODES=2 NODE_RANK=<r> MASTER_ADDR=127.0.0.1`), one process each,
against the single-node 2-process run of the same script: the same loss curve."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_scripts import losses, make_data

from comm_tower.model import assemble_model
from comm_tower.zoo.tiny import ensure_tiny_encoders
from comm_tower.zoo.tiny_lm import build_tiny_llama

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def stage2_env(root: Path, out: Path, port: int, **launch: str) -> dict[str, str]:
    """finetune.sh's settings for a tiny CPU stage 2 (global batch 4 = 2 processes x 2), plus `launch`."""
    venv_bin = str(Path(sys.executable).parent)  # the `deepspeed` launcher of this interpreter
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",
        "PYTHON": sys.executable,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "MODEL": str(root / "llm"),
        "DATA_PATH": str(root / "data" / "instruct.json"),
        "IMAGE_FOLDER": str(root / "data" / "images"),
        "PRETRAIN_ADAPTER": str(root / "mm_projector.bin"),
        "OUTPUT_DIR": str(out),
        "VISION_TOWER": "tiny-comm",
        "PROJECTOR": "linear",
        "BATCH": "2",
        "MAX_STEPS": str(STEPS),
        "LR": "1e-3",
        "MAX_LEN": "256",
        "WORKERS": "0",
        "SAVE_STEPS": "100",
        "PRECISION": "--bf16 False",
        "GRAD_CKPT": "False",
        "EXTRA_ARGS": "--use_cpu True",
        **launch,
    }


def start(env: dict[str, str], log: Path) -> subprocess.Popen:
    """scripts/finetune.sh in the background, its output in `log`."""
    with log.open("w") as f:
        return subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "finetune.sh")], cwd=ROOT, env=env, stdout=f, stderr=f
        )


def finish(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    """Wait for every launcher; on a failure or a hang kill them all and fail with each log's tail."""
    try:
        codes = [p.wait(timeout=400) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if codes is None or any(codes):
        tails = "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in logs)
        pytest.fail(f"finetune.sh exit codes {codes}:\n{tails}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same stage-2 run on one node with 2 processes and on 2 nodes with 1 process each."""
    root = tmp_path_factory.mktemp("multinode")
    ensure_tiny_encoders()
    build_tiny_llama(root / "llm")
    make_data(root / "data")
    torch.manual_seed(0)
    model = assemble_model(str(root / "llm"), "tiny-comm", "linear")
    state = model.model.mm_projector.state_dict()
    torch.save({f"model.mm_projector.{k}": v for k, v in state.items()}, root / "mm_projector.bin")
    hostfile = root / "hostfile"
    hostfile.write_text("node-1 slots=1\nnode-2 slots=1\n")

    # the two runs side by side (separate ports and folders): their start-up and shut-down waits overlap
    single = root / "single"
    logs = [root / "single.log", *(root / f"node{rank}.log" for rank in range(2))]
    procs = [start(stage2_env(root, single, 29641, LAUNCHER="torchrun", NUM_GPUS="2"), logs[0])]
    multi = root / "two_nodes"
    procs += [
        start(
            stage2_env(
                root,
                multi,
                29642,
                LAUNCHER="deepspeed",
                HOSTFILE=str(hostfile),
                NUM_NODES="2",
                NODE_RANK=str(rank),
            ),
            logs[1 + rank],
        )
        for rank in range(2)
    ]
    finish(procs, logs)
    return {"single": single, "multi": multi, "logs": logs[1:], "single_log": logs[0]}


def test_each_node_ran_one_process_of_a_two_node_world(runs):
    for rank, log in enumerate(runs["logs"]):
        text = log.read_text()
        assert f"nnodes=2, num_local_procs=1, node_rank={rank}" in text, text[-2000:]
        assert "dist_world_size=2" in text


def test_both_layouts_train_in_a_zero3_deepspeed_engine(runs):
    """The `--use_cpu True` of these runs must not make the Trainer leave DeepSpeed out: finetune.sh's zero3.json
    turns every parameter into a ZeRO-3 parameter, and outside a gather each rank holds only shards of some."""
    engine = (
        r"trained in DeepSpeedEngine, world size 2, ZeRO stage 3: (\d+) of (\d+) parameters partitioned, "
    )
    engine += r"(\d+) held here as empty shards"
    for log in [runs["single_log"], *runs["logs"]]:
        text = log.read_text()
        found = re.search(engine, text)
        assert found, text[-3000:]
        partitioned, total, shards = map(int, found.groups())
        assert partitioned == total and 0 < shards < total, found.group(0)


def test_two_nodes_give_the_single_node_loss_curve(runs):
    single, multi = losses(runs["single"]), losses(runs["multi"])
    assert len(single) == STEPS and single[-1] < single[0], single
    # Same world size (2), same rank -> sample mapping, same seed: every rank computes the same numbers in both
    # layouts, and a gloo sum over two ranks is a + b either way round (float addition commutes), so the curves
    # agree to the last bit; 1e-6 leaves room for a different reduction chunking, not for a different batch.
    assert multi == pytest.approx(single, rel=1e-6, abs=0)
    state = {
        name: json.loads((runs[name] / "trainer_state.json").read_text()) for name in ("single", "multi")
    }
    assert state["multi"]["epoch"] == state["single"]["epoch"]  # same global batch: same share of an epoch


def test_several_nodes_without_master_addr_stop_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MASTER_ADDR"}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "finetune.sh")],
        env={**env, "LAUNCHER": "torchrun", "NUM_NODES": "2", "NODE_RANK": "1", "PYTHON": "false"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "NUM_NODES=2: set MASTER_ADDR to the first node's address (every node must reach it)"
    )
