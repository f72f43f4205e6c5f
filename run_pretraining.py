"""Pretrain BERT (masked LM at the masked positions + sentence-order prediction) on prepared shards.

    # CPU quick start, after an 8000-piece vocab (tokenization.py build-vocab --vocab_size 8000, into
    # runs/vocab/vocab.txt) and runs/shards from it as in create_pretraining_data.py's docstring: a small model
    # that stops cleanly with a checkpoint after 10 minutes
    python run_pretraining.py --config_file models/configs/quickstart.json --input_dir runs/shards \\
        --output_dir runs/pretrain_quick --train_batch_size 32 --learning_rate 5e-4 --max_steps 20000 \\
        --max_time_minutes 10 --num_workers 1
    # Small recipe (Adam, linear warm-up/decay) on 8 GPUs; rerunning the same command continues the run
    torchrun --nproc_per_node 8 run_pretraining.py --config_file models/configs/small.json \\
        --input_dir runs/shards --output_dir runs/small --train_batch_size 256 --learning_rate 1e-4 \\
        --warmup_proportion 0.1 --max_steps 500000 --amp bf16 --resume auto
    # Large recipe (LAMB, polynomial decay), phase 1 at 128 tokens, then phase 2 at 512 from phase 1's weights
    torchrun --nproc_per_node 8 run_pretraining.py --config_file models/configs/large_v1.json \\
        --input_dir runs/shards --output_dir runs/large_p1 --optimizer lamb --scheduler poly \\
        --learning_rate 0.00125 --warmup_proportion 0.0125 --train_batch_size 2048 --gradient_accumulation_steps 4 \\
        --max_steps 125000 --amp bf16 --resume auto
    torchrun --nproc_per_node 8 run_pretraining.py --init_checkpoint runs/large_p1 --input_dir runs/shards \\
        --output_dir runs/large_p2 --max_seq_length 512 --max_predictions_per_seq 77 --optimizer lamb \\
        --scheduler poly --learning_rate 0.00125 --warmup_proportion 0.0125 --train_batch_size 2048 \\
        --gradient_accumulation_steps 16 --max_steps 25000 --amp bf16 --resume auto

Batches. --train_batch_size is the GLOBAL batch of one optimizer step = micro-batch x accumulation x ranks. Step k
reads examples [kB, (k+1)B) of the epoch order; rank r takes every world-th of them. The MLM loss is the sum of
per-token losses divided by the step's global masked-token count (at least 1; the SOP loss likewise per sequence),
so a run on any number of ranks or accumulation steps computes the same gradient as one process with the whole batch.
One loader serves the whole run (pretraining_loader.run_batches: explicit index ranges of (epoch, index) keys, for
exact resume), so its --num_workers workers start once and mask straight across epoch boundaries.
--compile compiles the model only (LAMB's update runs in torch's fused AdamW kernel; a compiled version took 94 s
to compile and stepped 1.6x slower on an H200, bench/RESULTS.md). --compile_mode reduce-overhead also captures the
model's forward and backward as CUDA graphs (together with 14 loader workers instead of 8, they took the Small
model's crammed run on an H200 from 7,539 to 17,282 seq/s; bench/RESULTS.md); recording them takes the next
step or two, inside the time budget.

Checkpoints. OUTPUT_DIR/checkpoints/step-N/ holds model.safetensors + config.json + vocab.txt (modeling's format,
loadable anywhere load_checkpoint is) and train_state.pt (optimizer, scheduler, grad scaler, step, epoch, position
in the epoch, every rank's RNG state and open log interval (its sums since the last log row), the arguments; plain
tensors/containers: torch.load(weights_only=True)). Each is written as step-N.tmp, renamed, and only then is
OUTPUT_DIR/checkpoints/latest (the name of the newest one) replaced, so a crash at any point leaves `latest` on a
complete checkpoint. The last --keep_last are kept.
Export: python convert_checkpoint.py --input OUTPUT_DIR/checkpoints/step-N --output DIR --to {release,hf}.

Resume. --resume auto continues from OUTPUT_DIR's `latest` (and starts fresh if there is none, so one command line
serves a job that gets requeued); --resume PATH continues from a step-N dir or another run's output dir. The run
continues exactly: same weights, optimizer, schedule, RNG, data position and log rows as if it had never stopped.
log.jsonl rows past the resumed step (from the lost stretch) are dropped. Two-phase training is a NEW run with
--init_checkpoint (a step-N dir or a run dir: its latest), which takes the weights only and starts a fresh optimizer
and schedule at step 0 with the new --max_seq_length (512; 384 for large_v2, whose positions stop there); add
--resume auto to make phase 2 itself restartable. A run without --resume refuses an OUTPUT_DIR holding checkpoints.

Stopping. --max_time_minutes (counted from the end of the run's first step, which also holds torch.compile's
compilation), SIGINT or SIGTERM: the current step finishes, a checkpoint is saved, and the exit code
is 0 (time budget) or 128+signal (130 SIGINT, 143 SIGTERM) so a job scheduler can tell "interrupted" from "done";
with exit code 0, OUTPUT_DIR/DONE records the final step. The loss is checked for NaN/inf at every log and save step
(not every step: that would sync the GPU); a non-finite loss (without fp16's loss scaler, which skips such steps,
counts them in the log and leaves the schedule where it was) stops with exit 2 and saves nothing, so `latest` stays
on the last good checkpoint.

Logs: a tqdm bar; OUTPUT_DIR/log.jsonl, one row per --log_steps with the interval's loss, mlm_loss, sop_loss,
mlm_acc, sop_acc, lr, grad_norm (before clipping), seq_per_s, data_wait (the share of the interval's wall time spent
waiting for the loader's batches: near 0 unless masking cannot keep up, when more --num_workers help), elapsed_s;
OUTPUT_DIR/loss.png at the end; TensorBoard events in OUTPUT_DIR/tensorboard when tensorboard is installed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from batching import batch_to_device
from fileio import (JsonlLogger, atomic_write_json, atomic_write_text, plot_jsonl, publish_checkpoint_dir,
                    read_jsonl)
from model_args import add_model_args
from models.modeling import BertForPreTraining, load_checkpoint, save_checkpoint
from optimization import build_optimizer, get_scheduler, lr_factor, param_groups
from pretraining_data import (PretrainingDataset, parse_source_weights, read_meta, resolve_source_weights,
                              shards_fingerprint)
from pretraining_loader import SmallEpochError, run_batches
from pretraining_start import RESUME, check_args, check_vocab, load_train_state, model_config, resolve_start
from train_utils import (add_compile_arg, add_optim_args, add_optimizer_choice_args, add_runtime_args,
                         atomic_torch_save, catch_stop_signals, cleanup_runtime, compile_for_training,
                         default_num_workers, fail, make_grad_scaler, rng_state_portable, scaler_step,
                         set_rng_state_portable, set_seed, setup_runtime, warn)

LOG_KEYS = ("loss", "mlm_loss", "sop_loss")
# resuming with another value of these would not continue the same run
RESUME_MUST_MATCH = ("optimizer", "scheduler")


def build_parser():
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = add_model_args(p)
    g.add_argument("--init_checkpoint", dest="checkpoint",
                   help="start from these weights with a fresh optimizer/schedule (phase 2); alias of --checkpoint")
    add_optimizer_choice_args(add_optim_args(p, learning_rate=1e-4))
    # masking runs in the workers at ~3k sequences/s each, and a small model on one GPU trains several times faster
    add_runtime_args(p, num_workers=None, num_workers_help="DataLoader worker processes that mask the examples "
                     "(default: this node's CPUs / local ranks - 1, at most 8)")
    p.set_defaults(amp=None)  # None: bf16 on a GPU that has it, fp32 otherwise
    d = p.add_argument_group("data (masking is done on the fly, so these may change between phases)")
    d.add_argument("--input_dir", required=True, help="shards written by create_pretraining_data.py")
    d.add_argument("--max_seq_length", type=int, default=128)
    d.add_argument("--max_predictions_per_seq", type=int, default=20)
    d.add_argument("--masked_lm_prob", type=float, default=0.15)
    d.add_argument("--max_ngram", type=int, default=3, help="mask spans of up to this many words")
    d.add_argument("--no_whole_word", action="store_true", help="mask WordPiece tokens, not whole words")
    d.add_argument("--short_seq_prob", type=float, default=0.1)
    d.add_argument("--no_sop", action="store_true",
                   help="ablation: no sentence-order prediction (segments stay in order, no SOP loss; the SOP head "
                        "stays in the model, untrained)")
    d.add_argument("--source_weights", nargs="+", default=None, metavar="PATTERN=WEIGHT",
                   help="corpus mix: each epoch reads the documents of input files whose base name matches PATTERN "
                        "(fnmatch, e.g. 'court_*') WEIGHT times on average (0.25: each document once in 4 epochs, "
                        "a different quarter every epoch; 2: twice; 0: never); other files once")
    t = p.add_argument_group("training")
    t.add_argument("--train_batch_size", type=int, default=256, help="GLOBAL batch of one optimizer step")
    t.add_argument("--max_steps", type=int, default=500000, help="optimizer steps; also the schedule's length")
    t.add_argument("--save_steps", type=int, default=10000)
    t.add_argument("--log_steps", "--logging_steps", dest="log_steps", type=int, default=100,
                   help="log every N steps (--logging_steps: the fine-tuning scripts' spelling)")
    t.add_argument("--keep_last", type=int, default=3, help="checkpoints kept (older ones are deleted)")
    t.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="'auto' (default when given bare): OUTPUT_DIR's latest checkpoint if any; or a checkpoint path")
    t.add_argument("--max_time_minutes", type=float, default=None,
                   help="stop with a checkpoint after this long, counted from the end of the first step")
    t.add_argument("--schedule_by_time", action="store_true",
                   help="with --max_time_minutes: the lr schedule advances by max(step / max_steps, elapsed / "
                        "budget), so warm-up and decay fit the time budget on any machine (time-budgeted "
                        "'cramming' runs); such a run is not bit-exact on resume")
    add_compile_arg(t)  # --compile_mode reduce-overhead: every pretraining batch has one shape, so one graph
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.amp is None:
        gpu = torch.cuda.is_available() and not args.no_cuda
        args.amp = "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"
    try:
        check_args(args)
    except ValueError as e:
        fail(str(e))
    rt = setup_runtime(args)
    B, accum = args.train_batch_size, args.gradient_accumulation_steps
    if B % (accum * rt.world_size):
        fail(f"--train_batch_size {B} is not divisible by --gradient_accumulation_steps {accum} "
             f"x {rt.world_size} ranks")
    micro = B // (accum * rt.world_size)
    if args.num_workers is None:
        args.num_workers = default_num_workers()

    # ---- resume / init resolution; nothing is written before every check has passed
    try:
        ckpt_dir, source = resolve_start(args.output_dir, args.resume, args.checkpoint)
    except ValueError as e:
        fail(str(e))
    try:
        meta = read_meta(args.input_dir)
    except ValueError as e:
        fail(f"--input_dir {args.input_dir}: {e}")
    try:  # checked here to name the flag; the dataset resolves them again
        source_weights = parse_source_weights(args.source_weights) if args.source_weights else None
        if source_weights:
            resolve_source_weights(meta["input_files"], source_weights)
            # one spelling per mix, so a resume compares meanings ("b=2 a=1" is "a=1.0 b=2.0")
            args.source_weights = [f"{p}={w!r}" for p, w in sorted(source_weights.items())]
    except ValueError as e:
        fail(f"--source_weights {' '.join(args.source_weights)}: {e}")
    try:
        ds = PretrainingDataset(args.input_dir, max_seq_length=args.max_seq_length,
                                max_predictions_per_seq=args.max_predictions_per_seq,
                                masked_lm_prob=args.masked_lm_prob, max_ngram=args.max_ngram,
                                whole_word=not args.no_whole_word, short_seq_prob=args.short_seq_prob,
                                seed=args.seed, rank=rt.rank, world_size=rt.world_size, sop=not args.no_sop,
                                source_weights=source_weights)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(f"--input_dir {args.input_dir}: {e}")
    if args.do_lower_case and not ds.meta.get("do_lower_case"):
        fail(f"--do_lower_case: the shards in {args.input_dir} were prepared cased")
    state, fingerprint = None, shards_fingerprint(ds.meta)
    try:
        check_vocab(args.vocab_file, ckpt_dir, source, ds.meta, args.input_dir, ds.vocab_file)
        config = model_config(args.config_file, ckpt_dir, source, ds.meta, args.input_dir, args.max_seq_length)
        if source == RESUME:
            state, changed = load_train_state(ckpt_dir, vars(args), RESUME_MUST_MATCH, fingerprint)
            if changed and rt.is_main:
                warn(f"resuming {ckpt_dir} with changed {', '.join(changed)}: the continuation is not exact")
    except ValueError as e:
        fail(str(e))

    # ---- model, optimizer, schedule
    set_seed(args.seed)  # same initial weights on every rank
    raw_model = BertForPreTraining(config)
    if ckpt_dir:
        try:
            load_checkpoint(raw_model, ckpt_dir, strict=source == RESUME)
        except (ValueError, OSError) as e:
            fail(f"{source} {ckpt_dir}: {e}")
    raw_model.to(rt.device)
    optimizer = build_optimizer(args.optimizer, param_groups(raw_model, args.weight_decay), lr=args.learning_rate,
                                eps=args.adam_epsilon, max_grad_norm=args.max_grad_norm)
    try:
        scheduler = get_scheduler(args.scheduler, optimizer, args.warmup_proportion, args.max_steps)
    except ValueError as e:
        fail(f"--scheduler {args.scheduler}: {e}")
    scaler = make_grad_scaler(rt)
    step, epoch, epoch_pos, elapsed0, budget0, skipped = 0, 0, 0, 0.0, 0.0, 0
    torch.manual_seed(args.seed + rt.rank)  # different dropout masks on each rank
    if state is not None:
        fresh = [{k: g[k] for k in ("initial_lr", "weight_decay", "eps") if k in g} for g in optimizer.param_groups]
        fresh_base_lrs = list(scheduler.base_lrs)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # the flags win over the hyper-parameters saved in the state (a lower --learning_rate after a loss spike is
        # why one resumes with a new one; the warning above names each change); unchanged flags leave every value
        # as saved, so the continuation stays exact
        for i, (g, f) in enumerate(zip(optimizer.param_groups, fresh)):
            if not args.schedule_by_time:
                # this run's schedule at the resumed step: the saved lr is the saved run's, and the first step
                # would run at it although a changed --max_steps or --warmup_proportion moves it (unchanged flags
                # give the very value saved: LambdaLR computes base_lr * lambda(step) too)
                g["lr"] = f["initial_lr"] * scheduler.lr_lambdas[i](scheduler.last_epoch)
            elif f["initial_lr"] != g["initial_lr"]:  # the schedule's point at this step (by time), at the new peak
                at = g["lr"] / g["initial_lr"] if g["initial_lr"] else scheduler.lr_lambdas[i](scheduler.last_epoch)
                g["lr"] = f["initial_lr"] * at
            g.update(f)
        scheduler.base_lrs = fresh_base_lrs
        if state["scaler"] or not scaler.is_enabled():  # empty: saved without fp16; this fp16 run starts a scaler
            scaler.load_state_dict(state["scaler"])
        step, epoch, epoch_pos = state["step"], state["epoch"], state["epoch_position"]
        elapsed0, skipped = state["elapsed_s"], state["skipped_steps"]
        # the time budget spent so far, each run's counted from the end of its first step (older states: wall time)
        budget0 = state.get("budget_elapsed_s", elapsed0)
        if len(state["rng"]) == rt.world_size:
            set_rng_state_portable(state["rng"][rt.rank])
        elif rt.is_main:
            warn(f"{ckpt_dir} was saved by {len(state['rng'])} ranks, not {rt.world_size}: dropout RNG reseeded")
        if epoch_pos % rt.world_size:
            fail(f"--resume {ckpt_dir}: position {epoch_pos} in the epoch is not divisible by {rt.world_size} ranks")
    # with --schedule_by_time the budget is the whole run's: one resumed with it spent (a finished run started
    # again, or one killed between its last save and DONE) trains no step, and ends as a finished run does
    budget_spent = bool(args.schedule_by_time) and budget0 >= args.max_time_minutes * 60
    model, graphs = compile_for_training(raw_model, args)
    if rt.distributed:
        model = DDP(model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)

    loader_args = dict(batch=B, micro_batch=micro, accum=accum, world_size=rt.world_size,
                       num_workers=args.num_workers, seed=args.seed, pin_memory=rt.device.type == "cuda")

    def data_error(e: ValueError) -> str:  # one line, naming the flag that can fix a too small epoch
        hint = ((" (--train_batch_size, with --source_weights)" if source_weights else " (--train_batch_size)")
                if isinstance(e, SmallEpochError) else "")
        msg = str(e).strip()
        if "Original Traceback" in msg:  # re-raised from a loader worker: its own message is the last line
            msg = msg.splitlines()[-1].split(": ", 1)[-1] + " (in a loader worker)"
        return f"--input_dir {args.input_dir}: {msg}{hint}"
    try:  # one loader for the whole run (its workers start at the first step, once); the first epoch is checked here
        batches = run_batches(ds, epoch, epoch_pos, **loader_args)
    except ValueError as e:
        fail(data_error(e))

    # ---- output dir: written only now that every check has passed
    log_path = os.path.join(args.output_dir, "log.jsonl")
    if rt.is_main:
        os.makedirs(args.output_dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # this run may go further than the one that wrote it
            os.remove(os.path.join(args.output_dir, "DONE"))
        if os.path.isfile(log_path):  # keep the rows up to the resumed step; the rest is a lost stretch
            atomic_write_text(log_path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                for r in read_jsonl(log_path, allow_cut_end=True)
                                                if r.get("step", 0) <= step))
        logger = JsonlLogger(log_path, append=True)
        tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(os.path.join(args.output_dir, "tensorboard"))
        except ImportError:
            pass
        except Exception as e:  # e.g. a tensorboard/protobuf version clash: the run goes on with log.jsonl
            warn(f"TensorBoard logging is off ({type(e).__name__}: {str(e)[:200]})")
        n_params = sum(p.numel() for p in raw_model.parameters())
        print(f"{n_params / 1e6:.1f}M parameters | global batch {B} = {micro} x {accum} accumulation x "
              f"{rt.world_size} ranks | {args.optimizer}/{args.scheduler} lr {args.learning_rate} | amp {rt.amp} | "
              + (f"{source} {ckpt_dir} at step {step}" if ckpt_dir else "fresh start"), flush=True)
        if ds.source_shares:
            print("corpus mix (expected share of an epoch's tokens): " + ", ".join(
                f"{os.path.basename(f)} {share:.1%}" for f, share in ds.source_shares), flush=True)
        if step >= args.max_steps:
            print(f"already at step {step} >= --max_steps {args.max_steps}: nothing to train", flush=True)
        elif budget_spent:
            print(f"{ckpt_dir}: the --max_time_minutes {args.max_time_minutes:g} budget was spent by step {step}; "
                  "nothing to train", flush=True)

    # SIGINT/SIGTERM set a flag; the loop finishes its step and saves. A second SIGINT raises KeyboardInterrupt.
    stop_signal, restore_signals = catch_stop_signals()

    # ---- training loop
    t_start = time.time()  # wall clock, for elapsed_s
    # The budget (and --schedule_by_time) counts from the end of this run's first step: that step also compiles
    # (--compile) and waits for the loader's first batches, and a compiled run would otherwise skip its lr warm-up.
    t_budget, budget_s = None, args.max_time_minutes * 60 if args.max_time_minutes else math.inf
    # interval sums on the device (read at log steps only): mlm loss sum, masked tokens, mlm correct, sop loss sum,
    # sop correct; the sequence count is B per step
    stats = torch.zeros(5, dtype=torch.float64, device=rt.device)
    # stop decisions travel over a CPU (gloo) group: agreeing on them every step then costs no GPU sync
    ctrl_group = dist.new_group(backend="gloo") if rt.distributed else None
    nonfinite = torch.zeros((), device=rt.device)
    sop_weight = 0.0 if args.no_sop else 1.0
    checked_step, t_log, step_log = step, time.time(), step
    step_timed = step  # the step at t_log: seq_per_s counts this process's steps only
    # the log interval open at the resumed checkpoint (saved off a log step: a signal, a time budget, --save_steps
    # not a multiple of --log_steps): its sums and first step come back, so the next row averages the same steps
    # as the uninterrupted run's (older states, or another number of ranks: it averages the steps since the resume)
    interval = state.get("log_interval") if state is not None else None
    if interval and len(interval["stats"]) == rt.world_size:
        stats = torch.tensor(interval["stats"][rt.rank], dtype=torch.float64, device=rt.device)
        step_log = interval["from_step"]
    wait_s = 0.0  # host time blocked on the loader since the last log row
    grad_norm, exit_code, last_saved = None, 0, ckpt_dir if source == RESUME else None
    # a time budget usually ends the run long before --max_steps: then a step count without a total reads better
    pbar = tqdm(total=None if args.max_time_minutes else args.max_steps, initial=step, disable=not rt.is_main,
                dynamic_ncols=True, desc="pretrain")
    model.train()
    try:
        while step < args.max_steps and not budget_spent:
            t_wait = time.perf_counter()
            try:
                batch_epoch, micro_batches = next(batches)
            except ValueError as e:  # a later epoch that cannot be set up, or a worker's ValueError
                pbar.close()
                fail(data_error(e))
            wait_s += time.perf_counter() - t_wait
            if batch_epoch != epoch:
                epoch, epoch_pos = batch_epoch, 0

            # the step's masked tokens over all micro-batches and ranks: the MLM normaliser, counted on the device
            # (a pageable host-to-GPU copy of a CPU count would wait for the GPU every step)
            micro_batches = [batch_to_device(mb, rt.device) for mb in micro_batches]
            n_masked = sum((mb["mlm_labels"] != -100).sum() for mb in micro_batches).float()
            if rt.distributed:
                dist.all_reduce(n_masked)
            # a step may have no masked token at all: whole-word masking finds none in a short example whose words
            # are each longer than its budget (2.5% of the tests' examples: small vocab, 64 tokens). Its MLM term is
            # then 0, not 0/0
            n_masked = n_masked.clamp(min=1)
            step_loss = torch.zeros((), device=rt.device)
            for i, mb in enumerate(micro_batches):
                sync = i == accum - 1 or not rt.distributed
                with contextlib.nullcontext() if sync else model.no_sync():
                    if graphs:  # a new replay may overwrite the last one's outputs: all read by now
                        torch.compiler.cudagraph_mark_step_begin()
                    with rt.autocast():
                        out = model(input_ids=mb["input_ids"], token_type_ids=mb["token_type_ids"],
                                    attention_mask=mb.get("attention_mask"), mlm_labels=mb["mlm_labels"],
                                    mlm_positions=mb["mlm_positions"], sop_labels=mb["sop_label"])
                    mlm_sum = out["mlm_loss"] * out["mlm_count"]
                    sop_sum = out["sop_loss"] * mb["sop_label"].numel()
                    # DDP averages gradients over ranks; x world_size turns that average back into the sum.
                    # --no_sop weighs the SOP term 0 rather than dropping it: DDP wants a gradient for every weight
                    loss = (mlm_sum / n_masked + sop_weight * sop_sum / B) * rt.world_size
                    scaler.scale(loss).backward()
                step_loss += loss.detach() / rt.world_size
                stats += torch.stack([t.detach().to(stats) for t in (mlm_sum, out["mlm_count"], out["mlm_correct"],
                                                                     sop_sum, out["sop_correct"])])
            log_now = (step + 1) % args.log_steps == 0 or step + 1 == args.max_steps
            scaler.unscale_(optimizer)  # no-op unless fp16: clipping and LAMB's trust ratio see true gradients
            if args.optimizer == "adam" and args.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.max_grad_norm)
            elif log_now:  # LAMB clips by the global norm inside its step (Adam at 0: no clipping); for the log only
                grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad)
                                                                  for p in raw_model.parameters()
                                                                  if p.grad is not None]))
            lr = optimizer.param_groups[0]["lr"]
            stepped = scaler_step(scaler, optimizer)  # False when fp16's scaler skipped it: the schedule stays
            if scaler.is_enabled():
                skipped += not stepped
            else:
                nonfinite += ~torch.isfinite(step_loss)
            if stepped:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            epoch_pos += B
            pbar.update(1)

            t_budget = t_budget or time.time()
            run_s = time.time() - t_budget
            # with --schedule_by_time the budget is the whole run's, across resumes, as its lr schedule is;
            # without, each invocation's (a requeued job that must save before its slot ends)
            stop = 1 if run_s + (budget0 if args.schedule_by_time else 0.0) > budget_s else 0
            if stop_signal:
                stop = 2 if stop_signal[0] == signal.SIGINT else 3
            if rt.distributed:  # every rank must stop at the same step (and use the same lr), whoever got the signal
                flag = torch.tensor([float(stop), run_s], dtype=torch.float64)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=ctrl_group)
                stop, run_s = int(flag[0]), float(flag[1])
            if args.schedule_by_time:  # overrides the step-based lr that scheduler.step() just set
                progress = max(step / args.max_steps, (budget0 + run_s) / budget_s)
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * lr_factor(args.scheduler, progress, args.warmup_proportion)
            save_now = step % args.save_steps == 0 or step == args.max_steps or stop
            if log_now or save_now:
                if rt.distributed:
                    dist.all_reduce(nonfinite)
                if nonfinite.item():
                    pbar.close()  # so the error starts on its own line
                    fail(f"non-finite loss between steps {checked_step + 1} and {step}; stopped without saving "
                         f"(last good checkpoint: {last_saved or 'none'}); try a lower --learning_rate")
                checked_step = step
            if log_now:
                if rt.distributed:
                    dist.all_reduce(stats)
                mlm_total, n_tok, mlm_hits, sop_total, sop_hits = stats.tolist()
                n_seq, now = (step - step_log) * B, time.time()
                # no masked token in the whole interval (see n_masked): no MLM loss or accuracy to report
                mlm_loss, mlm_acc = (mlm_total / n_tok, mlm_hits / n_tok) if n_tok else (None, None)
                row = {"step": step, "epoch": epoch, "loss": (mlm_loss or 0.0) + sop_weight * sop_total / n_seq,
                       "mlm_loss": mlm_loss, "sop_loss": sop_total / n_seq if sop_weight else None,
                       "mlm_acc": mlm_acc, "sop_acc": sop_hits / n_seq if sop_weight else None, "lr": lr,
                       "grad_norm": float(grad_norm) if grad_norm is not None else None,
                       "seq_per_s": (step - step_timed) * B / (now - t_log), "data_wait": wait_s / (now - t_log),
                       "elapsed_s": elapsed0 + now - t_start}
                if scaler.is_enabled():
                    row.update(loss_scale=scaler.get_scale(), skipped_steps=skipped)
                stats.zero_()
                t_log, step_log, step_timed, wait_s = now, step, step, 0.0
                if rt.is_main:
                    logger.log(row)
                    if tb is not None:
                        for k in LOG_KEYS + ("mlm_acc", "sop_acc", "lr", "grad_norm", "seq_per_s", "data_wait"):
                            if row[k] is not None:
                                tb.add_scalar(f"train/{k}", row[k], step)
                    pbar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", seq_s=f"{row['seq_per_s']:.1f}")
            if save_now:
                rngs, open_stats = [rng_state_portable()], [stats.tolist()]
                if rt.distributed:
                    gathered = [None] * rt.world_size
                    dist.all_gather_object(gathered, (rng_state_portable(), stats.tolist()))
                    rngs, open_stats = [g[0] for g in gathered], [g[1] for g in gathered]
                if rt.is_main:
                    train_state = {
                        "step": step, "epoch": epoch, "epoch_position": epoch_pos, "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                        "elapsed_s": elapsed0 + time.time() - t_start, "budget_elapsed_s": budget0 + run_s,
                        "skipped_steps": int(skipped),
                        "log_interval": {"from_step": step_log, "stats": open_stats},
                        "world_size": rt.world_size, "shards_fingerprint": fingerprint,
                        "args": vars(args)}
                    def write(tmp_dir):
                        save_checkpoint(raw_model, tmp_dir, vocab_file=ds.vocab_file)
                        atomic_torch_save(train_state, os.path.join(tmp_dir, "train_state.pt"))
                    last_saved = publish_checkpoint_dir(os.path.join(args.output_dir, "checkpoints"), f"step-{step}",
                                                        write, args.keep_last)
                    pbar.write(f"saved {last_saved}")
                if rt.distributed:
                    dist.barrier()
            if stop:
                exit_code = {1: 0, 2: 128 + signal.SIGINT, 3: 128 + signal.SIGTERM}[stop]
                if rt.is_main:
                    # a spent time budget is the planned end (with --schedule_by_time the lr has reached 0)
                    hint = "" if stop == 1 else "; continue with --resume auto"
                    pbar.write(f"stopped at step {step} ({['', 'time budget', 'SIGINT', 'SIGTERM'][stop]}){hint}")
                break
    finally:
        batches.close()  # shuts the loader's workers down now, not at garbage collection
        pbar.close()
        restore_signals()

    if rt.is_main:
        if exit_code == 0:  # finished (max_steps or time budget): a marker for pipelines that skip done stages
            atomic_write_json(os.path.join(args.output_dir, "DONE"),
                              {"step": step, "checkpoint": last_saved, "max_steps": args.max_steps})
        logger.close()
        if tb is not None:
            tb.close()
        try:
            plot_jsonl(log_path, LOG_KEYS, os.path.join(args.output_dir, "loss.png"), title="pretraining loss")
        except (ImportError, OSError, ValueError) as e:
            warn(f"no loss plot: {e}")
    cleanup_runtime(rt)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
