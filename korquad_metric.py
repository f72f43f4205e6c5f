"""KorQuAD 1.0 scoring, identical in definition to the official evaluate-v1.0.py (standard library only).

Both answers are normalised (quote/bracket characters → space, lower-case, ASCII punctuation removed,
whitespace collapsed); EM compares the normalised strings and F1 is a bag-of-characters overlap of the
normalised strings with spaces dropped, which suits Korean where a particle glued to a noun (서울 vs 서울에서)
should cost only its characters. Each question takes its best score over the gold answers; the mean runs over
every question of the dataset, so an unanswered question scores 0.

    from korquad_metric import evaluate, f1_score
    f1_score("서울", "서울에서")                     # 0.667: precision 2/2, recall 2/4
    evaluate({"q1": ["《토지》", "토지"]}, {"q1": "토지"})  # {'exact_match': 100.0, 'f1': 100.0}
"""
from __future__ import annotations

import json
import string
import sys
from collections import Counter

# Korean quotation marks and brackets that the official script blanks out before dropping ASCII punctuation.
_TO_SPACE = str.maketrans({c: " " for c in "'\"《》<>〈〉()‘’"})
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    return " ".join(s.translate(_TO_SPACE).lower().translate(_PUNCT).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    pred_chars = list(normalize_answer(prediction).replace(" ", ""))
    gold_chars = list(normalize_answer(ground_truth).replace(" ", ""))
    num_same = sum((Counter(pred_chars) & Counter(gold_chars)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_chars)
    recall = num_same / len(gold_chars)
    return 2 * precision * recall / (precision + recall)


def gold_answers(dataset: list) -> dict[str, list[str]]:
    """{question id: [gold answer texts]} from the `data` list of a SQuAD-1.x-format file."""
    return {qa["id"]: [a["text"] for a in qa["answers"]]
            for article in dataset for para in article["paragraphs"] for qa in para["qas"]}


def evaluate(gold: dict[str, list[str]], predictions: dict[str, str], source: str = "predictions") -> dict:
    """{"exact_match", "f1"} in percent over all questions of `gold`.

    Ids predicted but absent from the dataset mean the predictions belong to another file: that is an error
    (ValueError naming `source`), whereas a missing prediction only scores 0 with a warning, as officially.
    """
    unknown = [qid for qid in predictions if qid not in gold]
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} prediction id(s) are not in the dataset "
                         f"(first: {unknown[0]!r}); were they made for another file?")
    if not gold:
        raise ValueError(f"{source}: the dataset has no questions to score")
    em = f1 = 0.0
    missing = 0
    for qid, truths in gold.items():
        if qid not in predictions:
            missing += 1
            continue
        pred = predictions[qid]
        em += max(exact_match_score(pred, t) for t in truths)
        f1 += max(f1_score(pred, t) for t in truths)
    if missing:
        print(f"warning: {missing} of {len(gold)} questions have no prediction in {source}; they score 0",
              file=sys.stderr, flush=True)
    return {"exact_match": 100.0 * em / len(gold), "f1": 100.0 * f1 / len(gold)}


def load_predictions(path: str) -> dict[str, str]:
    """A {question id: answer text} JSON file, checked so that a wrong file fails with one line naming it."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is skipped
            preds = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"predictions file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(preds, dict):
        raise ValueError(f"{path}: expected a JSON object {{question id: answer}}, got {type(preds).__name__}")
    bad = next((k for k, v in preds.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise ValueError(f"{path}: the answer for {bad!r} is not a string")
    return preds
