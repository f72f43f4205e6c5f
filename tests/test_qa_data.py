"""KorQuAD reader, windowed features, cache and post-processing (the metric: test_korquad_metric.py).

Features are checked on real dev-set slices against properties recomputed here from the tokenizer's own
encodings.
"""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qa_data import (convert_examples_to_features, feature_cache_key, load_or_build_features,  # noqa: E402
                     postprocess_predictions, read_korquad, split_by_article)

DEV = os.path.join(ROOT, "data", "korquad", "KorQuAD_v1.0_dev.json")


@pytest.fixture(scope="session")
def vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa_vocab")
    corpus = d / "corpus.txt"
    with open(os.path.join(ROOT, "data", "korean_text", "boddari", "wikinews.txt"), encoding="utf-8") as f:
        corpus.write_text("".join(f.readline() for _ in range(3000)), encoding="utf-8")
    out = d / "vocab.txt"
    import tokenization
    proc = subprocess.run([sys.executable, tokenization.__file__, "build-vocab", "--corpus", str(corpus),
                           "--vocab_size", "4000", "--output", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return str(out)


@pytest.fixture(scope="session")
def tok(vocab):
    from tokenization import build_fast_tokenizer, load_vocab, special_token_ids
    return build_fast_tokenizer(vocab), special_token_ids(load_vocab(vocab))


@pytest.fixture(scope="session")
def dev():
    with open(DEV, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def context_tokens(tokenizer, context):
    enc = tokenizer.encode(context, add_special_tokens=False)
    return enc.ids, [tuple(o) for o in enc.offsets]


def window_token_range(feats, f, ctx_offsets):
    """(first, last) context-token index covered by feature f, located through its offsets."""
    offs = [tuple(o) for o in feats.offsets[f] if o[0] >= 0]
    first = ctx_offsets.index(offs[0])
    return first, first + len(offs) - 1


# ------------------------------------------------------------------------------------------------------------
# features


def test_training_spans_contain_answers(tok):
    tokenizer, special = tok
    examples, skipped = read_korquad(DEV, is_training=True, max_examples=300)
    assert skipped == 0 and len(examples) == 300
    feats, unmappable = convert_examples_to_features(examples, tokenizer, special, 128, 64, 32, True)
    assert unmappable == 0
    with_answer = set()
    for f in range(len(feats)):
        ex = examples[feats.example_index[f]]
        a_text = ex.answer_text.strip()  # a few gold answers carry a trailing space the tokens never cover
        a_start = ex.answer_start + ex.answer_text.index(a_text)
        a_end = a_start + len(a_text)
        s, e = feats.start_positions[f], feats.end_positions[f]
        ctx = [tuple(o) for o in feats.offsets[f] if o[0] >= 0]
        if s == 0:
            assert e == 0
            # the window really lacks the answer: its context chars do not cover [a_start, a_end)
            assert not (ctx[0][0] <= a_start and ctx[-1][1] >= a_end)
            continue
        with_answer.add(ex.qid)
        assert feats.token_type_ids[f, s] == 1 and feats.offsets[f, s, 0] >= 0 and s <= e
        (cs, s_end), (e_start, ce) = feats.offsets[f, s], feats.offsets[f, e]
        assert a_text in ex.context[cs:ce]
        assert cs <= a_start < s_end and e_start < a_end <= ce  # start/end tokens are the answer's boundary tokens
    assert len(with_answer) == len(examples)  # every answer fits some window at this size


def test_input_layout_and_question_truncation(tok):
    tokenizer, special = tok
    examples, _ = read_korquad(DEV, is_training=False, max_examples=20)
    feats, _ = convert_examples_to_features(examples, tokenizer, special, 96, 32, 5, False)
    for f in range(len(feats)):
        ex = examples[feats.example_index[f]]
        q_ids = tokenizer.encode(ex.question, add_special_tokens=False).ids[:5]
        ids, mask, tt = feats.input_ids[f], feats.attention_mask[f], feats.token_type_ids[f]
        n_real = int(mask.sum())
        c0 = len(q_ids) + 2
        assert ids[0] == special["cls"] and list(ids[1:c0 - 1]) == q_ids and ids[c0 - 1] == special["sep"]
        assert ids[n_real - 1] == special["sep"] and (ids[n_real:] == special["pad"]).all()
        assert (mask[:n_real] == 1).all() and (tt[:c0] == 0).all() and (tt[c0:n_real] == 1).all()
        assert (tt[n_real:] == 0).all()
        ctx_ids, ctx_offs = context_tokens(tokenizer, ex.context)
        first, last = window_token_range(feats, f, ctx_offs)
        assert list(ids[c0:n_real - 1]) == ctx_ids[first:last + 1]
        assert (feats.offsets[f, :c0] == -1).all() and (feats.offsets[f, n_real - 1:] == -1).all()


def test_windows_stride_and_max_context(tok):
    tokenizer, special = tok
    examples, _ = read_korquad(DEV, is_training=False, max_examples=60)
    T, stride, max_q = 64, 16, 16
    feats, _ = convert_examples_to_features(examples, tokenizer, special, T, stride, max_q, False)
    for i, ex in enumerate(examples):
        rows = np.nonzero(feats.example_index == i)[0]
        _, ctx_offs = context_tokens(tokenizer, ex.context)
        n = len(ctx_offs)
        L = T - 3 - len(tokenizer.encode(ex.question, add_special_tokens=False).ids[:max_q])
        expected = 1 if n <= L else 1 + -(-(n - L) // stride)
        assert len(rows) == expected
        ranges = [window_token_range(feats, f, ctx_offs) for f in rows]
        for w, (a, b) in enumerate(ranges):
            assert a == w * stride and b - a + 1 == min(L, n - a)
        assert ranges[-1][1] == n - 1
        # each token is flagged in exactly the window where min(left, right) context + 0.01 * length is largest
        for t in range(n):
            scores = [(min(t - a, b - t) + 0.01 * (b - a + 1), -w) for w, (a, b) in enumerate(ranges) if a <= t <= b]
            best = -max(scores)[1]
            flags = [bool(feats.max_context[f, np.nonzero(feats.offsets[f, :, 0] == ctx_offs[t][0])[0][0]])
                     for w, f in enumerate(rows) if ranges[w][0] <= t <= ranges[w][1]]
            owners = [w for w, (a, b) in enumerate(ranges) if a <= t <= b]
            assert flags == [w == best for w in owners]


def test_a_stride_past_the_window_still_covers_every_context_token(tok):
    """google-research/bert advances by min(window length, doc_stride): with a stride longer than a window the
    windows abut (the warning above), and no context token falls between two of them."""
    tokenizer, special = tok
    examples, _ = read_korquad(DEV, is_training=False, max_examples=10)
    T, max_q = 48, 8
    for stride in (1000, 60, 16):
        feats, _ = convert_examples_to_features(examples, tokenizer, special, T, stride, max_q, False)
        for i, ex in enumerate(examples):
            _, ctx_offs = context_tokens(tokenizer, ex.context)
            L = T - 3 - len(tokenizer.encode(ex.question, add_special_tokens=False).ids[:max_q])
            ranges = [window_token_range(feats, f, ctx_offs) for f in np.nonzero(feats.example_index == i)[0]]
            assert ranges[0][0] == 0 and ranges[-1][1] == len(ctx_offs) - 1
            assert all(b[0] == a[0] + min(L, stride) for a, b in zip(ranges, ranges[1:]))
            assert all(b[0] <= a[1] + 1 for a, b in zip(ranges, ranges[1:]))  # no gap


def test_a_stride_past_the_window_is_warned_about():
    """A stride at least a window's context long makes windows that do not overlap (google-research/bert's rule,
    kept): said once, not refused; a bad value is still refused."""
    import argparse

    import qa_data
    base = dict(max_seq_length=128, max_query_length=32, max_answer_length=30, n_best_size=20, batch_size=8,
                max_eval_examples=None)
    assert qa_data.check_qa_args(argparse.Namespace(doc_stride=64, **base)) == []
    assert qa_data.check_qa_args(argparse.Namespace(doc_stride=92, **base)) == []
    (warning,) = qa_data.check_qa_args(argparse.Namespace(doc_stride=93, **base))
    assert warning.startswith("--doc_stride 93 is not shorter than a window's context (93 tokens")
    with pytest.raises(ValueError, match="--doc_stride must be at least 1"):
        qa_data.check_qa_args(argparse.Namespace(doc_stride=0, **base))
    # [CLS] question [SEP] context [SEP]: a window needs room for one context token beside the longest question
    assert qa_data.check_qa_args(argparse.Namespace(**{**base, "max_seq_length": 36, "doc_stride": 1})) != []
    with pytest.raises(ValueError, match="--max_seq_length 35 leaves no room for the context"):
        qa_data.check_qa_args(argparse.Namespace(**{**base, "max_seq_length": 35, "doc_stride": 1}))


def test_mismatched_answers_are_skipped_in_training(dev, tmp_path):
    data = copy.deepcopy(dev["data"][:1])
    qas = data[0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] += 3
    qas[1]["answers"][0]["text"] = "본문에 없는 답"
    # an answer of only whitespace, found verbatim where it says: no token to label, skipped as well
    context = data[0]["paragraphs"][0]["context"]
    qas[2]["answers"][0].update(text=" ", answer_start=context.index(" "))
    path = write_json(tmp_path / "bad_answers.json", {"version": "KorQuAD_v1.0_dev", "data": data})
    n_total = sum(len(p["qas"]) for p in data[0]["paragraphs"])
    train, skipped = read_korquad(path, is_training=True)
    assert skipped == 3 and len(train) == n_total - 3
    assert {qas[0]["id"], qas[1]["id"], qas[2]["id"]}.isdisjoint(e.qid for e in train)
    evals, skipped = read_korquad(path, is_training=False)
    assert skipped == 0 and len(evals) == n_total  # scoring still needs every question


def test_max_examples_counts_the_skipped_questions_too(dev, tmp_path):
    """max_examples keeps the file's first N questions: a training question skipped for a mismatched answer is one
    of them, so training and evaluation with the same cap cover the same questions."""
    data = copy.deepcopy(dev["data"][:1])
    qas = [qa for p in data[0]["paragraphs"] for qa in p["qas"]]
    qas[1]["answers"][0]["text"] = "본문에 없는 답"
    path = write_json(tmp_path / "capped.json", {"version": "KorQuAD_v1.0_dev", "data": data})
    train, skipped = read_korquad(path, is_training=True, max_examples=4)
    evals, _ = read_korquad(path, is_training=False, max_examples=4)
    assert skipped == 1 and len(train) == 3
    assert [e.qid for e in evals] == [qa["id"] for qa in qas[:4]]
    assert [e.qid for e in train] == [qa["id"] for i, qa in enumerate(qas[:4]) if i != 1]


@pytest.mark.parametrize("content,needle", [
    ("not json at all {", "not a JSON file"),
    ('{"version": "KorQuAD_v1.0", "data": []}', "no questions"),
    ('{"version": "KorQuAD_2.0_dev", "data": [{"title": "t", "context": "<p>x</p>", "qas": []}]}', "2.0"),
    ('{"version": "v2.0", "data": [{"title": "t", "paragraphs": []}]}', "2.0"),
    ('{"data": [{"title": "t", "context": "x", "qas": []}]}', "paragraphs"),
    ('[1, 2, 3]', "data"),
    ('{"version": "1.1", "data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "question": "q", '
     '"answers": [], "is_impossible": true}]}]}]}', "unanswerable"),
])
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "input.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as e:
        read_korquad(str(path), is_training=False)
    msg = str(e.value)
    assert str(path) in msg and needle in msg and "\n" not in msg


@pytest.mark.parametrize("is_training,qa,needle", [
    (False, {"answers": None}, '"answers"'),
    (False, {"answers": {"text": "서울", "answer_start": 0}}, '"answers"'),
    (False, {"answers": [{"answer_start": 0}]}, '"answers"'),
    (False, {"answers": [{"text": 3, "answer_start": 0}]}, '"answers"'),
    (False, {"answers": ["서울"]}, '"answers"'),
    (False, {"question": None}, '"question"'),
    (False, {"question": ["어디?"]}, '"question"'),
    (True, {"answers": [{"text": "서울", "answer_start": "0"}]}, "answer_start"),
    (True, {"answers": [{"text": "서울"}]}, "answer_start"),
])
def test_malformed_question_fields_name_the_file_and_question(tmp_path, is_training, qa, needle):
    """Types are checked up front: not a TypeError/KeyError in the reader, or a failure inside the tokenizer."""
    good = {"id": "q-7", "question": "어디?", "answers": [{"text": "서울", "answer_start": 0}]}
    path = write_json(tmp_path / "typed.json", {"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": [
        {"context": "서울에서 열렸다", "qas": [{**good, **qa}]}]}]})
    with pytest.raises(ValueError) as e:
        read_korquad(path, is_training=is_training)
    msg = str(e.value)
    assert path in msg and "'q-7'" in msg and needle in msg and "\n" not in msg


def test_a_question_id_given_twice_is_an_error_naming_it(tmp_path):
    """Predictions and scores are keyed by question id: a second question with the same id would silently take the
    first one's place in predictions.json."""
    qa = {"id": "q-1", "question": "어디?", "answers": [{"text": "서울", "answer_start": 0}]}
    paragraphs = [{"context": "서울에서 열렸다", "qas": [qa]},
                  {"context": "부산에서 열렸다", "qas": [dict(qa, question="언제?")]}]
    path = write_json(tmp_path / "dup.json",
                      {"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": paragraphs}]})
    for is_training in (True, False):
        with pytest.raises(ValueError, match="'q-1' occurs twice"):
            read_korquad(path, is_training=is_training)


