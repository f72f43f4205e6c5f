#!/usr/bin/env bash
# The GPU check, one script, about 7 minutes on one H100 or H200. Every step has a hard limit (timeout); with
# data building they add up to 660 s, and most steps end well inside their limits (QUICK=1 on an H200, 2026-11-27:
# 255 s with step 1c cut at its then 45 s limit):
#   0. torch/transformers versions and the card's name (a cold first CUDA import can be slow)               60 s
#   1. bench_pretraining: ours vs Hugging Face (sdpa) train steps, small and large_v1 at seq 128 (batch 256) and
#      512 (batch 32), bf16, MFU against a bf16 matmul peak measured in the run                               90 s
#   1b. the same with torch.compile, small then large_v1 at seq 128 (compiling takes most of it; the rows
#      finished before the limit are kept)                                                                   130 s
#   1c. bench_optimizer: one LAMB step vs one fused AdamW step, alone and after clip_grad_norm_ (what the
#      Adam path of run_pretraining.py does), large_v1                                                      75 s
#   1d. where the small model's step goes: small at seq 128, eager, 3 steps of each under torch.profiler (top
#      ops by GPU time, GPU busy time per step against the step's wall time)                                 45 s
#   2. bench_finetune (eager): QA large_v1 seq 384 and 512, classifier large_v1 seq 128, QA small seq 512 at
#      fixed length; KorQuAD dev (seq 384) and KorSTS batches, ours trimmed / rounded to 8s / length-grouped vs
#      HF padded, each batch once and then again with every shape seen, with projected epoch times; includes
#      building its 32k vocab and the features                                                              120 s
#      (compiled fine-tuning rows need more large_v1 compiles and do not fit: run
#      `python bench/bench_finetune.py --compile` on its own)
#   3. run_pretraining smoke on the GPU: 8k vocab (10 s), shards (20 s) and config (5 s), then bf16 and fp16
#      (grad scaler) for 30 steps each and an exact-resume run (3 x 30 s), then the resume comparison (15 s)  140 s
# The benches rewrite their JSON after every row, so a step stopped by its limit keeps the rows it finished.
# Results: bench/results/pretraining_<card>_<date>.json (+ _compiled.json), optimizer_<card>_<date>.json,
# finetune_<card>_<date>.json and gpu_smoke_<card>_<date>.log (a DEVICE=cpu dry run writes to
# bench/_work/gpu_check/results instead).
#
# QUICK=1 keeps steps 0, 1, 1c, 1d, 2 and step 1b for the small config only (limit 100 s: two cold compilations,
# ours and Hugging Face's, before any row is written), and skips the smoke runs: about 5 minutes (limits 490 s),
# which leaves time for `bench/cram.py --tasks` (pretraining only) when both must fit in 15 minutes of GPU time.
#
#   bash bench/gpu_check.sh                # on the GPU machine
#   QUICK=1 bash bench/gpu_check.sh        # the comparison tables only
#   DEVICE=cpu bash bench/gpu_check.sh     # dry run of the same steps on the CPU (tiny shapes, a few minutes;
#                                          # step 1b runs eager there: compiling would take minutes)
#   RESULTS_DIR=/some/dir bash bench/gpu_check.sh   # write the results there instead
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
STAMP=$(date +%Y%m%d)
WORK=bench/_work/gpu_check
RES=${RESULTS_DIR:-bench/results}
[ "$DEVICE" = cuda ] || RES=${RESULTS_DIR:-$WORK/results}  # a dry run's rows are not results to keep
mkdir -p "$RES" "$WORK"
# a cold first import of torch + CUDA can be slow; a failure here must not end the script before step 1
CARD=$(timeout 60 $PY -c "
import torch, transformers, sys
card = torch.cuda.get_device_name(0).replace(' ', '_') if torch.cuda.is_available() else 'cpu'
print('torch', torch.__version__, 'transformers', transformers.__version__, 'card', card, file=sys.stderr)
print(card)") || CARD=unknown
SMOKE_LOG=$RES/gpu_smoke_${CARD}_${STAMP}.log

if [ "$DEVICE" = cuda ]; then
  BENCH=(--device cuda --configs small large_v1 --seq_lens 128 512)
  COMPILED=(--device cuda --configs small large_v1 --seq_lens 128 --compile --steps 10)
  FINETUNE=(--device cuda)
  OPTIM=(--device cuda --configs large_v1)
  SMOKE_CFG=models/configs/small.json; SMOKE_FLAGS=(--train_batch_size 128 --amp bf16); VOCAB=8000
else
  BENCH=(--device cpu --configs tiny --seq_lens 128 --steps 2 --warmup 1)
  COMPILED=(--device cpu --configs tiny --seq_lens 64 --steps 1 --warmup 1 --batch 2)
  FINETUNE=(--device cpu --steps 2 --warmup 1 --batches 2)
  OPTIM=(--device cpu --configs tiny --rounds 2 --steps 1)
  SMOKE_CFG=models/configs/tiny.json; SMOKE_FLAGS=(--train_batch_size 16 --no_cuda --amp no); VOCAB=1000
fi

echo "== 1. bench (eager)"
timeout 90 $PY bench/bench_pretraining.py "${BENCH[@]}" --json "$RES/pretraining_${CARD}_${STAMP}.json" || echo "bench failed or timed out: $?"
echo "== 1b. bench (torch.compile, seq 128)"
LIMIT_1B=130
if [ "$QUICK" = 1 ] && [ "$DEVICE" = cuda ]; then
  COMPILED=(--device cuda --configs small --seq_lens 128 --compile --steps 10); LIMIT_1B=100
fi
timeout $LIMIT_1B $PY bench/bench_pretraining.py "${COMPILED[@]}" --json "$RES/pretraining_${CARD}_${STAMP}_compiled.json" || echo "compiled bench failed or timed out: $?"

echo "== 1c. optimizer step: LAMB vs fused AdamW"
timeout 75 $PY bench/bench_optimizer.py "${OPTIM[@]}" --json "$RES/optimizer_${CARD}_${STAMP}.json" || echo "optimizer bench failed or timed out: $?"

echo "== 1d. profile: small, seq 128, eager"
if [ "$DEVICE" = cuda ]; then PROFILE=(--device cuda --configs small --seq_lens 128 --steps 5 --warmup 3 --profile 3)
else PROFILE=(--device cpu --configs tiny --seq_lens 64 --steps 1 --warmup 1 --batch 2 --profile 1); fi
timeout 45 $PY bench/bench_pretraining.py "${PROFILE[@]}" --json "$RES/pretraining_${CARD}_${STAMP}_profile.json" || echo "profile failed or timed out: $?"

echo "== 2. fine-tuning bench (eager)"
timeout 120 $PY bench/bench_finetune.py "${FINETUNE[@]}" --json "$RES/finetune_${CARD}_${STAMP}.json" || echo "fine-tuning bench failed or timed out: $?"

if [ "$QUICK" = 1 ]; then
  echo "QUICK=1: smoke runs skipped; results in $RES"
  exit 0
fi
echo "== 3. run_pretraining smoke" | tee "$SMOKE_LOG"
if [ ! -f "$WORK/shards/meta.json" ]; then
  timeout 10 $PY tokenization.py build-vocab --corpus data/korean_text/boddari/wikinews.txt --vocab_size $VOCAB --output "$WORK/vocab.txt" \
      --overwrite
  timeout 20 $PY create_pretraining_data.py --input_files data/korean_text/boddari/wikinews.txt --vocab_file "$WORK/vocab.txt" \
      --output_dir "$WORK/shards" --sentence_splitter regex --num_workers 8 --overwrite
fi
timeout 5 $PY - "$SMOKE_CFG" "$WORK/vocab.txt" "$WORK/config.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["vocab_size"] = sum(1 for _ in open(sys.argv[2], encoding="utf-8"))
json.dump(cfg, open(sys.argv[3], "w"))
EOF
COMMON=(--config_file "$WORK/config.json" --input_dir "$WORK/shards" --max_seq_length 128 --learning_rate 5e-4
        --warmup_proportion 0.1 --log_steps 5 --num_workers 2 "${SMOKE_FLAGS[@]}")
rm -rf "$WORK/main" "$WORK/fp16" "$WORK/resumed"
timeout 30 $PY run_pretraining.py "${COMMON[@]}" --output_dir "$WORK/main" --max_steps 30 --save_steps 15 2>&1 \
  | grep -v "^pretrain" | tee -a "$SMOKE_LOG" || true
if [ "$DEVICE" = cuda ]; then
  timeout 30 $PY run_pretraining.py "${COMMON[@]}" --amp fp16 --output_dir "$WORK/fp16" --max_steps 30 --save_steps 30 \
    2>&1 | grep -v "^pretrain" | tee -a "$SMOKE_LOG" || true
fi
timeout 30 $PY run_pretraining.py "${COMMON[@]}" --output_dir "$WORK/resumed" --max_steps 30 --save_steps 15 \
  --resume "$WORK/main/checkpoints/step-15" 2>&1 | grep -v "^pretrain" | tee -a "$SMOKE_LOG" || true
timeout 15 $PY - "$WORK" <<'EOF' 2>&1 | tee -a "$SMOKE_LOG"
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
