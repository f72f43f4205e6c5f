r"""KorSTS Spearman x100 by genre (captions, forums, news), and within genres, for eval_classifier.py's predictions.

    python eval_classifier.py --task_name korsts --checkpoint runs/korsts/best --eval_file data/korsts/sts-dev.tsv \
        --output_dir runs/korsts/dev
    python bench/korsts_genres.py runs/korsts/dev/predictions.tsv
    python bench/korsts_genres.py --counts          # each split's rows per genre and source, and mean gold score

A predictions.tsv names each row file:line; its genre is read from that line of that file in --data_dir (the
first column), so the split scored is whichever file the predictions came from.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from cls_data import read_tsv_lines  # noqa: E402
from train_utils import fail  # noqa: E402


def read_rows(path: str) -> list[list[str]]:
    """The TSV's lines split on tabs, header included (line n is rows[n - 1]), read as cls_data reads them for
    eval_classifier: the line numbers are the guids'."""
    lines = read_tsv_lines(path)
    return [line.rstrip("\r").split("\t") for line in (lines[:-1] if lines[-1] == "" else lines)]


def by_genre(predictions: str, data_dir: str) -> dict:
    """{genre: {"n", "spearman"}} plus "all" and "within_genres", from a KorSTS predictions.tsv (guid file:line,
    gold, prediction); the file a guid names is looked up in data_dir."""
    rows = read_rows(predictions)
    if not rows or rows[0][:3] != ["guid", "gold", "prediction"]:
        fail(f"{predictions}: not a predictions.tsv of eval_classifier.py (header guid, gold, prediction)")
    sources: dict[str, list[list[str]]] = {}
    scores = defaultdict(lambda: ([], []))
    for n, row in enumerate(rows[1:], start=2):
        try:
            file, line = row[0].rsplit(":", 1)
            gold, pred = float(row[1]), float(row[2])
            if file not in sources:
                sources[file] = read_rows(os.path.join(data_dir, file))
            genre = sources[file][int(line) - 1][0]
        except (ValueError, IndexError, OSError) as e:
            fail(f"{predictions}:{n}: cannot read this row or the KorSTS line it names ({e})")
        for key in (genre, "all"):
            scores[key][0].append(gold)
            scores[key][1].append(pred)
    if not scores:
        fail(f"{predictions}: no predictions after its header")
    out = {k: {"n": len(g), "spearman": round(100 * float(spearmanr(g, p).statistic), 2)}
           for k, (g, p) in sorted(scores.items())}
    # the pooled score also rewards telling the genres apart (their mean gold scores differ: dev's forums 1.7, its
    # captions 2.4, its news 2.9); with each genre's mean gold and mean prediction taken out, that offset is gone
    # (the residuals are still ranked together, so genres predicted on different scales still weigh on it)
    genres = [k for k in scores if k != "all"]
    gold, pred = (np.concatenate([np.asarray(scores[k][j]) - np.mean(scores[k][j]) for k in genres]) for j in (0, 1))
    out["within_genres"] = {"n": out["all"]["n"], "spearman": round(100 * float(spearmanr(gold, pred).statistic), 2)}
    return out


def counts(data_dir: str) -> dict:
    """Rows per genre and source, and the mean gold score per genre, of each KorSTS split."""
    out = {}
    for split in ("train", "dev", "test"):
        rows = read_rows(os.path.join(data_dir, f"sts-{split}.tsv"))[1:]
        genres = sorted({r[0] for r in rows})
        out[split] = {g: {"n": sum(r[0] == g for r in rows),
                          "sources": sorted({r[1] for r in rows if r[0] == g}),
                          "mean_score": round(float(np.mean([float(r[4]) for r in rows if r[0] == g])), 2)}
                      for g in genres}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", nargs="*", help="predictions.tsv files, each scored by genre")
    p.add_argument("--counts", action="store_true", help="print each split's genres, sources and mean score")
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data", "korsts"),
                   help="where the KorSTS files the predictions name are (default: the bundled data/korsts)")
    args = p.parse_args(argv)
    if not args.predictions and not args.counts:
        p.error("give predictions.tsv files, --counts, or both")
    result = {}
    if args.counts:
        result["counts"] = counts(args.data_dir)
        for split, genres in result["counts"].items():
            print(f"{split}: " + "; ".join(f"{g} {v['n']} ({', '.join(v['sources'])}; mean score {v['mean_score']})"
                                          for g, v in genres.items()))
    for path in args.predictions:
        result[path] = by_genre(path, args.data_dir)
        print(f"{path}: " + ", ".join(f"{g} {v['spearman']:.2f} (n={v['n']})" for g, v in result[path].items()))
    return result


if __name__ == "__main__":
    main()
