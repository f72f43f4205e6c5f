"""Predict KorQuAD 1.0 answers with a fine-tuned checkpoint and score them with the official metric (EM / F1).

    python3 eval_qa.py --checkpoint $MODEL_FILE --config_file $CONFIG_FILE --vocab_file $VOCAB_FILE --predict_file data/korquad/KorQuAD_v1.0_dev.json --max_seq_length 512 --doc_stride 64 --max_query_length 64 --max_answer_length 30 --batch_size 16 --n_best_size 20
    python3 eval_qa.py --checkpoint runs/korquad/best --predict_file data/korquad/KorQuAD_v1.0_dev.json --output_dir runs/korquad/dev --answer_postprocess morph
    python3 eval_qa.py --score_only --predict_file data/korquad/KorQuAD_v1.0_dev.json --prediction_json runs/korquad/dev/predictions.json

A checkpoint written by run_qa.py carries its config and vocab, so --checkpoint alone is enough; the QA head is
loaded strictly (a pretrained-only encoder would be scored with a random head). --max_seq_length, --doc_stride and
--max_query_length default to those it was fine-tuned with (its qa_train.json), else 512, 128 and 64. Writes
predictions.json ({id: answer}), nbest_predictions.json ({id: [{text, probability, start_logit, end_logit}, ...]})
and eval_results.json to --output_dir (default runs/korquad-eval-<time>); an existing result there is never
replaced. --answer_postprocess morph trims each answer with the Korean morphological analyser (kiwipiepy), e.g.
dropping a trailing particle, and reports the metrics both without and with it (predictions_morph.json). The last
printed line is always {"exact_match": .., "f1": ..} (after post-processing, when it is on). A file without any gold
answers (a test set) is predicted and not scored: both are null, exit 0; one where only some questions lack answers
is an error after its predictions are written. --max_eval_examples N keeps the file's first N questions, also with
--score_only (so predictions made with it are scored on those alone). Runs under torchrun too: every rank scores a
shard of the windows, rank 0 writes. google-research/bert's --do_predict and --do_train=False are accepted.
"""
from __future__ import annotations

import argparse
import os
import time


import batching
import korquad_metric
import model_args
import morphology
import qa_data
import train_utils as tu
from fileio import atomic_write_json, run_script
from models.checkpoint import checkpoint_folder
from models.config import check_max_seq_length, read_json_object
from models.modeling import BertForQuestionAnswering, load_checkpoint
from qa_predict import load_morph_analyzer, load_qa_features, predict_logits, report, score, write_predictions


def build_parser():
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),  # the summary and commands
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args.add_model_args(p).add_argument(
        "--config_name", dest="config_file", default=None,
        help="--config_file's spelling in the release's first eval_qa.py")
    batching.add_pad_multiple_arg(tu.add_runtime_args(p))
    qa_data.add_qa_args(p, windows_from_checkpoint=True)
    g = p.add_argument_group("evaluation")
    g.add_argument("--score_only", action="store_true",
                   help="score --prediction_json against --predict_file; no model is loaded")
    g.add_argument("--prediction_json", default=None, help="predictions to score with --score_only")
    g.add_argument("--answer_postprocess", choices=["none", "morph"], default="none",
                   help="morph: trim answers at morpheme boundaries (kiwipiepy) before scoring")
    tu.add_bool_flag(g, "--do_predict", help="accepted for google-research/bert command lines: this script "
                                             "always predicts on --predict_file (false is an error)")
    tu.add_bool_flag(g, "--do_train", help="accepted for google-research/bert command lines as false: this script "
                                           "never trains (true is an error: run_qa.py trains)")
    return p


# ----------------------------------------------------------------------------------------------------------------

def score_only(args) -> dict:
    if not args.predict_file or not args.prediction_json:
        raise ValueError("--score_only needs --predict_file (the dataset) and --prediction_json")
    examples, _ = qa_data.read_korquad(args.predict_file, is_training=False)
    predictions = korquad_metric.load_predictions(args.prediction_json)
    if args.max_eval_examples is not None:
        # the file's first N questions, as a prediction run with the same flag saw them; predictions for its later
        # questions are dropped rather than reported as ids of another file (ids in no question still are)
        later = {ex.qid for ex in examples[args.max_eval_examples:]}
        examples = examples[:args.max_eval_examples]
        predictions = {q: a for q, a in predictions.items() if q not in later}
    # a predictions file has no positions: each answer is trimmed where it first occurs in its context, so the
    # analyser sees neighbouring words as in a full evaluation (without any, some answers are tagged otherwise)
    starts = {ex.qid: ex.context.find(predictions[ex.qid]) for ex in examples if predictions.get(ex.qid)}
    metrics, _ = score(examples, args.predict_file, predictions, args.prediction_json, args.answer_postprocess,
                       starts)
    report(metrics)
    return metrics


