"""KorNLI / KorSTS sentence-pair data: TSV readers, features, batching and metrics.

    from cls_data import TASKS, read_examples, convert_examples, compute_metrics
    examples = read_examples("data/korsts/sts-dev.tsv", TASKS["korsts"])
    compute_metrics(TASKS["korsts"], preds, [e.label for e in examples])   # {"pearson": .., "spearman": ..} x100

The TSVs are read with CSV quoting OFF (plain split on '\\t'): some sentences start with a double quote, and
default CSV quoting silently glues following rows onto them (sts-train reads as 5,703 rows instead of 5,749).
Columns are found by header name, so column order and extra columns do not matter. A malformed row (stray tab,
unknown label, KorSTS score not a number in [0, 5]) is an error in dev/test files and skipped with a warning in
training files (read_examples' strict).

All metrics are reported x100 (accuracy in percent; Pearson/Spearman r times 100), as the release reported them.
Readers and metrics never import torch; `collate` and `predict` import it when called, so this module stays
usable for scoring prediction files on machines without torch.
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
    g.add_argument("--task_name", required=True, type=str.lower, choices=sorted(TASKS),
                   help="kornli (3-way NLI) or korsts (STS regression); case-insensitive")
    g.add_argument("--data_dir", default=None, help="folder with the task's TSVs under their release names")
    g.add_argument("--train_file", nargs="+", default=None,
                   help="training TSV(s) overriding the defaults in --data_dir (KorNLI: multinli.train.ko.tsv "
                        "+ snli_1.0_train.ko.tsv when present; KorSTS: sts-train.tsv). Rows with a wrong field "
                        "count or a bad label are skipped with a warning naming their lines (large crawled sets "
                        "have a few); in dev/test files they are an error")
    g.add_argument("--dev_file", default=None, help="dev TSV (default: xnli.dev.ko.tsv / sts-dev.tsv in --data_dir)")
    g.add_argument("--test_file", default=None,
                   help="test TSV (default: xnli.test.ko.tsv / sts-test.tsv in --data_dir)")
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
# Features

def truncate_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Longest-first truncation: drop a token from the longer side (b on ties) until both fit the budget."""
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


class PairFeatures:
    """A split's features as a few flat arrays instead of a Python list of dicts of int lists: about 5 bytes per
    token instead of ~7 KB per row, and DataLoader workers forked from the main process copy nothing (a list of
    Python objects is copied page by page as the workers touch the objects' reference counts).

    Row i is input_ids[offsets[i]:offsets[i + 1]] (and the same slice of token_type_ids); features[i] gives it as
    the dict collate takes: {"input_ids", "token_type_ids"} (numpy views), "label" (a Python int / float, None for
    an unlabelled file) and "truncated". labels: int64 (class index) or float64 (score, as read, so metrics see the
    file's values), or None when the file had no label column.
    """

    def __init__(self, input_ids: np.ndarray, token_type_ids: np.ndarray, offsets: np.ndarray,
                 labels: np.ndarray | None, truncated: np.ndarray):
        self.input_ids, self.token_type_ids, self.offsets = input_ids, token_type_ids, offsets
        self.labels, self.truncated = labels, truncated

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i) -> dict | list[dict]:
        if isinstance(i, slice):  # as a list of rows would give
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)  # the batch samplers hand numpy integers
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        i %= len(self)
        s, e = self.offsets[i], self.offsets[i + 1]
        return {"input_ids": self.input_ids[s:e], "token_type_ids": self.token_type_ids[s:e],
                "label": None if self.labels is None else self.labels[i].item(), "truncated": bool(self.truncated[i])}

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def concat(cls, parts: list[PairFeatures]) -> PairFeatures:
        """The rows of parts one after the other (part k's row i is row sum(len(parts[:k])) + i)."""
        if len(parts) == 1:
            return parts[0]
        if any((p.labels is None) != (parts[0].labels is None) for p in parts):
            raise ValueError("cannot join labelled and unlabelled features")
        starts = np.cumsum([0] + [len(p.input_ids) for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts)]).astype(np.int64)
        return cls(np.concatenate([p.input_ids for p in parts]), np.concatenate([p.token_type_ids for p in parts]),
                   offsets, None if parts[0].labels is None else np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.truncated for p in parts]))


