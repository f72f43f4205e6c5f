"""KorNLI / KorSTS sentence-pair data: tasks and their flags, TSV readers and metrics.

    from cls_data import TASKS, read_examples, compute_metrics
    examples = read_examples("data/korsts/sts-dev.tsv", TASKS["korsts"])
    compute_metrics(TASKS["korsts"], preds, [e.label for e in examples])   # {"pearson": .., "spearman": ..} x100

The TSVs are read with CSV quoting OFF (plain split on '\\t'): some sentences start with a double quote, and
default CSV quoting silently glues following rows onto them (sts-train reads as 5,703 rows instead of 5,749).
Columns are found by header name, so column order and extra columns do not matter. A malformed row (stray tab,
unknown label, KorSTS score not a number in [0, 5]) is an error in dev/test files and skipped with a warning in
training files (read_examples' strict).

All metrics are reported x100 (accuracy in percent; Pearson/Spearman r times 100), as the release reported them.
This module never imports torch, so it scores prediction files on machines without it; the examples' token
features, batches and predictions are in cls_features.py.
"""
from __future__ import annotations

import math
import os
import sys
import unicodedata
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    text_a: str                 # header name of the first sentence column
    text_b: str
    label_col: str
    labels: tuple | None        # class names in logit order; None = regression
    train_files: tuple          # default file names inside --data_dir; later ones are used only when present
    dev_file: str
    test_file: str
    main_metric: str            # what picks the best epoch / seed
    score_range: tuple | None = None  # regression: gold scores outside it are data errors, not extreme labels
    symmetric: bool = False     # the label does not depend on the pairs' order, so both orders may be used

    def __post_init__(self):
        # checked when the task is defined: a metric compute_metrics does not give would fail only once the first
        # epoch has trained, when dev picks the best epoch
        if self.main_metric not in self.metrics:
            raise ValueError(f"task {self.name}: main_metric {self.main_metric!r} is not one of the metrics "
                             f"compute_metrics gives it ({', '.join(self.metrics)})")

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics compute_metrics reports for this task, in that order."""
        return ("pearson", "spearman") if self.is_regression else ("accuracy",)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None


TASKS = {
    # label order is fixed (alphabetical) so a checkpoint's logit i means the same class everywhere
    "kornli": Task("kornli", "sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"),
                   ("multinli.train.ko.tsv", "snli_1.0_train.ko.tsv"), "xnli.dev.ko.tsv", "xnli.test.ko.tsv",
                   "accuracy"),
    "korsts": Task("korsts", "sentence1", "sentence2", "score", None,
                   ("sts-train.tsv",), "sts-dev.tsv", "sts-test.tsv", "spearman", (0.0, 5.0), symmetric=True),
}


DEFAULT_MAX_SEQ_LENGTH = 128


def add_task_args(parser, max_seq_length=DEFAULT_MAX_SEQ_LENGTH):
    """Data/task flags shared by run_classifier.py and eval_classifier.py (max_seq_length: that flag's default)."""
    g = parser.add_argument_group("task")
    # case-insensitive: the release's scripts took KorNLI / KorSTS
    # help texts from TASKS, so a task added there is described like the others
    kinds = ", ".join(f"{t.name} ({'regression' if t.is_regression else f'{t.num_labels} classes'})"
                      for t in TASKS.values())
    g.add_argument("--task_name", required=True, type=str.lower, choices=sorted(TASKS),
                   help=f"{kinds}; case-insensitive")
    g.add_argument("--data_dir", default=None, help="folder with the task's TSVs under their release names")
    g.add_argument("--train_file", nargs="+", default=None,
                   help="training TSV(s) overriding the defaults in --data_dir ("
                        + "; ".join(f"{t.name}: {' + '.join(t.train_files)}" for t in TASKS.values())
                        + "; files after the first only when present). Rows with a wrong field count or a bad "
                          "label are skipped with a warning naming their lines (large crawled sets have a few); in "
                          "dev/test files they are an error")
    for split in ("dev", "test"):
        g.add_argument(f"--{split}_file", default=None, help=f"{split} TSV (default in --data_dir: " + ", ".join(
            f"{t.name} {getattr(t, split + '_file')}" for t in TASKS.values()) + ")")
    g.add_argument("--max_seq_length", type=int, default=max_seq_length,
                   help="[CLS] a [SEP] b [SEP] truncated longest-first to this many tokens"
                        + (f" (default {max_seq_length})" if max_seq_length is not None else
                           " (default: the length the checkpoint was fine-tuned with, from its task.json, else "
                           f"{DEFAULT_MAX_SEQ_LENGTH})"))
    g.add_argument("--eval_batch_size", type=int, default=32)
    g.add_argument("--max_train_examples", type=int, default=None,
                   help="use only the first N training rows (quick runs)")
    g.add_argument("--max_eval_examples", type=int, default=None,
                   help="use only the first N dev/test rows (quick runs)")
    return g


# one: train and score (a, b) as given; both: train on both orders and score their mean; score_both: train as
# given, score the mean of both orders
PAIR_ORDERS = ("one", "both", "score_both")


def add_pair_orders_arg(group, default: str | None = "one"):
    """--pair_orders: run_classifier.py trains and scores with it (default one); eval_classifier.py scores with it
    (default None: as the checkpoint was fine-tuned)."""
    scoring = "score each pair as the mean of its (a, b) and (b, a) predictions"
    if default is None:
        help_text = (f"both (KorSTS): {scoring} (default: as the checkpoint was fine-tuned, from its task.json, "
                     f"else one)")
        choices = ("one", "both")
    else:
        help_text = (f"KorSTS: score_both: {scoring}, training as given; both: also train on every pair in both "
                     f"orders (an epoch takes twice the steps). A BERT pair model is not symmetric by itself "
                     f"(default {default})")
        choices = PAIR_ORDERS
    group.add_argument("--pair_orders", choices=choices, default=default, help=help_text)


def scores_both_orders(pair_orders: str) -> bool:
    return pair_orders in ("both", "score_both")


def check_pair_orders(pair_orders: str, task: Task, flag: str = "--pair_orders"):
    if pair_orders not in PAIR_ORDERS:  # a hand-edited task.json; the flag itself is checked by argparse
        raise ValueError(f"{flag} {pair_orders!r}: expected one of {', '.join(PAIR_ORDERS)}")
    if pair_orders != "one" and not task.symmetric:
        raise ValueError(f"{flag} {pair_orders}: {task.name}'s label depends on the pair's order (premise, hypothesis)")


def check_task_args(args):
    """Raise ValueError naming the flag for values add_task_args accepts but no run can use."""
    if args.max_seq_length is not None and args.max_seq_length < 3:
        raise ValueError(f"--max_seq_length {args.max_seq_length} leaves no room for [CLS] and two [SEP] (need >= 3)")
    if args.eval_batch_size < 1:
        raise ValueError(f"--eval_batch_size {args.eval_batch_size} must be >= 1")
    for flag in ("max_train_examples", "max_eval_examples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} {value} must be >= 1 (leave it out to use every row)")


def resolve_files(args, task: Task, split: str) -> list[str]:
    """Paths for split in {train, dev, test}: the --<split>_file override, else the task's names in --data_dir."""
    override = getattr(args, f"{split}_file")
    if override:
        return list(override) if isinstance(override, (list, tuple)) else [override]
    if not args.data_dir:
        raise ValueError(f"--data_dir is required unless --{split}_file is given")
    if split != "train":
        return [os.path.join(args.data_dir, getattr(task, f"{split}_file"))]
    first, *optional = [os.path.join(args.data_dir, name) for name in task.train_files]
    if not os.path.isfile(first) and task.name == "kornli":
        raise FileNotFoundError(
            f"{first} not found: the KorNLI train set is not bundled; download it or pass e.g. "
            f"--train_file {os.path.join(args.data_dir, task.dev_file)} for a small run")
    return [first] + [p for p in optional if os.path.isfile(p)]


# ----------------------------------------------------------------------------------------------------------------
# Reading

@dataclass
class Example:
    guid: str              # "file:line", so a bad prediction can be traced back to its row
    text_a: str
    text_b: str
    label: int | float


def _warn_rows(path: str, what: str, lines: list[int]) -> None:
    if lines:
        shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        print(f"warning: {path}: skipped {len(lines)} row(s) with {what} (line {shown})", file=sys.stderr)


def _parse_label(raw: str, task: Task, label_ids: dict):
    """(label, None) for a usable gold label, else (None, (kind of problem for the warning, detail for the error))."""
    if not task.is_regression:
        if raw in label_ids:
            return label_ids[raw], None
        return None, (f"a label outside {'/'.join(task.labels)}",
                      f"label {raw!r} is not one of {'/'.join(task.labels)}")
    try:
        score = float(raw)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        return None, ("a non-numeric score", f"score {raw!r} is not a number")
    if task.score_range and not task.score_range[0] <= score <= task.score_range[1]:
        lo, hi = task.score_range
        return None, (f"a score outside [{lo:g}, {hi:g}]", f"score {raw} is outside [{lo:g}, {hi:g}]")
    return score, None


def read_tsv_lines(path: str) -> list[str]:
    """A TSV's lines, line n at index n - 1: UTF-8 (a byte-order mark skipped), no CSV quoting, rows ending at LF
    (a CRLF's CR is left on the line; a stray CR inside a sentence does not end its row) or, in a file without
    any LF (classic Mac), at CR. FileNotFoundError / ValueError naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte offset {e.start})") from None
    return text.split("\r" if "\r" in text and "\n" not in text else "\n")


def read_examples(path: str, task: Task, max_examples: int | None = None, strict: bool = True,
                  allow_unlabelled: bool = False) -> list[Example]:
    """Rows of one TSV as Examples (label index for classification, float score for regression).

    A row with the wrong number of fields (a stray tab), an empty sentence, an unknown label, a non-numeric score or
    a KorSTS score outside [0, 5] is
      strict=True (dev/test files, eval_classifier's --eval_file): an error, ValueError "FILE line N: ...",
          because a score computed on the rows that happened to parse would pass for the whole file's;
      strict=False (training files, which may be large crawled sets with a few broken rows): skipped, with one
          warning per kind of problem naming the lines.
    Rows end at LF (CRLF too); a file without any LF, at CR. Blank lines are not rows. A missing file, an empty
    file, a header without the needed columns, or no usable rows raise ValueError / FileNotFoundError naming the
    file. With max_examples (>= 1) reading stops after that many rows, so rows past the cap are not checked.
    allow_unlabelled: a header without the label column gives rows with label None (a file to predict, not score).
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"{path}: max_examples {max_examples} must be >= 1")
    lines = read_tsv_lines(path)
    header = lines[0].rstrip("\r").split("\t")
    if not lines[0].strip():
        raise ValueError(f"{path}: empty file (expected a header with {task.text_a}, {task.text_b}, {task.label_col})")
    unlabelled = allow_unlabelled and task.label_col not in header
    cols = []
    for name in (task.text_a, task.text_b) + (() if unlabelled else (task.label_col,)):
        if name not in header:
            found = ", ".join(h[:40] for h in header[:12]) + (", ..." if len(header) > 12 else "")
            raise ValueError(f"{path}: header has no column '{name}' (found: {found})")
        cols.append(header.index(name))
    ia, ib, il = cols + [None] * (3 - len(cols))
    label_ids = {name: i for i, name in enumerate(task.labels or ())}
    field_kind = f"a field count other than {len(header)}"
    examples, skipped = [], {}  # skipped: kind of problem -> line numbers (strict=False only)
    for lineno, line in enumerate(lines[1:], start=2):
        if max_examples is not None and len(examples) >= max_examples:
            break
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            problem = (field_kind, f"{len(fields)} tab-separated fields, the header has {len(header)} (a stray tab?)")
            label = None
        else:
            label, problem = (None, None) if unlabelled else _parse_label(fields[il].strip(), task, label_ids)
            empty = [name for name, i in ((task.text_a, ia), (task.text_b, ib)) if not fields[i].strip()]
            if empty and not problem:
                problem = ("an empty sentence", f"empty {' and '.join(empty)}")
        if problem:
            if strict:
                raise ValueError(f"{path} line {lineno}: {problem[1]}")
            skipped.setdefault(problem[0], []).append(lineno)
            continue
        examples.append(Example(f"{os.path.basename(path)}:{lineno}", unicodedata.normalize("NFC", fields[ia]),
                                unicodedata.normalize("NFC", fields[ib]), label))
    for kind, bad_lines in skipped.items():
        _warn_rows(path, kind, bad_lines)
    if not examples:
        raise ValueError(f"{path}: no usable data rows")
    return examples


def read_split(args, task: Task, split: str) -> list[Example]:
    """All rows of a split (train may span several files), capped by --max_train_examples / --max_eval_examples.

    Only training files skip bad rows (with a warning); a bad dev/test row is an error (see read_examples).
    """
    cap = args.max_train_examples if split == "train" else args.max_eval_examples
    examples = []
    for path in resolve_files(args, task, split):
        left = None if cap is None else cap - len(examples)
        if left is not None and left <= 0:
            break
        examples += read_examples(path, task, left, strict=split != "train")
    if not examples:  # read_examples refuses a file without rows, so only a cap below 1 gets here
        raise ValueError(f"the {split} set is empty (--max_{'train' if split == 'train' else 'eval'}_examples {cap})")
    return examples


# ----------------------------------------------------------------------------------------------------------------
# Metrics (x100)

def accuracy(preds, labels) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean() * 100.0)


