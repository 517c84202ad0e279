"""The frozen-encoder interface: run blocks up to the deepest requested layer, return those layers."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from comm_tower.registry import Registry
from comm_tower.spec import resolve_layer_indices

logger = logging.getLogger(__name__)

SAVED_DTYPE_KEYS = ("dtype", "torch_dtype")  # a saved encoder config's dtype: not the dtype to build in

ENCODERS: Registry[type[VisionEncoder]] = Registry("encoder family")

# `attn_implementation` values passed to `from_pretrained`; an unavailable one falls back to eager.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@contextlib.contextmanager
def zero3_init_disabled() -> Iterator[None]:
    """Hide an active Hugging Face DeepSpeed ZeRO-3 config from `from_pretrained` calls inside the block.

    While such a config is alive, `from_pretrained` runs inside `deepspeed.zero.Init` and returns empty
    shards; a frozen encoder loaded that way inside another model's set-up would run on 0-sized weights
    (LLaVA #1255, #728). Loaded whole, it is partitioned by the DeepSpeed engine when it starts.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # transformers without the DeepSpeed integration: nothing to hide
        yield
        return
    saved = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    if saved is None:
        yield
        return
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def building_on_meta() -> bool:
    """True where new parameters land on the meta device: accelerate's `init_empty_weights` (what transformers 4.x
    `from_pretrained(low_cpu_mem_usage=True)` builds models in) or `with torch.device("meta")`."""
    probe = nn.Module()
    probe.register_parameter("probe", nn.Parameter(torch.empty(0)))
    return probe.probe.is_meta


class VisionEncoder(nn.Module):
    """A frozen Hugging Face vision transformer exposing selected layers' patch tokens.

    `hidden_states` numbering: 0 is the embedding output, k the output of block k. Blocks past the
    deepest requested layer are removed at load time, so they are neither stored nor run.
    """

    family: ClassVar[str]
    # `model_type` values in a weights folder's config.json that this family loads (checked before loading:
    # another family's folder would otherwise load with every weight freshly random)
    model_types: ClassVar[tuple[str, ...]]
    config_class: ClassVar[type[PretrainedConfig]]
    model_class: ClassVar[type[PreTrainedModel]]
    default_mean: ClassVar[tuple[float, float, float]]
    default_std: ClassVar[tuple[float, float, float]]

    def __init__(self, model: PreTrainedModel, layers: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        cfg = self.encoder_config(model.config)
        self.num_layers: int = cfg.num_hidden_layers
        self.layer_indices = resolve_layer_indices(layers, self.num_layers, f"{self.family} encoder: layers")
        self.depth = max(self.layer_indices)
        blocks = self.blocks()
        del blocks[self.depth :]
        self._block_args = _none_args_for_required(blocks[0]) if len(blocks) else ()
        if len(blocks) and getattr(model, "_no_split_modules", None) is None:
            # `device_map="auto"` on a model holding this tower (LLaVA-NeXT loads its towers inside the LLM's
            # from_pretrained) needs every inner HF model to name the blocks it may not split across devices
            model._no_split_modules = [type(blocks[0]).__name__]
        self.model.requires_grad_(False)
        self.model.eval()

    # family hooks ---------------------------------------------------------------------------
    @classmethod
    def encoder_config(cls, config: PretrainedConfig) -> PretrainedConfig:
        """The vision config inside `config` (itself for vision-only configs)."""
        return config

    @classmethod
    def num_prefix_tokens(cls, config: PretrainedConfig) -> int:
        """Tokens before the patch tokens (CLS, registers) that are dropped."""
        raise NotImplementedError

    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        raise NotImplementedError

    def stem(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels -> the tokens fed to block 1 (`hidden_states[0]`)."""
        raise NotImplementedError

    # shared ---------------------------------------------------------------------------------
    @property
    def root(self) -> nn.Module:
        """The module holding embeddings and encoder (transformers < 5 wraps it in `vision_model`)."""
        return getattr(self.model, "vision_model", self.model)

    @classmethod
    def check_model_type(cls, path: str) -> None:
        """Raise ValueError unless `path`'s config.json names a model this family loads."""
        raw, _ = PretrainedConfig.get_config_dict(path)
        found = raw.get("model_type")
        if found not in cls.model_types:
            raise ValueError(
                f"encoder weights at '{path}' are a '{found}' model (config.json model_type), not a "
                f"{cls.family} encoder ({' or '.join(repr(t) for t in cls.model_types)}); fix: point this "
                "encoder at a checkpoint of its family, or set the preset's 'family' to the folder's"
            )

    @classmethod
    def read_config(cls, path: str) -> PretrainedConfig:
        """Only the config of the weights at `path` (a hub name or a local folder), after the family check."""
        cls.check_model_type(path)
        return cls.encoder_config(cls.config_class.from_pretrained(path))

    @classmethod
    def from_pretrained(
        cls, path: str, layers: Sequence[int], attn_implementation: str = "sdpa", **kwargs: Any
    ) -> VisionEncoder:
        """Load whole weights (even under ZeRO-3), falling back to eager attention where the kernel is missing.

        Also inside another model's meta-device build (LLaVA-NeXT builds its towers in the LLM's
        `from_pretrained(low_cpu_mem_usage=True)`): the weights are then assigned, not copied into meta
        parameters (a no-op that would leave them for the outer checkpoint to fill, or uninitialised).
        """
        cls.check_model_type(path)
        on_meta = building_on_meta()
        if on_meta:
            kwargs.setdefault("low_cpu_mem_usage", True)  # transformers 4.x: loads by assignment
        with zero3_init_disabled():
            try:
                model = cls.model_class.from_pretrained(
                    path, attn_implementation=attn_implementation, **kwargs
                )
            except (ValueError, ImportError) as err:
                if attn_implementation == "eager":
                    raise
                logger.info("%s: %s attention unavailable (%s); using eager", path, attn_implementation, err)
                model = cls.model_class.from_pretrained(path, attn_implementation="eager", **kwargs)
        if on_meta and any(p.is_meta for p in model.parameters()):
            raise RuntimeError(
                f"{cls.family} encoder from '{path}': built inside a meta-device context (an enclosing "
                "init_empty_weights or low_cpu_mem_usage load), this transformers left its weights on the meta "
                "device; fix: build the COMM tower with delay_load=True and call load_model() after that load"
            )
        logger.info("%s encoder from %s: attention=%s", cls.family, path, _attn_of(model))
        return cls(model, layers)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], layers: Sequence[int], attn_implementation: str = "sdpa"
    ) -> VisionEncoder:
        """The encoder's structure from a saved HF config dict, weights uninitialised (a checkpoint fills them)."""
        # Built in the dtype the enclosing load builds in (from_pretrained(dtype=...) sets the default), not in
        # the dtype the saved config records: else a bf16 load keeps the tower, LayerNorms included, in fp32.
        saved = {k: v for k, v in config.items() if k not in SAVED_DTYPE_KEYS}
        hf_config = cls.config_class.from_dict(saved)
        try:
            model = cls.model_class._from_config(hf_config, attn_implementation=attn_implementation)
        except (ValueError, ImportError):
            model = cls.model_class._from_config(hf_config, attn_implementation="eager")
        return cls(model, layers)

    @property
    def width(self) -> int:
        """Channels per token."""
        return self.encoder_config(self.model.config).hidden_size

    @property
    def prefix(self) -> int:
        """Prefix tokens dropped from every layer."""
        return self.num_prefix_tokens(self.model.config)

    def forward(self, pixel_values: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """`[B,3,H,W]` -> `[B, N, L*C]`: the selected layers' patch tokens, stacked on channels in order.

        Each selected layer is copied into its channel slice of `out` as soon as its block has run (a
        fresh tensor when `out` is None), so no layer is held twice and no concatenation copy is made.
        """
        slots: dict[int, list[int]] = {}
        for i, k in enumerate(self.layer_indices):
            slots.setdefault(k, []).append(i)
        hidden = self.stem(pixel_values.to(self.model.dtype))
        width, prefix = self.width, self.prefix
        expected = (hidden.shape[0], hidden.shape[1] - prefix, len(self.layer_indices) * width)
        if out is None:
            out = hidden.new_empty(expected)
        elif tuple(out.shape) != expected:
            raise ValueError(
                f"{self.family} encoder: `out` has shape {tuple(out.shape)}, expected {expected}"
            )
        for i in slots.get(0, []):
            out[..., i * width : (i + 1) * width].copy_(hidden[:, prefix:])
        for k, block in enumerate(self.blocks(), start=1):
            block_out = block(hidden, *self._block_args)
            hidden = block_out[0] if isinstance(block_out, tuple) else block_out
            for i in slots.get(k, []):
                out[..., i * width : (i + 1) * width].copy_(hidden[:, prefix:])
        return out


def _none_args_for_required(block: nn.Module) -> tuple[None, ...]:
    """Positional `None`s for a block's required arguments after the hidden states (masks).

    Block signatures differ across transformers releases (CLIP took `causal_attention_mask` up to 4.4x);
    vision blocks need no mask, so every required argument after the first gets `None`.
    """
    params = list(inspect.signature(block.forward).parameters.values())[1:]
    required = [
        p
        for p in params
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return (None,) * len(required)


def _attn_of(model: PreTrainedModel) -> str:
    return str(getattr(model.config, "_attn_implementation", "eager"))
