"""`comm-train` / `python -m comm_tower.train`: LLaVA's train.py flags on a HF Trainer with DeepSpeed."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer
from transformers.integrations import is_deepspeed_zero3_enabled

from comm_tower.data import make_supervised_data_module
from comm_tower.data.dataset import DataArguments
from comm_tower.data.templates import VERSION_TO_TEMPLATE
from comm_tower.errors import DEBUG_FLAG, UsageError, run_command
from comm_tower.model import CommLlavaForCausalLM, LoadOptions, assemble_model, load_projector
from comm_tower.model.assembly import is_comm_llava_checkpoint
from comm_tower.model.zero import is_sharded
from comm_tower.train.arguments import ModelArguments, TrainingArguments
from comm_tower.train.attention import pick_attention
from comm_tower.train.freeze import apply_plan, plan_for
from comm_tower.train.lora import add_lora
from comm_tower.train.trainer import CommTrainer, unwrap_peft

logger = logging.getLogger("comm_tower.train")


def setup_logging(training_args: TrainingArguments) -> None:
    """INFO on the main process, warnings only elsewhere."""
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, force=True)
    transformers.utils.logging.set_verbosity_warning()  # its INFO level dumps every config it reads


def check_args(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> None:
    """Fail early, naming the flag and the fix, on options this trainer does not support."""
    if not model_args.model_name_or_path:
        raise UsageError("--model_name_or_path is required (an HF causal LM or a saved comm_llava model)")
    for flag in ("mm_use_im_start_end", "mm_use_im_patch_token"):
        if getattr(model_args, flag):
            raise UsageError(
                f"--{flag} True is not supported: COMM splices features at <image> only; drop it"
            )
    if model_args.mm_patch_merge_type != "flat":
        raise UsageError(f"--mm_patch_merge_type {model_args.mm_patch_merge_type}: only 'flat' is supported")
    if training_args.bits not in (4, 8, 16):
        raise UsageError(f"--bits {training_args.bits}: use 16, 8 or 4")
    if training_args.bits in (4, 8) and not training_args.lora_enable:
        raise UsageError(
            f"--bits {training_args.bits} quantises the LLM; train it with --lora_enable True (QLoRA)"
        )
    if training_args.fp16 and not training_args.deepspeed:
        raise UsageError(
            "--fp16 True without --deepspeed would train fp16 weights in place, with no fp32 master copy (the "
            "loss turns NaN within a few steps); use --bf16 True, or add --deepspeed scripts/zero2.json "
            "(DeepSpeed's fp16 mode keeps fp32 master weights)"
        )
    if training_args.bits in (4, 8) and is_deepspeed_zero3_enabled():
        raise UsageError(
            f"--bits {training_args.bits} with a ZeRO-3 --deepspeed config: bitsandbytes layers cannot be "
            "sharded; use scripts/zero2.json (finetune_lora.sh picks it when BITS is 4 or 8)"
        )
    if model_args.version is not None:
        if model_args.version not in VERSION_TO_TEMPLATE:
            raise UsageError(f"--version {model_args.version}: use one of {sorted(VERSION_TO_TEMPLATE)}")
        data_args.template = VERSION_TO_TEMPLATE[model_args.version]


def ensure_deepspeed_comm(training_args: TrainingArguments) -> None:
    """Make DeepSpeed's communication layer see the process group (on CPU accelerate sets up gloo alone,
    and ZeRO-3's `zero.Init` would otherwise size batches for one process)."""
    if not training_args.deepspeed:
        return
    import deepspeed
    import torch.distributed as dist

    if not deepspeed.comm.is_initialized():
        backend = dist.get_backend() if dist.is_initialized() else None
        deepspeed.init_distributed(dist_backend=backend)


def compute_dtype(training_args: TrainingArguments) -> torch.dtype:
    """bf16 / fp16 / fp32 from the HF precision flags."""
    if training_args.bf16:
        return torch.bfloat16
    return torch.float16 if training_args.fp16 else torch.float32


