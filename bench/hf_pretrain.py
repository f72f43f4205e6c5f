"""Plain Hugging Face masked-LM pretraining on our shards: the baseline that bench/cram.py's recipe is measured against.

    python bench/cram.py --pretrainer hf --budget_minutes 3.5   # GPU: this for 210 s, then cram's fine-tuning grid
    python bench/cram.py --pretrainer hf --smoke                # CPU: the same pipeline at toy sizes (~1 min)
    # GPU: the issue's reference as it was run, 7,762 steps (its 210 s on an H100), plain torch.compile
    python bench/hf_pretrain.py --config_file models/configs/small.json --input_dir bench/_work/cram/shards \\
        --output_dir bench/_work/hf/pretrain --max_steps 7762 --amp bf16 --compile

What a transformers user would write: `BertForMaskedLM` (sdpa attention) in the config's shape with its dropout;
windows of max_seq_length tokens at random offsets of the shards' token stream ([CLS] + tokens + [SEP], across
sentence and document boundaries, like run_mlm.py's concatenated blocks); 15% of the tokens masked 80/10/10 by
`DataCollatorForLanguageModeling` in the loader workers; the model's own loss (over the masked tokens, from logits
at every position); torch AdamW (betas 0.9/0.999, eps 1e-8) with weight decay 0.01 (BERT's; the Trainer's default
is 0) except on biases and LayerNorm, as the Trainer leaves them out; gradients clipped at 1.0, linear warm-up and
decay; autocast; torch.compile. None of ours: no SOP, no whole-word or n-gram masking, no MLM head restricted to the
masked positions, no model code of ours. bench/cram.py passes its recipe's --compile_mode (CUDA graphs), a step
beyond the reference's plain torch.compile, so the baseline gets every speed-up ours gets.

Shared with run_pretraining.py, so that a comparison is of the pretraining alone: the time budget counts from the
end of the first step (which compiles), --schedule_by_time fits warm-up and decay to it, and the outputs have
run_pretraining's layout, which bench/cram.py reads: OUTPUT_DIR/log.jsonl (step, loss, mlm_loss, mlm_acc, lr,
grad_norm, seq_per_s, data_wait, elapsed_s; sop_* are null; mlm_acc is that of the row's last batch),
OUTPUT_DIR/checkpoints/step-N (a transformers folder with vocab.txt, loadable by every script here) + `latest`,
and OUTPUT_DIR/DONE. SIGINT/SIGTERM (to the process or its whole group) finish the step and save (exit 130/143);
a second Ctrl-C stops at once. No resume: OUTPUT_DIR must hold no earlier run. One process.
"""
from __future__ import annotations

import argparse
import bisect
import math
import os
import shutil
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import train_utils as tu  # noqa: E402
from fileio import JsonlLogger, atomic_write_json, publish_checkpoint_dir  # noqa: E402
from models.config import BertConfig  # noqa: E402
from optimization import lr_factor  # noqa: E402
from pretraining_data import check_token_ids, read_meta, shard_path  # noqa: E402
from tokenization import load_vocab, special_token_ids  # noqa: E402


