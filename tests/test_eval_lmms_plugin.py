"""lmms-eval plugin: discovered through the `lmms_eval.models` entry point, answers lmms-eval requests.

Needs lmms-eval (`pip install lmms-eval`; without it these tests are skipped). Discovery is tested the way
lmms-eval resolves plugins: a temporary `*.dist-info` with an `entry_points.txt` (what `pip install` of
setup.py's entry_points writes) is put on sys.path and lmms-eval's own registry loads it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install lmms-eval)")
from lmms_eval.api.instance import Instance  # noqa: E402

from comm_tower.inference.generation import GenerationConfig, generate_batch, pixel_values  # noqa: E402
from comm_tower.inference.prompts import ChatFormat  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINT = "comm = comm_tower.eval.lmms_plugin:manifest"


def _fake_install(folder: Path) -> Path:
    dist = folder / "comm_tower-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: comm-tower\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text(f"[lmms_eval.models]\n{ENTRY_POINT}\n")
    return folder


def test_lmms_eval_discovers_the_plugin(tmp_path):
    site = _fake_install(tmp_path / "site")
    code = (
        "import lmms_eval.models as m\n"
        "from comm_tower.eval.lmms_plugin import CommLmms\n"
        "assert 'comm' in m.list_available_models(), 'comm not listed'\n"
        "assert m.get_model('comm') is CommLmms\n"
        "print('found', m.get_model('comm').__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "found CommLmms" in done.stdout


@pytest.fixture(scope="module")
def plugin(tiny_dir, tmp_path_factory):
    """The plugin as lmms-eval builds it: `create_from_arg_string` with `--model_args`."""
    from _serve_helpers import random_checkpoint

    from comm_tower.eval.lmms_plugin import CommLmms
    from comm_tower.zoo.tiny_lm import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny_comm_lmms")
    random_checkpoint(build_tiny_llama(root / "lm"), root / "model")
    lm = CommLmms.create_from_arg_string(f"pretrained={root / 'model'},device=cpu,max_new_tokens=4")
    image = Image.new("RGB", (90, 60), (200, 30, 30))
    docs = [
        {"image": image, "question": "What colour is it?", "answer": "red"},
        {"image": Image.new("RGB", (50, 70), (20, 200, 30)), "question": "q", "answer": "green"},
        {"image": None, "question": "q", "answer": "none"},
    ]
    lm.task_dict = {"toy": {"test": docs}}
    return lm


def _req(kind, args):
    return Instance(
        request_type=kind, arguments=args, idx=0, metadata={"task": "toy", "doc_id": 0, "repeats": 1}
    )


def _visual(doc):
    return [doc["image"]]


def test_generate_until_matches_comm_eval(plugin):
    out = plugin.generate_until(
        [_req("generate_until", ("What colour is it?", {"until": []}, _visual, 0, "toy", "test"))]
    )
    assert isinstance(out[0], str)
    image = plugin.task_dict["toy"]["test"][0]["image"]
    ids = ChatFormat("vicuna_v1").question_ids("What colour is it?", plugin.tokenizer, with_image=True)
    px = pixel_values(image, plugin.image_processor, "pad")
    direct = generate_batch(plugin.model, plugin.tokenizer, [ids], [px], [image.size], GenerationConfig(4))
    assert out == direct


def test_loglikelihood_matches_the_model_loss(plugin):
    ((logprob, greedy),) = plugin.loglikelihood(
        [_req("loglikelihood", ("What colour is it?", " red", _visual, 0, "toy", "test"))]
    )
    tok = plugin.tokenizer
    ctx = ChatFormat("vicuna_v1").question_ids("What colour is it?", tok, with_image=True)
    cont = tok(" red", add_special_tokens=False)["input_ids"]
    image = plugin.task_dict["toy"]["test"][0]["image"]
    px = pixel_values(image, plugin.image_processor, "pad")[None]
    ids = torch.tensor([ctx + cont])
    labels = torch.tensor([[-100] * len(ctx) + cont])
    with torch.no_grad():
        loss = plugin.model(input_ids=ids, images=px, labels=labels).loss  # mean NLL over the continuation
    assert logprob == pytest.approx(-loss.item() * len(cont), rel=1e-4)
    assert isinstance(greedy, bool)


def test_generate_until_multi_round(plugin):
    calls = []

    def doc_to_text(doc, previous_output, round_idx, previous_round_info):
        calls.append(round_idx)
        terminal = round_idx >= 2
        return [doc["image"]], f"Round {round_idx}: and now?", terminal, previous_output, {"n": round_idx}

    args = ("What colour is it?", {"until": []}, _visual, doc_to_text, 0, "toy", "test")
    (rounds,) = plugin.generate_until_multi_round([_req("generate_until_multi_round", args)])
    assert len(rounds) == 2 and all(isinstance(r, str) for r in rounds)
    assert calls == [1, 2]
    first = plugin.generate_until(
        [_req("generate_until", ("What colour is it?", {"until": []}, _visual, 0, "toy", "test"))]
    )
    assert rounds[0] == first[0]


def test_batched_requests_equal_one_by_one(plugin):
    def visual(doc):
        return [doc["image"]] if doc["image"] is not None else []

    contexts = ["What colour is it?", "Which shape is this object?", "Say something."]
    reqs = [
        _req("generate_until", (c, {"until": []}, visual, k, "toy", "test")) for k, c in enumerate(contexts)
    ]
    one_by_one = [plugin.generate_until([r])[0] for r in reqs]
    plugin.batch_size = 2
    try:
        batched = plugin.generate_until(reqs)
    finally:
        plugin.batch_size = 1
    assert batched == one_by_one
