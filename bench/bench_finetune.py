"""Training-step throughput of our KorQuAD and sentence-pair fine-tuning models against Hugging Face's, one process.

    python bench/bench_finetune.py                                     # CPU dry run: tiny shapes, well under a minute
    python bench/bench_finetune.py --json bench/results/finetune_gpu.json --compile   # GPU: default rows, bf16
    python bench/bench_finetune.py --fixed qa:small:384:16 --real korquad --batches 20 --steps 10   # a quick look
    python bench/bench_finetune.py --fixed qa:large_v1:512:16 --real --compile --compile_mode reduce-overhead \\
        --profile 3      # GPU: both models replaying CUDA graphs, and where each contender's step time goes

Ours BertForQuestionAnswering / BertForSequenceClassification against transformers' (sdpa attention), same weights
(copied through modeling's Hugging Face key map), same batch, precision (bf16 autocast on a GPU, fp32 on a CPU)
and optimizer (AdamW, fused on a GPU). One step = zero_grad + forward + loss + backward + AdamW step; the two
models alternate step by step (bench_common.time_interleaved), and their losses on one batch are compared
with dropout off before anything is timed.
  - fixed rows (--fixed head:config:seq:batch): random ids, every row real and seq long; the rate is taken from the
    median step. --compile adds torch.compile'd versions of both.
  - real rows (--real): KorQuAD dev windows (32k vocab, seq 384 / stride 128, training features) in batches of 16,
    and KorSTS train pairs (regression) in batches of 32, in a fixed random order. Ours is fed each batch as
    run_qa / run_classifier feed it on the CPU: cut to its longest row (so is ours_grouped, the batches of
    --group_by_length); Hugging Face's as its example scripts do: padded to max_seq_length. --batches batches are timed, each once, and the rate is the mean over them (widths differ,
    so the total is the cost); then all of them once more (warm_seq_per_s: every shape seen, as in the rest of an
    epoch, where a GPU has built its per-shape attention plans). ours_pad8 and ours_grouped_pad8: the same with
    widths rounded up to 8s, as the scripts feed a GPU by default (--pad_to_multiple_of). The epoch time is projected from that rate: for KorQuAD 1.0 train (60,407
    questions) the window count is an estimate, the dev set's windows per question times 60,407.
MFU as in bench_pretraining (bench_common): 3x the forward matmul FLOPs (encoder + span / classifier head) over
the matmul peak measured in this run. Real rows charge both models the FLOPs of ours' trimmed batches (the useful
work); the FLOPs Hugging Face executes on its padded batches are reported beside them (hf_executed_flops_per_seq).
Every timed step above ends with a device sync; pipelined_seq_per_s runs the same steps back to back with one sync
per pass (bench_common.time_pipelined), as a training loop does: the host's work then overlaps the GPU's.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import os
import statistics

import numpy as np
import torch
import torch.nn.functional as F

# first: importing bench_common puts the repository root on sys.path for the imports below it
from bench_common import (ROOT, add_run_args, check_losses, copy_weights_to_hf, forward_flops, keep_rows,
                          make_step, measure_peak_tflops, mfu_fields, pipelined_fields, print_pipelined,
                          profile_steps, runtime, setup_device, time_interleaved, write_json)
from bench_qa_features import DEV, default_vocab

import cls_data
import cls_features
import qa_data
from models.modeling import BertConfig, BertForQuestionAnswering, BertForSequenceClassification
from tokenization import build_fast_tokenizer, load_vocab, special_token_ids
from batching import LENGTH_GROUP, GlobalBatchSampler, batch_to_device, round_width
from train_utils import compile_for_training

KORQUAD_TRAIN_QUESTIONS = 60407
KORSTS_TRAIN = os.path.join(ROOT, "data", "korsts", "sts-train.tsv")
GPU_FIXED = ["qa:large_v1:384:16", "qa:large_v1:512:16", "cls:large_v1:128:32", "qa:small:512:16"]
CPU_FIXED = ["qa:tiny:128:4", "cls:tiny:128:4"]
CLS_LABELS = 3  # a KorNLI-shaped head for the fixed classifier rows


def load_config(name: str) -> BertConfig:
    path = name if name.endswith(".json") else os.path.join(ROOT, "models", "configs", f"{name}.json")
    return BertConfig.from_json_file(path)


def build_pair(config, head, num_labels, device):
    """Ours and Hugging Face's model for head "qa" or "cls", same weights, built on the device (fast for large)."""
    import transformers

    torch.manual_seed(0)
    with torch.device(device):
        ours = (BertForQuestionAnswering(config) if head == "qa"
                else BertForSequenceClassification(config, num_labels=num_labels))
        hf_cfg = transformers.BertConfig(**ours.config.to_hf_dict(), attn_implementation="sdpa")
        hf = (transformers.BertForQuestionAnswering if head == "qa"
              else transformers.BertForSequenceClassification)(hf_cfg)
    copy_weights_to_hf(ours, hf)
    return ours, hf