def resolve_window_args(args):
    """--max_seq_length, --doc_stride and --max_query_length not given: as the checkpoint was fine-tuned (run_qa's
    qa_train.json beside it; windows cut otherwise score lower), else qa_data.WINDOW_DEFAULTS (a release .bin)."""
    meta = os.path.join(checkpoint_folder(args.checkpoint), "qa_train.json") if args.checkpoint else None
    saved = read_json_object(meta) if meta and not args.score_only and os.path.isfile(meta) else {}
    for key, default in qa_data.WINDOW_DEFAULTS.items():
        if getattr(args, key) is None:
            value = saved.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{meta}: {key} is {value!r}, not an integer")
            setattr(args, key, value)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.do_predict is False:
            raise ValueError("--do_predict false: eval_qa.py only predicts (and scores); leave the flag out")
        if args.do_train:
            raise ValueError("--do_train: eval_qa.py only predicts (and scores); train with run_qa.py")
        resolve_window_args(args)
        warnings = qa_data.check_qa_args(args)  # said once the rank is known
        if args.score_only:
            return score_only(args)
        if not args.checkpoint:
            raise ValueError("--checkpoint is required (or --score_only with --prediction_json)")
        if not args.predict_file:
            raise ValueError("--predict_file is required")
        if args.answer_postprocess == "morph":
            load_morph_analyzer()
    except (ValueError, FileNotFoundError, OSError, morphology.MissingAnalyzerError) as e:
        tu.fail(str(e))

    if args.output_dir is None:
        args.output_dir = os.path.join("runs", f"korquad-eval-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.cache_dir is None:
        args.cache_dir = os.path.join(os.path.dirname(os.path.abspath(args.output_dir)), "cache")
    rt = tu.setup_runtime(args)
    for warning in warnings if rt.is_main else []:
        tu.warn(warning)
    try:
        multiple = batching.pad_multiple(args.pad_to_multiple_of, rt.device)
        tu.check_output_dir_path(args.output_dir)
        for name in ("predictions.json", "eval_results.json"):
            if os.path.exists(os.path.join(args.output_dir, name)):
                raise ValueError(f"{os.path.join(args.output_dir, name)} already exists; choose another --output_dir")
        config, vocab_file = model_args.resolve_config_and_vocab(args)
        check_max_seq_length(args.max_seq_length, config)
        model = BertForQuestionAnswering(config)
        load_checkpoint(model, args.checkpoint, strict=True)
        windows = {key: getattr(args, key) for key in (*qa_data.WINDOW_DEFAULTS, "cache_dir")}
        examples, feats = load_qa_features(args.predict_file, False, args.max_eval_examples, config, vocab_file, rt,
                                           **windows)
    except (ValueError, FileNotFoundError, OSError) as e:
        tu.fail(str(e))

    t0 = time.time()
    start, end = predict_logits(model.to(rt.device), feats, args.batch_size, rt, multiple)
    if not rt.is_main:
        tu.cleanup_runtime(rt)
        return {}
    predictions, nbest, answer_starts = qa_data.postprocess_predictions(examples, feats, start, end,
                                                                        args.n_best_size, args.max_answer_length)
    results = {"questions": len(examples), "windows": len(feats), "predict_file": args.predict_file,
               "checkpoint": args.checkpoint, "predict_seconds": round(time.time() - t0, 1), "args": vars(args)}
    scored = any(ex.answers for ex in examples)  # none: a test set, predicted and not scored
    metrics, trimmed = {"exact_match": None, "f1": None}, None
    if scored:
        try:
            metrics, trimmed = score(examples, args.predict_file, predictions, "predictions",
                                     args.answer_postprocess, answer_starts)
        except ValueError as e:  # some questions without answers: a score on the others would pass for the file's
            write_predictions(args.output_dir, predictions, nbest)
            tu.fail(f"{e}; predictions written to {args.output_dir}")
    write_predictions(args.output_dir, predictions, nbest, trimmed)
    results = {**metrics, **results}
    atomic_write_json(os.path.join(args.output_dir, "eval_results.json"), results)
    print(f"wrote predictions to {args.output_dir}", flush=True)
    if not scored:
        print(f"{args.predict_file} has no gold answers: not scored", flush=True)
    report(metrics)
    tu.cleanup_runtime(rt)
    return results


if __name__ == "__main__":
    run_script(main)
