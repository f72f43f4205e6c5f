"""Features and batches of cls_features on the bundled KorNLI/KorSTS files and hand-made rows (CPU, no model)."""
import os

import numpy as np
import pytest

import cls_features
from cls_data import TASKS, Example, read_examples
from cls_features import convert_examples, truncate_pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STS, NLI = TASKS["korsts"], TASKS["kornli"]


def data(rel):
    return os.path.join(ROOT, "data", rel)


# --------------------------------------------------------------------------------------------------------- features

@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory):
    import tokenization
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "한", "##국", "##어", "문", "##장", "가", "나", "."]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return tokenization.build_fast_tokenizer(str(path)), {t: i for i, t in enumerate(vocab)}


def test_features_specials_and_token_types(toy_tokenizer):
    tok, v = toy_tokenizer
    f = convert_examples([Example("x", "한국어 문장.", "가 나", 2)], tok, v["[CLS]"], v["[SEP]"], 128)[0]
    ids = [v[t] for t in ["[CLS]", "한", "##국", "##어", "문", "##장", ".", "[SEP]", "가", "나", "[SEP]"]]
    assert f["input_ids"].tolist() == ids
    assert f["token_type_ids"].tolist() == [0] * 8 + [1] * 3
    assert f["label"] == 2 and not f["truncated"]


def test_rows_with_and_without_labels_do_not_mix(toy_tokenizer):
    """All rows labelled (int64 classes, float64 scores) or none (a file to predict); a mix is refused rather than
    stored as an object array whose missing labels would reach the metrics."""
    tok, v = toy_tokenizer

    def labels(*values):
        rows = [Example(f"x:{i}", "가", "나", label) for i, label in enumerate(values)]
        return convert_examples(rows, tok, v["[CLS]"], v["[SEP]"], 16).labels
    assert labels(2, 0).dtype == np.int64 and labels(2.5, 1).dtype == np.float64 and labels(None, None) is None
    with pytest.raises(ValueError, match="some rows have a label and some do not"):
        labels(1, None)


def test_truncation_longest_first(toy_tokenizer):
    tok, v = toy_tokenizer
    # a = 7 tokens, b = 2 tokens, budget 9 - 3 = 6: only a loses tokens, from its end
    f = convert_examples([Example("x", "한국어 문장 가 나", "가 나", 0.5)], tok, v["[CLS]"], v["[SEP]"], 9)[0]
    assert len(f["input_ids"]) == 9 and f["truncated"]
    expected = ["[CLS]", "한", "##국", "##어", "문", "[SEP]", "가", "나", "[SEP]"]
    assert f["input_ids"].tolist() == [v[t] for t in expected]
    assert f["token_type_ids"].tolist() == [0] * 6 + [1] * 3
    assert truncate_pair(10, 10, 6) == (3, 3)
    assert truncate_pair(10, 1, 6) == (5, 1)
    assert truncate_pair(4, 5, 8) == (4, 4)
    assert truncate_pair(2, 3, 100) == (2, 3)
    with pytest.raises(ValueError, match="--max_seq_length 2"):
        convert_examples([Example("x", "가", "나", 0)], tok, 2, 3, 2)


def test_truncate_pair_equals_google_bert_truncate_seq_pair():
    """google-research/bert's _truncate_seq_pair, transcribed: pop the last token of the longer list, of b on a
    tie. Every pair of lengths up to 12 and every budget."""
    def reference(len_a, len_b, budget):
        a, b = list(range(len_a)), list(range(len_b))
        while len(a) + len(b) > budget:
            (a if len(a) > len(b) else b).pop()
        return len(a), len(b)
    for len_a in range(13):
        for len_b in range(13):
            for budget in range(26):
                assert truncate_pair(len_a, len_b, budget) == reference(len_a, len_b, budget), (len_a, len_b, budget)
    assert truncate_pair(3, 3, 5) == (3, 2)  # the tie goes to b


