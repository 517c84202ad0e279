#!/usr/bin/env bash
# Stage 1 (COMM / LLaVA-1.5 recipe): train only the projector (MFM, alignment MLP, projection) on captions.
# Writes $OUTPUT_DIR/mm_projector.bin (LLaVA key format), read by finetune.sh. Every setting is a variable:
#   MODEL=lmsys/vicuna-7b-v1.5  VISION_TOWER=comm  PROJECTOR=linear (paper; mlp2x_gelu as LLaVA-1.5)
#   DATA_PATH=./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json
#   IMAGE_FOLDER=./playground/data/LLaVA-Pretrain/images   OUTPUT_DIR=./checkpoints/comm-7b-pretrain
#   DS_CONFIG=scripts/zero2.json  BATCH=32 per device  GRAD_ACC=1 (8 GPUs x 32 = 256 global, LLaVA-1.5)
#   LR=1e-3  EPOCHS=1  MAX_STEPS=-1  WARMUP=0.03  MAX_LEN=2048  WORKERS=4  SAVE_STEPS=24000
#   PRECISION="--bf16 True --tf32 True" (tests: "--bf16 False")  GRAD_CKPT=True
# Launcher, GPUs and nodes: see scripts/_launch.sh (LAUNCHER, NUM_GPUS, NUM_NODES, HOSTFILE, EXTRA_ARGS).
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"

run_train \
    --deepspeed "${DS_CONFIG:-$SCRIPT_DIR/zero2.json}" \
    --model_name_or_path "${MODEL:-lmsys/vicuna-7b-v1.5}" \
    --version plain \
    --data_path "${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}" \
    --image_folder "${IMAGE_FOLDER:-./playground/data/LLaVA-Pretrain/images}" \
    --vision_tower "${VISION_TOWER:-comm}" \
    --mm_projector_type "${PROJECTOR:-linear}" \
    --tune_mm_mlp_adapter True \
    --image_aspect_ratio "${ASPECT:-square}" \
    ${PRECISION:---bf16 True --tf32 True} \
    --output_dir "${OUTPUT_DIR:-./checkpoints/comm-7b-pretrain}" \
    --num_train_epochs "${EPOCHS:-1}" \
    --max_steps "${MAX_STEPS:--1}" \
    --per_device_train_batch_size "${BATCH:-32}" \
    --gradient_accumulation_steps "${GRAD_ACC:-1}" \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps "${SAVE_STEPS:-24000}" \
    --save_total_limit 1 \
    --learning_rate "${LR:-1e-3}" \
    --weight_decay 0. \
    --warmup_ratio "${WARMUP:-0.03}" \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length "${MAX_LEN:-2048}" \
    --gradient_checkpointing "${GRAD_CKPT:-True}" \
    --dataloader_num_workers "${WORKERS:-4}" \
    --report_to "${REPORT_TO:-none}"
