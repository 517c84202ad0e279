#!/usr/bin/env bash
# LLaVA-1.5 stage 2 (visual instruction tuning) with a COMM tower. Run from your LLaVA checkout, as its
# scripts/v1_5/finetune.sh: the only differences are `--vision_tower comm` and the launcher path. The
# COMM projector saved by pretrain.sh comes back bit-exactly through --pretrain_mm_mlp_adapter.
# Every value below can be set from the environment; EXTRA_ARGS is appended (later flags win),
# DEEPSPEED_ARGS goes to the deepspeed launcher;
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

COMM_TOWER_DIR=${COMM_TOWER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
LAUNCHER=${LAUNCHER:-$COMM_TOWER_DIR/llava_patch/launch/train_mem.py}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-$COMM_TOWER_DIR/scripts/llava/zero3.json}
MODEL=${MODEL:-lmsys/vicuna-13b-v1.5}
VISION_TOWER=${VISION_TOWER:-comm}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
PRETRAIN_DIR=${PRETRAIN_DIR:-./checkpoints/llava-v1.5-13b-comm-pretrain}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-13b-comm}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
read -r -a LAUNCH <<< "${DEEPSPEED_ARGS:-}"  # launcher options, e.g. --num_gpus 8 --master_port 29501

cmd=(deepspeed "${LAUNCH[@]}" "$LAUNCHER"
    --deepspeed "$DEEPSPEED_CONFIG"
    --model_name_or_path "$MODEL"
    --version v1
    --data_path "$DATA_PATH"
    --image_folder "$IMAGE_FOLDER"
    --vision_tower "$VISION_TOWER"
    --pretrain_mm_mlp_adapter "$PRETRAIN_DIR/mm_projector.bin"
    --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --image_aspect_ratio pad
    --group_by_modality_length True
    --bf16 True
    --output_dir "$OUTPUT_DIR"
    --num_train_epochs 1
    --per_device_train_batch_size 16
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy no
    --save_strategy steps
    --save_steps 50000
    --save_total_limit 1
    --learning_rate 2e-5
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type cosine
    --logging_steps 1
    --tf32 True
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to wandb
    "${EXTRA[@]}")

if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