def llm_load_options(model_args: ModelArguments, training_args: TrainingArguments) -> LoadOptions:
    """How the LLM loads: dtype, attention kernel and (Q)LoRA quantisation of its linear layers."""
    device_map = "cpu" if training_args.use_cpu else {"": training_args.local_process_index}
    return LoadOptions(
        dtype=compute_dtype(training_args),
        device_map=device_map if training_args.bits in (4, 8) else None,  # 4/8-bit layers are placed at load
        bits=training_args.bits,
        quant_type=training_args.quant_type,
        double_quant=training_args.double_quant,
        attn_implementation=pick_attention(model_args.attn_implementation),
        cache_dir=training_args.cache_dir,
    )


def build_model(model_args: ModelArguments, training_args: TrainingArguments) -> CommLlavaForCausalLM:
    """A plain LLM + `--vision_tower`, or a saved comm_llava model continued; projector from stage 1 if given."""
    path = model_args.model_name_or_path
    if not model_args.vision_tower and not is_comm_llava_checkpoint(path):
        raise UsageError("--vision_tower is required when --model_name_or_path is a plain LLM (e.g. comm)")
    model = assemble_model(
        path,
        model_args.vision_tower,
        model_args.mm_projector_type,
        load=llm_load_options(model_args, training_args),
        mm_vision_select_layer=model_args.mm_vision_select_layer,
        mm_vision_select_feature=model_args.mm_vision_select_feature,
    )
    logger.info("LLM attention: %s", model.language_model.config._attn_implementation)
    if model_args.pretrain_mm_mlp_adapter:
        load_projector(model, model_args.pretrain_mm_mlp_adapter)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    return model