def test_missing_file_and_squad11_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_korquad(str(tmp_path / "nope.json"), is_training=False)
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "서울에서 열렸다", "qas": [
        {"id": "x", "question": "어디?", "answers": [{"text": "서울", "answer_start": 0}]}]}]}]}
    examples, _ = read_korquad(write_json(tmp_path / "squad.json", squad), is_training=True)
    assert [(e.qid, e.answer_text, e.answer_start) for e in examples] == [("x", "서울", 0)]


def test_split_by_article_is_disjoint_complete_and_deterministic(dev, tmp_path):
    train, held = split_by_article(DEV, 0.2, seed=3)
    titles = lambda d: [a["title"] for a in d["data"]]  # noqa: E731
    assert not set(titles(train)) & set(titles(held))
    assert sorted(titles(train) + titles(held)) == sorted(titles(dev))
    assert len(held["data"]) == round(0.2 * len(dev["data"]))
    # each side reads back as a KorQuAD file with every question of its articles
    n = lambda d: sum(len(p["qas"]) for a in d["data"] for p in a["paragraphs"])  # noqa: E731
    sides = [read_korquad(write_json(tmp_path / f"{k}.json", d), True)[0] for k, d in (("t", train), ("e", held))]
    assert len(sides[0]) + len(sides[1]) == n(dev)
    assert split_by_article(DEV, 0.2, seed=3) == (train, held)
    assert titles(split_by_article(DEV, 0.2, seed=4)[1]) != titles(held)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_article(DEV, 1.0)
    # the held-out count is the nearest whole number of articles to eval_fraction of them (not rounded down)
    ten = write_json(tmp_path / "ten.json", {"version": "KorQuAD_v1.0", "data": dev["data"][:10]})
    for fraction in (0.27, 0.36, 0.5, 0.68):
        assert abs(len(split_by_article(ten, fraction)[1]["data"]) - fraction * 10) <= 0.5, fraction
    one = write_json(tmp_path / "one.json", {"version": "KorQuAD_v1.0", "data": dev["data"][:1]})
    with pytest.raises(ValueError, match="one.json"):
        split_by_article(one, 0.5)


