r"""Evaluate a fine-tuned KorNLI / KorSTS checkpoint on test (accuracy, or Pearson/Spearman), metrics x100.

    python3 eval_classifier.py --data_dir data/korsts --task_name korsts --config_file CONFIG --vocab_file VOCAB \
        --checkpoint CKPT --max_seq_length 128 --eval_batch_size 32
    python3 eval_classifier.py --task_name korsts --data_dir data/korsts \
        --checkpoint runs/quickstart/korsts_pretrained/seed-1/best --output_dir runs/korsts_test
    python3 eval_classifier.py --task_name korsts --checkpoint runs/quickstart/korsts_pretrained/seed-1/best \
        --eval_file data/korsts/sts-dev.tsv

A checkpoint written by run_classifier.py carries its config, vocab and task.json, so --config_file and
--vocab_file are only needed for other checkpoints (e.g. a release .bin); --checkpoint may also name the
model.safetensors file inside such a folder. --max_seq_length defaults to the length the checkpoint was fine-tuned
with (task.json), else 128, and --pair_orders to the checkpoint's (both or score_both: each pair scored as the
mean of its two orders), else one. The checkpoint must contain a head for the task (loaded strictly): evaluating a
pretrained-only encoder would score a random head.
Every row of the evaluated file must parse: a row with a wrong field count or a bad label is an error naming its
line, never skipped (the score would silently be on a subset). A file whose header has no label column (gold_label,
score) is predicted and not scored: the metrics are null, exit 0, and predictions.tsv leaves gold empty.
The last printed line is the metrics as JSON; with --output_dir they are also written to eval_results.json there,
and each row's prediction to predictions.tsv (guid = file:line, gold, prediction; KorNLI label names, KorSTS
scores) in the file's order.
Evaluation runs in float32 whatever --amp says (see cls_features.predict).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

import batching
import cls_data
import cls_features
import model_args
import tokenization
import train_utils as tu
from fileio import atomic_write_json, atomic_write_text, run_script
from models.checkpoint import canonical_state_dict, checkpoint_folder, head_rows, read_state_dict, reorder_head
from models.config import check_max_seq_length, read_json_object
from models.modeling import BertForSequenceClassification, load_checkpoint


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cls_data.add_task_args(p, max_seq_length=None)  # None: from the checkpoint's task.json
    model_args.add_model_args(p)
    batching.add_pad_multiple_arg(tu.add_runtime_args(p))
    p.add_argument("--eval_file", default=None, help="TSV to evaluate instead of the task's test file (--test_file "
                                                      "also names it; --train_file and --dev_file are refused)")
    cls_data.add_pair_orders_arg(p, default=None)  # None: from the checkpoint's task.json
    return p


def read_task_json(ckpt: str) -> dict:
    """run_classifier's task.json beside the weights ({} when there is none, e.g. a release .bin)."""
    meta = os.path.join(checkpoint_folder(ckpt), "task.json")
    saved = read_json_object(meta) if os.path.isfile(meta) else {}
    for key, kind in (("task_name", str), ("max_seq_length", int), ("pair_orders", str)):
        if saved.get(key) is not None and (not isinstance(saved[key], kind) or isinstance(saved[key], bool)):
            raise ValueError(f"{meta}: {key} is {saved[key]!r}, not a {kind.__name__}")
    return saved


def read_task_weights(ckpt: str, task, config_from_ckpt: bool, config, saved: dict) -> dict:
    """The checkpoint's tensors (read once: a release .bin is one pickle, read whole), after checking that it was
    fine-tuned for `task`. One fine-tuned for another task (or not fine-tuned at all) fails here with what it is,
    not later as a missing-key or shape mismatch."""
    if saved.get("task_name") and saved["task_name"] != task.name:
        raise ValueError(f"--checkpoint {ckpt} was fine-tuned for {saved['task_name']}, not --task_name {task.name}")
    sd = read_state_dict(ckpt)
    if not any(k.startswith("classifier.") for k in canonical_state_dict(sd)):
        raise ValueError(f"--checkpoint {ckpt} has no classifier head (a pretraining checkpoint?); fine-tune it "
                         f"with run_classifier.py first")
    if config_from_ckpt and config.num_labels != task.num_labels:
        raise ValueError(f"--checkpoint {ckpt} has a {config.num_labels}-label head but {task.name} needs "
                         f"{task.num_labels}")
    order = head_rows(ckpt, task.labels, task.name)
    if order is not None:
        tu.warn(f"{ckpt}: its config's id2label lists the labels in another order; the head's rows are read in "
                f"{task.name}'s order ({', '.join(task.labels)})")
        sd = reorder_head(sd, order)
    return sd


