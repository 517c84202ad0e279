"""LLaVA's known half-precision traps, one test each, named after the LLaVA issue; each fails on its bug.

- #829: image features in fp32 meet a 4-bit LLM computing in fp16/bf16 (dtype mismatch at the splice).
- #1712: a LayerNorm left in fp32 under QLoRA while the rest of its module runs in bf16.
- #1516: tensors on the wrong device (features on the tower's device, not the LLM's); simulated on CPU with
  the LLM on the 'meta' device.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _half_helpers import make_data, run_train
from _serve_helpers import random_checkpoint
from transformers import AutoModelForCausalLM

from comm_tower.constants import IMAGE_TOKEN_INDEX
from comm_tower.model import assemble_model
from comm_tower.model.assembly import LoadOptions
from comm_tower.train.arguments import ModelArguments, TrainingArguments
from comm_tower.train.cli import build_model
from comm_tower.train.freeze import apply_plan, plan_for
from comm_tower.train.lora import add_lora
from comm_tower.zoo.tiny_lm import build_tiny_llama

IDS = torch.tensor([[1, 17, IMAGE_TOKEN_INDEX, 30, 41, 52]])
HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(scope="module")
def llm(tiny_dir, tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("llm"))


def _pixels(size: int) -> torch.Tensor:
    """fp32 pixels, as every image processor returns them."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("half", list(HALF))
def test_llava_829_fp32_image_features_meet_a_4bit_llm_computing_in_half(llm, half):
    dtype = HALF[half]
    load = LoadOptions(dtype=dtype, device_map="cpu", bits=4)
    model = assemble_model(str(llm), "tiny-comm", "linear", load=load).eval()
    model.get_model().float()  # tower and projector left in fp32, as LLaVA's builder leaves them
    emb_dtype = model.get_input_embeddings().weight.dtype
    assert emb_dtype == dtype
    seen: set[torch.dtype] = set()

    def record(_module, _args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            seen.add(kwargs["inputs_embeds"].dtype)

    model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    pixels = _pixels(model.get_vision_tower().image_size)
    with torch.no_grad():
        logits = model(input_ids=IDS, images=pixels).logits
        first = model.generate(IDS, images=pixels, max_new_tokens=2, do_sample=False)
    # the LLM receives the spliced sequence in its own dtype: the fp32 features were cast at the splice
    assert seen == {dtype}
    assert torch.isfinite(logits).all() and first.shape == (1, 2)
    # and the same model with tower and projector in the LLM's dtype agrees, to half precision: the
    # logits of this tiny model stay below 1 in size, so 4 units of the format's last place at 1.0 bound it
    model.get_model().to(dtype)
    with torch.no_grad():
        same_dtype = model(input_ids=IDS, images=pixels).logits
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(logits.float(), same_dtype.float(), rtol=0, atol=4 * eps)


def _qlora_bf16(margs: ModelArguments, out: Path) -> torch.nn.Module:
    """The QLoRA model exactly as comm-train builds it (--bits 4 --lora_enable True --bf16 True)."""
    targs = TrainingArguments(
        output_dir=str(out), use_cpu=True, report_to=[], bits=4, lora_enable=True, bf16=True
    )
    model = add_lora(build_model(margs, targs), r=4, alpha=8, dropout=0.0, bias="none", quantized=True)
    apply_plan(model, plan_for(False, False, False, True))
    return model


@pytest.mark.parametrize("start", ["llm+adapter", "comm_llava"])
def test_llava_1712_no_layernorm_left_in_fp32_under_qlora(llm, start, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    if start == "comm_llava":
        torch.manual_seed(0)
        margs = ModelArguments(model_name_or_path=str(random_checkpoint(llm, tmp_path / "c", "tiny-comm")))
    else:
        data = make_data(tmp_path / "data", n=2)
        stage1 = [
            *("--output_dir", str(tmp_path / "s1"), "--use_cpu", "True", "--max_steps", "1", "--report_to"),
            *("none", "--save_strategy", "no", "--model_name_or_path", str(llm), "--version", "plain"),
            *(
                "--vision_tower",
                "tiny-comm",
                "--mm_projector_type",
                "linear",
                "--tune_mm_mlp_adapter",
                "True",
            ),
            *("--data_path", str(data["caption"]), "--image_folder", str(data["images"])),
            *("--per_device_train_batch_size", "2", "--dataloader_num_workers", "0"),
        ]
        run_train(stage1, monkeypatch)
        margs = ModelArguments(
            model_name_or_path=str(llm),
            vision_tower="tiny-comm",
            mm_projector_type="linear",
            pretrain_mm_mlp_adapter=str(tmp_path / "s1" / "mm_projector.bin"),
        )
    model = _qlora_bf16(margs, tmp_path / "out")
    inner = model.base_model.model
    four_bit = [m for m in inner.language_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and {m.compute_dtype for m in four_bit} == {torch.bfloat16}  # bnb_4bit_compute_dtype
    for part in (inner.get_vision_tower(), inner.get_model().mm_projector):
        norms = {n: m.weight.dtype for n, m in part.named_modules() if isinstance(m, torch.nn.LayerNorm)}
        assert all(d == torch.bfloat16 for d in norms.values()), {
            n: d for n, d in norms.items() if d != torch.bfloat16
        }
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
    # one step without autocast (DeepSpeed's bf16 runs none): finite loss, every LoRA and projector weight
    # gets a finite gradient
    model.train()
    pixels = _pixels(inner.get_vision_tower().image_size)
    loss = model(input_ids=IDS, images=pixels, labels=IDS.clamp(min=0)).loss
    loss.backward()
    assert torch.isfinite(loss)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("mm_projector" in n for n in trainable)
    missing = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_llava_1516_features_reach_the_llm_on_its_device_and_dtype(llm):
    model = assemble_model(AutoModelForCausalLM.from_pretrained(llm), "tiny-comm", "linear").eval()
    # the LLM on another device than the tower and projector (CPU); 'meta' stands in for a second GPU
    model.language_model.to(device="meta", dtype=torch.bfloat16)
    pixels = _pixels(model.get_vision_tower().image_size).double()  # not the tower's dtype either
    with torch.no_grad():
        feats = model.encode_images(pixels)
    assert (feats.device.type, feats.dtype) == ("meta", torch.bfloat16)
    assert feats.shape == (1, model.get_vision_tower().num_patches, model.config.text_config.hidden_size)