def test_cache_key_depends_on_every_input(tmp_path, vocab, dev, monkeypatch):
    other_data = write_json(tmp_path / "d.json", {"version": "KorQuAD_v1.0", "data": dev["data"][:1]})
    other_vocab = tmp_path / "v.txt"
    other_vocab.write_text(open(vocab, encoding="utf-8").read() + "추가토큰\n", encoding="utf-8")
    base = dict(data_file=DEV, vocab_file=vocab, do_lower_case=False, morph_analyzer=None, max_seq_length=128,
                doc_stride=64, max_query_length=32, is_training=True, max_examples=None)
    changes = dict(data_file=other_data, vocab_file=str(other_vocab), do_lower_case=True, morph_analyzer="kiwi",
                   max_seq_length=256, doc_stride=32, max_query_length=16, is_training=False, max_examples=10)
    assert set(changes) == set(base)
    key = feature_cache_key(**base)
    assert key == feature_cache_key(**base)
    keys = {feature_cache_key(**{**base, name: value}) for name, value in changes.items()}
    assert len(keys) == len(changes) and key not in keys
    # this module's own code: an edited windowing or labelling rule gives other features from the same inputs
    import qa_data
    edited = tmp_path / "qa_data.py"
    edited.write_text(open(qa_data.__file__, encoding="utf-8").read() + "\n# a changed rule\n", encoding="utf-8")
    monkeypatch.setattr(qa_data, "__file__", str(edited))
    assert feature_cache_key(**base) not in keys | {key}