def resolve_max_seq_length(args, saved: dict, ckpt: str, config) -> int:
    """--max_seq_length, else the checkpoint's: inputs cut shorter or longer than in fine-tuning score lower.
    ValueError when it exceeds the model's (config's) max_position_embeddings."""
    trained = saved.get("max_seq_length")
    if args.max_seq_length is None:
        length = trained or cls_data.DEFAULT_MAX_SEQ_LENGTH  # neither the flag nor task.json gives one
    else:
        length = args.max_seq_length
        if trained and length != trained:
            tu.warn(f"--max_seq_length {length}, but {ckpt} was fine-tuned with {trained} (its task.json)")
    check_max_seq_length(length, config,
                         "--max_seq_length" if args.max_seq_length is not None else "task.json's max_seq_length")
    return length


def resolve_pair_orders(args, saved: dict, ckpt: str, task) -> str:
    """--pair_orders, else the checkpoint's (task.json), else one: a model fine-tuned on both orders scores lower
    on one, and the other way round."""
    if args.pair_orders is None:
        # only a missing key means an older task.json; any value written there must be a valid one
        trained = saved.get("pair_orders", "one")
        cls_data.check_pair_orders(trained, task, f"{os.path.join(checkpoint_folder(ckpt), 'task.json')} pair_orders")
        return trained
    if "pair_orders" in saved and cls_data.scores_both_orders(saved["pair_orders"]) != (args.pair_orders == "both"):
        tu.warn(f"--pair_orders {args.pair_orders}, but {ckpt} was fine-tuned with {saved['pair_orders']} "
                f"(its task.json)")
    return args.pair_orders


def write_predictions(path: str, task, examples, logits):
    """guid, gold and prediction of every row, in the file's order (logits are in that order too)."""
    logits = np.asarray(logits)
    rows = ["guid\tgold\tprediction"]
    for ex, row in zip(examples, logits):
        if task.is_regression:
            # the shortest text that reads back as the same float32: a barely trained model's scores differ
            # in the 6th digit, and rounding them would make ties the metrics did not see
            gold = "" if ex.label is None else repr(ex.label)
            rows.append(f"{ex.guid}\t{gold}\t{np.float32(row.reshape(-1)[0])!s}")
        else:
            gold = "" if ex.label is None else task.labels[ex.label]
            rows.append(f"{ex.guid}\t{gold}\t{task.labels[int(row.argmax())]}")
    atomic_write_text(path, "\n".join(rows) + "\n")


