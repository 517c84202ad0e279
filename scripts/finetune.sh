#!/usr/bin/env bash
# Stage 2 (COMM / LLaVA-1.5 recipe): tune projector and LLM on instruction data, ZeRO-3.
# Starts the projector from stage 1's mm_projector.bin. Every setting is a variable:
#   MODEL=lmsys/vicuna-7b-v1.5  VISION_TOWER=comm  PROJECTOR=linear
#   PRETRAIN_ADAPTER=./checkpoints/comm-7b-pretrain/mm_projector.bin
#   DATA_PATH=./playground/data/llava_v1_5_mix665k.json  IMAGE_FOLDER=./playground/data
#   OUTPUT_DIR=./checkpoints/comm-7b   DS_CONFIG=scripts/zero3.json
#   BATCH=16 per device  GRAD_ACC=1 (8 GPUs x 16 = 128 global, LLaVA-1.5; the paper used 64)
#   LR=2e-5 (paper)  EPOCHS=1  MAX_STEPS=-1  WARMUP=0.03  MAX_LEN=2048  VERSION=v1  GROUP_BY_MODALITY=True
#   PRECISION="--bf16 True --tf32 True"  GRAD_CKPT=True  SAVE_STEPS=50000
# Launcher, GPUs and nodes: see scripts/_launch.sh (LAUNCHER, NUM_GPUS, NUM_NODES, HOSTFILE, EXTRA_ARGS).
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"

run_train \
    --deepspeed "${DS_CONFIG:-$SCRIPT_DIR/zero3.json}" \
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
    --output_dir "${OUTPUT_DIR:-./checkpoints/comm-7b}" \
    --num_train_epochs "${EPOCHS:-1}" \
    --max_steps "${MAX_STEPS:--1}" \
    --per_device_train_batch_size "${BATCH:-16}" \
    --gradient_accumulation_steps "${GRAD_ACC:-1}" \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps "${SAVE_STEPS:-50000}" \
    --save_total_limit 1 \
    --learning_rate "${LR:-2e-5}" \
    --weight_decay 0. \
    --warmup_ratio "${WARMUP:-0.03}" \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length "${MAX_LEN:-2048}" \
    --gradient_checkpointing "${GRAD_CKPT:-True}" \
    --dataloader_num_workers "${WORKERS:-4}" \
    --report_to "${REPORT_TO:-none}"
