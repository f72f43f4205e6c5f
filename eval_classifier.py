r"""Evaluate a fine-tuned KorNLI / KorSTS checkpoint on test (accuracy, or Pearson/Spearman), metrics x100.

    python3 eval_classifier.py --data_dir data/korsts --task_name korsts --config_file CONFIG --vocab_file VOCAB \
        --checkpoint CKPT --max_seq_length 128 --eval_batch_size 32
    python3 eval_classifier.py --task_name korsts --data_dir data/korsts \
        --checkpoint runs/quickstart/korsts_pretrained/best --output_dir runs/korsts_test
    python3 eval_classifier.py --task_name korsts --checkpoint runs/quickstart/korsts_pretrained/best \
        --eval_file data/korsts/sts-dev.tsv

A checkpoint written by run_classifier.py carries its config, vocab and task.json, so --config_file and
--vocab_file are only needed for other checkpoints (e.g. a release .bin). The checkpoint must contain a head for
the task (loaded strictly): evaluating a pretrained-only encoder would score a random head.
The last printed line is the metrics as JSON; with --output_dir they are also written to eval_results.json there.
Evaluation runs in float32 whatever --amp says (see cls_data.predict).
"""
from __future__ import annotations

import argparse
import json
import os

import cls_data
import tokenization
import train_utils as tu
from models.modeling import BertForSequenceClassification, load_checkpoint


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cls_data.add_task_args(p)
    tu.add_model_args(p)
    tu.add_runtime_args(p)
    p.add_argument("--eval_file", default=None, help="TSV to evaluate instead of the task's test file")
    return p


def check_task(ckpt: str, task, config_from_ckpt: bool, config):
    """A checkpoint fine-tuned for another task fails here with its name, not later as a shape mismatch."""
    meta = os.path.join(ckpt, "task.json") if os.path.isdir(ckpt) else None
    if meta and os.path.isfile(meta):
        with open(meta, encoding="utf-8") as f:
            saved = json.load(f).get("task_name")
        if saved and saved != task.name:
            raise ValueError(f"--checkpoint {ckpt} was fine-tuned for {saved}, not --task_name {task.name}")
    if config_from_ckpt and config.num_labels != task.num_labels:
        raise ValueError(f"--checkpoint {ckpt} has a {config.num_labels}-label head but {task.name} needs "
                         f"{task.num_labels}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    task = cls_data.TASKS[args.task_name]
    rt = tu.setup_runtime(args)
    if not rt.is_main:  # a few thousand pairs: one process is enough, the others just leave
        tu.cleanup_runtime(rt)
        return {}
    if not args.checkpoint:
        tu.fail("--checkpoint is required: evaluation needs fine-tuned weights")
    if args.eval_batch_size < 1:
        tu.fail(f"--eval_batch_size {args.eval_batch_size} must be >= 1")
    out_file = os.path.join(args.output_dir, "eval_results.json") if args.output_dir else None
    if out_file and os.path.exists(out_file):
        tu.fail(f"{out_file} already exists; choose another --output_dir")
    config, vocab_file = tu.resolve_config_and_vocab(args)
    try:
        check_task(args.checkpoint, task, args.config_file is None, config)
        if args.max_seq_length > config.max_position_embeddings:
            raise ValueError(f"--max_seq_length {args.max_seq_length} exceeds the model's max_position_embeddings "
                             f"{config.max_position_embeddings}")
        path = args.eval_file or cls_data.resolve_files(args, task, "test")[0]
        examples = cls_data.read_examples(path, task, args.max_eval_examples)
        model = BertForSequenceClassification(config, num_labels=task.num_labels)
        load_checkpoint(model, args.checkpoint, strict=True)
    except (ValueError, FileNotFoundError, OSError) as e:
        tu.fail(str(e))

    tokenizer = tokenization.build_fast_tokenizer(vocab_file, do_lower_case=config.do_lower_case,
                                                  morph_analyzer=config.morph_analyzer)
    ids = tokenization.special_token_ids(tokenization.load_vocab(vocab_file))
    feats = cls_data.convert_examples(examples, tokenizer, ids["cls"], ids["sep"], args.max_seq_length)
    batches, labels = cls_data.eval_batches(feats, args.eval_batch_size, ids["pad"], task.is_regression)
    logits = cls_data.predict(model.to(rt.device), batches, rt.device)
    metrics = cls_data.compute_metrics(task, logits, labels)

    results = {**cls_data.json_safe(metrics), "task_name": task.name, "eval_file": path, "examples": len(feats),
               "checkpoint": args.checkpoint, "labels": list(task.labels) if task.labels else None,
               "metric_scale": "x100"}
    for k, v in metrics.items():
        print(f"{task.name} {os.path.basename(path)} {k}: {v:.2f}")
    if out_file:
        tu.atomic_write_json(out_file, results)
    print(json.dumps(results, ensure_ascii=False), flush=True)
    tu.cleanup_runtime(rt)
    return results


if __name__ == "__main__":
    main()
