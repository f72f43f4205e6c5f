"""Throughput (MB/s) and peak memory of corpus preparation (create_pretraining_data.py) on real text.

    python bench/bench_data_prep.py                                        # bundled data/korean_text, regex + kiwi
    python bench/bench_data_prep.py --sentence_splitters regex none --num_workers 1 2
    python bench/bench_data_prep.py --input_files corpus.txt --vocab_file vocab.txt --sentence_splitters kiwi

Each configuration runs create_pretraining_data.main in a fresh Python process, so its peak RSS is its own:
"main" is that process (ru_maxrss of RUSAGE_SELF), "worker" the largest of its tokeniser processes
(RUSAGE_CHILDREN; 0 with one worker, which tokenises in the main process). MB/s is input bytes over the script's
own timer (reading to meta.json); "wall" adds interpreter start-up and imports. Without --vocab_file a WordPiece
vocab (--vocab_size) is built once on the same files and cached under bench/_work/ (its time is not counted).
The load average is printed because the numbers mean little on a machine busy with other work.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "_work")
DEFAULT_CORPUS = sorted(glob.glob(os.path.join(ROOT, "data", "korean_text", "**", "*.txt"), recursive=True))

CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
import create_pretraining_data
meta = create_pretraining_data.main({argv!r})
print("BENCH " + json.dumps({{"summary": meta["summary"], "shards": len(meta["shards"]),
      "splitter": meta["sentence_splitter"],
      "main_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      "worker_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}))
"""


def run_config(files, vocab, splitter, workers, out_dir):
    argv = ["--input_files", *files, "--vocab_file", vocab, "--output_dir", out_dir, "--overwrite",
            "--sentence_splitter", splitter, "--num_workers", str(workers)]
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, argv=argv)], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"error: create_pretraining_data failed ({splitter}, {workers} workers): "
                 f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")][-1]
    res = json.loads(line[len("BENCH "):])
    res["wall"] = wall
    return res


def loader_rate(shard_dir, n):
    """Seconds to build n training examples from the shards in one process (what each DataLoader worker does)."""
    sys.path.insert(0, ROOT)
    from pretraining_data import PretrainingDataset
    ds = PretrainingDataset(shard_dir, max_seq_length=128, max_predictions_per_seq=20)
    n = min(n, len(ds))
    t0 = time.perf_counter()
    for i in range(n):
        ds[i]
    return n, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_files", nargs="+", default=DEFAULT_CORPUS)
    p.add_argument("--vocab_file", default=None, help="default: build one on the input files (cached)")
    p.add_argument("--vocab_size", type=int, default=8000)
    p.add_argument("--sentence_splitters", nargs="+", choices=["kiwi", "regex", "none"], default=["regex", "kiwi"])
    p.add_argument("--num_workers", nargs="+", type=int, default=[os.cpu_count() or 1])
    p.add_argument("--loader_examples", type=int, default=2000,
                   help="also time building this many training examples from the first configuration's shards")
    args = p.parse_args(argv)
    for path in args.input_files:
        if not os.path.isfile(path):
            sys.exit(f"error: --input_files {path}: no such file")
    os.makedirs(WORK, exist_ok=True)
    vocab = args.vocab_file
    if vocab is None:
        vocab = os.path.join(WORK, f"vocab_{args.vocab_size}.txt")
        if not os.path.isfile(vocab):
            print(f"building a {args.vocab_size}-token vocab on the input files -> {vocab}", flush=True)
            subprocess.run([sys.executable, os.path.join(ROOT, "tokenization.py"), "build-vocab", "--corpus",
                            *args.input_files, "--vocab_size", str(args.vocab_size), "--output", vocab],
                           check=True, capture_output=True)
    mb = sum(os.path.getsize(f) for f in args.input_files) / 1e6
    print(f"corpus: {len(args.input_files)} files, {mb:.2f} MB; vocab {vocab}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows, loader = [], None
    for splitter in args.sentence_splitters:
        for workers in args.num_workers:
            out = os.path.join(WORK, f"shards_{splitter}_{workers}")
            r = run_config(args.input_files, vocab, splitter, workers, out)
            if args.loader_examples and loader is None:
                loader = loader_rate(out, args.loader_examples)
            shutil.rmtree(out, ignore_errors=True)
            s = r["summary"]
            rows.append([r["splitter"] + ("" if r["splitter"] == splitter else f" (asked {splitter})"),
                         str(workers), f"{s['documents']:,}", f"{s['sentences']:,}", f"{s['tokens']:,}",
                         f"{100 * s['unk_rate']:.2f}%", f"{s['seconds']:.1f}", f"{s['mb_per_s']:.2f}",
                         f"{r['wall']:.1f}", f"{r['main_kb'] / 1024:.0f}", f"{r['worker_kb'] / 1024:.0f}"])
            print(f"  done: {splitter}, {workers} worker(s) in {r['wall']:.1f} s "
                  f"(load average now {os.getloadavg()[0]:.1f})", flush=True)
    head = ["splitter", "workers", "documents", "sentences", "tokens", "UNK", "prep s", "MB/s", "wall s",
            "peak RSS main MB", "peak RSS worker MB"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
    if loader:
        n, secs = loader
        print(f"\nexample building (PretrainingDataset.__getitem__, max_seq_length 128, n-gram whole-word masking, "
              f"one process): {n / secs:,.0f} examples/s ({1e3 * secs / n:.2f} ms each, {n} examples)")


if __name__ == "__main__":
    main()
