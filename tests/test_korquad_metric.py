"""korquad_metric: hand-made cases, a whole dataset, and a separate implementation written from the official
KorQuAD 1.0 evaluation script's definition on perturbed real dev answers."""
import json
import os
import random
import string
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from korquad_metric import (evaluate, exact_match_score, f1_score, gold_answers, load_predictions,  # noqa: E402
                            normalize_answer)

DEV = os.path.join(ROOT, "data", "korquad", "KorQuAD_v1.0_dev.json")


@pytest.fixture(scope="module")
def dev():
    with open(DEV, encoding="utf-8") as f:
        return json.load(f)


def test_metric_hand_made_cases():
    assert exact_match_score("서울", "서울에서") == 0
    assert f1_score("서울", "서울에서") == pytest.approx(2 * 1 * 0.5 / 1.5)  # precision 2/2, recall 2/4
    assert f1_score("서울에서", "서울") == pytest.approx(2 / 3)
    assert exact_match_score("《토지》", "토지") == 1 and exact_match_score("〈봄〉", "‘봄’") == 1
    assert exact_match_score("'임종석'", '"임종석"') == 1
    assert exact_match_score("(주)삼성", "주 삼성") == 1          # brackets become spaces
    assert exact_match_score("1,000원", "1000원") == 1           # ASCII punctuation is deleted
    assert exact_match_score("1989년 2월", "1989년  2월 ") == 1   # whitespace collapsed
    assert exact_match_score("토 지", "토지") == 0 and f1_score("토 지", "토지") == 1.0  # F1 ignores spaces
    assert exact_match_score("KBS", "kbs") == 1
    assert exact_match_score("。토지", "토지") == 0                # only ASCII punctuation is removed
    assert f1_score("", "") == 0 and exact_match_score("", "") == 1
    assert f1_score("가가나", "가나나") == pytest.approx(2 / 3)     # bag of characters, counted with multiplicity
    assert normalize_answer(" 《A》 (B),  c. ") == "a b c"


def test_metric_evaluate_over_dataset(capsys):
    gold = {"q1": ["서울", "서울특별시"], "q2": ["《토지》"], "q3": ["1989년"], "q4": ["임수경"]}
    preds = {"q1": "서울특별시에서", "q2": "토지", "q3": "1988년"}
    res = evaluate(gold, preds, "p.json")
    f1_q1 = max(f1_score("서울특별시에서", "서울"), f1_score("서울특별시에서", "서울특별시"))
    assert set(res) == {"exact_match", "f1"}
    assert res["exact_match"] == pytest.approx(100 * 1 / 4)
    assert res["f1"] == pytest.approx(100 * (f1_q1 + 1 + 0.8) / 4)  # 1989년/1988년 share 4 of 5 characters
    err = capsys.readouterr().err
    assert "1 of 4 questions have no prediction" in err and "p.json" in err
    with pytest.raises(ValueError, match=r"preds\.json: 1 prediction id\(s\) are not in the dataset"):
        evaluate(gold, {**preds, "zzz": "x"}, "preds.json")


def test_load_predictions_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_predictions(str(tmp_path / "missing.json"))
    bad = tmp_path / "list.json"
    bad.write_text("[1]")
    with pytest.raises(ValueError, match="list.json"):
        load_predictions(str(bad))
    bad.write_text('{"a": 3}')
    with pytest.raises(ValueError, match="not a string"):
        load_predictions(str(bad))
    bom = tmp_path / "bom.json"  # as some Windows editors save JSON: the byte-order mark is skipped
    bom.write_bytes(b"\xef\xbb\xbf" + '{"q1": "서울"}'.encode("utf-8"))
    assert load_predictions(str(bom)) == {"q1": "서울"}


def test_a_dataset_without_questions_is_an_error():
    """Nothing to score is an error naming the source, not 0/0 (a ZeroDivisionError) or a silent 0."""
    with pytest.raises(ValueError, match=r"^p\.json: the dataset has no questions to score$"):
        evaluate({}, {}, "p.json")


