#!/usr/bin/env bash
# The GPU check for pretraining, one script, about 6 minutes on one H100 (hard limits add up to < 8):
#   1. bench_pretraining: ours vs Hugging Face (sdpa) train steps, small and large_v1 at seq 128 and 512, bf16,
#      plus LAMB vs fused AdamW step time; then the same with torch.compile at seq 128
#   2. run_pretraining smoke on the GPU: bf16 and fp16 (grad scaler) for 30 steps each, then an exact-resume check
# Results: bench/results/pretraining_<card>_<date>.json (+ _compiled.json) and bench/results/gpu_smoke_<date>.log.
#
#   bash bench/gpu_check.sh                # on the GPU machine
#   DEVICE=cpu bash bench/gpu_check.sh     # dry run of the same steps on the CPU (tiny shapes, a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=${DEVICE:-cuda}
STAMP=$(date +%Y%m%d)
RES=bench/results
WORK=bench/_work/gpu_check
mkdir -p "$RES" "$WORK"
CARD=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_') if torch.cuda.is_available() else 'cpu')")
SMOKE_LOG=$RES/gpu_smoke_${CARD}_${STAMP}.log
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'card', '$CARD')"

if [ "$DEVICE" = cuda ]; then
  BENCH=(--device cuda --configs small large_v1 --seq_lens 128 512)
  COMPILED=(--device cuda --configs small large_v1 --seq_lens 128 --compile --steps 10)
  SMOKE_CFG=models/configs/small.json; SMOKE_FLAGS=(--train_batch_size 128 --amp bf16); VOCAB=8000
else
  BENCH=(--device cpu --configs tiny --seq_lens 128 --steps 2 --warmup 1)
  COMPILED=(--device cpu --configs tiny --seq_lens 64 --steps 1 --warmup 1 --batch 2)
  SMOKE_CFG=models/configs/tiny.json; SMOKE_FLAGS=(--train_batch_size 16 --no_cuda --amp no); VOCAB=1000
fi

echo "== 1. bench (eager)"
timeout 180 $PY bench/bench_pretraining.py "${BENCH[@]}" --json "$RES/pretraining_${CARD}_${STAMP}.json" || echo "bench failed or timed out: $?"
echo "== 1b. bench (torch.compile, seq 128)"
timeout 120 $PY bench/bench_pretraining.py "${COMPILED[@]}" --json "$RES/pretraining_${CARD}_${STAMP}_compiled.json" || echo "compiled bench failed or timed out: $?"

echo "== 2. run_pretraining smoke" | tee "$SMOKE_LOG"
if [ ! -f "$WORK/shards/meta.json" ]; then
  $PY tokenization.py build-vocab --corpus data/korean_text/boddari/wikinews.txt --vocab_size $VOCAB --output "$WORK/vocab.txt"
  $PY create_pretraining_data.py --input_files data/korean_text/boddari/wikinews.txt --vocab_file "$WORK/vocab.txt" \
      --output_dir "$WORK/shards" --sentence_splitter regex --num_workers 8 --overwrite
fi
$PY - "$SMOKE_CFG" "$WORK/vocab.txt" "$WORK/config.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["vocab_size"] = sum(1 for _ in open(sys.argv[2], encoding="utf-8"))
json.dump(cfg, open(sys.argv[3], "w"))
EOF
COMMON=(--config_file "$WORK/config.json" --input_dir "$WORK/shards" --max_seq_length 128 --learning_rate 5e-4
        --warmup_proportion 0.1 --log_steps 5 --num_workers 2 "${SMOKE_FLAGS[@]}")
rm -rf "$WORK/main" "$WORK/fp16" "$WORK/resumed"
timeout 45 $PY run_pretraining.py "${COMMON[@]}" --output_dir "$WORK/main" --max_steps 30 --save_steps 15 2>&1 \
  | grep -v "^pretrain" | tee -a "$SMOKE_LOG" || true
if [ "$DEVICE" = cuda ]; then
  timeout 45 $PY run_pretraining.py "${COMMON[@]}" --amp fp16 --output_dir "$WORK/fp16" --max_steps 30 --save_steps 30 \
    2>&1 | grep -v "^pretrain" | tee -a "$SMOKE_LOG" || true
fi
timeout 45 $PY run_pretraining.py "${COMMON[@]}" --output_dir "$WORK/resumed" --max_steps 30 --save_steps 15 \
  --resume "$WORK/main/checkpoints/step-15" 2>&1 | grep -v "^pretrain" | tee -a "$SMOKE_LOG" || true
$PY - "$WORK" <<'EOF' 2>&1 | tee -a "$SMOKE_LOG"
import json, os, sys
import torch
from safetensors.torch import load_file
w = sys.argv[1]
rows = lambda d: {r["step"]: r for r in map(json.loads, open(os.path.join(w, d, "log.jsonl")))}
for d in ("main", "fp16"):
    if os.path.exists(os.path.join(w, d, "log.jsonl")):
        r = rows(d)
        print(f"{d}: loss {r[min(r)]['loss']:.3f} -> {r[max(r)]['loss']:.3f}, {r[max(r)]['seq_per_s']:.0f} seq/s, "
              f"skipped steps {r[max(r)].get('skipped_steps', 0)}")
a, b = rows("main"), rows("resumed")
diff = max(abs(a[s]["loss"] - b[s]["loss"]) for s in b)
wa = load_file(os.path.join(w, "main/checkpoints/step-30/model.safetensors"))
wb = load_file(os.path.join(w, "resumed/checkpoints/step-30/model.safetensors"))
wdiff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
print(f"resume from step 15: max |loss diff| {diff:.2e}, max |weight diff| {wdiff:.2e} (GPU kernels may be non-deterministic)")
EOF
echo "results in $RES"
