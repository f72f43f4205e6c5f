"""Training-step throughput of our BertForPreTraining against Hugging Face's, in one process, same batch.

    python bench/bench_pretraining.py                                  # CPU: tiny and small, seq 128, batch 8
    python bench/bench_pretraining.py --configs small large_v1 --seq_lens 128 512 --compile \\
        --json bench/results/gpu.json                                  # GPU: bf16 by default
    python bench/bench_pretraining.py --configs small --steps 3 --warmup 1 --batch 4   # a quick look
    python bench/bench_pretraining.py --configs small --seq_lens 128 --compile --compile_mode reduce-overhead

One step = zero_grad + forward (MLM + SOP loss) + backward + AdamW step, for both models, with the same weights
(copied through modeling's Hugging Face key map), the same precision, optimizer and batch: random token ids with
~15% masked positions (max_predictions = round(0.15 x seq)) and 10% of the rows padded, as in real pretraining
batches. Warm-up and timed steps alternate between the two models so that drift of a shared machine hits both; the rate
is taken from the median step time. Each timed step ends with a device sync, so the host's work for a step cannot
overlap the GPU's for the one before, as it does in a training loop: for an overhead-bound model (Small at seq
128) that rate is below the loop's. The "pipelined" rate runs --steps steps back to back and syncs once, as a
training loop does (median of 3 such runs per contender, alternating).
Before timing, the two losses on the same weights and batch are compared (dropout off): equal in full fp32 (TF32
off) and, in a bf16 run, under bf16 within its tolerance, or the benchmark stops. Our model scores only the masked
positions; HF's projects every position onto the vocabulary and then ignores 85% of it, which is most of the
difference at small hidden sizes.
On a shared CPU the ratio by process CPU time is printed too (it ignores time spent waiting for a core); --threads 1
steadies both. The optimizer step alone (LAMB vs fused AdamW) is timed by bench_optimizer.py.

MFU (model FLOPs utilisation) = the FLOPs a step must do / step time / the matmul peak measured in the same run
(a large matmul in the step's precision: bf16 8192^3 on a GPU, fp32 1024^3 on a CPU). The step's FLOPs are 3x the
forward matmuls (the backward does two matmuls per forward one): encoder (QKV, output projection, FFN, and
attention over the full T x T, padding included) + the MLM head at the masked positions only + pooler/SOP. Both
models are charged the same FLOPs, so Hugging Face's all-position vocabulary projection is work it does beyond
the model FLOPs and lowers its MFU. bench_finetune.py uses the same count and peak.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from bench_common import (add_run_args, check_losses, copy_weights_to_hf, forward_flops, keep_rows,  # noqa: E402
                          make_step, measure_peak_tflops, mfu_fields, pipelined_fields, print_pipelined,
                          profile_steps, runtime, setup_device, time_interleaved, write_json)
from models.modeling import BertConfig, BertForPreTraining  # noqa: E402


def make_batch(batch, seq, vocab_size, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, seq), generator=g)
    lengths = torch.full((batch,), seq)
    short = torch.rand(batch, generator=g) < 0.1
    lengths[short] = torch.randint(8, seq, (int(short.sum()),), generator=g)
    pos = torch.arange(seq)
    attention_mask = (pos[None, :] < lengths[:, None]).long()
    ids[attention_mask == 0] = 0
    token_type_ids = ((pos[None, :] >= (lengths // 2)[:, None]) & (attention_mask == 1)).long()
    n_pred = max(1, round(0.15 * seq))
    labels = torch.full((batch, seq), -100)
    for b in range(batch):
        k = max(1, min(n_pred, round(0.15 * int(lengths[b]))))
        where = 1 + torch.randperm(int(lengths[b]) - 2, generator=g)[:k]
        labels[b, where] = ids[b, where]
        ids[b, where] = 4  # a [MASK]-like id
    sop = torch.randint(0, 2, (batch,), generator=g)
    # as PretrainingDataset gives them (our model only; HF takes the labels): predicted positions, then 0s
    positions = torch.zeros(batch, n_pred, dtype=torch.long)
    for b in range(batch):
        where = (labels[b] != -100).nonzero().flatten()
        positions[b, :len(where)] = where
    return {k: v.to(device) for k, v in dict(input_ids=ids, token_type_ids=token_type_ids,
                                             attention_mask=attention_mask, mlm_labels=labels,
                                             mlm_positions=positions, sop_labels=sop).items()}


def build_models(config, device):
    import transformers

    torch.manual_seed(0)
    with torch.device(device):  # initialised where they run: BERT-large's init takes ~10 s on one CPU core
        ours = BertForPreTraining(config)
        hf_cfg = transformers.BertConfig(**config.to_hf_dict(), attn_implementation="sdpa")
        hf = transformers.BertForPreTraining(hf_cfg)
    copy_weights_to_hf(ours, hf)
    if hf.cls.predictions.decoder.weight.data_ptr() != hf.bert.embeddings.word_embeddings.weight.data_ptr():
        hf.tie_weights()
    return ours, hf


def ours_loss(model, b):
    return model(**b)["loss"]


def hf_loss(model, b):
    return model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"],
                 labels=b["mlm_labels"], next_sentence_label=b["sop_labels"]).loss


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.add_argument("--configs", nargs="+", default=None, help="names in models/configs (default: CPU tiny small, "
                   "GPU small large_v1)")
    p.add_argument("--seq_lens", nargs="+", type=int, default=None, help="default: CPU 128, GPU 128 512")
    p.add_argument("--batch", type=int, default=None, help="default: 8 on CPU; on GPU 256 at seq 128, 32 at seq 512")
    p.add_argument("--amp", choices=["no", "bf16"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd versions of both models")
    p.add_argument("--compile_mode", choices=["default", "reduce-overhead", "max-autotune"], default="default",
                   help="torch.compile mode of both compiled models: reduce-overhead (and max-autotune, which also "
                        "tunes kernels) replays each step as CUDA graphs, which a host-bound (small) model may need")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, N more steps of each contender under torch.profiler (ops table, busy time)")
    args = p.parse_args(argv)
    if args.compile_mode != "default" and not args.compile:
        p.error(f"--compile_mode {args.compile_mode} applies to the compiled contenders: add --compile")

    import transformers

    device, gpu = setup_device(args)
    configs = args.configs or (["small", "large_v1"] if gpu else ["tiny", "small"])
    seq_lens = args.seq_lens or ([128, 512] if gpu else [128])
    amp = args.amp or ("bf16" if gpu else "no")
    warmup, n = args.warmup or (5 if gpu else 2), args.steps or (20 if gpu else 6)
    card, sync, autocast = runtime(device, amp)

    rows = []
    print(f"{card} | torch {torch.__version__} | transformers {transformers.__version__} | amp {amp}", flush=True)
    peak = measure_peak_tflops(device, torch.bfloat16 if amp == "bf16" else torch.float32)
    print(f"matmul peak ({'bf16' if amp == 'bf16' else 'fp32'}, measured): {peak:.2f} TFLOP/s", flush=True)
    for name in configs:
        config = BertConfig.from_json_file(os.path.join(ROOT, "models", "configs", f"{name}.json"))
        for seq in seq_lens:
            if seq > config.max_position_embeddings:
                print(f"{name} seq {seq}: skipped (max_position_embeddings {config.max_position_embeddings})")
                continue
            # GPU: the batches of the Hugging Face reference figures (256 at seq 128, 32 at seq 512)
            bsz = args.batch or (8 if not gpu else {128: 256, 512: 32}.get(seq, 32))
            print(f"{name} seq {seq} batch {bsz}:", flush=True)
            ours, hf = build_models(config, device)
            batch = make_batch(bsz, seq, config.vocab_size, device)
            check_losses(ours, hf, batch, autocast, amp, ours_loss, hf_loss)
            steps = {"ours": make_step(ours, ours_loss, batch, autocast, gpu),
                     "hf": make_step(hf, hf_loss, batch, autocast, gpu)}
            if args.compile:
                mode = None if args.compile_mode == "default" else args.compile_mode
                graphs = args.compile_mode in ("reduce-overhead", "max-autotune")
                steps["ours_compiled"] = make_step(torch.compile(ours, mode=mode), ours_loss, batch, autocast, gpu,
                                                   graphs)
                steps["hf_compiled"] = make_step(torch.compile(hf, mode=mode), hf_loss, batch, autocast, gpu, graphs)
            wall, cpu = time_interleaved(steps, warmup, n, sync)
            rate = {k: v * bsz for k, v in wall.items()}
            n_masked = int((batch["mlm_labels"] != -100).sum()) / bsz
            flops = round(3 * forward_flops(config, seq, "pretraining", n_masked))
            row = {"config": name, "kind": "train_step", "seq_len": seq, "batch": bsz, "amp": amp, "steps": n,
                   "ours_seq_per_s": round(rate["ours"], 2), "hf_seq_per_s": round(rate["hf"], 2),
                   "compile_mode": args.compile_mode if args.compile else None,
                   "ours_compiled_seq_per_s": round(rate["ours_compiled"], 2) if args.compile else None,
                   "hf_compiled_seq_per_s": round(rate["hf_compiled"], 2) if args.compile else None,
                   "ratio": round(rate["ours"] / rate["hf"], 3),
                   "ratio_cpu_time": None if gpu else round(cpu["ours"] / cpu["hf"], 3),
                   **pipelined_fields(steps, n, sync, bsz),
                   "flops_per_seq": flops, "peak_tflops": round(peak, 2), **mfu_fields(rate, flops, peak),
                   "card": card, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                   "transformers": transformers.__version__}
            rows.append(row)
            extra = (f" | compiled: ours {rate['ours_compiled']:.1f} hf {rate['hf_compiled']:.1f}"
                     if args.compile else "")
            by_cpu = "" if gpu else f" (by CPU time {row['ratio_cpu_time']:.2f}x)"
            print(f"  seq/s: ours {rate['ours']:.1f}  hf {rate['hf']:.1f}  ratio {row['ratio']:.2f}x{by_cpu}{extra}",
                  flush=True)
            print_pipelined(row, f"{n} steps")
            print(f"  MFU: ours {row['ours_mfu']:.1%}  hf {row['hf_mfu']:.1%}" + (
                f" | compiled: ours {row['ours_compiled_mfu']:.1%} hf {row['hf_compiled_mfu']:.1%}"
                if args.compile else "") + f"  ({flops / 1e9:.1f} GFLOP per sequence)", flush=True)
            if args.profile:
                keep_rows(rows, args, False)  # the timings first: a profile cut short by a time limit loses nothing
                row["profile"] = profile_steps(steps, args.profile, sync, gpu)
            del ours, hf, steps
            keep_rows(rows, args, gpu)
    if args.json:
        write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
