"""`CommLlavaConfig`: the LLM's config as a sub-config plus LLaVA's `mm_*` fields, registered as `comm_llava`."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "comm_llava"


class CommLlavaConfig(PretrainedConfig):
    """Config of a multimodal causal LM: any HF causal LM (`text_config`) + a COMM vision tower + projector.

    The `mm_*` names are LLaVA's, so LLaVA-style builders (`build_vision_tower(config)`,
    `build_vision_projector(config)`) read this config directly. `hidden_size` and `vocab_size` mirror the
    LLM's, because projector builders read `config.hidden_size` as the LLM width.
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}  # noqa: RUF012 - HF reads this class attribute; an annotation would make it a field

    text_config: dict | PretrainedConfig | None = None
    mm_vision_tower: str | None = None
    mm_projector_type: str = "linear"
    mm_hidden_size: int | None = None
    mm_comm: dict | None = None
    mm_encoder_configs: list | None = None
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    mm_patch_merge_type: str = "flat"
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    image_aspect_ratio: str = "pad"
    tokenizer_padding_side: str = "right"
    tokenizer_model_max_length: int | None = None
    tune_mm_mlp_adapter: bool = False
    # the chat format the model was trained with: readers build prompts with it unless told otherwise
    conv_template: str | None = None  # a registered conversation template; None: vicuna_v1
    system_prompt: str | None = None  # None: the template's own
    train_data: str | None = None  # the data file(s) comm-train trained on (for the model card)
    hidden_size: int | None = None
    vocab_size: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.sync_from_text_config()

    def sync_from_text_config(self) -> None:
        """Copy the LLM's width, vocabulary size and embedding tying onto this config."""
        text = self.text_config
        self.hidden_size = text.hidden_size
        self.vocab_size = text.vocab_size
        self.tie_word_embeddings = bool(getattr(text, "tie_word_embeddings", False))
