"""KorNLI / KorSTS features and batches: sentence pairs -> token arrays -> padded batches -> logits.

    from cls_data import TASKS, read_examples
    from cls_features import convert_examples, eval_batches, predict
    feats = convert_examples(read_examples("data/korsts/sts-dev.tsv", TASKS["korsts"]), tok, cls_id, sep_id, 128)
    batches, labels = eval_batches(feats, 64, pad_id, regression=True)

Rows are [CLS] a [SEP] b [SEP], longest-first truncated, kept unpadded in flat arrays (PairFeatures); collate
pads a batch to its longest row. Both pair orders of a symmetric task (KorSTS) are two PairFeatures whose row i
is the same pair, so their views' predictions can be averaged row by row (eval_views, predict_views).
`collate` and `predict` import torch when called; conversion needs only numpy and a tokenizers.Tokenizer.
"""
from __future__ import annotations

import numpy as np

from cls_data import Example


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
