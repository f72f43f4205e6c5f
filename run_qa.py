"""Fine-tune BERT for extractive QA on KorQuAD 1.0 (SQuAD 1.x format); checkpoint every epoch.

    python3 run_qa.py --checkpoint $MODEL_FILE --config_file $CONFIG_FILE --vocab_file $VOCAB_FILE --train_file data/korquad/KorQuAD_v1.0_train.json --max_seq_length 512 --doc_stride 128 --max_query_length 64 --max_answer_length 30 --per_gpu_train_batch_size 16 --learning_rate 5e-5 --num_train_epochs 4.0 --adam_epsilon 1e-6 --warmup_proportion 0.1
    python3 run_qa.py --checkpoint runs/small/checkpoints/step-N --train_file data/korquad/KorQuAD_v1.0_train.json --predict_file data/korquad/KorQuAD_v1.0_dev.json --output_dir runs/korquad --amp bf16
    torchrun --nproc_per_node 4 run_qa.py --checkpoint runs/small/checkpoints/step-N --train_file data/korquad/KorQuAD_v1.0_train.json --per_gpu_train_batch_size 8 --output_dir runs/korquad

Only the dev set is bundled (data/korquad); the 60,407-question train file comes from the KorQuAD site.
--per_gpu_train_batch_size is the release's flag: windows per device per forward pass, so one optimizer step sees
per_gpu x GPUs x --gradient_accumulation_steps windows. --train_batch_size instead gives that whole per-step
batch, as in run_classifier.py, and is divided over GPUs and accumulation steps.

Writes to --output_dir (default runs/korquad-<time>; a directory that holds a finished run, with its
train_results.json, is refused; what an unfinished one left is replaced, with a warning; other files in it are
left alone): epoch-N/ after every epoch (checkpoint with config.json and vocab.txt, so eval_qa.py needs
only --checkpoint), final/ (last epoch), log.jsonl (loss, lr every --logging_steps), loss.png and
train_results.json. With --predict_file every epoch is also evaluated (predictions and EM/F1 in epoch-N/) and the
best on F1 is copied to best/ (every question of --predict_file needs a gold answer; this is checked before
training). google-research/bert's --do_train and --do_predict (also as --do_predict=True) are accepted: this
script always trains, and predicts on --predict_file when one is given. Tokenised features are cached in
--cache_dir (default: a cache/ folder beside the output directory), keyed by everything that changes them.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import math
import os
import shutil
import tempfile
import time

import torch
from torch.utils.data import DataLoader, TensorDataset, default_collate
from tqdm import tqdm

import batching
import model_args
import qa_data
import train_utils as tu
from fileio import JsonlLogger, atomic_write_json, plot_jsonl, run_script, umask
from models.config import check_max_seq_length
from models.modeling import BertForQuestionAnswering, save_checkpoint
from optimization import build_optimizer, check_layer_lr_decay, get_scheduler, param_groups
from qa_predict import check_labelled, load_qa_features, predict_logits, score, write_predictions

# what a run writes: train_results.json marks a finished one, never overwritten; the rest of an unfinished one
# (stopped, or out of time) is replaced with a warning, so the same command can simply be run again
FINISHED = "train_results.json"
RUN_OUTPUTS = ("run_args.json", "log.jsonl", "loss.png", "final", "best", "epoch-*")
# and what a kill (SIGTERM, SIGKILL: no clean-up runs) leaves beside them: save_dir_atomically's .NAME.tmp*/.NAME.old*
# folders, a whole checkpoint each, and atomic_write's .NAME.tmp* files; hidden, so no glob of RUN_OUTPUTS matches them
RUN_TEMPS = tuple(f".{m}.{kind}*" for m in RUN_OUTPUTS for kind in ("tmp", "old"))


def build_parser():
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),  # the summary and commands
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args.add_model_args(p)
    tu.add_layer_lr_decay_arg(tu.add_optimizer_choice_args(tu.add_optim_args(p, learning_rate=5e-5)))
    tu.add_runtime_args(p)
    qa_data.add_qa_args(p)
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--train_file", required=True, help="KorQuAD 1.0 training JSON")
    g.add_argument("--per_gpu_train_batch_size", type=int, default=None,
                   help="windows per device per forward pass (default 16)")
    g.add_argument("--train_batch_size", type=int, default=None,
                   help="alternatively, windows per optimizer step over all GPUs and accumulation steps")
    g.add_argument("--num_train_epochs", type=float, default=4.0, help="may be fractional")
    g.add_argument("--max_train_examples", type=int, default=None,
                   help="train on the first N questions of --train_file only (debugging)")
    g.add_argument("--logging_steps", type=int, default=50)
    # google-research/bert's run_squad.py flags, so its command lines run unchanged
    tu.add_bool_flag(g, "--do_train", help="accepted for google-research/bert command lines: this script "
                                           "always trains on --train_file (false is an error)")
    tu.add_bool_flag(g, "--do_predict", help="predict on --predict_file and score it (EM/F1) after every "
                                             "epoch; that is the default whenever --predict_file is given "
                                             "(true then requires it), false skips it")
    batching.add_group_by_length_arg(g)
    batching.add_pad_multiple_arg(g)
    tu.add_compile_arg(g)
    tu.add_apex_args(g)
    # the release's run_qa.py defined it but never used it: a SQuAD 2.0 setting, and KorQuAD 1.0 has no
    # unanswerable questions
    g.add_argument("--null_score_diff_threshold", type=float, default=None,
                   help="ignored (SQuAD 2.0's no-answer threshold; accepted for the release's command lines)")
    return p


def per_device_batch(args, world_size: int) -> int:
    if args.per_gpu_train_batch_size is not None and args.train_batch_size is not None:
        raise ValueError("give either --per_gpu_train_batch_size or --train_batch_size, not both")
    if args.train_batch_size is None:
        return 16 if args.per_gpu_train_batch_size is None else args.per_gpu_train_batch_size
    per = args.train_batch_size // (world_size * args.gradient_accumulation_steps)
    if per < 1 or per * world_size * args.gradient_accumulation_steps != args.train_batch_size:
        raise ValueError(f"--train_batch_size {args.train_batch_size} is not divisible by {world_size} GPU(s) x "
                         f"--gradient_accumulation_steps {args.gradient_accumulation_steps}")
    return per


def validate_args(args, rt):
    for warning in qa_data.check_qa_args(args):
        if rt.is_main:
            tu.warn(warning)
    if args.do_train is False:
        raise ValueError("--do_train false: run_qa.py always trains; predict with eval_qa.py instead")
    if args.do_predict and not args.predict_file:
        raise ValueError("--do_predict needs --predict_file")
    for flag in ("per_gpu_train_batch_size", "train_batch_size", "gradient_accumulation_steps", "logging_steps",
                 "max_train_examples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} {value} must be at least 1")
    tu.check_training_args(args)
    check_layer_lr_decay(args.layer_lr_decay, "--layer_lr_decay")
    tu.check_output_dir_path(args.output_dir)
    if os.path.exists(os.path.join(args.output_dir, FINISHED)):
        raise ValueError(f"--output_dir {args.output_dir} already holds a finished run ({FINISHED}); "
                         f"choose another --output_dir")
    tu.check_inputs_outside(args, unfinished_outputs(args.output_dir), args.output_dir)


def unfinished_outputs(out_dir: str) -> list[str]:
    """The paths in out_dir that an earlier run wrote (RUN_OUTPUTS, RUN_TEMPS), sorted."""
    return sorted(p for m in RUN_OUTPUTS + RUN_TEMPS for p in glob.glob(os.path.join(glob.escape(out_dir), m)))


def clear_unfinished_run(out_dir: str):
    """Remove what an unfinished run left in out_dir, with a warning; other files stay."""
    found = unfinished_outputs(out_dir)
    if found:
        tu.warn(f"{out_dir} holds an unfinished run ({', '.join(os.path.basename(p) for p in found)}): replacing it")
    for path in found:
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def save_dir_atomically(model, out_dir: str, name: str, vocab_file: str, meta: dict):
    """Write the checkpoint into a temporary sibling and rename it into place: name/ is complete or absent."""
    tmp = tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.tmp")
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's private 0700 would outlive the rename
    try:
        save_checkpoint(model, tmp, vocab_file=vocab_file)
        atomic_write_json(os.path.join(tmp, "qa_train.json"), meta)
        final = os.path.join(out_dir, name)
        old = None
        if os.path.exists(final):  # best/ from an earlier epoch of this run: swap, then drop the old one
            old = tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.old")
            os.replace(final, os.path.join(old, name))
        os.replace(tmp, final)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def evaluate_epoch(model, dev, args, rt, ckpt_dir):
    """Dev predictions and EM/F1 of the current model, written next to the epoch's checkpoint (rank 0)."""
    examples, feats = dev
    start, end = predict_logits(model, feats, args.batch_size, rt,
                                batching.pad_multiple(args.pad_to_multiple_of, rt.device))
    if not rt.is_main:
        return None
    predictions, nbest, _ = qa_data.postprocess_predictions(examples, feats, start, end, args.n_best_size,
                                                         args.max_answer_length)
    metrics, _ = score(examples, args.predict_file, predictions, "predictions", "none")
    write_predictions(ckpt_dir, predictions, nbest)
    # the precision it was scored in: eval_qa.py defaults to fp32, so its score of this checkpoint can differ slightly
    atomic_write_json(os.path.join(ckpt_dir, "eval_results.json"), {**metrics, "amp": args.amp})
    return metrics