def test_cache_key_tracks_the_morphological_analyser(tmp_path, vocab, monkeypatch):
    """With an analyser the features also depend on morphology.py and kiwipiepy (code and model); without one they
    do not, so editing morphology.py leaves plain caches valid."""
    import importlib.metadata

    import morphology
    base = dict(data_file=DEV, vocab_file=vocab, do_lower_case=False, max_seq_length=128, doc_stride=64,
                max_query_length=32, is_training=True, max_examples=None)
    before = {m: feature_cache_key(**base, morph_analyzer=m) for m in (None, "kiwi")}
    edited = tmp_path / "morphology.py"
    edited.write_text(open(morphology.__file__, encoding="utf-8").read() + "\n# a changed rule\n", encoding="utf-8")
    monkeypatch.setattr(morphology, "__file__", str(edited))
    after_code = {m: feature_cache_key(**base, morph_analyzer=m) for m in (None, "kiwi")}
    monkeypatch.undo()
    real_version = importlib.metadata.version

    def newer(name):
        return "99.0" if name.startswith("kiwipiepy") else real_version(name)
    monkeypatch.setattr(importlib.metadata, "version", newer)
    after_version = {m: feature_cache_key(**base, morph_analyzer=m) for m in (None, "kiwi")}
    assert after_code[None] == after_version[None] == before[None]
    assert len({before["kiwi"], after_code["kiwi"], after_version["kiwi"]}) == 3

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", missing)  # no kiwipiepy: the key is still computed
    assert feature_cache_key(**base, morph_analyzer="kiwi") not in (before["kiwi"], after_version["kiwi"])