def main(argv=None):
    args = build_parser().parse_args(argv)
    task = cls_data.TASKS[args.task_name]
    rt = tu.setup_runtime(args)
    try:
        multiple = batching.pad_multiple(args.pad_to_multiple_of, rt.device)
    except ValueError as e:
        tu.fail(str(e))
    if not rt.is_main:  # a few thousand pairs: one process is enough, the others just leave
        tu.cleanup_runtime(rt)
        return {}
    if not args.checkpoint:
        tu.fail("--checkpoint is required: evaluation needs fine-tuned weights")
    # the task flags come from run_classifier's group: a --dev_file given here would leave the test file scored
    for flag in ("train_file", "dev_file"):
        if getattr(args, flag):
            tu.fail(f"--{flag}: eval_classifier.py scores one file, named with --eval_file (default: the task's "
                    "test file in --data_dir)")
    if args.eval_file and args.test_file and args.eval_file != args.test_file:
        tu.fail(f"--eval_file {args.eval_file} and --test_file {args.test_file} name two files; give one")
    out_files = [os.path.join(args.output_dir, name) for name in ("eval_results.json", "predictions.tsv")
                 ] if args.output_dir else []
    if args.output_dir:
        try:
            tu.check_output_dir_path(args.output_dir)
        except ValueError as e:
            tu.fail(str(e))
    # eval_results.json, written last, marks a finished evaluation: never overwritten. A predictions.tsv without it
    # is what a kill between the two writes left: replaced, or the same command (a quickstart stage) could never run
    # again in that folder
    if out_files and os.path.exists(out_files[0]):
        tu.fail(f"{out_files[0]} already exists; choose another --output_dir")
    if out_files and os.path.exists(out_files[1]):
        tu.warn(f"{out_files[1]} is left from an unfinished evaluation (no eval_results.json): replacing it")
    config_from_ckpt = args.config_file is None
    try:
        cls_data.check_task_args(args)
        if args.pair_orders:
            cls_data.check_pair_orders(args.pair_orders, task)
        # a weights file's vocab.txt is found beside it, and its config rides in its metadata
        config, vocab_file = model_args.resolve_config_and_vocab(args)
        saved = read_task_json(args.checkpoint)
        sd = read_task_weights(args.checkpoint, task, config_from_ckpt, config, saved)
        max_seq_length = resolve_max_seq_length(args, saved, args.checkpoint, config)
        pair_orders = resolve_pair_orders(args, saved, args.checkpoint, task)
        path = args.eval_file or cls_data.resolve_files(args, task, "test")[0]
        examples = cls_data.read_examples(path, task, args.max_eval_examples, strict=True, allow_unlabelled=True)
        model = BertForSequenceClassification(config, num_labels=task.num_labels)
        load_checkpoint(model, args.checkpoint, strict=True, sd=sd)
        del sd  # the model holds its own copy: a Large file's tensors need not stay through prediction
        tokenizer = tokenization.build_fast_tokenizer(vocab_file, do_lower_case=config.do_lower_case,
                                                      morph_analyzer=config.morph_analyzer)
        ids = tokenization.special_token_ids(tokenization.load_vocab(vocab_file))
        per_order = cls_features.convert_pair_orders(examples, tokenizer, ids["cls"], ids["sep"], max_seq_length,
                                                     cls_data.scores_both_orders(pair_orders))
        feats = per_order[0]
    except (ValueError, FileNotFoundError, OSError) as e:
        tu.fail(str(e))

    views, labels = cls_features.eval_views(per_order, args.eval_batch_size, ids["pad"], task.is_regression,
                                            multiple, max_seq_length)
    logits = cls_features.predict_views(model.to(rt.device), views, rt.device)
    scored = examples[0].label is not None  # a file without the label column is predicted, not scored
    metrics = cls_data.compute_metrics(task, logits, labels) if scored else dict.fromkeys(task.metrics)

    results = {**cls_data.json_safe(metrics), "task_name": task.name, "eval_file": path, "examples": len(feats),
               "checkpoint": args.checkpoint, "max_seq_length": max_seq_length, "pair_orders": pair_orders,
               "labels": list(task.labels) if task.labels else None, "metric_scale": "x100"}
    if scored:
        for k, v in metrics.items():
            print(f"{task.name} {os.path.basename(path)} {k}: {v:.2f}")
    else:
        print(f"{task.name} {os.path.basename(path)}: no '{task.label_col}' column, predicted and not scored")
    if out_files:
        in_file_order = np.empty_like(logits)
        in_file_order[cls_features.length_order(feats)] = logits  # predict's rows come in length order
        write_predictions(out_files[1], task, examples, in_file_order)
        atomic_write_json(out_files[0], results)  # last: it marks the evaluation as complete
    print(json.dumps(results, ensure_ascii=False), flush=True)
    tu.cleanup_runtime(rt)
    return results


if __name__ == "__main__":
    run_script(main)
