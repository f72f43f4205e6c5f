"""Memory of KorNLI/KorSTS features: converting a large training file, then one epoch through run_classifier's loader.

    python bench/bench_cls_features.py                      # xnli dev + test repeated 10x: 75,000 rows, 2 workers
    python bench/bench_cls_features.py --repeat 40 --num_workers 4
    python bench/bench_cls_features.py --vocab_file runs/vocab/vocab.txt --max_seq_length 64

Only the dev and test sets of KorNLI are bundled, so the training file is made of them, repeated (the full train
set has about 943k rows). Prints the main process's resident memory over its start after conversion (peak and
kept), the size of the feature arrays, and each DataLoader worker's private memory a few batches into the epoch and
near its end: what a forked worker copies of the main process's features as it reads them. Without --vocab_file a
WordPiece vocab is built once from data/korean_text into bench/_work/ (as bench_qa_features.py does). Linux only
(/proc). The last line is the result as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import torch  # noqa: E402

import cls_data  # noqa: E402
import cls_features  # noqa: E402
import run_classifier  # noqa: E402
from bench_qa_features import default_vocab  # noqa: E402
from tokenization import build_fast_tokenizer, load_vocab  # noqa: E402

NLI = os.path.join(ROOT, "data", "kornli")


def rss_mb(pid="self") -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def private_mb(pid: int) -> float:
    """Pages this process alone holds (copied on write since the fork, or its own)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.endswith("kB\n")}
    return (fields.get("Private_Dirty", 0) + fields.get("Private_Clean", 0)) / 1024


def children() -> list[int]:
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children") as f:
        return [int(p) for p in f.read().split()]


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),  # the summary and commands
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=10, help="copies of xnli dev + test in the training file")
    p.add_argument("--vocab_file", default=None)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_workers", type=int, default=2)
    args = p.parse_args(argv)
    vocab = args.vocab_file or default_vocab(32000)
    task = cls_data.TASKS["kornli"]

    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(tmp, "train.tsv")
        with open(train, "w", encoding="utf-8") as out:
            header = None
            for _ in range(args.repeat):
                for name in ("xnli.dev.ko.tsv", "xnli.test.ko.tsv"):
                    with open(os.path.join(NLI, name), encoding="utf-8") as f:
                        first = f.readline()
                        if header is None:
                            header = first
                            out.write(first)
                        out.writelines(f)
        examples = cls_data.read_examples(train, task, None)
    tokenizer = build_fast_tokenizer(vocab)
    ids = load_vocab(vocab)
    start_rss, start_peak = rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.time()
    feats = cls_features.convert_examples(examples, tokenizer, ids["[CLS]"], ids["[SEP]"], args.max_seq_length)
    convert_s = time.time() - t0
    del examples
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    arrays_mb = sum(a.nbytes for a in (feats.input_ids, feats.token_type_ids, feats.offsets, feats.labels,
                                       feats.truncated)) / 2**20 if hasattr(feats, "offsets") else None  # a list
    kept = rss_mb() - start_rss

    rt = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))
    flags = SimpleNamespace(group_by_length=False, num_workers=args.num_workers, max_seq_length=args.max_seq_length,
                            gradient_accumulation_steps=1, pad_to_multiple_of=None)
    loader, sampler = run_classifier.make_train_loader(feats, args.batch_size, ids["[PAD]"], task, rt, flags, seed=1)
    sampler.set_epoch(1)
    n = len(loader)
    workers_early, workers_late, main_at_start = [], [], None
    t0 = time.time()
    for i, _ in enumerate(loader):
        if i == 2:
            main_at_start = rss_mb()
            workers_early = [round(private_mb(c), 1) for c in children()]
        if i == n - 10:
            workers_late = [round(private_mb(c), 1) for c in children()]
    epoch_s = time.time() - t0
    result = {"rows": len(feats), "max_seq_length": args.max_seq_length, "convert_s": round(convert_s, 2),
              # ru_maxrss is the process's peak so far: above the start only if conversion set a new one
              "convert_peak_over_start_mb": round(peak - start_rss, 1) if peak > start_peak else None,
              "kept_after_convert_mb": round(kept, 1),
              "feature_arrays_mb": round(arrays_mb, 1) if arrays_mb is not None else None,
              "main_rss_at_epoch_start_mb": round(main_at_start, 1) if main_at_start else None,
              "worker_private_mb_early": workers_early, "worker_private_mb_late": workers_late,
              "batches": n, "epoch_s": round(epoch_s, 2)}
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