def test_collate_pads_to_longest_in_batch():
    feats = [{"input_ids": [2, 5, 3, 6, 3], "token_type_ids": [0, 0, 0, 1, 1], "label": 1.5},
             {"input_ids": [2, 3, 7, 3], "token_type_ids": [0, 0, 1, 1], "label": 4.0}]
    b = cls_features.collate(feats, pad_id=0, regression=True)
    assert b["input_ids"].tolist() == [[2, 5, 3, 6, 3], [2, 3, 7, 3, 0]]
    assert b["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 1, 0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]]
    assert b["labels"].dtype.is_floating_point and b["labels"].tolist() == [1.5, 4.0]
    labels = cls_features.collate([dict(feats[0], label=2)], 0, regression=False)["labels"]
    assert labels.dtype.is_floating_point is False


def test_collate_rounds_the_width_up_to_a_multiple_within_the_limit():
    feats = [{"input_ids": [2, 5, 3, 6, 3], "token_type_ids": [0, 0, 0, 1, 1], "label": 1.5},
             {"input_ids": [2, 3, 7, 3], "token_type_ids": [0, 0, 1, 1], "label": 4.0}]
    b = cls_features.collate(feats, pad_id=0, regression=True, multiple=4, limit=16)
    assert b["input_ids"].tolist() == [[2, 5, 3, 6, 3, 0, 0, 0], [2, 3, 7, 3, 0, 0, 0, 0]]
    assert b["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 4 + [0] * 4]
    assert cls_features.collate(feats, 0, True, multiple=4, limit=6)["input_ids"].shape == (2, 6)  # max_seq_length caps
    assert cls_features.collate(feats, 0, True, multiple=4)["input_ids"].shape == (2, 8)  # no limit given: no cap
    batches, labels = cls_features.eval_batches(feats, 1, 0, True, multiple=4, limit=16)
    assert [b["input_ids"].shape[1] for b in batches] == [4, 8] and labels == [4.0, 1.5]


def test_both_orders_views_line_up_row_by_row_and_average(toy_tokenizer):
    import torch
    tok, v = toy_tokenizer
    examples = [Example("1", "한국어 문장 가 나 한국어", "가", 1.0), Example("2", "가", "나", 2.0),
                Example("3", "문장 가", "한국어 나 나", 3.0), Example("4", "한국어 한국어 문장", "가 나 가 나", 4.0)]
    # swap=True converts each row with its sentences exchanged, guid and label kept
    per_order = [convert_examples(examples, tok, v["[CLS]"], v["[SEP]"], 10, swap=s) for s in (False, True)]
    by_hand = convert_examples(swapped(examples), tok, v["[CLS]"], v["[SEP]"], 10)
    assert all(a["input_ids"].tolist() == b["input_ids"].tolist() and a["label"] == b["label"]
               for a, b in zip(per_order[1], by_hand))
    # seq 10 truncates rows 1 and 4 (a different side in each order), yet each row keeps its length in both
    assert per_order[0][0]["truncated"] and per_order[0][3]["truncated"]
    assert [len(f["input_ids"]) for f in per_order[0]] == [len(f["input_ids"]) for f in per_order[1]]
    views, labels = cls_features.eval_views(per_order, 3, v["[PAD]"], True)
    order = cls_features.length_order(per_order[0])
    assert labels == [examples[i].label for i in order] and len(views) == 2
    for view, feats in zip(views, per_order):
        rows = [r[r != v["[PAD]"]].tolist() for b in view for r in b["input_ids"]]
        assert rows == [feats[i]["input_ids"].tolist() for i in order]

    class Positional(torch.nn.Module):  # position-weighted, so a pair and its swap score differently
        def forward(self, input_ids, **unused):
            return {"logits": (input_ids.float() * torch.arange(1, input_ids.shape[1] + 1)).sum(-1, keepdim=True)}

    model = Positional()
    one = [cls_features.predict(model, view, "cpu")[:, 0] for view in views]
    assert not np.allclose(one[0], one[1])
    np.testing.assert_allclose(cls_features.predict_views(model, views, "cpu")[:, 0], (one[0] + one[1]) / 2)
    # one order: one view, eval_batches' own
    (single,), single_labels = cls_features.eval_views(per_order[:1], 3, v["[PAD]"], True)
    batches, batch_labels = cls_features.eval_batches(per_order[0], 3, v["[PAD]"], True)
    assert single_labels == batch_labels and len(single) == len(batches)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(single, batches) for k in x)


# ------------------------------------------------------------------------------------------- compact features


def swapped(examples):
    """The same rows as (text_b, text_a), guid and label unchanged: the reference for convert_examples(swap=True)."""
    return [Example(e.guid, e.text_b, e.text_a, e.label) for e in examples]


def reference_features(examples, tok, cls_id, sep_id, max_seq_length):
    """The features as the list of dicts of int lists they were before PairFeatures, one row at a time."""
    feats = []
    for e in examples:
        a = tok.encode(e.text_a, add_special_tokens=False).ids
        b = tok.encode(e.text_b, add_special_tokens=False).ids
        la, lb = truncate_pair(len(a), len(b), max_seq_length - 3)
        feats.append({"input_ids": [cls_id, *a[:la], sep_id, *b[:lb], sep_id],
                      "token_type_ids": [0] * (la + 2) + [1] * (lb + 1), "label": e.label,
                      "truncated": la < len(a) or lb < len(b)})
    return feats


def reference_collate(features, pad_id, regression):
    """collate as it was: a torch tensor per row."""
    import torch
    width = max(len(f["input_ids"]) for f in features)
    out = {"input_ids": torch.full((len(features), width), pad_id, dtype=torch.long),
           "token_type_ids": torch.zeros((len(features), width), dtype=torch.long),
           "attention_mask": torch.zeros((len(features), width), dtype=torch.long)}
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(f["input_ids"])
        out["token_type_ids"][i, :n] = torch.tensor(f["token_type_ids"])
        out["attention_mask"][i, :n] = 1
    out["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.float if regression else torch.long)
    return out


@pytest.mark.parametrize("rel, task", [("korsts/sts-dev.tsv", STS), ("kornli/xnli.dev.ko.tsv", NLI)])
def test_pair_features_and_batches_equal_the_plain_lists(cls_env, rel, task):
    """PairFeatures, encoded in chunks (7 rows here, so rows cross chunk boundaries), give the rows, labels,
    length order and training batches the plain per-row lists gave, in both pair orders and both concatenated."""
    import torch

    import tokenization
    from batching import LENGTH_GROUP, GlobalBatchSampler
    tok = tokenization.build_fast_tokenizer(cls_env["vocab"])
    sp = tokenization.special_token_ids(tokenization.load_vocab(cls_env["vocab"]))
    examples = read_examples(data(rel), task, 300)
    # 24 tokens truncates many rows; both orders only where the task allows it, as run_classifier does
    both = task.symmetric
    per_order = cls_features.convert_pair_orders(examples, tok, sp["cls"], sp["sep"], 24, both)
    refs = [reference_features(ex, tok, sp["cls"], sp["sep"], 24)
            for ex in ([examples, swapped(examples)] if both else [examples])]
    chunked = [convert_examples(examples, tok, sp["cls"], sp["sep"], 24, swap=s, chunk=7) for s in range(len(refs))]
    train, ref_train = cls_features.PairFeatures.concat(chunked), [f for ref in refs for f in ref]
    assert len(train) == len(ref_train) == len(examples) * len(refs)
    assert any(f["truncated"] for f in ref_train) and not all(f["truncated"] for f in ref_train)
    for feats in (*per_order, train):
        ref = ref_train if feats is train else refs[per_order.index(feats)]
        got = [{**f, "input_ids": f["input_ids"].tolist(), "token_type_ids": f["token_type_ids"].tolist()}
               for f in feats]
        assert got == ref and [type(f["label"]) for f in got] == [type(f["label"]) for f in ref]
        assert cls_features.length_order(feats) == sorted(range(len(ref)), key=lambda i: len(ref[i]["input_ids"]))
    views, labels = cls_features.eval_views(per_order, 16, sp["pad"], task.is_regression)
    ref_views, ref_labels = cls_features.eval_views(refs, 16, sp["pad"], task.is_regression)
    assert labels == ref_labels
    for group in (0, LENGTH_GROUP):
        sampler = GlobalBatchSampler(cls_features.feature_lengths(train), 16, seed=5, group=group)
        ref_sampler = GlobalBatchSampler([len(f["input_ids"]) for f in ref_train], 16, seed=5, group=group)
        for rows, ref_rows in zip(sampler, ref_sampler):
            assert np.array_equal(rows, ref_rows)
            batch = cls_features.collate([train[i] for i in rows], sp["pad"], task.is_regression)
            ref_batch = reference_collate([ref_train[i] for i in rows], sp["pad"], task.is_regression)
            assert all(batch[k].dtype == ref_batch[k].dtype and torch.equal(batch[k], ref_batch[k]) for k in ref_batch)
    for view, ref_view in zip(views, ref_views):
        assert all(torch.equal(b[k], r[k]) for b, r in zip(view, ref_view) for k in r)


def test_pair_features_index_like_a_list(toy_tokenizer):
    tok, v = toy_tokenizer
    feats = convert_examples([Example(str(i), "한국어 " * i, "가", float(i)) for i in range(1, 6)], tok,
                             v["[CLS]"], v["[SEP]"], 128, chunk=2)
    assert len(feats) == 5 and feats.lengths.tolist() == [7, 10, 13, 16, 19]
    assert feats[np.int64(4)]["label"] == 5.0 and feats[-1]["label"] == 5.0
    assert [f["label"] for f in feats[1:3]] == [2.0, 3.0] and [f["label"] for f in feats] == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(IndexError):
        feats[5]
    unlabelled = convert_examples([Example("1", "가", "나", None)], tok, v["[CLS]"], v["[SEP]"], 128)
    assert unlabelled.labels is None and unlabelled[0]["label"] is None
    assert cls_features.collate([unlabelled[0]], v["[PAD]"], regression=True)["labels"].tolist() == [0.0]


def test_predict_scores_with_dropout_off_whatever_mode_the_model_was_in(toy_tokenizer):
    """predict() leaves training mode (dropout) behind: a model handed over mid-training gives the logits of its
    eval mode, the same on every call, as transformers' Trainer.predict does."""
    import torch
    tok, v = toy_tokenizer
    feats = convert_examples([Example(str(i), "한국어 " * i, "가 나", 0) for i in range(1, 5)], tok,
                             v["[CLS]"], v["[SEP]"], 128)
    batches, _ = cls_features.eval_batches(feats, 2, v["[PAD]"], regression=False)

    class Dropped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.drop = torch.nn.Embedding(len(v), 8), torch.nn.Dropout(0.5)

        def forward(self, input_ids, attention_mask=None, **unused):
            return {"logits": self.drop(self.emb(input_ids)).sum(1)}

    torch.manual_seed(0)
    model = Dropped().train()
    got = [cls_features.predict(model.train(), batches, "cpu") for _ in range(2)]
    with torch.inference_mode():
        want = np.concatenate([model.eval()(**b)["logits"].numpy() for b in batches])
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)
    assert not model.training
