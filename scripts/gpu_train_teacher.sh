#!/usr/bin/env bash
# Trains the shipped Fashion-MNIST teacher on a lent GPU (the device tool); the same code runs on CPU
# (`advkd train-teacher ...` or the DAG's train_teacher rule), only slower. Writes flat files to $OUT.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi -L
python3 -c "import torch, diffusers; print(torch.__version__, diffusers.__version__, torch.cuda.get_device_name())"
python3 -m advkd.cli prepare-data --data '{"dataset": "fashion-mnist", "root": ".gpu_data"}' --out /tmp/data
python3 -m advkd.cli train-teacher --images /tmp/data/train.npz --architecture fmnist32 --epochs "${EPOCHS:-400}" \
  --max-minutes "${MAX_MINUTES:-6}" --batch-size 256 --lr 5e-4 --warmup-steps 500 --ema-decay 0.9995 --seed 0 \
  --device auto --out /tmp/teacher 2>&1 | tee "$OUT/train.log"
cp /tmp/teacher/pipeline/unet/diffusion_pytorch_model.safetensors /tmp/teacher/pipeline/unet/config.json "$OUT/"
cp /tmp/teacher/pipeline/scheduler/scheduler_config.json /tmp/teacher/pipeline/model_index.json "$OUT/"
cp /tmp/teacher/teacher.json /tmp/teacher/loss.csv "$OUT/"