def _ref_normalize(text):
    for ch in ["'", '"', "《", "》", "<", ">", "〈", "〉", "(", ")", "‘", "’"]:
        text = text.replace(ch, " ")
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(text.split())


def _ref_scores(pred, golds):
    em = max(float(_ref_normalize(pred) == _ref_normalize(g)) for g in golds)
    best_f1 = 0.0
    for g in golds:
        p_chars = [c for tok in _ref_normalize(pred).split() for c in tok]
        g_chars = [c for tok in _ref_normalize(g).split() for c in tok]
        remaining = list(g_chars)
        same = 0
        for c in p_chars:
            if c in remaining:
                remaining.remove(c)
                same += 1
        if same:
            prec, rec = same / len(p_chars), same / len(g_chars)
            best_f1 = max(best_f1, 2 * prec * rec / (prec + rec))
    return em, best_f1


def test_metric_matches_definition_on_perturbed_dev_answers(dev):
    rng = random.Random(0)
    answers = [qa["answers"][0]["text"] for art in dev["data"][:40] for p in art["paragraphs"] for qa in p["qas"]]
    perturb = [
        lambda a: a, lambda a: a + "에서", lambda a: a + "은", lambda a: a[1:], lambda a: a[:-1],
        lambda a: f"《{a}》", lambda a: f"({a})", lambda a: a.replace(" ", ""), lambda a: " ".join(a),
        lambda a: a + ".", lambda a: "‘" + a + "’", lambda a: a.upper(), lambda a: rng.choice(answers),
        lambda a: "", lambda a: a[::-1], lambda a: a + " " + rng.choice(answers),
    ]
    gold, preds, expected = {}, {}, []
    for i in range(400):
        golds = [rng.choice(answers)] + ([rng.choice(answers)] if i % 5 == 0 else [])
        pred = rng.choice(perturb)(golds[0])
        qid = f"q{i}"
        gold[qid], preds[qid] = golds, pred
        expected.append(_ref_scores(pred, golds))
    res = evaluate(gold, preds)
    assert res["exact_match"] == pytest.approx(100 * sum(e for e, _ in expected) / 400)
    assert res["f1"] == pytest.approx(100 * sum(f for _, f in expected) / 400)
    assert 0 < res["exact_match"] < res["f1"] < 100  # the perturbations really exercise partial credit


def test_every_gold_answer_counts_for_exact_match_and_f1():
    """As the official script's metric_max_over_ground_truths: a question scores its best over all its gold answers,
    for EM as for F1, and gold_answers keeps every answer text (list(map(lambda x: x['text'], qa['answers'])))."""
    dataset = [{"paragraphs": [{"qas": [
        {"id": "q1", "answers": [{"text": "서울특별시", "answer_start": 0}, {"text": "서울", "answer_start": 0}]},
        {"id": "q2", "answers": [{"text": "1989년 2월", "answer_start": 3}, {"text": "1989년", "answer_start": 3},
                                 {"text": "2월", "answer_start": 9}]}]}]}]
    gold = gold_answers(dataset)
    assert gold == {"q1": ["서울특별시", "서울"], "q2": ["1989년 2월", "1989년", "2월"]}
    # each prediction is exactly one gold answer other than the first
    res = evaluate(gold, {"q1": "서울", "q2": "2월"})
    assert res == {"exact_match": 100.0, "f1": 100.0}
    preds = {"q1": "서울에서", "q2": "1989년에"}
    expected = [(max(exact_match_score(preds[q], t) for t in gold[q]), max(f1_score(preds[q], t) for t in gold[q]))
                for q in ("q1", "q2")]
    assert expected[0][1] == pytest.approx(2 / 3) and f1_score("서울에서", "서울특별시") < 0.5  # 서울 scores best
    res = evaluate(gold, preds)
    assert res["exact_match"] == 0 and res["f1"] == pytest.approx(100 * sum(f for _, f in expected) / 2)
