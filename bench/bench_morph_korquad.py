"""How much of the KorQuAD EM gap does morphological answer trimming close?  (KorQuAD 1.0 dev, no model needed)

    python bench/bench_morph_korquad.py
    python bench/bench_morph_korquad.py --limit 1000 --context_words 0
    python bench/bench_morph_korquad.py --output /tmp/morph_korquad.json

The typical error of a model trained without an analyser is a span that runs to the end of the whitespace word
(gold `서울`, predicted `서울에서`).  We build exactly that prediction from every question's first gold answer and
score it with the official KorQuAD 1.0 metric raw and after `morphology.trim_answers`, both for the span analysed
alone and inside a few words of its context.  The same trimming is also applied to the unmodified gold answers:
every gold answer it changes is a potential regression on a correct prediction.

The tag rules in morphology.py were chosen by looking at these numbers, so the post-processed scores here are
tuned on this very set; a held-out check needs another split.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import morphology  # noqa: E402
from korquad_metric import evaluate, gold_answers  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV = os.path.join(REPO, "data", "korquad", "KorQuAD_v1.0_dev.json")
RESULT = os.path.join(REPO, "bench", "results", "morph_korquad.json")


def word_extended_examples(dataset: list, limit: int | None = None) -> list[dict]:
    """One record per question: first gold answer, its offset, and the span extended to the end of its word."""
    out = []
    for article in dataset:
        for para in article["paragraphs"]:
            context = para["context"]
            for qa in para["qas"]:
                ans = qa["answers"][0]
                start, text = ans["answer_start"], ans["text"]
                if context[start:start + len(text)] != text:
                    raise ValueError(f"{qa['id']}: answer_start {start} does not point at {text!r}")
                end = start + len(text)
                while end < len(context) and not context[end].isspace():
                    end += 1
                out.append({"id": qa["id"], "context": context, "start": start, "gold": text,
                            "extended": context[start:end]})
                if limit is not None and len(out) >= limit:
                    return out
    return out


def score_run(examples, gold, analyzer, field: str, context_words: int | None) -> dict:
    """Official EM/F1 of `field` spans, post-processed unless context_words is None, and how many changed."""
    raw = [ex[field] for ex in examples]
    if context_words is None:
        preds = raw
    elif context_words < 0:
        preds = morphology.trim_answers([(t, None, None) for t in raw], analyzer)
    else:
        preds = morphology.trim_answers([(t, ex["context"], ex["start"]) for t, ex in zip(raw, examples)],
                                        analyzer, context_words=context_words)
    scores = evaluate(gold, {ex["id"]: p for ex, p in zip(examples, preds)})
    changed = [(ex["id"], r, p) for ex, r, p in zip(examples, raw, preds) if p != r]
    return {"exact_match": round(scores["exact_match"], 2), "f1": round(scores["f1"], 2),
            "changed": len(changed), "changed_pct": round(100.0 * len(changed) / len(examples), 2),
            "changed_examples": changed[:20]}


def atomic_write_json(path: str, obj) -> None:
    # local copy: train_utils has one too, but importing it pulls in torch, which this bench does not need
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev_file", default=DEV, help="KorQuAD 1.0 dev JSON")
    parser.add_argument("--output", default=RESULT, help="where to write the results JSON")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions (quick look)")
    parser.add_argument("--context_words", type=int, default=morphology.CONTEXT_WORDS,
                        help="words of context analysed either side of the span for the in-context rows")
    args = parser.parse_args(argv)
    try:
        with open(args.dev_file, encoding="utf-8") as f:
            dataset = json.load(f)["data"]
        examples = word_extended_examples(dataset, args.limit)
        analyzer = morphology.load_analyzer("kiwi")
    except (ValueError, FileNotFoundError, OSError, KeyError, morphology.MissingAnalyzerError) as e:
        print(f"error: {args.dev_file}: {e}", file=sys.stderr)
        sys.exit(2)
    gold = gold_answers(dataset)
    if args.limit is not None:
        gold = {ex["id"]: gold[ex["id"]] for ex in examples}

    t0 = time.time()
    rows = []
    for field, label in (("extended", "gold extended to word end"), ("gold", "gold (unmodified)")):
        for cw, how in ((None, "none"), (-1, "morph, span alone"), (args.context_words, "morph, in context")):
            r = score_run(examples, gold, analyzer, field, cw)
            rows.append({"spans": label, "postprocess": how, **r})
    seconds = time.time() - t0

    print(f"KorQuAD 1.0 dev, {len(examples)} questions, kiwipiepy {_kiwi_version()}, {seconds:.1f} s\n")
    print("| spans | post-processing | EM | F1 | spans changed |")
    print("|:--|:--|--:|--:|--:|")
    for r in rows:
        print(f"| {r['spans']} | {r['postprocess']} | {r['exact_match']:.2f} | {r['f1']:.2f} | "
              f"{r['changed']} ({r['changed_pct']:.2f}%) |")
    result = {
        "date": datetime.date.today().isoformat(),
        "kiwipiepy": _kiwi_version(),
        "dataset": os.path.relpath(args.dev_file, REPO),
        "questions": len(examples),
        "context_words": args.context_words,
        "strip_tags": {"prefixes": list(morphology.STRIP_TAG_PREFIXES), "tags": sorted(morphology.STRIP_TAGS)},
        "note": "rules chosen on KorQuAD dev: these post-processed scores are tuned on the set they are measured on",
        "seconds": round(seconds, 1),
        "rows": rows,
    }
    atomic_write_json(args.output, result)
    print(f"\nwrote {args.output}")
    return result


def _kiwi_version() -> str:
    import kiwipiepy
    return kiwipiepy.__version__


if __name__ == "__main__":
    main()
