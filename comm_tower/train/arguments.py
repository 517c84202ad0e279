"""Command-line dataclasses with LLaVA's flag names (data flags live in `comm_tower.data.dataset.DataArguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import transformers

ATTN_CHOICES = ("auto", "flash_attention_2", "sdpa", "eager")


@dataclass
class ModelArguments:
    """Which LLM, vision tower and projector to build, and where stage-1 weights come from."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "HF causal LM (folder or hub name), or a saved comm_llava model."}
    )
    version: str | None = field(
        default=None,
        metadata={"help": "LLaVA conversation version: plain (stage 1), v1 (stage 2), chat_template."},
    )
    freeze_backbone: bool = field(
        default=False, metadata={"help": "Freeze the LLM (stage 2 then trains only mm)."}
    )
    tune_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "Stage 1: train only the projector (MFM, align MLP, projection)."}
    )
    vision_tower: str | None = field(
        default=None,
        metadata={"help": "COMM preset (comm, clip-mfm, tiny-comm...), preset .json, or overrides."},
    )
    mm_vision_select_layer: int = field(
        default=-2, metadata={"help": "Kept for LLaVA; COMM presets pick layers."}
    )
    mm_vision_select_feature: str = field(
        default="patch", metadata={"help": "patch (drop CLS); kept for LLaVA."}
    )
    pretrain_mm_mlp_adapter: str | None = field(
        default=None, metadata={"help": "Stage-1 mm_projector.bin to start the projector from."}
    )
    mm_projector_type: str = field(
        default="linear", metadata={"help": "linear (paper), mlp2x_gelu, identity."}
    )
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "Not supported; must stay False."})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "Not supported; must stay False."})
    mm_patch_merge_type: str = field(default="flat", metadata={"help": "Only flat is supported."})
    attn_implementation: str = field(
        default="auto", metadata={"help": "auto (best installed), flash_attention_2, sdpa or eager."}
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """HF TrainingArguments plus LLaVA's extra training flags."""

    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False, metadata={"help": "Keep the projector frozen."})
    mm_projector_lr: float | None = field(default=None, metadata={"help": "Learning rate of the projector."})
    group_by_modality_length: bool = field(
        default=False, metadata={"help": "Batches hold only image samples or only text samples."}
    )
    length_group_batches: int = field(
        default=1,
        metadata={
            "help": "With --group_by_modality_length: sort this many global batches by length together before "
            "cutting them (less padding, batch order still random); 1 sorts within each batch, as LLaVA does."
        },
    )
    bits: int = field(
        default=16, metadata={"help": "LLM weights: 16 (bf16/fp16/fp32 per flags), 8 or 4 (QLoRA)."}
    )
    double_quant: bool = field(default=True, metadata={"help": "4-bit: quantise the quantisation constants."})
    quant_type: str = field(default="nf4", metadata={"help": "4-bit: nf4 or fp4."})
    lora_enable: bool = field(
        default=False, metadata={"help": "Train LoRA adapters on the LLM's linear layers."}
    )
    lora_r: int = field(default=64)
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.05)
    lora_weight_path: str = field(default="", metadata={"help": "Unused; kept so LLaVA scripts parse."})
    lora_bias: str = field(default="none", metadata={"help": "none, all or lora_only."})
    mpt_attn_impl: str | None = field(
        default="triton", metadata={"help": "Unused; kept so LLaVA scripts parse."}
    )
    warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "LLaVA's warmup as a fraction of steps (newer HF: --warmup_steps 0.03)."},
    )

    evaluation_strategy: str | None = field(
        default=None, metadata={"help": "LLaVA scripts' name for --eval_strategy (removed from recent HF)."}
    )

    def __post_init__(self):
        if self.length_group_batches < 1:
            raise ValueError(f"--length_group_batches {self.length_group_batches}: use an integer >= 1")
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio {self.warmup_ratio}: use a fraction in [0, 1)")
            if self.warmup_steps:
                raise ValueError("--warmup_ratio and --warmup_steps both given; pass only one")
            self.warmup_steps = self.warmup_ratio
        super().__post_init__()
