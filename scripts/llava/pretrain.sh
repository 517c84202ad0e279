#!/usr/bin/env bash
# LLaVA-1.5 stage 1 (projector pre-training) with a COMM tower. Run from your LLaVA checkout, as its
# scripts/v1_5/pretrain.sh: the only differences are `--vision_tower comm` and the launcher path
# (llava_patch/launch/train_mem.py instead of llava/train/train_mem.py; with the .pth hook installed
# even that stays LLaVA's: see docs/llava.md). Stage 1 trains the whole COMM projector (MFM weights,
# DINOv2 alignment MLP, mlp2x_gelu) and saves it to $OUTPUT_DIR/mm_projector.bin.
# Every value below can be set from the environment; EXTRA_ARGS is appended (later flags win),
# DEEPSPEED_ARGS goes to the deepspeed launcher;
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

COMM_TOWER_DIR=${COMM_TOWER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
LAUNCHER=${LAUNCHER:-$COMM_TOWER_DIR/llava_patch/launch/train_mem.py}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-$COMM_TOWER_DIR/scripts/llava/zero2.json}
MODEL=${MODEL:-lmsys/vicuna-13b-v1.5}
VISION_TOWER=${VISION_TOWER:-comm}
DATA_PATH=${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data/LLaVA-Pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-13b-comm-pretrain}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
read -r -a LAUNCH <<< "${DEEPSPEED_ARGS:-}"  # launcher options, e.g. --num_gpus 8 --master_port 29501

cmd=(deepspeed "${LAUNCH[@]}" "$LAUNCHER"
    --deepspeed "$DEEPSPEED_CONFIG"
    --model_name_or_path "$MODEL"
    --version plain
    --data_path "$DATA_PATH"
    --image_folder "$IMAGE_FOLDER"
    --vision_tower "$VISION_TOWER"
    --mm_projector_type mlp2x_gelu
    --tune_mm_mlp_adapter True
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --bf16 True
    --output_dir "$OUTPUT_DIR"
    --num_train_epochs 1
    --per_device_train_batch_size 32
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy no
    --save_strategy steps
    --save_steps 24000
    --save_total_limit 1
    --learning_rate 1e-3
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