class RandomWindows(Dataset):
    """Item i: [CLS] + max_seq_length - 2 consecutive shard tokens from an offset drawn by rng([seed, i]) + [SEP]. A
    window never crosses a shard's end; every possible start in the corpus is equally likely (so a shard's last
    max_seq_length - 3 tokens are drawn less often)."""

    def __init__(self, input_dir: str, max_seq_length: int, seed: int, length: int):
        self.meta = meta = read_meta(input_dir)
        self.input_dir, self.span, self.seed, self.length = input_dir, max_seq_length - 2, seed, length
        vocab_file = os.path.join(input_dir, "vocab.txt")
        sp = special_token_ids(load_vocab(vocab_file), vocab_file)
        self.cls_id, self.sep_id = sp["cls"], sp["sep"]
        self.shards = [s["name"] for s in meta["shards"]]
        starts = []
        for s in meta["shards"]:  # a damaged shard fails here, not in a loader worker (or a GPU assert) later
            path = shard_path(input_dir, s["name"], "ids")
            try:
                ids = np.load(path, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise ValueError(f"{path}: {e}") from None
            if len(ids) != s["num_tokens"]:
                raise ValueError(f"{path}: {len(ids)} tokens, but meta.json says {s['num_tokens']}: a damaged shard "
                                 "(prepare the data again)")
            check_token_ids(path, ids, meta["vocab_size"])
            starts.append(len(ids) - self.span + 1)
        if max(starts) < 1:
            raise ValueError(f"no shard holds {self.span} tokens: lower --max_seq_length")
        self.cum_starts = np.cumsum(np.maximum(starts, 0)).tolist()  # window starts in shards 0..k
        self._mm = {}

    def __getstate__(self):  # workers open their own memory maps
        return {k: v for k, v in self.__dict__.items() if k != "_mm"} | {"_mm": {}}

    def __len__(self):
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = int(np.random.default_rng([self.seed, i]).integers(self.cum_starts[-1]))
        k = bisect.bisect_right(self.cum_starts, g)
        start = g - (self.cum_starts[k - 1] if k else 0)
        if k not in self._mm:
            self._mm[k] = np.load(shard_path(self.input_dir, self.shards[k], "ids"), mmap_mode="r")
        ids = np.concatenate([[self.cls_id], self._mm[k][start:start + self.span], [self.sep_id]]).astype(np.int64)
        return {"input_ids": torch.from_numpy(ids)}


def mlm_collator(vocab_file: str, do_lower_case: bool, mlm_probability: float):
    """transformers' masking (mlm_probability of the tokens, never [CLS]/[SEP]/[PAD]; 80% [MASK], 10% a random id, 10%
    kept), with the tokenizer it reads the special tokens and the vocab size from."""
    from transformers import BertTokenizerFast, DataCollatorForLanguageModeling
    # the vocab positionally: transformers 4 names that parameter vocab_file, 5 names it vocab and ignores vocab_file=
    # (its tokenizer then holds the 5 special tokens alone, and the random replacements are drawn from those)
    tokenizer = BertTokenizerFast(vocab_file, do_lower_case=do_lower_case)
    return DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=mlm_probability)