def collate_trimmed(rows, multiple: int = 1):
    """Training rows stacked and cut to the batch's longest window, rounded up to a multiple (batching.round_width).
    Cut here, in the loader, the batch is contiguous when pinned, so its copy to the GPU does not wait for the GPU
    (a slice of a pinned batch is copied through pageable memory)."""
    ids, types, mask, start_pos, end_pos = default_collate(rows)
    width = batching.round_width(int(mask.sum(1).max()), multiple, ids.size(1))
    return ids[:, :width].contiguous(), types[:, :width].contiguous(), mask[:, :width].contiguous(), start_pos, end_pos


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.output_dir is None:
        args.output_dir = os.path.join("runs", f"korquad-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.cache_dir is None:
        args.cache_dir = os.path.join(os.path.dirname(os.path.abspath(args.output_dir)), "cache")
    rt = tu.setup_runtime(args)
    tu.warn_apex_args(args, rt)
    if args.null_score_diff_threshold is not None and rt.is_main:
        tu.warn("--null_score_diff_threshold is ignored: it is a SQuAD 2.0 setting, and KorQuAD 1.0 has no "
                "unanswerable questions")
    try:
        validate_args(args, rt)
        multiple = batching.pad_multiple(args.pad_to_multiple_of, rt.device)
        micro_batch = per_device_batch(args, rt.world_size)
        tu.set_seed(args.seed)  # before the model is built: the fresh QA head's initialisation depends on it
        model, config, vocab_file = model_args.load_model_for_task(args, BertForQuestionAnswering)
        check_max_seq_length(args.max_seq_length, config)
        windows = {key: getattr(args, key) for key in (*qa_data.WINDOW_DEFAULTS, "cache_dir")}
        dev = None
        if args.predict_file and args.do_predict is not False:
            # read before the (slower) training features, and checked before training: the file is scored after
            # every epoch, and a question without a gold answer would only fail then
            dev = load_qa_features(args.predict_file, False, args.max_eval_examples, config, vocab_file, rt, **windows)
            check_labelled(dev[0], f"--predict_file {args.predict_file}")
        _, train = load_qa_features(args.train_file, True, args.max_train_examples, config, vocab_file, rt, **windows)
        if rt.is_main:
            os.makedirs(args.output_dir, exist_ok=True)
            clear_unfinished_run(args.output_dir)
            atomic_write_json(os.path.join(args.output_dir, "run_args.json"), vars(args))
    except (ValueError, FileNotFoundError, OSError) as e:
        tu.fail(str(e))

    tu.seed_dropout_per_rank(args.seed, rt)
    model.to(rt.device)
    raw_model = model  # saved and evaluated as it is; the compiled wrapper only trains
    model, graphs = tu.compile_for_training(model, args)
    if rt.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
    # int32/int8 arrays stay compact in memory; batches are widened to int64 on the device
    dataset = TensorDataset(*(torch.from_numpy(a) for a in (train.input_ids, train.token_type_ids,
                                                            train.attention_mask, train.start_positions,
                                                            train.end_positions)))
    collate = functools.partial(collate_trimmed, multiple=multiple)
    # rank r takes its share of each global batch, so one optimizer step sees the same windows on 1 or N GPUs
    # (given the same --train_batch_size), as in run_classifier.py
    sampler = batching.GlobalBatchSampler(train.attention_mask.sum(1), micro_batch, args.seed, rt.rank,
                                          rt.world_size, group=batching.LENGTH_GROUP if args.group_by_length else 0,
                                          accum=args.gradient_accumulation_steps)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers, collate_fn=collate,
                        pin_memory=rt.device.type == "cuda")
    accum = args.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(loader) / accum)
    total_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    # the loop clips (--max_grad_norm) for either optimizer, so LAMB does not clip a second time
    optimizer = build_optimizer(args.optimizer, param_groups(raw_model, args.weight_decay, args.layer_lr_decay),
                                args.learning_rate, eps=args.adam_epsilon, max_grad_norm=None)
    scheduler = get_scheduler(args.scheduler, optimizer, args.warmup_proportion, total_steps)
    scaler = tu.make_grad_scaler(rt)
    logger = JsonlLogger(os.path.join(args.output_dir, "log.jsonl")) if rt.is_main else None
    if rt.is_main:
        print(f"training: {len(dataset)} windows, {micro_batch} per device x {rt.world_size} device(s) x {accum} "
              f"accumulation, {total_steps} optimizer steps", flush=True)

    results = {"total_steps": total_steps, "train_windows": len(dataset), "epochs": [], "best_epoch": None}
    best_f1, step, t0 = -math.inf, 0, time.time()
    for epoch in range(1, math.ceil(args.num_train_epochs) + 1):
        sampler.set_epoch(epoch)
        model.train()
        loss_sum, loss_rows, log_loss, log_rows = 0.0, 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not rt.is_main, leave=False)
        i = 0
        # each micro-batch's mean loss weighs its share of the window's rows: 1/accum, as GlobalBatchSampler fills
        # every micro-batch and gives every rank as many rows (so DDP's mean over ranks keeps the weighting); the
        # weighting still holds for a loader with a short last batch
        for window in batching.accumulation_windows(bar, accum):
            window_rows = sum(len(b[0]) for b in window)
            for j, (ids, types, mask, start_pos, end_pos) in enumerate(window):
                batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                         "start_positions": start_pos, "end_positions": end_pos}
                batch = batching.batch_to_device(batch, rt.device, torch.long)
                # under DDP, all-reduce gradients only on the micro-batch that closes an accumulation window
                sync = j == len(window) - 1
                ctx = model.no_sync() if rt.distributed and not sync else contextlib.nullcontext()
                with ctx:
                    if graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    with rt.autocast():
                        loss = model(**batch)["loss"]
                    scaler.scale(loss * (len(ids) / window_rows)).backward()
                # summed as tensors: .item() every micro-batch would sync the GPU
                rows_loss = loss.detach().float() * len(ids)
                loss_sum, loss_rows = loss_sum + rows_loss, loss_rows + len(ids)
                log_loss, log_rows = log_loss + rows_loss, log_rows + len(ids)
            i += len(window)
            scaler.unscale_(optimizer)
            # --max_grad_norm 0: no clipping; the norm is still measured for the log
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm or math.inf)
            if tu.scaler_step(scaler, optimizer):  # not when fp16's scaler skipped it: the schedule stays
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % args.logging_steps == 0 or step == total_steps:
                window_mean = tu.finite_loss(tu.mean_over_ranks(log_loss, log_rows, rt), step)  # all ranks join
                log_loss, log_rows = 0.0, 0
                if rt.is_main:
                    row = {"step": step, "epoch": round(epoch - 1 + i / len(loader), 4), "loss": window_mean,
                           "lr": max(scheduler.get_last_lr()), "grad_norm": float(grad_norm),
                           "elapsed_s": round(time.time() - t0, 1)}
                    logger.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
            if step >= total_steps:
                break
        bar.close()

        # checked before this epoch's checkpoints: a NaN between two log lines stops the run here
        epoch_row = {"epoch": epoch, "step": step,
                     "train_loss": tu.finite_loss(tu.mean_over_ranks(loss_sum, loss_rows, rt), step)}
        meta = {"epoch": epoch, "step": step, "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
                "max_query_length": args.max_query_length, "train_file": args.train_file}
        ckpt_dir = save_dir_atomically(raw_model, args.output_dir, f"epoch-{epoch}", vocab_file, meta) \
            if rt.is_main else None
        if dev is not None:
            metrics = evaluate_epoch(raw_model, dev, args, rt, ckpt_dir)  # every rank scores a shard
            if rt.is_main:
                epoch_row.update(dev_exact_match=metrics["exact_match"], dev_f1=metrics["f1"])
                logger.log({"step": step, "epoch": epoch, "dev_exact_match": metrics["exact_match"],
                            "dev_f1": metrics["f1"]})
                if metrics["f1"] > best_f1:
                    best_f1, results["best_epoch"] = metrics["f1"], epoch
                    save_dir_atomically(raw_model, args.output_dir, "best", vocab_file, {**meta, **metrics})
        if rt.is_main:
            print(f"epoch {epoch} step {step}: train_loss {epoch_row['train_loss']:.4f}"
                  + (f" dev EM {epoch_row['dev_exact_match']:.2f} F1 {epoch_row['dev_f1']:.2f}" if dev else ""),
                  flush=True)
            results["epochs"].append(epoch_row)
        if rt.distributed:
            torch.distributed.barrier()  # the other ranks wait while rank 0 writes
        if step >= total_steps:
            break

    if rt.is_main:
        save_dir_atomically(raw_model, args.output_dir, "final", vocab_file, meta)
        logger.close()
        plot_jsonl(os.path.join(args.output_dir, "log.jsonl"), ["loss"], os.path.join(args.output_dir, "loss.png"),
                   "KorQuAD fine-tuning loss")
        results["train_seconds"] = round(time.time() - t0, 1)
        results["args"] = vars(args)
        atomic_write_json(os.path.join(args.output_dir, "train_results.json"), results)
    tu.cleanup_runtime(rt)
    return results


if __name__ == "__main__":
    run_script(main)