def feature_lengths(features) -> np.ndarray:
    """Each row's token count, of PairFeatures or of a plain list of feature dicts (hand-built ones, in tests)."""
    if isinstance(features, PairFeatures):
        return features.lengths
    return np.array([len(f["input_ids"]) for f in features], dtype=np.int64)


# rows per encode_batch call: a split's tokenizers.Encoding objects (~KBs each) are never all alive at once, and a
# chunk is still long enough that the per-call overhead does not show
ENCODE_CHUNK = 10_000


def _label_array(labels: list) -> np.ndarray | None:
    """int64 class indices or float64 scores (the Python floats read, unchanged); None for an unlabelled file."""
    if all(label is None for label in labels):
        return None
    if any(label is None for label in labels):
        raise ValueError("some rows have a label and some do not")
    return np.array(labels, dtype=np.float64 if any(isinstance(x, float) for x in labels) else np.int64)


def _convert_chunk(examples: list[Example], tokenizer, cls_id: int, sep_id: int, max_seq_length: int,
                   swap: bool) -> PairFeatures:
    """convert_examples of one chunk: both sides tokenised in one batch call each (a per-example call is slow)."""
    enc_a = tokenizer.encode_batch([e.text_b if swap else e.text_a for e in examples], add_special_tokens=False)
    enc_b = tokenizer.encode_batch([e.text_a if swap else e.text_b for e in examples], add_special_tokens=False)
    ids, len_a, len_b, truncated = [], [], [], []
    for ea, eb in zip(enc_a, enc_b):
        a, b = ea.ids, eb.ids  # each .ids read builds a new list: once per side
        la, lb = truncate_pair(len(a), len(b), max_seq_length - 3)
        ids += [cls_id, *a[:la], sep_id, *b[:lb], sep_id]
        len_a.append(la)
        len_b.append(lb)
        truncated.append(la < len(a) or lb < len(b))
    del enc_a, enc_b  # the chunk's Encodings go before its arrays are built
    # token types: 0 on [CLS] a [SEP], 1 on b [SEP]: one run of zeros and one of ones per row
    runs = np.stack([np.array(len_a, dtype=np.int64) + 2, np.array(len_b, dtype=np.int64) + 1], axis=1).ravel()
    types = np.repeat(np.tile(np.array([0, 1], dtype=np.int8), len(examples)), runs)
    offsets = np.concatenate([[0], np.cumsum(runs.reshape(-1, 2).sum(1))]).astype(np.int64)
    return PairFeatures(np.array(ids, dtype=np.int32), types, offsets, _label_array([e.label for e in examples]),
                        np.array(truncated, dtype=bool))


def convert_examples(examples: list[Example], tokenizer, cls_id: int, sep_id: int, max_seq_length: int,
                     swap: bool = False, chunk: int = ENCODE_CHUNK) -> PairFeatures:
    """[CLS] a [SEP] b [SEP] with token types 0 for [CLS] a [SEP] and 1 for b [SEP]; unpadded (collate pads).
    swap: each row as [CLS] b [SEP] a [SEP], its sentences exchanged (without building swapped Examples).

    tokenizer is a `tokenizers.Tokenizer` from tokenization.build_fast_tokenizer. Rows are tokenised `chunk` at a
    time, so memory holds one chunk's Encoding objects and the compact PairFeatures, never a whole split's worth of
    Python objects (the full KorNLI train set took ~6 GB as lists of dicts).
    """
    if max_seq_length < 3:
        raise ValueError(f"--max_seq_length {max_seq_length} leaves no room for [CLS] and two [SEP]")
    parts = [_convert_chunk(examples[s:s + chunk], tokenizer, cls_id, sep_id, max_seq_length, swap)
             for s in range(0, max(len(examples), 1), chunk)]
    return PairFeatures.concat(parts)


def convert_pair_orders(examples: list[Example], tokenizer, cls_id: int, sep_id: int, max_seq_length: int,
                        both: bool) -> list[PairFeatures]:
    """convert_examples of the rows as given, and with both=True also of the rows with their sentences exchanged
    (swap=True): one PairFeatures per order, row i at index i in each."""
    return [convert_examples(examples, tokenizer, cls_id, sep_id, max_seq_length, swap)
            for swap in ((False, True) if both else (False,))]