def step_loss(model, b):
    return model(**b)["loss"]  # the batch keys are the forward arguments of both; HF's output indexes by name too


def hf_loss_as_ours(model, b):
    """HF's loss, but a QA batch's padding left out of the start/end softmax, as ours leaves it (HF's spans it)."""
    if "start_positions" not in b:
        return step_loss(model, b)
    out = model(**{k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
    T, pad = b["input_ids"].size(1), b["attention_mask"] == 0
    return sum(F.cross_entropy(logits.float().masked_fill(pad, -1e4), pos.clamp(0, T), ignore_index=T)
               for logits, pos in ((out.start_logits, b["start_positions"]), (out.end_logits, b["end_positions"]))) / 2


def fixed_batch(head, bsz, seq, vocab_size, num_labels, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (bsz, seq), generator=g)
    types = (torch.arange(seq) >= seq // 4).long().expand(bsz, seq).clone()  # a short first segment, as a question
    b = {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids)}
    if head == "qa":
        start = torch.randint(seq // 4, seq - 8, (bsz,), generator=g)
        b.update(start_positions=start, end_positions=start + torch.randint(0, 8, (bsz,), generator=g))
    else:
        b["labels"] = (torch.randint(0, num_labels, (bsz,), generator=g) if num_labels > 1
                       else 5 * torch.rand(bsz, generator=g))
    return {k: v.to(device) for k, v in b.items()}


def pad_to(b: dict, width: int, pad_id: int) -> dict:
    """A dynamically padded batch padded on to `width` columns, as a pad-to-max_length loader would give it."""
    out = dict(b)
    for k in ("input_ids", "token_type_ids", "attention_mask"):
        out[k] = F.pad(b[k], (0, width - b[k].size(1)), value=pad_id if k == "input_ids" else 0)  # [B,w] -> [B,width]
    return out


def korquad_batches(max_seq, stride, bsz, n, seed):
    """(ours trimmed, HF padded, info): n batches of KorQuAD dev training windows in a fixed random order.

    info["grouped"]: the first n batches run_qa --group_by_length would draw (length-grouped, trimmed)."""
    vocab = default_vocab(32000)
    examples, _ = qa_data.read_korquad(DEV, True)
    feats, _ = qa_data.convert_examples_to_features(examples, build_fast_tokenizer(vocab),
                                                    special_token_ids(load_vocab(vocab)), max_seq, stride, 64, True)
    order = np.random.default_rng(seed).permutation(len(feats))[:n * bsz]
    def rows_batch(rows):
        return {k: torch.from_numpy(getattr(feats, k)[np.sort(rows)]).long() for k in
                ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")}

    def trim(b):
        width = int(b["attention_mask"].sum(1).max())  # run_qa's cut
        return {k: v[:, :width] if v.dim() == 2 else v for k, v in b.items()}

    hf = [rows_batch(order[i:i + bsz]) for i in range(0, len(order) - bsz + 1, bsz)]
    ours = [trim(b) for b in hf]
    lengths = feats.attention_mask.sum(1)
    sampler = GlobalBatchSampler(lengths, bsz, seed, group=LENGTH_GROUP)  # run_qa's --group_by_length
    grouped = [trim(rows_batch(rows)) for rows in itertools.islice(iter(sampler), len(hf))]
    widths = {max_seq: epoch_widths(lengths, bsz, seed, max_seq)}
    if max_seq != 512:  # the release's fine-tuning length too
        feats512, _ = qa_data.convert_examples_to_features(examples, build_fast_tokenizer(vocab),
                                                           special_token_ids(load_vocab(vocab)), 512, stride, 64, True)
        widths[512] = epoch_widths(feats512.attention_mask.sum(1), bsz, seed, 512)
    per_q = len(feats) / len(np.unique(feats.example_index))
    info = {"vocab": vocab, "grouped": grouped, "epoch_mean_widths": widths,
            "epoch_examples": round(KORQUAD_TRAIN_QUESTIONS * per_q), "epoch_is_estimate": True,
            "epoch_note": f"estimate: {KORQUAD_TRAIN_QUESTIONS:,} KorQuAD 1.0 train questions x {per_q:.3f} "
                          f"windows per question (dev set, seq {max_seq} / stride {stride})"}
    return ours, hf, info


def epoch_widths(lengths, bsz, seed, max_seq) -> dict:
    """Mean batch width over a whole epoch of KorQuAD windows (no model needed) for each way of batching them."""
    every = np.random.default_rng(seed).permutation(len(lengths))
    widths = {"real_tokens": float(lengths.mean()),
              "random_batches": float(np.mean([lengths[every[i:i + bsz]].max() for i in range(0, len(every), bsz)])),
              "grouped_batches": float(np.mean([lengths[rows].max() for rows in GlobalBatchSampler(
                  lengths, bsz, seed, group=LENGTH_GROUP)]))}
    print(f"KorQuAD dev, {len(lengths)} windows at seq {max_seq}: mean real length {widths['real_tokens']:.1f}; "
          f"mean batch width over an epoch: random batches cut to their longest window "
          f"{widths['random_batches']:.1f}, --group_by_length {widths['grouped_batches']:.1f}, padded {max_seq}",
          flush=True)
    return {k: round(v, 1) for k, v in widths.items()}


def korsts_batches(max_seq, bsz, n, seed):
    """(ours dynamically padded, HF padded to max_seq, info): n batches of KorSTS train pairs, fixed random order."""
    vocab = default_vocab(32000)
    ids = special_token_ids(load_vocab(vocab))
    feats = cls_features.convert_examples(cls_data.read_examples(KORSTS_TRAIN, cls_data.TASKS["korsts"]),
                                          build_fast_tokenizer(vocab), ids["cls"], ids["sep"], max_seq)
    order = np.random.default_rng(seed).permutation(len(feats))[:n * bsz]
    ours = [cls_features.collate([feats[j] for j in order[i:i + bsz]], ids["pad"], True)
            for i in range(0, len(order) - bsz + 1, bsz)]
    hf = [pad_to(b, max_seq, ids["pad"]) for b in ours]
    info = {"vocab": vocab, "epoch_examples": len(feats), "epoch_is_estimate": True,
            "epoch_note": f"{len(feats):,} KorSTS train pairs (exact); the time per pair is the mean over the "
                          f"sampled batches"}
    return ours, hf, info


def meta(card):
    import transformers
    return {"card": card, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def run_fixed(spec, args, env):
    head, name, seq, bsz = spec.split(":")
    seq, bsz = int(seq), int(bsz)
    config = load_config(name)
    num_labels = CLS_LABELS if head == "cls" else 2
    print(f"{head} {name} seq {seq} batch {bsz} (fixed length):", flush=True)
    ours, hf = build_pair(config, head, num_labels, env["device"])
    batch = fixed_batch(head, bsz, seq, config.vocab_size, num_labels, env["device"])
    check_losses(ours, hf, batch, env["autocast"], env["amp"], step_loss, step_loss)
    # as run_qa / run_classifier feed it: without a mask that masks nothing (HF drops it inside its model)
    ours_batch = batch_to_device(batch, env["device"])
    steps = {"ours": make_step(ours, step_loss, ours_batch, env["autocast"], env["gpu"]),
             "hf": make_step(hf, step_loss, batch, env["autocast"], env["gpu"])}
    if args.compile:  # both compiled as the training scripts compile theirs
        (ours_c, graphs), (hf_c, _) = compile_for_training(ours, args), compile_for_training(hf, args)
        steps["ours_compiled"] = make_step(ours_c, step_loss, ours_batch, env["autocast"], env["gpu"], graphs)
        steps["hf_compiled"] = make_step(hf_c, step_loss, batch, env["autocast"], env["gpu"], graphs)
    wall, _ = time_interleaved(steps, env["warmup"], env["steps"], env["sync"])
    rate = {k: v * bsz for k, v in wall.items()}
    piped = pipelined_fields(steps, env["steps"], env["sync"], bsz)
    flops = 3 * forward_flops(config, seq, head, num_labels=num_labels)
    row = {"config": name, "kind": f"{head}_fixed", "seq_len": seq, "batch": bsz, "amp": env["amp"],
           "steps": env["steps"], **seq_rates(rate), "ratio": round(rate["ours"] / rate["hf"], 3),
           "compile_mode": args.compile_mode if args.compile else None,
           **piped, "flops_per_seq": flops, "peak_tflops": round(env["peak"], 2),
           **mfu_fields(rate, flops, env["peak"]),
           **meta(env["card"])}
    report(row, rate)
    if args.profile:  # where a step's time goes: the device busy or waiting for the host's launches
        keep_rows(env["rows"] + [row], args, False)  # the timings first: a profile cut short loses nothing
        row["profile"] = profile_steps(steps, args.profile, env["sync"], env["gpu"])
    return row


def run_real(which, args, env):
    config = load_config(args.real_config)
    if which == "korquad":
        head, num_labels, max_seq, bsz = "qa", 2, 384, 16
        ours_b, hf_b, info = korquad_batches(max_seq, 128, bsz, args.batches, args.seed)
    else:
        head, num_labels, max_seq, bsz = "cls", 1, 128, 32
        ours_b, hf_b, info = korsts_batches(max_seq, bsz, args.batches, args.seed)
    config = dataclasses.replace(config, vocab_size=len(load_vocab(info["vocab"])))
    device = env["device"]
    # ours as the scripts feed it on a GPU (--pad_to_multiple_of 8: fewer shapes) and cut to each longest row
    pad_id = special_token_ids(load_vocab(info["vocab"]))["pad"]
    def rounded(batches):
        return [batch_to_device(pad_to(b, round_width(b["input_ids"].size(1), 8, max_seq), pad_id), device)
                for b in batches]
    pad8_b, grouped8_b = rounded(ours_b), rounded(info.get("grouped", []))
    ours_b = [batch_to_device(b, device) for b in ours_b]  # as the scripts do: a full batch goes without a mask
    hf_b = [{k: v.to(device) for k, v in b.items()} for b in hf_b]
    grouped_b = [batch_to_device(b, device) for b in info.get("grouped", [])]
    widths = [int(b["input_ids"].size(1)) for b in ours_b]
    real = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in ours_b)
    print(f"{head} {args.real_config} {which}: {len(ours_b)} batches of {bsz}, ours' mean width "
          f"{statistics.fmean(widths):.1f} vs {max_seq} padded; {real / (bsz * sum(widths)):.0%} of ours' "
          f"positions are real tokens", flush=True)
    ours, hf = build_pair(config, head, num_labels, device)
    # on HF's padded batch for both, HF's QA loss scored without the padding (the timed steps use HF's own loss)
    check_losses(ours, hf, hf_b[0], env["autocast"], env["amp"], step_loss, hf_loss_as_ours)
    steps = {"ours": make_step(ours, step_loss, ours_b, env["autocast"], env["gpu"]),
             "ours_pad8": make_step(ours, step_loss, pad8_b, env["autocast"], env["gpu"]),
             "hf": make_step(hf, step_loss, hf_b, env["autocast"], env["gpu"])}
    if grouped_b:  # other windows than the two above (the sampler's own draw): compare its seq/s, not its loss
        steps["ours_grouped"] = make_step(ours, step_loss, grouped_b, env["autocast"], env["gpu"])
        steps["ours_grouped_pad8"] = make_step(ours, step_loss, grouped8_b, env["autocast"], env["gpu"])
    # warm-up steps shift every cycle alike, so the len(batches) timed steps still visit every batch once. The
    # first pass meets most batch shapes for the first time; on a GPU each costs a new attention plan (cuDNN's
    # SDPA on sm90 and newer), which an epoch pays only once per shape: the second pass, every shape seen, is
    # what the rest of training runs at
    wall, _ = time_interleaved(steps, env["warmup"], len(ours_b), env["sync"], stat=statistics.fmean)
    warm, _ = time_interleaved(steps, 0, len(ours_b), env["sync"], stat=statistics.fmean)
    piped = pipelined_fields(steps, len(ours_b), env["sync"], bsz)
    rate = {k: v * bsz for k, v in wall.items()}
    warm = {k: round(v * bsz, 2) for k, v in warm.items()}
    # the useful work: every batch at ours' trimmed width, charged to both models
    flops = statistics.fmean(3 * forward_flops(config, w, head, num_labels=num_labels) for w in widths)
    row = {"config": args.real_config, "kind": f"{'qa' if head == 'qa' else 'sts'}_{which}_batches",
           "seq_len": max_seq, "batch": bsz, "amp": env["amp"], "steps": len(ours_b), **seq_rates(rate),
           "ratio": round(rate["ours"] / rate["hf"], 3), "ours_mean_width": round(statistics.fmean(widths), 1),
           "hf_width": max_seq, "real_token_frac_of_ours": round(real / (bsz * sum(widths)), 3),
           "flops_per_seq": round(flops), "flops_basis": "ours' trimmed widths, charged to both models",
           "hf_executed_flops_per_seq": 3 * forward_flops(config, max_seq, head, num_labels=num_labels),
           "peak_tflops": round(env["peak"], 2), **mfu_fields(rate, flops, env["peak"]),
           "epoch_examples": info["epoch_examples"], "epoch_is_estimate": info["epoch_is_estimate"],
           "epoch_note": info["epoch_note"],
           "ours_epoch_min": round(info["epoch_examples"] / rate["ours"] / 60, 2),
           "hf_epoch_min": round(info["epoch_examples"] / rate["hf"] / 60, 2),
           "ours_pad8_seq_per_s": round(rate["ours_pad8"], 2),
           "ours_pad8_mean_width": round(statistics.fmean(int(b["input_ids"].size(1)) for b in pad8_b), 1),
           "timing": "the rates above: each batch once, shapes mostly new; warm_seq_per_s: a second pass, every "
                     "shape seen", "warm_seq_per_s": warm, "ratio_warm": round(warm["ours"] / warm["hf"], 3),
           **piped, **meta(env["card"])}
    if grouped_b:
        gw = statistics.fmean(int(b["input_ids"].size(1)) for b in grouped_b)
        row.update(ours_grouped_seq_per_s=round(rate["ours_grouped"], 2), ours_grouped_mean_width=round(gw, 1),
                   epoch_mean_widths=info["epoch_mean_widths"],
                   ratio_grouped=round(rate["ours_grouped"] / rate["hf"], 3),
                   ours_grouped_pad8_seq_per_s=round(rate["ours_grouped_pad8"], 2),
                   ours_grouped_epoch_min=round(info["epoch_examples"] / rate["ours_grouped"] / 60, 2))
    report(row, rate)
    print(f"  projected epoch ({info['epoch_note']}): ours {row['ours_epoch_min']:.1f} min, "
          f"hf {row['hf_epoch_min']:.1f} min", flush=True)
    if grouped_b:
        print(f"  --group_by_length: mean width {row['ours_grouped_mean_width']:.1f}, "
              f"{rate['ours_grouped']:.1f} seq/s ({row['ratio_grouped']:.2f}x hf), projected epoch "
              f"{row['ours_grouped_epoch_min']:.1f} min; widths rounded up to 8s "
              f"{rate['ours_grouped_pad8']:.1f} seq/s", flush=True)
    print(f"  widths rounded up to 8s (mean {row['ours_pad8_mean_width']:.1f}): {rate['ours_pad8']:.1f} seq/s "
          f"({rate['ours_pad8'] / rate['hf']:.2f}x hf)", flush=True)
    print("  second pass, every shape seen: " + ", ".join(f"{k} {v:.1f}" for k, v in warm.items())
          + f" seq/s (ours {row['ratio_warm']:.2f}x hf)", flush=True)
    return row


def seq_rates(rate):
    return {"ours_seq_per_s": round(rate["ours"], 2), "hf_seq_per_s": round(rate["hf"], 2),
            "ours_compiled_seq_per_s": round(rate["ours_compiled"], 2) if "ours_compiled" in rate else None,
            "hf_compiled_seq_per_s": round(rate["hf_compiled"], 2) if "hf_compiled" in rate else None}


def report(row, rate):
    compiled = "ours_compiled" in rate
    extra = f" | compiled: ours {rate['ours_compiled']:.1f} hf {rate['hf_compiled']:.1f}" if compiled else ""
    print(f"  seq/s: ours {rate['ours']:.1f}  hf {rate['hf']:.1f}  ratio {row['ratio']:.2f}x{extra}", flush=True)
    print_pipelined(row, "pass")
    print(f"  MFU: ours {row['ours_mfu']:.1%}  hf {row['hf_mfu']:.1%}" + (
        f" | compiled: ours {row['ours_compiled_mfu']:.1%} hf {row['hf_compiled_mfu']:.1%}" if compiled else "")
        + f"  ({row['flops_per_seq'] / 1e9:.1f} GFLOP per sequence)", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.add_argument("--fixed", nargs="*", default=None, metavar="HEAD:CONFIG:SEQ:BATCH",
                   help=f"fixed-length rows, head qa or cls (default: GPU {' '.join(GPU_FIXED)}; "
                        f"CPU {' '.join(CPU_FIXED)})")
    p.add_argument("--real", nargs="*", default=["korquad", "korsts"], choices=["korquad", "korsts"],
                   help="real-batch rows (none: --real with no value)")
    p.add_argument("--real_config", default=None, help="config of the real-batch rows (default: GPU large_v1, "
                   "CPU tiny); its vocab_size becomes the 32k vocab's")
    p.add_argument("--batches", type=int, default=None, help="real batches timed, each once (default GPU 40, CPU 3)")
    p.add_argument("--amp", choices=["no", "bf16"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps of the fixed rows")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd versions (fixed rows)")
    p.add_argument("--compile_mode", choices=["default", "reduce-overhead"], default="default",
                   help="reduce-overhead: both compiled models replay their steps as CUDA graphs")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing a fixed row, N more steps of each contender under torch.profiler (busy time "
                        "against the step's wall time, top ops)")
    p.add_argument("--seed", type=int, default=0, help="order of the real batches")
    args = p.parse_args(argv)
    if args.compile_mode != "default" and not args.compile:
        p.error(f"--compile_mode {args.compile_mode} applies to the compiled contenders: add --compile")
    if args.profile < 0:
        p.error(f"--profile {args.profile}: a number of steps, at least 0")
    for spec in args.fixed or []:
        parts = spec.split(":")
        if len(parts) != 4 or parts[0] not in ("qa", "cls") or not (parts[2].isdigit() and parts[3].isdigit()):
            p.error(f"--fixed {spec}: expected head:config:seq:batch with head qa or cls, e.g. qa:small:384:16")

    import transformers

    device, gpu = setup_device(args)
    amp = args.amp or ("bf16" if gpu else "no")
    args.real_config = args.real_config or ("large_v1" if gpu else "tiny")
    args.batches = args.batches or (40 if gpu else 3)
    card, sync, autocast = runtime(device, amp)
    env = {"device": device, "gpu": gpu, "amp": amp, "card": card, "sync": sync, "autocast": autocast,
           "warmup": args.warmup or (5 if gpu else 1), "steps": args.steps or (20 if gpu else 4)}
    print(f"{card} | torch {torch.__version__} | transformers {transformers.__version__} | amp {amp}", flush=True)
    env["peak"] = measure_peak_tflops(device, torch.bfloat16 if amp == "bf16" else torch.float32)
    print(f"matmul peak ({'bf16' if amp == 'bf16' else 'fp32'}, measured): {env['peak']:.2f} TFLOP/s", flush=True)

    rows = env["rows"] = []
    fixed = args.fixed if args.fixed is not None else (GPU_FIXED if gpu else CPU_FIXED)
    jobs = [(run_fixed, spec) for spec in fixed] + [(run_real, which) for which in args.real]
    for fn, what in jobs:
        rows.append(fn(what, args, env))
        if args.compile:
            torch._dynamo.reset()  # compiled graphs hold their model's buffers; let each row start clean
        gc.collect()
        keep_rows(rows, args, gpu)
    if args.json:
        write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