def correlations(preds, labels) -> tuple[float, float]:
    """(Pearson, Spearman) x100; NaN when either side is constant (correlation undefined)."""
    preds, labels = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if np.ptp(preds) == 0 or np.ptp(labels) == 0:
        return math.nan, math.nan
    from scipy import stats  # here, not at the top: it takes 1-2 s to import, in every script that reads a TSV
    return float(stats.pearsonr(preds, labels)[0] * 100.0), float(stats.spearmanr(preds, labels)[0] * 100.0)


def compute_metrics(task: Task, logits, labels) -> dict:
    """Task metrics (named by task.metrics) from logits [N, num_labels] (or [N] scores for regression)."""
    logits = np.asarray(logits)
    if task.is_regression:
        values = correlations(logits.reshape(len(logits), -1)[:, 0], labels)  # (Pearson, Spearman)
    else:
        values = (accuracy(logits.argmax(-1), labels),)
    return dict(zip(task.metrics, values, strict=True))


def score_for_selection(metrics: dict, task: Task) -> float:
    """The number that picks the best epoch/seed; an undefined correlation ranks below everything."""
    value = metrics[task.main_metric]
    return -math.inf if value is None or math.isnan(value) else value


def json_safe(metrics: dict) -> dict:
    """NaN is not JSON: write undefined correlations as null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def mean_std(values) -> tuple[float | None, float | None, int]:
    """(mean, sample std, count) over seeds of the defined scores: an undefined correlation (NaN, or null once
    written to JSON) is left out; None where there are too few to say."""
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return (float(xs.mean()) if len(xs) else None, float(xs.std(ddof=1)) if len(xs) > 1 else None, len(xs))
