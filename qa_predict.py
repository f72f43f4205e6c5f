"""Predicting and scoring KorQuAD answers, shared by run_qa.py (every epoch's dev score) and eval_qa.py: a file's
features (built or read from the cache, rank 0 first), start/end logits batched by length, the official metric with
optional morphological trimming, and the prediction files.

    examples, feats = load_qa_features("data/korquad/KorQuAD_v1.0_dev.json", False, None, config, "vocab.txt", rt,
                                       max_seq_length=512, doc_stride=128, max_query_length=64, cache_dir="runs/cache")
    start, end = predict_logits(model, feats, batch_size=16, rt=rt)
    metrics, trimmed = score(examples, "dev", predictions, "predictions", answer_postprocess="morph")
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

import batching
import korquad_metric
import morphology
import qa_data
import train_utils as tu
from fileio import atomic_write_json


def load_qa_features(path, is_training, max_examples, config, vocab_file, rt, *, max_seq_length, doc_stride,
                     max_query_length, cache_dir):
    """(examples, features) for a KorQuAD file; rank 0 builds or reads the cache first, the other ranks then read it."""
    examples, skipped = qa_data.read_korquad(path, is_training, max_examples)
    if skipped and rt.is_main:
        tu.warn(f"{path}: skipped {skipped} training question(s) whose answer text is not found at its answer_start")
    if not examples:
        raise ValueError(f"{path}: no usable questions")
    if rt.distributed and not rt.is_main:
        torch.distributed.barrier()
    feats, unmappable, cache_path, cached = qa_data.load_or_build_features(
        examples, path, vocab_file, config.do_lower_case, config.morph_analyzer, max_seq_length, doc_stride,
        max_query_length, is_training, max_examples, cache_dir, write_cache=rt.is_main)
    if rt.distributed and rt.is_main:
        torch.distributed.barrier()
    if rt.is_main:
        if unmappable:
            tu.warn(f"{path}: {unmappable} training answer(s) cover no token and were dropped")
        with_answer = int((feats.start_positions > 0).sum())
        print(f"{path}: {len(examples)} questions -> {len(feats)} windows"
              + (f" ({with_answer} containing the answer)" if is_training else "")
              + (f", read from {cache_path}" if cached else (f", cached to {cache_path}" if cache_path else "")),
              flush=True)
    return examples, feats


def predict_logits(model, feats, batch_size, rt, multiple: int = 1):
    """Start/end logits [N, T] (float32) of every window; positions past its batch's width hold -1e4 (those between
    a window's end and that width hold the model's logits there; post-processing looks at context tokens only).

    Each rank scores a contiguous shard; windows are batched by length and each batch is cut to its longest
    window (rounded up to a multiple: batching.round_width), so short contexts do not pay for max_seq_length.
    """
    n, T = feats.input_ids.shape
    shard = np.array_split(np.arange(n), rt.world_size)[rt.rank]
    lengths = feats.attention_mask[shard].sum(1)
    order = np.argsort(-lengths, kind="stable")
    start = np.full((len(shard), T), -1e4, dtype=np.float32)
    end = np.full((len(shard), T), -1e4, dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            local = order[b:b + batch_size]
            rows, width = shard[local], batching.round_width(int(lengths[local].max()), multiple, T)
            batch = batching.batch_to_device({k: torch.from_numpy(getattr(feats, k)[rows, :width])
                                              for k in ("input_ids", "token_type_ids", "attention_mask")}, rt.device,
                                             torch.long)
            with rt.autocast():
                out = model(**batch)
            start[local, :width] = out["start_logits"].float().cpu().numpy()
            end[local, :width] = out["end_logits"].float().cpu().numpy()
    if rt.distributed:
        parts = [None] * rt.world_size
        torch.distributed.all_gather_object(parts, (start, end))
        start = np.concatenate([p[0] for p in parts])
        end = np.concatenate([p[1] for p in parts])
    return start, end


def load_morph_analyzer():
    """The analyser for --answer_postprocess morph, loaded before any slow work so a missing package fails fast."""
    return morphology.load_analyzer("kiwi")  # MissingAnalyzerError names the pip install command


def check_labelled(examples, dataset: str):
    """ValueError naming `dataset` unless every question has a gold answer (an unlabelled file cannot be scored)."""
    unlabelled = [ex.qid for ex in examples if not ex.answers]
    if unlabelled:
        raise ValueError(f"{dataset}: {len(unlabelled)} question(s) have no gold answer (first: {unlabelled[0]!r}), "
                         f"so it cannot be scored")


def score(examples, dataset: str, predictions: dict, source: str, answer_postprocess: str, answer_starts=None):
    """(metrics, post-processed predictions or None); with morph the headline numbers are after trimming."""
    check_labelled(examples, dataset)
    gold = {ex.qid: ex.answers for ex in examples}
    metrics = korquad_metric.evaluate(gold, predictions, source)
    if answer_postprocess == "none":
        return metrics, None
    # each answer cut at morpheme boundaries (e.g. a trailing particle dropped), in one batch; with its context
    # where its offset is known, so the analyser sees the neighbouring words
    contexts = {ex.qid: ex.context for ex in examples}
    trimmed = morphology.postprocess_predictions(predictions, load_morph_analyzer(), {
        q: (contexts[q], s) for q, s in (answer_starts or {}).items() if s >= 0})
    return {**korquad_metric.evaluate(gold, trimmed, source), "answer_postprocess": answer_postprocess,
            "without_postprocess": metrics}, trimmed


def write_predictions(out_dir, predictions, nbest, trimmed=None):
    atomic_write_json(os.path.join(out_dir, "predictions.json"), predictions)
    atomic_write_json(os.path.join(out_dir, "nbest_predictions.json"), nbest)
    if trimmed is not None:
        atomic_write_json(os.path.join(out_dir, "predictions_morph.json"), trimmed)


def headline(metrics: dict) -> str:
    return json.dumps({"exact_match": metrics["exact_match"], "f1": metrics["f1"]})


def report(metrics: dict):
    if "without_postprocess" in metrics:
        print(f"without answer post-processing: {headline(metrics['without_postprocess'])}", flush=True)
        print(f"with --answer_postprocess {metrics['answer_postprocess']}:", flush=True)
    print(headline(metrics), flush=True)
