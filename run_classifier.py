r"""Fine-tune BERT on KorNLI (3-way NLI, accuracy) or KorSTS (similarity regression, Spearman); pick the epoch on dev.

    python3 run_classifier.py --data_dir data/kornli --task_name kornli --config_file CONFIG --vocab_file VOCAB \
        --checkpoint CKPT --do_eval --max_seq_length 128 --train_batch_size 32 --eval_batch_size 32 \
        --learning_rate 3e-5 --num_train_epochs 3.0 --warmup_proportion 0.1
    python3 run_classifier.py --task_name korsts --data_dir data/korsts --config_file runs/quickstart/config.json \
        --vocab_file runs/quickstart/vocab.txt --do_eval --do_test --seeds 1-3 --learning_rate 1e-4 \
        --output_dir runs/korsts_grid
    torchrun --nproc_per_node 4 run_classifier.py --task_name kornli --data_dir data/kornli \
        --train_file data/kornli/xnli.dev.ko.tsv --checkpoint CKPT --do_eval --do_test --amp bf16

The first line is the release's command (CONFIG/VOCAB/CKPT: its model files); the second trains from scratch
with the files `make quickstart` leaves in runs/quickstart.

The KorNLI training set (multinli.train.ko.tsv, plus snli_1.0_train.ko.tsv when present) is not bundled. Any TSV
in the same format works: `--train_file data/kornli/xnli.dev.ko.tsv` trains on the 2,490 XNLI dev pairs as a small
training set; dev-based epoch selection then sees its own training rows, so report the test accuracy
(`--do_test`), not the dev one.

--train_batch_size is the batch per optimizer step over all GPUs and accumulation steps, so a recipe gives the same
updates on 1 or 8 GPUs. Flags left out take the release's defaults (batch 16, 10 epochs, lr 3e-5, warm-up 0.1, 128
tokens), as its KorSTS command line relies on. --seeds runs the release's KorSTS protocol (it reported the best of
seeds 1..10): every seed trains into OUTPUT_DIR/seed-N, seed_grid.json lists every seed's best dev score with mean
and std, and only the seed best on dev is evaluated on test. Metrics are x100. An interrupted grid is resumed by
running the same command again: seeds that finished (seed-N/eval_results.json, trained with the same arguments)
are reused, the others are trained.

--pair_orders score_both (KorSTS) scores each dev/test pair as the mean of its two orders' predictions; both also
trains on every pair in both orders (twice the steps per epoch); task.json records it for eval_classifier.py.

Training files skip rows with a wrong field count or a bad label (with a warning naming their lines); in the dev
and test files such a row is an error, so a reported score is always on the whole file.

Writes to --output_dir (default runs/<task>-<time>): best/ (checkpoint of the best dev epoch, or final/ without
--do_eval), eval_results.json (per-epoch dev metrics, best epoch, test metrics), log.jsonl, dev_curve.png.
eval_results.json marks a finished run, never overwritten; an unfinished one's folders are replaced with a warning.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import batching
import cls_data
import cls_features
import model_args
import tokenization
import train_utils as tu
from fileio import JsonlLogger, atomic_write_json, plot_jsonl, run_script
from models.checkpoint import head_rows, reorder_head
from models.config import check_max_seq_length
from models.modeling import (BertForSequenceClassification, checkpoint_config, init_weights, load_checkpoint,
                             save_checkpoint)
from optimization import build_optimizer, check_layer_lr_decay, get_scheduler, param_groups


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cls_data.add_task_args(p)
    model_args.add_model_args(p)
    tu.add_layer_lr_decay_arg(tu.add_optimizer_choice_args(tu.add_optim_args(p, learning_rate=3e-5)))
    tu.add_runtime_args(p)
    g = p.add_argument_group("fine-tuning")
    # the release's defaults: its KorSTS command line drops every flag after --do_eval (a missing line
    # continuation), so that run trains with these
    g.add_argument("--train_batch_size", type=int, default=16,
                   help="examples per optimizer step, all GPUs together (default 16, the release's)")
    g.add_argument("--num_train_epochs", type=float, default=10.0, help="may be fractional (default 10, the release's)")
    g.add_argument("--do_eval", action="store_true", help="evaluate on dev after each epoch and keep the best in best/")
    g.add_argument("--do_test", action="store_true", help="evaluate the selected checkpoint (and only it) on test")
    g.add_argument("--seeds", default=None, help="seed grid, e.g. 1-10 or 1,3,5: one run per seed, best on dev wins")
    g.add_argument("--logging_steps", type=int, default=50)
    g.add_argument("--reinit_pooler", action="store_true",
                   help="start the pooler (the [CLS] dense layer) fresh instead of from the checkpoint")
    g.add_argument("--head_init_seed", type=int, default=None, metavar="N",
                   help="start the classifier head (and the pooler, with --reinit_pooler) fresh from seed N, the "
                        "same for every --seed, which then sets only data order and dropout: runs that can be "
                        "averaged (bench/soup.py). Default: from the run's seed")
    cls_data.add_pair_orders_arg(g)
    batching.add_group_by_length_arg(g)
    batching.add_pad_multiple_arg(g)
    tu.add_compile_arg(g)
    tu.add_apex_args(g)
    return p


def make_train_loader(features, batch_size, pad_id, task, rt, args, seed):
    """(loader, sampler): reshuffled each epoch (sampler.set_epoch) from `seed`; rank r takes its share of each
    global batch (batching.GlobalBatchSampler, length-grouped with --group_by_length), so one optimizer step sees
    the same examples on 1 or N GPUs (given the same --train_batch_size). features: cls_features.PairFeatures, whose
    flat arrays forked workers share without copying (a list of feature dicts also works, for small hand-built sets)."""
    collate = functools.partial(cls_features.collate, pad_id=pad_id, regression=task.is_regression,
                                multiple=batching.pad_multiple(args.pad_to_multiple_of, rt.device),
                                limit=args.max_seq_length)
    sampler = batching.GlobalBatchSampler(cls_features.feature_lengths(features), batch_size, seed, rt.rank,
                                          rt.world_size, group=batching.LENGTH_GROUP if args.group_by_length else 0,
                                          accum=args.gradient_accumulation_steps)
    return DataLoader(features, batch_sampler=sampler, collate_fn=collate, num_workers=args.num_workers,
                      pin_memory=rt.device.type == "cuda"), sampler


def evaluate(model, split, task, rt) -> dict:
    """Metrics of model on split = (views, labels) from cls_features.eval_views (one view per pair order)."""
    views, labels = split
    return cls_data.compute_metrics(task, cls_features.predict_views(model, views, rt.device), labels)


# arguments a finished grid seed may have been trained with differently and still be reused: they change neither
# its training nor its dev scores (seeds: so a grid can also be extended; seed: a grid ignores it)
RERUN_FREE_ARGS = ("seeds", "seed", "do_test", "output_dir", "num_workers", "local_rank", "fp16_opt_level",
                   "loss_scale")
# arguments newer than some saved seeds, at the value that trains as those seeds were trained
ADDED_ARGS = {"layer_lr_decay": 1.0, "pair_orders": "one", "head_init_seed": None}
# how a seed's batches were drawn, recorded with its results: seeds from before batching.GlobalBatchSampler (no
# record) drew random batches otherwise, and only their --group_by_length batches are drawn the same way now
BATCH_DRAW = "global-batch"


def finished_seed(out_dir: str, args) -> dict | None:
    """The results of a grid seed that an earlier run of the same command finished (OUT/seed-N/eval_results.json,
    written only once the seed is done), or None; a rerun after a kill then trains only the other seeds.

    A finished seed trained with other arguments is an error, not reused: the grid would mix two recipes.
    """
    path = os.path.join(out_dir, "eval_results.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        old = {**ADDED_ARGS, **saved["args"]}
        checkpoint = saved["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a seed's results ({type(e).__name__}: {e}); delete it to train that seed "
                         f"again") from None
    if saved.get("batch_draw") != BATCH_DRAW and not old.get("group_by_length"):
        raise ValueError(f"{path}: this seed was trained by an older run_classifier.py, which drew its random batches "
                         f"otherwise; delete {path} to train that seed again, or choose another --output_dir")
    now = json.loads(json.dumps(vars(args)))  # as it was saved (tuples become lists)
    diff = sorted(k for k in set(now) | set(old) if k not in RERUN_FREE_ARGS and now.get(k) != old.get(k))
    if diff:
        shown = ", ".join(f"--{k} {old.get(k)} (now {now.get(k)})" for k in diff[:3])
        raise ValueError(f"{path}: this seed finished with other arguments: {shown}{', ...' if len(diff) > 3 else ''}; "
                         f"rerun with its arguments to reuse it, or choose another --output_dir")
    if not os.path.isfile(os.path.join(checkpoint, "model.safetensors")):
        raise ValueError(f"{path}: its checkpoint {checkpoint} is gone; delete {path} to train that seed again")
    return {k: v for k, v in saved.items() if k != "args"}


# an unfinished run's checkpoint folders: removed whole before a new run saves (save_best writes file by file, so
# a folder kept and rewritten could mix two runs' files, or keep one the new run never writes: best/ without
# --do_eval)
UNFINISHED = ("best", "final")


def check_output_dir(out_dir: str, markers=("eval_results.json",), verbose=True, args=None):
    """A finished run is never overwritten; an unfinished one (no eval_results.json) is, with a warning, so an
    interrupted run can simply be started again. With args: no model input of this run may lie in what it replaces."""
    tu.check_output_dir_path(out_dir)
    for m in markers:
        if os.path.exists(os.path.join(out_dir, m)):
            more = (f", or delete {os.path.join(out_dir, m)} to run the grid again with other --seeds (its finished "
                    "seeds are reused)") if m == "seed_grid.json" else ""
            raise ValueError(f"--output_dir {out_dir} already holds a finished run ({m}); choose another "
                             f"--output_dir{more}")
    found = [n for n in UNFINISHED if os.path.isdir(os.path.join(out_dir, n))]
    if args is not None:
        tu.check_inputs_outside(args, [os.path.join(out_dir, n) for n in found], out_dir)
    if verbose and found:
        tu.warn(f"{out_dir} holds {' and '.join(n + '/' for n in found)} from an unfinished run: replaced once the "
                "model has loaded")


def train_one_seed(args, task, rt, data, seed, out_dir) -> dict:
    """Train one model with `seed` into out_dir; returns eval_results (per-epoch dev metrics, best epoch, ...)."""
    tu.set_seed(seed)  # before the model is built: the new head's initialisation depends on it
    model, config, vocab_file = model_args.load_model_for_task(args, BertForSequenceClassification,
                                                       num_labels=task.num_labels)
    if data["head_rows"] is not None:
        model.load_state_dict(reorder_head(model.state_dict(), data["head_rows"]))
    if rt.is_main:
        for name in UNFINISHED:  # check_output_dir warned; no input of this run lies inside them
            shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    if args.reinit_pooler:
        # after a short pretraining the pooler has learnt only sentence order (SOP); a plain masked-LM model
        # fine-tunes from a random one
        init_weights(model.bert.pooler.dense, config.initializer_range)
    if args.head_init_seed is not None:
        # a stream of its own: the run's seed still draws the data order and dropout exactly as without the flag
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.head_init_seed)
            if args.reinit_pooler:
                init_weights(model.bert.pooler.dense, config.initializer_range)
            init_weights(model.classifier, config.initializer_range)
    tu.seed_dropout_per_rank(seed, rt)
    model.to(rt.device)
    raw_model = model  # saved and evaluated as it is; the compiled wrapper only trains
    if args.compile:
        torch._dynamo.reset()  # each seed's model compiles afresh (quickly: inductor's cache is on disk)
    model, graphs = tu.compile_for_training(model, args)
    if rt.distributed:
        device_ids = [rt.local_rank] if rt.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    micro_batch = args.train_batch_size // (rt.world_size * args.gradient_accumulation_steps)
    train_loader, sampler = make_train_loader(data["train"], micro_batch, data["pad_id"], task, rt, args, seed)
    accum = args.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(train_loader) / accum)
    total_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    # the loop clips (--max_grad_norm) for either optimizer, so LAMB does not clip a second time
    optimizer = build_optimizer(args.optimizer, param_groups(raw_model, args.weight_decay, args.layer_lr_decay),
                                args.learning_rate, eps=args.adam_epsilon, max_grad_norm=None)
    scheduler = get_scheduler(args.scheduler, optimizer, args.warmup_proportion, total_steps)
    scaler = tu.make_grad_scaler(rt)

    logger = JsonlLogger(os.path.join(out_dir, "log.jsonl")) if rt.is_main else None
    best_dir = os.path.join(out_dir, "best" if args.do_eval else "final")
    results = {"task_name": task.name, "labels": list(task.labels) if task.labels else None, "metric_scale": "x100",
               "main_metric": task.main_metric, "seed": seed, "train_examples": data["train_examples"],
               "dev_examples": len(data["dev"]) if args.do_eval else 0, "total_steps": total_steps, "epochs": [],
               "best_epoch": None, "best": None, "checkpoint": best_dir, "batch_draw": BATCH_DRAW}
    best_score = -math.inf
    step, t0 = 0, time.time()
    for epoch in range(1, math.ceil(args.num_train_epochs) + 1):
        sampler.set_epoch(epoch)
        model.train()
        # losses summed as tensors (.item() every micro-batch would sync the GPU each step), weighted by rows so
        # the logged loss is the per-row mean whatever the micro-batch sizes
        loss_sum, loss_n, window_loss, window_n = 0.0, 0, 0.0, 0
        bar = tqdm(train_loader, desc=f"seed {seed} epoch {epoch}", disable=not rt.is_main, leave=False)
        i = 0
        # each micro-batch's mean loss weighs its share of the window's rows: 1/accum, as GlobalBatchSampler fills
        # every micro-batch and gives every rank as many rows (so DDP's mean over ranks keeps the weighting); the
        # weighting still holds for a loader with a short last batch
        for window in batching.accumulation_windows(bar, accum):
            window_rows = sum(len(b["labels"]) for b in window)
            for j, batch in enumerate(window):
                n = len(batch["labels"])
                batch = batching.batch_to_device(batch, rt.device)
                # under DDP, all-reduce gradients only on the micro-batch that ends an accumulation window
                ctx = model.no_sync() if rt.distributed and j < len(window) - 1 else contextlib.nullcontext()
                with ctx:
                    if graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    with rt.autocast():
                        loss = model(**batch)["loss"]
                    scaler.scale(loss * (n / window_rows)).backward()
                loss_sum, loss_n = loss_sum + loss.detach().float() * n, loss_n + n
                window_loss, window_n = window_loss + loss.detach().float() * n, window_n + n
            i += len(window)
            scaler.unscale_(optimizer)
            # --max_grad_norm 0: no clipping; the norm is still measured for the log
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm or math.inf)
            if tu.scaler_step(scaler, optimizer):  # not when fp16's scaler skipped it: the schedule stays
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % args.logging_steps == 0 or step == total_steps:
                # every rank joins the all-reduce
                window_mean = tu.finite_loss(tu.mean_over_ranks(window_loss, window_n, rt), step)
                window_loss, window_n = 0.0, 0
                if rt.is_main:
                    row = {"step": step, "epoch": round(epoch - 1 + i / len(train_loader), 4),
                           "loss": window_mean, "lr": max(scheduler.get_last_lr()), "grad_norm": float(grad_norm),
                           "elapsed_s": round(time.time() - t0, 1)}
                    logger.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
            if step >= total_steps:
                break
        bar.close()

        # checked before anything of this epoch is saved: a NaN between two log lines stops the run here
        epoch_row = {"epoch": epoch, "step": step,
                     "train_loss": tu.finite_loss(tu.mean_over_ranks(loss_sum, loss_n, rt), step)}
        if args.do_eval and rt.is_main:
            # dev runs on rank 0 only (a few thousand pairs); the other ranks wait at the barrier below
            metrics = evaluate(raw_model, data["dev_eval"], task, rt)
            epoch_row.update(metrics)
            logger.log({"step": step, "epoch": epoch,
                        **{f"dev_{k}": v for k, v in cls_data.json_safe(metrics).items()}})
            score = cls_data.score_for_selection(metrics, task)
            print(f"seed {seed} epoch {epoch} step {step}: train_loss {epoch_row['train_loss']:.4f} "
                  + " ".join(f"dev_{k} {v:.2f}" for k, v in metrics.items()), flush=True)
            if score > best_score or results["best_epoch"] is None:
                best_score, results["best_epoch"], results["best"] = score, epoch, cls_data.json_safe(metrics)
                save_best(raw_model, best_dir, vocab_file, task, args, epoch)
        results["epochs"].append(cls_data.json_safe(epoch_row))
        if rt.distributed:
            torch.distributed.barrier()
        if step >= total_steps:
            break

    if rt.is_main:
        if not args.do_eval:
            save_best(raw_model, best_dir, vocab_file, task, args, results["epochs"][-1]["epoch"])
        logger.close()
        if args.do_eval:
            plot_jsonl(os.path.join(out_dir, "log.jsonl"), [f"dev_{task.main_metric}"],
                          os.path.join(out_dir, "dev_curve.png"), f"{task.name} dev (seed {seed})", x_key="epoch")
        results["train_seconds"] = round(time.time() - t0, 1)
    return results


def save_best(model, ckpt_dir, vocab_file, task, args, epoch):
    """The checkpoint plus task.json: which task, which label each logit is, how inputs were built. config.json's
    id2label names the head's rows too, so a task whose labels are later listed in another order still reads them
    right (eval_classifier and run_classifier match rows by name)."""
    save_checkpoint(model, ckpt_dir, vocab_file=vocab_file, labels=list(task.labels) if task.labels else None)
    atomic_write_json(os.path.join(ckpt_dir, "task.json"), {
        "task_name": task.name, "labels": list(task.labels) if task.labels else None,
        "num_labels": task.num_labels, "max_seq_length": args.max_seq_length, "pair_orders": args.pair_orders,
        "epoch": epoch})


def score_checkpoint(ckpt_dir, task, rt, split) -> dict:
    """Load a saved fine-tuned checkpoint (head included, strictly) and score it on split."""
    model = BertForSequenceClassification(checkpoint_config(ckpt_dir), num_labels=task.num_labels)
    load_checkpoint(model, ckpt_dir, strict=True)
    return evaluate(model.to(rt.device), split, task, rt)


def load_data(args, task, rt) -> dict:
    """Read every split the run needs and turn it into features once (shared by all seeds)."""
    config, vocab_file = model_args.resolve_config_and_vocab(args)
    check_max_seq_length(args.max_seq_length, config)
    tokenizer = tokenization.build_fast_tokenizer(vocab_file, do_lower_case=config.do_lower_case,
                                                  morph_analyzer=config.morph_analyzer)
    ids = tokenization.special_token_ids(tokenization.load_vocab(vocab_file))
    data = {"pad_id": ids["pad"], "head_rows": None}
    if args.checkpoint and args.head_init_seed is None:
        # a head whose id2label lists the task's labels in another order (transformers' KorNLI checkpoints often
        # do) is trained and scored with its rows in the task's order, as eval_classifier reads it; other names
        # are refused (--head_init_seed starts a fresh head instead)
        try:
            data["head_rows"] = head_rows(args.checkpoint, task.labels, task.name)
        except ValueError as e:
            raise ValueError(f"{e}, or pass --head_init_seed N for a fresh head") from None
        if data["head_rows"] is not None and rt.is_main:
            tu.warn(f"{args.checkpoint}: its config's id2label lists the labels in another order; the head's rows "
                    f"are reordered to {task.name}'s ({', '.join(task.labels)})")
    splits = ["train"] + (["dev"] if args.do_eval else []) + (["test"] if args.do_test else [])
    for split in splits:
        examples = cls_data.read_split(args, task, split)
        both = args.pair_orders == "both" if split == "train" else cls_data.scores_both_orders(args.pair_orders)
        per_order = cls_features.convert_pair_orders(examples, tokenizer, ids["cls"], ids["sep"], args.max_seq_length,
                                                     both)
        feats = per_order[0]
        if rt.is_main:
            n_trunc = int(feats.truncated.sum())
            print(f"{split}: {len(feats)} examples from {', '.join(cls_data.resolve_files(args, task, split))}"
                  f" ({n_trunc} truncated to {args.max_seq_length} tokens)"
                  + (", each in both orders" if len(per_order) > 1 else ""), flush=True)
        if split == "train":
            # one epoch: every pair in both orders (order 0's rows, then order 1's), shuffled by the sampler
            data[split] = cls_features.PairFeatures.concat(per_order)
            data["train_examples"] = len(feats)
        else:
            data[split] = feats
            data[f"{split}_eval"] = cls_features.eval_views(
                per_order, args.eval_batch_size, ids["pad"], task.is_regression,
                batching.pad_multiple(args.pad_to_multiple_of, rt.device), args.max_seq_length)
        # the rows (Python strings) and the per-order parts concat copied are not kept while the next split is read
        del examples, per_order, feats
    return data


def validate_args(args):
    """Refuse values that would crash (or silently misbehave) only after the data and model are loaded."""
    cls_data.check_task_args(args)
    if args.train_batch_size < 1:
        raise ValueError(f"--train_batch_size {args.train_batch_size} must be >= 1")
    tu.check_training_args(args)
    check_layer_lr_decay(args.layer_lr_decay, "--layer_lr_decay")
    cls_data.check_pair_orders(args.pair_orders, cls_data.TASKS[args.task_name])
    if args.logging_steps < 1:
        raise ValueError(f"--logging_steps {args.logging_steps} must be >= 1")
    if args.seeds and not args.do_eval:
        raise ValueError("--seeds picks the best seed on dev and needs --do_eval")


def main(argv=None):
    args = build_parser().parse_args(argv)
    task = cls_data.TASKS[args.task_name]
    if args.output_dir is None:
        args.output_dir = os.path.join("runs", f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    rt = tu.setup_runtime(args)
    tu.warn_apex_args(args, rt)
    try:
        validate_args(args)
        batching.pad_multiple(args.pad_to_multiple_of, rt.device)  # checked before anything is read or written
        seeds = tu.parse_seeds(args.seeds) if args.seeds else [args.seed]
        per_device = args.train_batch_size // (rt.world_size * args.gradient_accumulation_steps)
        if per_device * rt.world_size * args.gradient_accumulation_steps != args.train_batch_size:
            raise ValueError(f"--train_batch_size {args.train_batch_size} is not divisible by {rt.world_size} GPU(s) x "
                             f"--gradient_accumulation_steps {args.gradient_accumulation_steps}")
        grid = args.seeds is not None
        out_dirs = {s: os.path.join(args.output_dir, f"seed-{s}") if grid else args.output_dir for s in seeds}
        # every rank checks, so a refused run stops all of them instead of leaving the others waiting in DDP
        done = {}
        if grid:
            check_output_dir(args.output_dir, markers=("seed_grid.json",), verbose=False)  # seeds hold the runs
            done = {s: r for s, r in ((s, finished_seed(d, args)) for s, d in out_dirs.items()) if r is not None}
        for s, d in out_dirs.items():
            if s not in done:
                check_output_dir(d, verbose=rt.is_main, args=args)
        data = load_data(args, task, rt)
    except (ValueError, FileNotFoundError, OSError) as e:
        tu.fail(str(e))

    runs = {}
    for s in seeds:
        if s in done:
            if rt.is_main:
                print(f"seed {s}: finished by an earlier run, reusing {out_dirs[s]}", flush=True)
            runs[s] = done[s]
            continue
        runs[s] = train_one_seed(args, task, rt, data, s, out_dirs[s])
        if rt.is_main and grid:
            atomic_write_json(os.path.join(out_dirs[s], "eval_results.json"), {**runs[s], "args": vars(args)})
    if not rt.is_main:
        tu.cleanup_runtime(rt)
        return {}

    if grid:
        results = summarise_grid(runs, task)
        chosen = runs[results["best_seed_on_dev"]]["checkpoint"]
    else:
        results = runs[seeds[0]]
        chosen = results["checkpoint"]
    if args.do_test:
        results["test"] = cls_data.json_safe(score_checkpoint(chosen, task, rt, data["test_eval"]))
        results["test_checkpoint"] = chosen
        print("test: " + " ".join(f"{k} {v}" for k, v in results["test"].items()), flush=True)
    results["args"] = vars(args)
    atomic_write_json(os.path.join(args.output_dir, "seed_grid.json" if grid else "eval_results.json"), results)
    tu.cleanup_runtime(rt)
    return results


def summarise_grid(runs: dict, task) -> dict:
    """Every seed's best dev score, mean and std over seeds, and which seed was best on dev (ties: lowest seed)."""
    per_seed = {str(s): {"best_epoch": r["best_epoch"], **(r["best"] or {})} for s, r in runs.items()}
    by_seed = sorted(runs, key=int)  # argmax takes the first of equal scores: the lowest seed, in any input order
    scores = np.array([cls_data.score_for_selection(runs[s]["best"], task) for s in by_seed])
    mean, std, n = cls_data.mean_std(scores)
    best_seed = by_seed[int(np.argmax(scores))]
    summary = {"task_name": task.name, "main_metric": task.main_metric, "metric_scale": "x100",
               "selection": f"seed with the highest best-epoch dev {task.main_metric}", "seeds": per_seed,
               "n_seeds": len(runs), "n_seeds_in_mean": n,  # an undefined correlation is left out
               f"dev_{task.main_metric}_mean": mean, f"dev_{task.main_metric}_std": std,
               "best_seed_on_dev": best_seed, "best_dev": runs[best_seed]["best"]}
    print(f"seed grid: dev {task.main_metric} " + ", ".join(f"seed {s} {v:.2f}" for s, v in zip(by_seed, scores))
          + (f"; mean {mean:.2f} +- {std:.2f}" if std is not None else "") + f"; best on dev: seed {best_seed}",
          flush=True)
    return summary


if __name__ == "__main__":
    run_script(main)
