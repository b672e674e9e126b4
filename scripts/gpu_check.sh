#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA GPU and no network, in about 20 minutes, runs
#   1. every chapter's tests on the GPU, top to bottom as a Colab GPU runtime runs them: each notebook under nbdev_test
#      with the `cuda` cells on (4-bit on the GPU, bf16/fp16 autocast), one result per chapter;
#   2. bench/vs_trl.py --config gpu (random 7B-architecture model, nf4, 512 tokens) and --config reference on the GPU;
#   3. a one-GPU FSDP smoke run (accelerate_fsdp.yaml, tiny model, 4 steps, checkpoints at 2 and 4);
#   4. the Colab-T4 recipe (rpo_train --config colab_t4_mistral7b) for 6 steps in fp16 on a random 7B, on the shipped
#      HH sample, with the memory estimate it prints against the peaks it measures (metrics.jsonl);
#   5. bench/memory_estimate.py --gpu: the estimate for the `gpu` shape against torch.cuda.max_memory_allocated;
# and writes its figures to bench/results/ (vs_trl_gpu.*, vs_trl_reference_gpu.*, memory_estimate_gpu.*, gpu_check.json).
# Commit them.
# Uses the Python whose torch sees the GPU (PYTHON=..., default python3); installs nothing from the network.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check: torch sees no CUDA GPU")'
"$PY" -c 'import rpo_nb' 2>/dev/null || "$PY" -m pip install -q --no-deps --no-build-isolation -e .
results=bench/results; mkdir -p "$results"; log=$(mktemp -d)
t0=$(date +%s); status=()
step() {   # name, command...: run, time, remember pass/fail; never stop the whole check
  local name=$1; shift; local s=$(date +%s)
  if "$@" > "$log/$name.log" 2>&1; then status+=("\"$name\": {\"ok\": true, \"seconds\": $(( $(date +%s) - s ))}")
  else status+=("\"$name\": {\"ok\": false, \"seconds\": $(( $(date +%s) - s ))}"); tail -30 "$log/$name.log"; fi
  echo "gpu_check: $name done in $(( $(date +%s) - s )) s"
}
for nb in nbs/[0-9]*.ipynb; do   # each chapter alone, so that one failure does not hide the others
  step "chapter_$(basename "$nb" .ipynb)" "$PY" -c 'from nbdev.test import nbdev_test; nbdev_test()' --flags cuda --path "$nb"
done
fsdp=(--config tiny --max_steps 4 --save_steps 2 --output_dir "$log/fsdp" --progress false --plots false)
step fsdp_one_gpu "$PY" -m accelerate.commands.launch --config_file rpo_nb/configs/accelerate_fsdp.yaml --num_processes 1 \
  -m rpo_nb.cli "${fsdp[@]}"
step vs_trl_gpu "$PY" bench/vs_trl.py --config gpu
step vs_trl_reference_gpu "$PY" bench/vs_trl.py --config reference
step memory_estimate_gpu "$PY" bench/memory_estimate.py --gpu
# the T4 recipe, fp16, on the random 7B that the gpu benchmark wrote (same cache)
model=$("$PY" -c 'import sys; sys.path.insert(0, "bench"); from vs_trl import CONFIGS, model_source; print(model_source(CONFIGS["gpu"]))')
run=$log/t4
step t4_recipe_fp16 "$PY" -m rpo_nb.cli --config colab_t4_mistral7b --model "$model" --dtype float16 --data_path null \
  --data_dir null --max_train_items 96 --max_test_items 16 --max_steps 6 --warmup_steps 2 --eval_steps null --save_steps 6 \
  --output_dir "$run" --progress false --plots false
"$PY" - "$run" "$results/gpu_check.json" "$(( $(date +%s) - t0 ))" "{$(IFS=,; echo "${status[*]}")}" <<'PYEOF'
import json, sys, torch
from pathlib import Path
run, out, seconds, status = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").exists() else []
steps = [r for r in records if "loss" in r]
memory = next((r for r in records if "memory/predicted_needed_mb" in r), {})   # the estimate the run printed, and what it measured
summary = json.loads((run / "done.json").read_text()) if (run / "done.json").exists() else {}
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "seconds": seconds, "parts": status,
       "t4_recipe_fp16": {"steps": [{k: r.get(k) for k in ("step", "loss", "step_time", "tokens_per_s", "memory/allocated_mb",
                                                           "memory/reserved_mb", "loss_scale", "skipped")} for r in steps],
                          "speed": summary.get("speed"), "resolved": summary.get("resolved"), "memory": memory}}
out.write_text(json.dumps(res, indent=1))
print(json.dumps({k: v for k, v in res.items() if k != "t4_recipe_fp16"}, indent=1))
PYEOF
"$PY" bench/report.py
echo "gpu_check: finished in $(( $(date +%s) - t0 )) s; figures in $results/"
