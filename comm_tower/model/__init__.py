"""The multimodal causal LM (`comm_llava`): any HF causal LM + a COMM tower + projector."""

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from comm_tower.model.assembly import LoadOptions, assemble_model, load_lora, load_projector
from comm_tower.model.configuration import MODEL_TYPE, CommLlavaConfig
from comm_tower.model.modeling import CommLlavaForCausalLM

AutoConfig.register(MODEL_TYPE, CommLlavaConfig, exist_ok=True)
AutoModelForCausalLM.register(CommLlavaConfig, CommLlavaForCausalLM, exist_ok=True)
AutoModelForImageTextToText.register(CommLlavaConfig, CommLlavaForCausalLM, exist_ok=True)

__all__ = [
    "MODEL_TYPE",
    "CommLlavaConfig",
    "CommLlavaForCausalLM",
    "LoadOptions",
    "assemble_model",
    "load_lora",
    "load_projector",
]
