#!/usr/bin/env bash
# Stage 2 with LoRA on the LLM (never on the tower) + full projector at its own lr (LLaVA-1.5 LoRA recipe).
# Same variables as finetune.sh, plus: LORA_R=128  LORA_ALPHA=256  MM_PROJECTOR_LR=2e-5  LR=2e-4
#   BITS=16 (4: QLoRA, NF4 double-quant)  OUTPUT_DIR=./checkpoints/comm-7b-lora
#   DS_CONFIG: zero3.json, or zero2.json when BITS is 4 or 8 (bitsandbytes layers cannot be ZeRO-3 sharded)
# Output: LoRA adapter (adapter_model.safetensors), non_lora_trainables.bin (projector), config.json.
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
BITS="${BITS:-16}"
if [[ "$BITS" == 16 ]]; then DEFAULT_DS="$SCRIPT_DIR/zero3.json"; else DEFAULT_DS="$SCRIPT_DIR/zero2.json"; fi

run_train \
    --lora_enable True --lora_r "${LORA_R:-128}" --lora_alpha "${LORA_ALPHA:-256}" \
    --mm_projector_lr "${MM_PROJECTOR_LR:-2e-5}" \
    --bits "$BITS" \
    --deepspeed "${DS_CONFIG:-$DEFAULT_DS}" \
    --model_name_or_path "${MODEL:-lmsys/vicuna-7b-v1.5}" \
    --version "${VERSION:-v1}" \
    --data_path "${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}" \
    --image_folder "${IMAGE_FOLDER:-./playground/data}" \
    --vision_tower "${VISION_TOWER:-comm}" \
    --pretrain_mm_mlp_adapter "${PRETRAIN_ADAPTER:-./checkpoints/comm-7b-pretrain/mm_projector.bin}" \
    --mm_projector_type "${PROJECTOR:-linear}" \
    --image_aspect_ratio "${ASPECT:-pad}" \
    --group_by_modality_length "${GROUP_BY_MODALITY:-True}" \
    ${PRECISION:---bf16 True --tf32 True} \
    --output_dir "${OUTPUT_DIR:-./checkpoints/comm-7b-lora}" \
    --num_train_epochs "${EPOCHS:-1}" \
    --max_steps "${MAX_STEPS:--1}" \
    --per_device_train_batch_size "${BATCH:-16}" \
    --gradient_accumulation_steps "${GRAD_ACC:-1}" \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps "${SAVE_STEPS:-50000}" \
    --save_total_limit 1 \
    --learning_rate "${LR:-2e-4}" \
    --weight_decay 0. \
    --warmup_ratio "${WARMUP:-0.03}" \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length "${MAX_LEN:-2048}" \
    --gradient_checkpointing "${GRAD_CKPT:-True}" \
    --dataloader_num_workers "${WORKERS:-4}" \
    --report_to "${REPORT_TO:-none}"
