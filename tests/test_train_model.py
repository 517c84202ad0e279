"""The comm_llava model in one process: keys, save/reload, generate, freezing, LoRA placement, QLoRA, optimizer."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from comm_tower.constants import IMAGE_TOKEN_INDEX
from comm_tower.model import CommLlavaForCausalLM, assemble_model
from comm_tower.train.freeze import apply_plan, count_by_part, plan_for
from comm_tower.train.lora import add_lora, find_lora_targets
from comm_tower.zoo.tiny import ensure_tiny_encoders
from comm_tower.zoo.tiny_lm import build_tiny_llama


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    ensure_tiny_encoders()
    return build_tiny_llama(tmp_path_factory.mktemp("llm"))


def _model(llm_dir: Path, projector: str = "mlp2x_gelu") -> CommLlavaForCausalLM:
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir)
    return assemble_model(llm, "tiny-comm", projector).eval()


def _batch(model: CommLlavaForCausalLM) -> dict:
    g = torch.Generator().manual_seed(1)
    size = model.get_vision_tower().image_size
    ids = torch.tensor([[1, 17, IMAGE_TOKEN_INDEX, 30, 41, 52], [1, IMAGE_TOKEN_INDEX, 9, 12, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    return {"input_ids": ids, "attention_mask": mask, "images": torch.randn(2, 3, size, size, generator=g)}


def test_keys_follow_llava_layout(llm_dir):
    keys = list(_model(llm_dir).state_dict())
    proj = [k for k in keys if "mm_projector" in k]
    assert proj and all(k.startswith("model.mm_projector.") for k in proj)
    assert any(k.startswith("model.vision_tower.encoders.") for k in keys)
    assert all(k.startswith(("model.mm_projector.", "model.vision_tower.", "language_model.")) for k in keys)


def test_save_and_reload_gives_same_logits_and_keeps_changed_tower_weights(llm_dir, tmp_path):
    model = _model(llm_dir)
    enc_param = next(model.get_vision_tower().encoders[0].parameters())
    with torch.no_grad():
        enc_param.add_(0.5)  # a "fine-tuned" tower: the reload must use these, not the encoder folder's
    batch = _batch(model)
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, CommLlavaForCausalLM)
    torch.testing.assert_close(next(reloaded.get_vision_tower().encoders[0].parameters()), enc_param)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, before, rtol=0, atol=1e-6)


def test_generate_first_token_is_argmax_of_forward(llm_dir):
    model = _model(llm_dir)
    batch = _batch(model)
    ids, images = batch["input_ids"][:1], batch["images"][:1]
    with torch.no_grad():
        expected = model(input_ids=ids, images=images).logits[0, -1].argmax()
    out = model.generate(ids, images=images, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 3) and out[0, 0] == expected


def test_stage1_freezes_everything_but_the_projector(llm_dir):
    model = _model(llm_dir)
    apply_plan(model, plan_for(True, False, False, False))
    counts = count_by_part(model)
    assert counts["mm_projector"][0] > 0 and counts["mm_projector"][1] == 0
    assert counts["language_model"][0] == 0 and counts["vision_tower"][0] == 0


def test_lora_targets_only_llm_linears(llm_dir):
    model = _model(llm_dir)
    targets = find_lora_targets(model)
    assert targets and all(t.startswith("language_model.") and "lm_head" not in t for t in targets)
    n_linear = sum(1 for _, m in model.language_model.named_modules() if isinstance(m, torch.nn.Linear))
    assert len(targets) == n_linear - 1  # every LLM linear but the output head
    peft_model = add_lora(model, r=4, alpha=8, dropout=0.0, bias="none", quantized=False)
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names and not any("vision_tower" in n or "mm_projector" in n for n in lora_names)


def test_qlora_4bit_trains_adapters_and_leaves_tower_unquantised(llm_dir):
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, quantization_config=quant, device_map="cpu")
    model = assemble_model(llm, "tiny-comm", "linear")
    model = add_lora(model, r=4, alpha=8, dropout=0.0, bias="none", quantized=True)
    apply_plan(model, plan_for(False, False, False, True))
    assert all(p.dtype == torch.float32 for p in model.base_model.model.get_vision_tower().parameters())
    model.train()
    batch = _batch(model.base_model.model)
    labels = batch["input_ids"].clone()
    out = model(**batch, labels=labels)
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_qlora_continued_from_a_comm_llava_model_quantises_only_the_llm(llm_dir, tmp_path):
    import bitsandbytes as bnb

    from comm_tower.train.arguments import ModelArguments, TrainingArguments
    from comm_tower.train.cli import build_model

    _model(llm_dir).save_pretrained(tmp_path / "comm")
    margs = ModelArguments(model_name_or_path=str(tmp_path / "comm"))
    targs = TrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], bits=4, lora_enable=True
    )
    model = build_model(margs, targs)
    linears = {n: m for n, m in model.language_model.named_modules() if isinstance(m, torch.nn.Linear)}
    four_bit = {n for n, m in linears.items() if isinstance(m, bnb.nn.Linear4bit)}
    assert four_bit == set(linears) - {"lm_head"}  # every LLM linear but the output head
    for part in (model.get_vision_tower(), model.get_model().mm_projector, model.language_model.lm_head):
        assert not any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in part.modules())
        assert {p.dtype for p in part.parameters()} == {torch.float32}


def test_projector_learning_rate_gets_its_own_groups(llm_dir, tmp_path):
    from comm_tower.train.arguments import TrainingArguments
    from comm_tower.train.trainer import CommTrainer

    model = _model(llm_dir)
    args = TrainingArguments(
        output_dir=str(tmp_path), mm_projector_lr=1e-5, learning_rate=1e-3, use_cpu=True, report_to=[]
    )
    opt = CommTrainer(model=model, args=args).create_optimizer()
    proj_ids = {id(p) for p in model.model.mm_projector.parameters()}
    for group in opt.param_groups:
        in_proj = {id(p) in proj_ids for p in group["params"]}
        assert len(in_proj) == 1
        assert group["lr"] == (1e-5 if in_proj.pop() else 1e-3)


def test_llava_finetune_lora_flags_parse_unchanged(tmp_path):
    import transformers

    from comm_tower.data.dataset import DataArguments
    from comm_tower.train.arguments import ModelArguments, TrainingArguments

    # the flag list of LLaVA-1.5's finetune_lora.sh, with only paths and the tower changed
    flags = (
        "--lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5 --model_name_or_path m "
        "--version v1 --data_path x.json --image_folder ./data --vision_tower comm "
        "--pretrain_mm_mlp_adapter ./mm_projector.bin --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 "
        "--mm_use_im_start_end False --mm_use_im_patch_token False --image_aspect_ratio pad "
        "--group_by_modality_length True --fp16 False --num_train_epochs 1 --per_device_train_batch_size 16 "
        "--per_device_eval_batch_size 4 --gradient_accumulation_steps 1 --evaluation_strategy no "
        "--save_strategy steps --save_steps 50000 --save_total_limit 1 --learning_rate 2e-4 --weight_decay 0. "
        "--warmup_ratio 0.03 --lr_scheduler_type cosine --logging_steps 1 --model_max_length 2048 "
        "--gradient_checkpointing True --dataloader_num_workers 4 --lazy_preprocess True --report_to none"
    )
    argv = [*flags.split(" "), "--output_dir", str(tmp_path), "--use_cpu", "True"]
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    assert (model_args.vision_tower, model_args.mm_projector_type, model_args.version) == (
        "comm",
        "mlp2x_gelu",
        "v1",
    )
    assert (train_args.lora_r, train_args.lora_alpha, train_args.mm_projector_lr) == (128, 256, 2e-5)
    assert train_args.warmup_steps == 0.03 and str(train_args.eval_strategy.value) == "no"
    assert data_args.model_max_length == 2048 and data_args.image_aspect_ratio == "pad"


def test_activation_checkpointing_reaches_llm_layers_and_keeps_projector_gradients(llm_dir):
    model = _model(llm_dir)
    apply_plan(model, plan_for(True, False, False, False))  # stage 1: the LLM is frozen
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.language_model.model.layers)
    model.train()
    batch = _batch(model)
    model(**batch, labels=batch["input_ids"].clamp(min=0)).loss.backward()
    grads = [p.grad for p in model.model.mm_projector.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