def collate(features: list[dict], pad_id: int, regression: bool, multiple: int = 1, limit: int | None = None) -> dict:
    """Pad to the longest sequence in the batch (not max_seq_length): most pairs are far shorter than 128.
    multiple > 1 rounds that width up to a multiple, at most limit (max_seq_length; None: no cap), never below the
    longest (batching.round_width). features: rows of PairFeatures, or dicts of int lists."""
    import torch  # see module docstring: keeps readers/metrics torch-free
    from batching import round_width

    lengths = [len(f["input_ids"]) for f in features]
    width = round_width(max(lengths), multiple, limit)
    # filled in numpy (a row is a numpy slice: one copy each, no per-row tensor), handed to torch without a copy
    input_ids = np.full((len(features), width), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((len(features), width), dtype=np.int64)
    attention_mask = np.zeros((len(features), width), dtype=np.int64)
    for i, (f, n) in enumerate(zip(features, lengths)):
        input_ids[i, :n] = f["input_ids"]
        token_type_ids[i, :n] = f["token_type_ids"]
        attention_mask[i, :n] = 1
    # an unlabelled row (a file to predict: read_examples' allow_unlabelled) gets a placeholder no metric reads
    labels = torch.tensor([0 if f["label"] is None else f["label"] for f in features],
                          dtype=torch.float if regression else torch.long)
    return {"input_ids": torch.from_numpy(input_ids), "token_type_ids": torch.from_numpy(token_type_ids),
            "attention_mask": torch.from_numpy(attention_mask), "labels": labels}


def length_order(features) -> list[int]:
    """Indices of features from shortest to longest (stable): the order eval_batches batches them in."""
    return np.argsort(feature_lengths(features), kind="stable").tolist()


def eval_batches(features: PairFeatures | list[dict], batch_size: int, pad_id: int, regression: bool, multiple: int = 1,
                 limit: int | None = None, order: list[int] | None = None) -> tuple[list[dict], list]:
    """Padded evaluation batches sorted by length (length_order, or the given order), and the labels in that order.

    Sorting keeps padding (and CPU time) small; the metrics only need each prediction paired with its label.
    multiple, limit: as in collate.
    """
    feats = [features[i] for i in (length_order(features) if order is None else order)]
    batches = [collate(feats[i:i + batch_size], pad_id, regression, multiple, limit)
               for i in range(0, len(feats), batch_size)]
    return batches, [f["label"] for f in feats]


def eval_views(features_by_order: list[PairFeatures] | list[list[dict]], batch_size: int, pad_id: int, regression: bool,
               multiple: int = 1, limit: int | None = None) -> tuple[list[list[dict]], list]:
    """(views, labels): eval_batches of the same rows in each pair order (features_by_order[k][i] is row i in
    order k), every view in the first order's length order, so the views' predictions line up row by row.
    One order gives one view: then this is eval_batches."""
    order = length_order(features_by_order[0])
    views = [eval_batches(feats, batch_size, pad_id, regression, multiple, limit, order)[0]
             for feats in features_by_order]
    return views, [features_by_order[0][i]["label"] for i in order]


def predict_views(model, views, device) -> np.ndarray:
    """predict over each view (eval_views), averaged: with both pair orders, each pair's score is the mean of
    (a, b)'s and (b, a)'s."""
    return np.mean([predict(model, batches, device) for batches in views], axis=0)


def predict(model, batches, device) -> np.ndarray:
    """Logits of model over batches as float32 numpy [N, num_labels], in batch order (model left in eval mode).

    Always in float32, whatever --amp trained with: bf16 logits keep 8 mantissa bits, which ties many KorSTS
    scores and moves Spearman; evaluation is a small fraction of a run's time.
    """
    import torch

    from batching import batch_to_device

    model.eval()
    out = []
    with torch.inference_mode():
        for batch in batches:
            batch = batch_to_device({k: v for k, v in batch.items() if k != "labels"}, device)
            out.append(model(**batch)["logits"].float().cpu().numpy())
    return np.concatenate(out, axis=0)


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
    """Task metrics from logits [N, num_labels] (or [N] scores for regression)."""
    logits = np.asarray(logits)
    if task.is_regression:
        scores = logits.reshape(len(logits), -1)[:, 0]
        pearson, spearman = correlations(scores, labels)
        return {"pearson": pearson, "spearman": spearman}
    return {"accuracy": accuracy(logits.argmax(-1), labels)}


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