def build_parser():
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_file", required=True, help="model shape (ours, the release's or transformers' keys); "
                   "vocab_size must match the shards")
    p.add_argument("--input_dir", required=True, help="shards written by create_pretraining_data.py (with vocab.txt)")
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--mlm_probability", type=float, default=0.15)
    p.add_argument("--dropout", type=float, default=None, help="hidden and attention dropout (default: the config's)")
    p.add_argument("--train_batch_size", type=int, default=256)
    p.add_argument("--max_steps", type=int, default=7762, help="also the schedule's length without --schedule_by_time "
                   "(default: the issue's reference run, 210 s on an H100)")
    p.add_argument("--max_time_minutes", type=float, default=None, help="stop after this much wall time, counted "
                   "from the end of the first step")
    p.add_argument("--schedule_by_time", action="store_true",
                   help="warm-up and decay follow the share of --max_time_minutes spent (or of --max_steps, if more)")
    p.add_argument("--log_steps", type=int, default=100)
    tu.add_optim_args(p, learning_rate=5e-4)
    tu.add_compile_arg(p.add_argument_group("compile"))
    tu.add_runtime_args(p, num_workers=tu.default_num_workers(), num_workers_help="loader workers (masking)")
    p.set_defaults(adam_epsilon=1e-8)  # torch's and transformers' AdamW default
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from transformers import BertConfig as HFBertConfig, BertForMaskedLM

    # `not x > 0` also refuses NaN
    for ok, flag in ((args.max_seq_length >= 3, "--max_seq_length: at least 3"),
                     (0 < args.mlm_probability < 1, "--mlm_probability: in (0, 1)"),
                     (args.train_batch_size >= 1, "--train_batch_size: at least 1"),
                     (args.max_steps >= 1, "--max_steps: at least 1"), (args.log_steps >= 1, "--log_steps: at least 1"),
                     (args.seed >= 0, "--seed: at least 0"), (args.num_workers >= 0, "--num_workers: at least 0"),
                     (args.learning_rate > 0 and math.isfinite(args.learning_rate), "--learning_rate: positive"),
                     (0 <= args.warmup_proportion < 1, "--warmup_proportion: in [0, 1)"),
                     (args.weight_decay >= 0, "--weight_decay: at least 0"),
                     (args.adam_epsilon > 0, "--adam_epsilon: positive"),
                     (args.max_grad_norm > 0, "--max_grad_norm: positive"),
                     (args.max_time_minutes is None or args.max_time_minutes > 0, "--max_time_minutes: positive"),
                     (args.gradient_accumulation_steps == 1, "--gradient_accumulation_steps: only 1 here"),
                     (args.dropout is None or 0 <= args.dropout < 1, "--dropout: in [0, 1)"),
                     (args.amp != "fp16", "--amp fp16: not here (no loss scaler); use --amp bf16"),
                     (args.output_dir, "--output_dir: required"),
                     (args.max_time_minutes or not args.schedule_by_time,
                      "--schedule_by_time: needs --max_time_minutes")):
        if not ok:
            tu.fail(flag)
    earlier = {"log.jsonl", "checkpoints", "DONE"}
    if os.path.exists(args.output_dir) and (not os.path.isdir(args.output_dir)
                                            or earlier & set(os.listdir(args.output_dir))):
        tu.fail(f"--output_dir {args.output_dir}: not a folder, or holds an earlier run (no resume: use a new one)")
    try:
        tu.check_compile_args(args)
    except ValueError as e:
        tu.fail(str(e))
    rt = tu.setup_runtime(args)
    if rt.distributed:
        tu.fail("one process only: run without torchrun")
    try:
        config = BertConfig.from_json_file(args.config_file)
    except (ValueError, OSError) as e:
        tu.fail(f"--config_file {args.config_file}: {e}")
    B, T = args.train_batch_size, args.max_seq_length
    try:
        ds = RandomWindows(args.input_dir, T, args.seed, length=args.max_steps * B)
        meta = ds.meta
    except (ValueError, OSError) as e:
        tu.fail(f"--input_dir {args.input_dir}: {e}")
    if meta["vocab_size"] != config.vocab_size:
        tu.fail(f"--config_file {args.config_file}: vocab_size {config.vocab_size}, but the shards' vocab has "
                f"{meta['vocab_size']} entries")
    if T > config.max_position_embeddings:
        tu.fail(f"--max_seq_length {T}: above the config's max_position_embeddings {config.max_position_embeddings}")
    vocab_file = os.path.join(args.input_dir, "vocab.txt")
    collator = mlm_collator(vocab_file, bool(meta.get("do_lower_case")), args.mlm_probability)

    tu.set_seed(args.seed)
    hf_config = HFBertConfig(**config.to_hf_dict(["BertForMaskedLM"], pad_token_id=collator.tokenizer.pad_token_id),
                             attn_implementation="sdpa")
    if args.dropout is not None:
        hf_config.hidden_dropout_prob = hf_config.attention_probs_dropout_prob = args.dropout
    raw_model = BertForMaskedLM(hf_config).to(rt.device)
    decay = [p for n, p in raw_model.named_parameters() if p.ndim >= 2]  # the Trainer's rule: not biases, LayerNorm
    rest = [p for n, p in raw_model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=args.learning_rate,
                                  eps=args.adam_epsilon, fused=rt.device.type == "cuda")
    model, graphs = tu.compile_for_training(raw_model, args)
    loader = DataLoader(ds, batch_size=B, shuffle=False, drop_last=True, collate_fn=collator,
                        num_workers=args.num_workers, pin_memory=rt.device.type == "cuda",
                        worker_init_fn=tu.ignore_stop_signals, prefetch_factor=4 if args.num_workers else None)

    os.makedirs(args.output_dir, exist_ok=True)
    logger = JsonlLogger(os.path.join(args.output_dir, "log.jsonl"))
    n_params = sum(p.numel() for p in raw_model.parameters())
    print(f"transformers BertForMaskedLM, {n_params / 1e6:.1f}M parameters | batch {B} x {T} | AdamW lr "
          f"{args.learning_rate} | amp {rt.amp} | compile {args.compile_mode if args.compile else 'off'}", flush=True)

    # SIGINT/SIGTERM set a flag; the loop finishes its step and saves. A second SIGINT raises KeyboardInterrupt.
    stop_signal, restore_signals = tu.catch_stop_signals()
    budget_s = args.max_time_minutes * 60 if args.max_time_minutes else math.inf
    stats = torch.zeros(2, dtype=torch.float64, device=rt.device)  # loss x masked tokens, masked tokens
    step, t_start, t_budget, t_log, step_log, wait_s, stop = 0, time.time(), None, time.time(), 0, 0.0, 0
    batches = iter(loader)
    model.train()
    try:
        while step < args.max_steps:
            t_wait = time.perf_counter()
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in next(batches).items()}
            wait_s += time.perf_counter() - t_wait
            run_s = time.time() - t_budget if t_budget else 0.0
            progress = max(step / args.max_steps, run_s / budget_s) if args.schedule_by_time else step / args.max_steps
            lr = args.learning_rate * lr_factor("linear", progress, args.warmup_proportion)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with rt.autocast():
                out = model(**batch)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            n_masked = (batch["labels"] != -100).sum()
            stats += torch.stack([out.loss.detach().double() * n_masked, n_masked.double()])
            step += 1
            t_budget = t_budget or time.time()
            if time.time() - t_budget > budget_s:
                stop = 1
            if stop_signal:
                stop = 2 if stop_signal[0] == signal.SIGINT else 3
            if step % args.log_steps == 0 or step == args.max_steps or stop:
                masked = batch["labels"] != -100
                acc = (out.logits.argmax(-1)[masked] == batch["labels"][masked]).float().mean().item()
                loss_sum, n_tok = stats.tolist()
                if not math.isfinite(loss_sum):
                    tu.fail(f"non-finite loss before step {step}; stopped without saving: try a lower --learning_rate")
                now = time.time()
                row = {"step": step, "loss": loss_sum / n_tok, "mlm_loss": loss_sum / n_tok, "sop_loss": None,
                       "mlm_acc": acc, "sop_acc": None, "lr": lr, "grad_norm": float(grad_norm),
                       "seq_per_s": (step - step_log) * B / (now - t_log), "data_wait": wait_s / (now - t_log),
                       "elapsed_s": now - t_start}
                logger.log(row)
                print(f"step {step}: loss {row['loss']:.3f}, mlm acc {acc:.3f}, lr {lr:.2e}, "
                      f"{row['seq_per_s']:.0f} seq/s", flush=True)
                stats.zero_()
                t_log, step_log, wait_s = now, step, 0.0
            if stop:
                break
    finally:
        tu.shutdown_workers(batches)
        restore_signals()

    def write(tmp_dir):
        raw_model.save_pretrained(tmp_dir)
        shutil.copyfile(vocab_file, os.path.join(tmp_dir, "vocab.txt"))
    saved = publish_checkpoint_dir(os.path.join(args.output_dir, "checkpoints"), f"step-{step}", write, 1)
    logger.close()
    print(f"saved {saved} after {step} steps" + (" (stopped by a signal)" if stop > 1 else ""), flush=True)
    if stop > 1:
        return 128 + (signal.SIGINT if stop == 2 else signal.SIGTERM)
    atomic_write_json(os.path.join(args.output_dir, "DONE"),
                         {"step": step, "checkpoint": saved, "max_steps": args.max_steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
