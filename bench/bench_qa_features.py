"""How long KorQuAD feature conversion and n-best post-processing take (target: the dev set in <= 10 s on 2 cores).

    python bench/bench_qa_features.py                                   # dev set, seq 512 / stride 64, 2 cores
    python bench/bench_qa_features.py --vocab_file runs/vocab/vocab.txt --max_seq_length 384 --doc_stride 128 --training
    python bench/bench_qa_features.py --morph_analyzer kiwi --cores 0   # morpheme pre-splitting, all cores

Times, on the 5,774-question dev set: reading the JSON, building the tokenizer, converting every question to
windows (tokenising each context once, encode_batch), writing and reading the feature cache, and post-processing
random logits for every window into answers (n-best 20, max answer 30). Without --vocab_file a WordPiece vocab is
built once from data/korean_text into bench/_work/ (not timed). The process is pinned to --cores CPUs (Linux) so a
big machine measures what a 2-core one would see. The last line is the result as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import qa_data  # noqa: E402
from tokenization import build_fast_tokenizer, load_vocab, special_token_ids  # noqa: E402

DEV = os.path.join(ROOT, "data", "korquad", "KorQuAD_v1.0_dev.json")
WORK = os.path.join(ROOT, "bench", "_work")


def default_vocab(vocab_size: int) -> str:
    path = os.path.join(WORK, f"qa_vocab_{vocab_size}.txt")
    if not os.path.exists(path):
        corpus = [os.path.join(dp, f) for dp, _, files in os.walk(os.path.join(ROOT, "data", "korean_text"))
                  for f in sorted(files) if f.endswith(".txt")]
        subprocess.run([sys.executable, os.path.join(ROOT, "tokenization.py"), "build-vocab", "--corpus", *corpus,
                        "--vocab_size", str(vocab_size), "--output", path], check=True)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),  # the summary and commands
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predict_file", default=DEV)
    p.add_argument("--vocab_file", default=None)
    p.add_argument("--vocab_size", type=int, default=32000, help="size of the vocab built when --vocab_file is absent")
    p.add_argument("--morph_analyzer", "--morph", dest="morph", default=None, choices=["kiwi"],
                   help="morpheme pre-splitting (a vocab built with it)")
    p.add_argument("--max_seq_length", type=int, default=512)
    p.add_argument("--doc_stride", type=int, default=64)
    p.add_argument("--max_query_length", type=int, default=64)
    p.add_argument("--training", action="store_true", help="training features (answer labels, mismatch skipping)")
    p.add_argument("--cores", type=int, default=2, help="pin to this many CPUs (0 = leave the affinity alone)")
    p.add_argument("--repeats", type=int, default=3, help="conversion is timed this many times; the best is kept")
    args = p.parse_args(argv)

    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    vocab_file = args.vocab_file or default_vocab(args.vocab_size)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    t = time.perf_counter()
    examples, skipped = qa_data.read_korquad(args.predict_file, args.training)
    t_read = time.perf_counter() - t

    t_convert, t_tok = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        tok = build_fast_tokenizer(vocab_file, morph_analyzer=args.morph)
        special = special_token_ids(load_vocab(vocab_file))
        t_tok.append(time.perf_counter() - t)
        t = time.perf_counter()
        feats, unmappable = qa_data.convert_examples_to_features(examples, tok, special, args.max_seq_length,
                                                                 args.doc_stride, args.max_query_length, args.training)
        t_convert.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "features.npz")
        t = time.perf_counter()
        qa_data.save_features(feats, path, "bench", {"n_unmappable": unmappable})
        t_save = time.perf_counter() - t
        t = time.perf_counter()
        qa_data.load_features(path, "bench")
        t_load = time.perf_counter() - t
        cache_mb = os.path.getsize(path) / 2**20

    rng = np.random.default_rng(0)
    start = rng.normal(size=feats.input_ids.shape).astype(np.float32)
    end = rng.normal(size=feats.input_ids.shape).astype(np.float32)
    t = time.perf_counter()
    qa_data.postprocess_predictions(examples, feats, start, end, 20, 30)
    t_post = time.perf_counter() - t

    result = {"file": os.path.relpath(args.predict_file, ROOT), "questions": len(examples), "skipped": skipped,
              "windows": len(feats), "cores": cores, "morph": args.morph, "training": args.training,
              "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
              "vocab_size": len(load_vocab(vocab_file)), "read_s": round(t_read, 3),
              "tokenizer_build_s": round(min(t_tok), 3),
              "convert_s": round(min(t_convert), 3), "convert_s_all": [round(x, 3) for x in t_convert],
              "read_plus_convert_s": round(t_read + min(t_tok) + min(t_convert), 3),
              "cache_write_s": round(t_save, 3), "cache_read_s": round(t_load, 3), "cache_mb": round(cache_mb, 1),
              "postprocess_s": round(t_post, 3)}
    print(f"{result['questions']} questions -> {result['windows']} windows on {cores} core(s): read "
          f"{t_read:.2f}s + tokenizer {min(t_tok):.2f}s + convert {min(t_convert):.2f}s "
          f"(target <= 10 s); cache write {t_save:.2f}s / read {t_load:.2f}s ({cache_mb:.0f} MB); "
          f"post-processing {t_post:.2f}s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
