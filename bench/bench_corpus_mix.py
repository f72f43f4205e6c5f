"""How close each source of a pretraining corpus is to the fine-tuning tasks' text, and what candidate mixes change.

    bash bench/cram_prepare.sh && python bench/bench_corpus_mix.py      # the cram corpus: 5 sources in 7 files
    python bench/bench_corpus_mix.py --input_dir runs/shards --mixes "" "*news*=2" --results_json /tmp/mix.json

A unigram measure, CPU only, seconds. The shards' per-document sources give each source's token counts (the
.partN files of one source pooled; add-0.5 smoothing), which score the tokens of the tasks' TRAINING text (KorSTS
sts-train.tsv, KorNLI xnli.dev.ko.tsv, the set #8 trains KorNLI on; no dev or test text) in bits per token: lower
is closer. Each --mixes entry (run_pretraining.py --source_weights values) is scored the same way, with the
tokens an epoch would hold. EM fits the mixture of the sources that scores the two tasks' text (pooled) best:
a lower bound for any mix, which it reaches only by repeating small sources many times per epoch, and which it
cannot tell apart from redundant ones (two parts of one source), so it ranks sources and proposes no weights.
It does not predict fine-tuning scores: that needs the GPU run (bench/cram.py --pretrain_args).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fileio import atomic_write_json  # noqa: E402
from pretraining_data import parse_source_weights, read_meta, resolve_source_weights, shard_path  # noqa: E402
from tokenization import build_fast_tokenizer  # noqa: E402
from train_utils import fail  # noqa: E402

# the corpus as is; the legal text (48% of its tokens, formulaic) down to a quarter; that plus the closest sources twice
CANDIDATES = ["", "court_*=0.25 statutes_*=0.25", "court_*=0.25 statutes_*=0.25 petitions_*=2 koconovel_*=2"]
TASK_TEXT = {"korsts_train": ("korsts/sts-train.tsv", ("sentence1", "sentence2")),
             "kornli_train": ("kornli/xnli.dev.ko.tsv", ("sentence1", "sentence2"))}


def source_counts(input_dir: str, meta: dict) -> tuple[list[str], np.ndarray]:
    """(input files, token counts [files, vocab]) from the shards' ids and per-document sources (meta: its
    meta.json)."""
    files, vocab_size = meta["input_files"], meta["vocab_size"]
    counts = np.zeros((len(files), vocab_size), np.int64)
    for s in meta["shards"]:
        path = shard_path(input_dir, s["name"], "sources")
        if not os.path.isfile(path):
            raise ValueError(f"{path} is missing: prepare the shards again with create_pretraining_data.py")
        ids = np.load(shard_path(input_dir, s["name"], "ids"), mmap_mode="r")
        sent_off = np.load(shard_path(input_dir, s["name"], "sentences"))
        doc_tok = sent_off[np.load(shard_path(input_dir, s["name"], "documents"))]
        src = np.load(path)
        for f in np.unique(src):  # a file's documents are one run per shard: slice, no per-token source array
            docs = np.flatnonzero(src == f)
            counts[f] += np.bincount(ids[doc_tok[docs[0]]:doc_tok[docs[-1] + 1]], minlength=vocab_size)
    return files, counts


def task_counts(data_dir: str, vocab_file: str, do_lower_case: bool, vocab_size: int,
                morph_analyzer: str | None = None) -> dict[str, np.ndarray]:
    # the task text split as the shards were (morphemes first, with their analyser): else its pieces are not theirs
    tok = build_fast_tokenizer(vocab_file, do_lower_case=do_lower_case, morph_analyzer=morph_analyzer)
    out = {}
    for name, (rel, columns) in TASK_TEXT.items():
        with open(os.path.join(data_dir, rel), encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        texts = [r[c] for r in rows for c in columns if r.get(c)]
        ids = np.fromiter((i for e in tok.encode_batch(texts, add_special_tokens=False) for i in e.ids), np.int64)
        out[name] = np.bincount(ids, minlength=vocab_size)
    return out


def bits_per_token(target: np.ndarray, probs: np.ndarray) -> float:
    return float(-(target * np.log2(probs)).sum() / target.sum())


def fit_mixture(target: np.ndarray, probs: np.ndarray, iters: int = 200) -> np.ndarray:
    """Mixture weights over the rows of probs [sources, vocab] that maximise the likelihood of the token counts
    `target` (EM: each step re-weights a source by its mean posterior over the target's tokens)."""
    lam = np.full(len(probs), 1 / len(probs))
    seen = target > 0
    t, p = target[seen], probs[:, seen]
    for _ in range(iters):
        joint = lam[:, None] * p
        lam = (joint / joint.sum(0) * t).sum(1) / t.sum()
    return lam


def source_name(path: str) -> str:
    """court_precedents_supreme.part2.txt -> court_precedents_supreme: the parts of one source are one source."""
    return re.sub(r"(\.part\d+)?\.txt$", "", os.path.basename(path))


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", default=os.path.join(ROOT, "bench", "_work", "cram", "shards"))
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--mixes", nargs="+", default=CANDIDATES,
                   help="candidate --source_weights values, each one quoted string ('' = the corpus as is)")
    p.add_argument("--results_json", default=os.path.join(ROOT, "bench", "results", "corpus_mix.json"))
    args = p.parse_args(argv)
    try:
        meta = read_meta(args.input_dir)
        files, counts = source_counts(args.input_dir, meta)
        tasks = task_counts(args.data_dir, os.path.join(args.input_dir, "vocab.txt"), meta["do_lower_case"],
                            meta["vocab_size"], meta.get("morph_analyzer"))
        mixes = {m: resolve_source_weights(files, parse_source_weights(m.split())) for m in args.mixes}
    except (OSError, ValueError, KeyError) as e:
        fail(f"{e}")
    names = sorted(set(map(source_name, files)), key=[source_name(f) for f in files].index)
    group = np.array([names.index(source_name(f)) for f in files])
    by_source = np.zeros((len(names), counts.shape[1]), np.int64)
    np.add.at(by_source, group, counts)
    smooth = by_source.shape[1] * 0.5
    probs = (by_source + 0.5) / (by_source.sum(1, keepdims=True) + smooth)
    share = by_source.sum(1) / by_source.sum()
    fitted = fit_mixture(sum(tasks.values()), probs)
    sources = []
    print(f"{'source':26s} {'tokens':>11s} {'share':>6s} " + " ".join(f"{t + ' bits/tok':>22s}" for t in tasks)
          + "  unigram-optimal share")
    for i, name in enumerate(names):
        row = {"source": name, "tokens": int(by_source[i].sum()), "share": round(float(share[i]), 4),
               **{f"{t}_bits_per_token": round(bits_per_token(c, probs[i]), 3) for t, c in tasks.items()},
               "unigram_optimal_share": round(float(fitted[i]), 4)}
        sources.append(row)
        print(f"{name:26s} {row['tokens']:11,d} {share[i]:6.1%} "
              + " ".join(f"{row[t + '_bits_per_token']:22.3f}" for t in tasks) + f"  {fitted[i]:6.1%}")
    rows = []
    for mix, w in mixes.items():
        mixed = np.bincount(group, weights=w * counts.sum(1), minlength=len(names))
        probs_mix = ((w[:, None] * counts).sum(0) + 0.5) / (mixed.sum() + smooth)
        row = {"source_weights": mix, "tokens_per_epoch": int(mixed.sum()),
               **{f"{t}_bits_per_token": round(bits_per_token(c, probs_mix), 3) for t, c in tasks.items()},
               "shares": {n: round(float(x), 4) for n, x in zip(names, mixed / mixed.sum())}}
        rows.append(row)
        print(f"mix {mix or '(as is)'}: {row['tokens_per_epoch']:,} tokens per epoch; " + ", ".join(
            f"{t} {row[t + '_bits_per_token']:.3f}" for t in tasks) + " bits/token")
    print("unigram-optimal mix: " + ", ".join(f"{t} {bits_per_token(c, fitted @ probs):.3f}" for t, c in tasks.items())
          + f" bits/token (with no source repeated, an epoch would be "
          f"{(by_source.sum(1) / np.maximum(fitted, 1e-12)).min():,.0f} tokens)")
    atomic_write_json(args.results_json, {"date": datetime.date.today().isoformat(), "input_dir": args.input_dir,
                                          "sources": sources, "mixes": rows})
    return sources, rows


if __name__ == "__main__":
    main()