def load_tokenizer(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """The LLM's tokenizer, right padding, a pad token (unk, else eos) and the model's max length."""
    tok = AutoTokenizer.from_pretrained(model_args.model_name_or_path, cache_dir=training_args.cache_dir)
    tok.padding_side = "right"
    if data_args.model_max_length:
        tok.model_max_length = data_args.model_max_length
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok


def find_resume(training_args: TrainingArguments) -> str | None:
    """`--resume_from_checkpoint` as given; else the newest complete `checkpoint-*` in the output dir.

    A checkpoint is complete once the Trainer wrote its `trainer_state.json` (its last file) whole; a run killed
    while saving leaves one without it, or with it empty or cut, which is passed over with a warning instead of
    failing the rerun.
    """
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    found = sorted(
        (p for p in pathlib.Path(training_args.output_dir).glob("checkpoint-*") if p.name[11:].isdigit()),
        key=lambda p: int(p.name[11:]),
        reverse=True,
    )
    for folder in found:
        if _readable_json(folder / "trainer_state.json"):
            logger.info("resuming from %s", folder)
            return str(folder)
        logger.warning(
            "%s is incomplete (no readable trainer_state.json; saving was interrupted): skipped", folder
        )
    return None


def _readable_json(path: pathlib.Path) -> bool:
    """Whether `path` holds a whole JSON document (a kill while the Trainer writes it leaves it empty or cut)."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """`comm-train`: bad flags or data stop with one line and exit code 2 (`--debug` adds the traceback)."""
    return run_command("comm-train", train, argv)


def without_debug_flag(argv: list[str]) -> list[str]:
    """`argv` less a bare `--debug` (the error boundary's); HF's own `--debug OPTION` is kept."""
    return [
        a
        for i, a in enumerate(argv)
        if not (a == DEBUG_FLAG and (i + 1 == len(argv) or argv[i + 1].startswith("--")))
    ]


def train(argv: list[str] | None = None) -> None:
    """Parse LLaVA-style flags, check the data, build the model, train, save."""
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    args = without_debug_flag(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=args)
    setup_logging(training_args)
    check_args(model_args, data_args, training_args)
    training_args.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
    ensure_deepspeed_comm(training_args)

    tokenizer = load_tokenizer(model_args, data_args, training_args)
    if data_args.skip_bad_samples and not data_args.skip_log_path:
        # every process and DataLoader worker appends here, so the end-of-run report sees all skips
        os.makedirs(training_args.output_dir, exist_ok=True)
        data_args.skip_log_path = os.path.join(training_args.output_dir, "skipped_samples.jsonl")
    # every sample is checked (structure, tags, image files) before any model loads: a data error costs seconds
    data_module = make_supervised_data_module(tokenizer, None, data_args)
    dataset = data_module["train_dataset"]
    # `--seed` governs the new modules' random init (projector, MFM, LoRA) too, not only the data order: the
    # Trainer seeds only after the model exists, so the init would depend on what the process drew before.
    transformers.set_seed(training_args.seed)
    model = build_model(model_args, training_args)
    tower = model.get_vision_tower()
    dataset.image_processor = tower.image_processor
    model.config.tokenizer_padding_side = tokenizer.padding_side
    model.config.tokenizer_model_max_length = tokenizer.model_max_length
    model.config.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
    model.config.image_aspect_ratio = data_args.image_aspect_ratio
    data_args.image_tokens = tower.num_patches
    data_args.model_max_length = tokenizer.model_max_length

    plan = plan_for(
        model_args.tune_mm_mlp_adapter,
        model_args.freeze_backbone,
        training_args.freeze_mm_mlp_adapter,
        training_args.lora_enable,
    )
    if training_args.lora_enable:
        model = add_lora(
            model,
            training_args.lora_r,
            training_args.lora_alpha,
            training_args.lora_dropout,
            training_args.lora_bias,
            quantized=training_args.bits in (4, 8),
        )
    apply_plan(model, plan)

    record_chat_format(unwrap_peft(model).config, data_args.template, dataset)
    unwrap_peft(model).config.train_data = data_args.data_path  # the model card names it
    trainer = CommTrainer(model=model, args=training_args, processing_class=tokenizer, **data_module)
    trainer.train(resume_from_checkpoint=find_resume(training_args))
    logger.info("trained in %s", describe_engine(trainer))
    trainer.save_state()
    inner = model.base_model.model if training_args.lora_enable else model
    inner.config.use_cache = inner.config.text_config.use_cache = True  # for generation after reload
    trainer.save_model(training_args.output_dir)
    if training_args.should_save and not model_args.tune_mm_mlp_adapter:
        tokenizer.save_pretrained(training_args.output_dir)
    report_skips(dataset, training_args)
    logger.info("done: %s", os.path.abspath(training_args.output_dir))


def describe_engine(trainer: CommTrainer) -> str:
    """What the model trained in: DeepSpeed's engine with its ZeRO stage and partitioned parameters, or not.

    A `--deepspeed` config is ignored when accelerate is told to leave DeepSpeed out; this line shows which.
    """
    wrapped = trainer.model_wrapped
    text = f"{type(wrapped).__name__}, world size {trainer.args.world_size}"
    if not hasattr(wrapped, "zero_optimization_stage"):
        return text
    params = list(trainer.model.parameters())
    partitioned = sum(is_sharded(p) for p in params)
    shards = sum(is_sharded(p) and p.numel() == 0 for p in params)  # outside a gather: this rank's part only
    return (
        f"{text}, ZeRO stage {wrapped.zero_optimization_stage()}: {partitioned} of {len(params)} parameters "
        f"partitioned, {shards} held here as empty shards"
    )


def record_chat_format(config: Any, template: str, dataset: Any) -> None:
    """Save the conversation template and system prompt the data trains with: readers prompt the same way."""
    config.conv_template = template
    config.system_prompt = dataset.common_system_prompt()
    logger.info("chat format: template %s, system prompt %r", template, config.system_prompt)


def report_skips(dataset: Any, training_args: TrainingArguments) -> None:
    """Log how many bad samples the run skipped and which (main process), pointing at the JSONL record."""
    if not training_args.should_log or not getattr(dataset, "num_skipped", 0):
        return
    where = dataset.args.skip_log_path
    logger.warning("%s%s", dataset.skip_report(), f"\n  (recorded in {where})" if where else "")


if __name__ == "__main__":
    main()
