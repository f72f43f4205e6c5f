"""How much of the KorQuAD EM gap does morphological answer trimming close?  (KorQuAD 1.0 dev, no model needed)

    python bench/bench_morph_korquad.py            # the whole dev set, into bench/results/morph_korquad.json
    python bench/bench_morph_korquad.py --limit 1000 --context_words 0 --output /tmp/morph_quick.json
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
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import morphology  # noqa: E402
from fileio import atomic_write  # noqa: E402
from korquad_metric import evaluate, exact_match_score, gold_answers  # noqa: E402

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


def score_run(examples, gold, analyzer, field: str, mode: str, context_words: int, drop_parenthetical=True) -> dict:
    """Official EM/F1 of the `field` spans post-processed per `mode` (none | alone | context), and what changed."""
    raw = [ex[field] for ex in examples]
    if mode == "none":
        preds = raw
    else:
        items = [(t, ex["context"], ex["start"]) if mode == "context" else (t, None, None)
                 for t, ex in zip(raw, examples)]
        preds = morphology.trim_answers(items, analyzer, context_words=context_words,
                                        drop_parenthetical=drop_parenthetical)
    scores = evaluate(gold, {ex["id"]: p for ex, p in zip(examples, preds)})
    changed = [(ex["id"], r, p) for ex, r, p in zip(examples, raw, preds) if p != r]
    wrong = [(ex["id"], ex["gold"], r, p) for ex, r, p in zip(examples, raw, preds)
             if not max(exact_match_score(p, g) for g in gold[ex["id"]])]
    return {"exact_match": round(scores["exact_match"], 2), "f1": round(scores["f1"], 2),
            "changed": len(changed), "changed_pct": round(100.0 * len(changed) / len(examples), 2),
            "changed_examples": changed[:20],  # [id, raw span, post-processed]
            "wrong_examples": wrong[:20]}  # [id, first gold, raw span, post-processed], EM 0 against every gold


# A local copy of train_utils.fail: importing train_utils pulls in torch, which this bench does not need.
def fail(msg: str):
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def atomic_write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def fill(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
            f.write("\n")

    atomic_write(path, fill)


def main(argv=None):
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev_file", default=DEV, help="KorQuAD 1.0 dev JSON")
    parser.add_argument("--output", "--results_json", dest="output", default=RESULT,
                        help="where to write the results JSON")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions (quick look)")
    parser.add_argument("--context_words", type=int, default=morphology.CONTEXT_WORDS,
                        help="words of context analysed either side of the span for the in-context rows")
    args = parser.parse_args(argv)
    try:
        with open(args.dev_file, encoding="utf-8") as f:
            dataset = json.load(f)["data"]
        examples = word_extended_examples(dataset, args.limit)
    except FileNotFoundError:
        fail(f"--dev_file {args.dev_file} does not exist")
    except (ValueError, OSError, KeyError, TypeError) as e:
        fail(f"--dev_file {args.dev_file} is not a KorQuAD 1.0 JSON file ({e})")
    try:
        analyzer = morphology.load_analyzer("kiwi")
    except morphology.MissingAnalyzerError as e:
        fail(str(e))
    gold = gold_answers(dataset)
    if args.limit is not None:
        gold = {ex["id"]: gold[ex["id"]] for ex in examples}

    t0 = time.time()
    rows = []
    runs = (("none", True, "none"), ("alone", True, "morph, span alone"), ("context", True, "morph, in context"),
            ("context", False, "morph, in context, keep trailing (...)"))
    for field, label in (("extended", "gold extended to word end"), ("gold", "gold (unmodified)")):
        for mode, drop, how in runs:
            r = score_run(examples, gold, analyzer, field, mode, args.context_words, drop)
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
        "rules": {"strip_tag_prefixes": list(morphology.STRIP_TAG_PREFIXES),
                  "strip_tags": sorted(morphology.STRIP_TAGS),
                  "exceptions": "ETN kept after a verb stem or a verb- or adjective-forming suffix "
                                "(VV/VA/VX/XSV/XSA); an ending (E*) is not stripped when it directly follows a Hangul "
                                "non-predicate (a mis-split name)",
                  "bad_final_tag_prefixes": list(morphology.BAD_FINAL_PREFIXES),
                  "bad_final_tags": sorted(morphology.BAD_FINAL_TAGS),
                  "punctuation": "edge punctuation and unmatched brackets/quotes stripped, a bracket left open "
                                 "inside the span truncates it, balanced brackets kept, a trailing (...) gloss "
                                 "dropped unless the row says keep",
                  "unit_symbols_as_nouns": True},
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
