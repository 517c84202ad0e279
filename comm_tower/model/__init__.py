"""The multimodal causal LM (`comm_llava`): any HF causal LM + a COMM tower + projector."""

from transformers import AutoConfig, AutoModelForCausalLM

from comm_tower.model.assembly import (
    from_language_model,
    load_lora_model,
    load_pretrained_projector,
)
from comm_tower.model.configuration import MODEL_TYPE, CommLlavaConfig
from comm_tower.model.modeling import CommLlavaForCausalLM

AutoConfig.register(MODEL_TYPE, CommLlavaConfig, exist_ok=True)
AutoModelForCausalLM.register(CommLlavaConfig, CommLlavaForCausalLM, exist_ok=True)

__all__ = [
    "MODEL_TYPE",
    "CommLlavaConfig",
    "CommLlavaForCausalLM",
    "from_language_model",
    "load_lora_model",
    "load_pretrained_projector",
]