def test_feature_cache_file_is_readable_by_others_and_synced(tmp_path, vocab, monkeypatch):
    """A cache is meant to be shared (default mode 0644 less the umask, not mkstemp's 0600) and is on disk before
    its name appears."""
    import qa_data
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(qa_data.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(qa_data.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    examples, _ = read_korquad(DEV, is_training=False, max_examples=5)
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            _, _, path, cached = load_or_build_features(examples, DEV, vocab, False, None, 128, 64, 32, False, 5,
                                                        str(tmp_path / f"cache{umask:o}"))
        finally:
            os.umask(old)
        assert not cached and os.stat(path).st_mode & 0o777 == mode
    assert events == ["fsync", "replace"] * 2


def test_feature_cache_roundtrip_and_corruption(tmp_path, vocab):
    examples, _ = read_korquad(DEV, is_training=True, max_examples=30)
    args = (examples, DEV, vocab, False, None, 128, 64, 32, True, 30, str(tmp_path / "cache"))
    built, n_bad, path, cached = load_or_build_features(*args)
    assert not cached and os.path.isfile(path) and n_bad == 0
    again, _, path2, cached = load_or_build_features(*args)
    assert cached and path2 == path
    for name, arr in built.arrays().items():
        assert np.array_equal(arr, getattr(again, name)) and arr.dtype == getattr(again, name).dtype, name
    with open(path, "r+b") as f:  # a truncated/corrupt cache is rebuilt, never trusted
        f.truncate(100)
    rebuilt, _, _, cached = load_or_build_features(*args)
    assert not cached and np.array_equal(rebuilt.input_ids, built.input_ids)
    assert not [p for p in os.listdir(tmp_path / "cache") if p.startswith(".")]  # no temporary files left


# ------------------------------------------------------------------------------------------------------------
# post-processing


def test_postprocess_maps_logits_to_original_text(tok):
    tokenizer, special = tok
    examples, _ = read_korquad(DEV, is_training=True, max_examples=40)
    feats, _ = convert_examples_to_features(examples, tokenizer, special, 128, 48, 32, True)
    n, T = feats.input_ids.shape
    start, end = np.zeros((n, T), np.float32), np.zeros((n, T), np.float32)
    # distractors that must be ignored: huge logits on [CLS]/question tokens and on an end before the start
    start[:, 0] = end[:, 0] = start[:, 1] = end[:, 1] = 100.0
    for f in range(n):
        ex = examples[feats.example_index[f]]
        a_start = ex.answer_start
        a_end = a_start + len(ex.answer_text.rstrip())
        offs = feats.offsets[f]
        s_tok = np.nonzero((offs[:, 0] <= a_start) & (a_start < offs[:, 1]))[0]
        e_tok = np.nonzero((offs[:, 0] < a_end) & (a_end <= offs[:, 1]))[0]
        if len(s_tok) and len(e_tok):  # every window holding the answer votes for it
            start[f, s_tok[0]] += 40
            end[f, e_tok[0]] += 40
            if offs[s_tok[0] - 1, 0] >= 0:
                end[f, s_tok[0] - 1] += 60
    preds, nbest, starts = postprocess_predictions(examples, feats, start, end, n_best_size=5, max_answer_length=64)
    assert list(preds) == [e.qid for e in examples]
    for ex in examples:
        text = preds[ex.qid]
        assert ex.answer_text.strip() in text and ex.context[starts[ex.qid]:].startswith(text)
        assert text == text.strip() and "##" not in text
        probs = [x["probability"] for x in nbest[ex.qid]]
        assert abs(sum(probs) - 1) < 1e-6 and probs == sorted(probs, reverse=True)
        assert len({x["text"] for x in nbest[ex.qid]}) == len(nbest[ex.qid]) <= 5
        assert nbest[ex.qid][0]["text"] == text
        assert set(nbest[ex.qid][0]) == {"text", "probability", "start_logit", "end_logit"}


def test_postprocess_length_limit_and_max_context(tok):
    tokenizer, special = tok
    examples, _ = read_korquad(DEV, is_training=False, max_examples=1)
    feats, _ = convert_examples_to_features(examples, tokenizer, special, 64, 16, 16, False)
    assert len(feats) >= 3
    n, T = feats.input_ids.shape
    start, end = np.zeros((n, T), np.float32), np.zeros((n, T), np.float32)
    f = 1
    ctx = np.nonzero(feats.offsets[f, :, 0] >= 0)[0]
    flagged, unflagged = ctx[feats.max_context[f, ctx]], ctx[~feats.max_context[f, ctx]]
    # best start sits where the window lacks max context -> must be skipped for the flagged one
    start[f, unflagged[0]] = 20.0
    start[f, flagged[0]] = 10.0
    end[f, flagged[0] + 5] = 10.0
    end[f, flagged[0] + 1] = 9.0
    offs = feats.offsets[f]
    preds, _, _ = postprocess_predictions(examples, feats, start, end, n_best_size=20, max_answer_length=6)
    assert preds[examples[0].qid] == examples[0].context[offs[flagged[0], 0]:offs[flagged[0] + 5, 1]]
    preds, _, _ = postprocess_predictions(examples, feats, start, end, n_best_size=20, max_answer_length=5)
    assert preds[examples[0].qid] == examples[0].context[offs[flagged[0], 0]:offs[flagged[0] + 1, 1]]


def test_decomposed_hangul_maps_answers_to_whole_syllables(tok):
    """Contexts in NFD (decomposed jamo, as text saved on macOS may be) tokenise as their NFC form does, and the
    offsets point at whole syllables of the original text: predicted answers come back uncut, in the file's form."""
    import unicodedata
    tokenizer, special = tok
    nfc, _ = read_korquad(DEV, is_training=True, max_examples=30)
    nfd = copy.deepcopy(nfc)
    for ex in nfd:
        ex.answer_start = len(unicodedata.normalize("NFD", ex.context[:ex.answer_start]))
        ex.context, ex.question, ex.answer_text = (unicodedata.normalize("NFD", t)
                                                   for t in (ex.context, ex.question, ex.answer_text))
        assert ex.context[ex.answer_start:].startswith(ex.answer_text)
    (a, _), (b, _) = (convert_examples_to_features(e, tokenizer, special, 128, 48, 32, True) for e in (nfc, nfd))
    for name in ("input_ids", "start_positions", "end_positions", "example_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for f in range(len(a)):
        for (s, e), (s2, e2) in zip(a.offsets[f], b.offsets[f]):
            if s >= 0:
                ctx_a, ctx_b = nfc[a.example_index[f]].context, nfd[b.example_index[f]].context
                assert unicodedata.normalize("NFC", ctx_b[s2:e2]) == ctx_a[s:e]
    n, T = b.input_ids.shape
    start, end = np.zeros((n, T), np.float32), np.zeros((n, T), np.float32)
    start[np.arange(n), b.start_positions] = end[np.arange(n), b.end_positions] = 50.0
    preds, _, _ = postprocess_predictions(nfd, b, start, end, n_best_size=5, max_answer_length=64)
    for ex in nfd:
        assert ex.answer_text.strip() in preds[ex.qid], (preds[ex.qid], ex.answer_text)


@pytest.mark.parametrize("text", ["a\u0316\u0301 b", "e\u0301\u0301x", "\u0301x", "ᄀᄀ가\u1161 ᄒ\u1161\u11ab",
                                  "\u0344 \ufb1d", "서울"])
def test_nfc_spans_tile_the_text_and_compose_it_whole(text):
    """The NFC form comes back whole (a mark that composes past another one included), and each of its characters
    maps to the stretch of the original it came from, in order, without gaps."""
    import unicodedata
    from tokenization import nfc_with_spans
    nfc, spans = nfc_with_spans(text)
    assert nfc == unicodedata.normalize("NFC", text)
    if spans is None:
        assert nfc == text
        return
    assert spans[0][0] == 0 and spans[-1][1] == len(text) and len(spans) == len(nfc)
    pieces = []
    for (a, b), ch in zip(spans, nfc):
        assert a < b and ch in unicodedata.normalize("NFC", text[a:b])
        if not pieces or pieces[-1] != (a, b):
            pieces.append((a, b))
    assert all(x[1] == y[0] for x, y in zip(pieces, pieces[1:]))  # consecutive stretches, no gaps
