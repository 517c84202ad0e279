"""`CommTrainer`: the HF Trainer with a projector learning rate, modality grouping and stage-1 projector saves."""

from __future__ import annotations

import logging
import os

import torch
from transformers import Trainer

from comm_tower.data import ModalityLengthGroupedSampler
from comm_tower.model.assembly import NON_LORA_FILE, PROJECTOR_FILE, load_projector
from comm_tower.model.zero import gathered_state_dict

logger = logging.getLogger(__name__)


def unwrap_peft(model: torch.nn.Module) -> torch.nn.Module:
    """The CommLlavaForCausalLM inside a peft wrapper (or the model itself)."""
    base = getattr(model, "base_model", None)
    inner = getattr(base, "model", None)
    return inner if inner is not None and hasattr(inner, "language_model") else model


def projector_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Projector weights with LLaVA's key names (`model.mm_projector.<...>`), ZeRO-3 shards gathered."""
    inner = unwrap_peft(model)
    return gathered_state_dict(inner.model.mm_projector, prefix="model.mm_projector.", keep="mm_projector")


class CommTrainer(Trainer):
    """HF Trainer; `args` is `comm_tower.train.arguments.TrainingArguments`."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.args.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        lengths = getattr(dataset, "modality_lengths", None)
        if lengths is None:
            raise ValueError("--group_by_modality_length needs a data set with `modality_lengths`")
        return ModalityLengthGroupedSampler(
            lengths,
            batch_size=self.args.train_batch_size,
            world_size=self.args.world_size,
            seed=self.args.seed,
            group_batches=self.args.length_group_batches,
        )

    def create_optimizer(self, model=None):
        """AdamW with the projector in its own groups at `--mm_projector_lr` (when given)."""
        if self.optimizer is not None or self.args.mm_projector_lr is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups.setdefault(("mm_projector" in name, name in decay), []).append(param)
        param_groups = []
        for (is_proj, has_decay), params in groups.items():
            group = {"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0}
            if is_proj:
                group["lr"] = self.args.mm_projector_lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        logger.info(
            "optimizer: projector lr %g, other lr %g", self.args.mm_projector_lr, self.args.learning_rate
        )
        return self.optimizer

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: torch.nn.Module | None = None
    ) -> None:
        """Stage-1 checkpoints hold only `mm_projector.bin`: restore the projector from it.

        The Trainer restores optimizer, scheduler, RNG and step itself; its own weight loader wants whole-model
        weights and refuses a projector-only folder. Other checkpoints (and DeepSpeed's) load as usual.
        """
        path = os.path.join(resume_from_checkpoint, PROJECTOR_FILE)
        if not (getattr(self.args, "tune_mm_mlp_adapter", False) and os.path.isfile(path)):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        load_projector(unwrap_peft(model if model is not None else self.model), path)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Stage 1 writes only `mm_projector.bin` (+ config); otherwise the full model (or LoRA adapters)."""
        output_dir = output_dir or self.args.output_dir
        if getattr(self.args, "tune_mm_mlp_adapter", False):
            state = projector_state_dict(self.model)  # collective under ZeRO-3: every rank calls it
            if self.args.should_save:
                os.makedirs(output_dir, exist_ok=True)
                torch.save(state, os.path.join(output_dir, PROJECTOR_FILE))
                unwrap_peft(self.model).config.save_pretrained(output_dir)
                logger.info("saved %d projector tensors to %s", len(state), output_dir)
            return
        super().save_model(output_dir, _internal_call=_internal_call)
        if getattr(self.args, "lora_enable", False):
            state = projector_state_dict(self.model)
            if self.args.should_save:
                torch.save(state, os.path.join(output_dir, NON_LORA_FILE))
                unwrap_peft(self.model).config.save_pretrained(output_dir)
