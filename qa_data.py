"""KorQuAD 1.0 (SQuAD 1.x format) for extractive QA: reading, sliding-window features, a feature cache, and
the n-best post-processing that maps start/end logits back to substrings of the original context.

No torch here: the scripts turn the numpy feature arrays into tensors themselves.

    examples, skipped = read_korquad("data/korquad/KorQuAD_v1.0_dev.json", is_training=False)
    feats, n_unmappable, cache_path, cached = load_or_build_features(examples,
        "data/korquad/KorQuAD_v1.0_dev.json", "vocab.txt", do_lower_case=False, morph_analyzer=None,
        max_seq_length=512, doc_stride=64, max_query_length=64, is_training=False, max_examples=None,
        cache_dir="runs/cache")
    preds, nbest, answer_starts = postprocess_predictions(examples, feats, start_logits, end_logits, 20, 30)
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import zipfile
from dataclasses import dataclass, fields

import numpy as np

import tokenization
from fileio import atomic_write, file_sha256

# the windows' shape when neither a flag nor the checkpoint's qa_train.json gives it (the release's values)
WINDOW_DEFAULTS = {"max_seq_length": 512, "doc_stride": 128, "max_query_length": 64}


def add_qa_args(parser, windows_from_checkpoint: bool = False):
    """Flags shared by run_qa.py and eval_qa.py (feature building, decoding, evaluation data).
    windows_from_checkpoint: the window flags default to None, for the checkpoint's own (eval_qa.py)."""
    g = parser.add_argument_group("question answering")
    g.add_argument("--predict_file", default=None, help="KorQuAD 1.0 JSON to predict on (dev set)")
    where = " (default: as the checkpoint was fine-tuned, from its qa_train.json; else {})"
    for flag, help in (("max_seq_length", "[CLS] question [SEP] window [SEP] length"),
                       ("doc_stride", "step between context windows, in tokens"),
                       ("max_query_length", "questions are cut to this many tokens")):
        default = WINDOW_DEFAULTS[flag]
        g.add_argument(f"--{flag}", type=int, default=None if windows_from_checkpoint else default,
                       help=help + (where.format(default) if windows_from_checkpoint else ""))
    g.add_argument("--max_answer_length", type=int, default=30, help="longest predicted answer, in tokens")
    g.add_argument("--n_best_size", type=int, default=20, help="start/end candidates kept per window")
    g.add_argument("--batch_size", "--eval_batch_size", dest="batch_size", type=int, default=16,
                   help="evaluation batch size per device (--eval_batch_size: the classifier scripts' spelling)")
    g.add_argument("--max_eval_examples", type=int, default=None,
                   help="use only the first N questions of --predict_file (debugging)")
    g.add_argument("--cache_dir", default=None,
                   help="where tokenised features are cached (default: a cache/ folder beside --output_dir)")
    # the release's flag: it logged where its answer-text alignment fell back to whole words; answers here are
    # the context's characters between token offsets, which has no such fallback to report
    g.add_argument("--verbose_logging", action="store_true",
                   help="accepted for the release's command lines; changes nothing")
    return g


def check_qa_args(args) -> list[str]:
    """Raise ValueError naming the flag for settings that cannot produce a single valid window; return warnings
    for settings that work but lose something."""
    if args.max_query_length < 1:
        raise ValueError("--max_query_length must be at least 1")
    if args.max_seq_length < args.max_query_length + 4:
        raise ValueError(f"--max_seq_length {args.max_seq_length} leaves no room for the context: it must be at "
                         f"least --max_query_length + 4 = {args.max_query_length + 4}")
    for flag in ("doc_stride", "max_answer_length", "n_best_size", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1")
    if args.max_eval_examples is not None and args.max_eval_examples < 1:
        raise ValueError(f"--max_eval_examples {args.max_eval_examples} must be at least 1")
    shortest = args.max_seq_length - args.max_query_length - 3  # a window's context beside the longest question
    if args.doc_stride >= shortest:
        # _windows then steps by a window's length (as google-research/bert does): no overlap, and an answer
        # that crosses from one window into the next is in neither
        return [f"--doc_stride {args.doc_stride} is not shorter than a window's context ({shortest} tokens beside "
                f"a {args.max_query_length}-token question): for such questions the windows do not overlap, and "
                "an answer across two of them cannot be found"]
    return []


# ----------------------------------------------------------------------------------------------------------------
# reading

@dataclass
class QAExample:
    qid: str
    question: str
    context: str
    answers: list          # every gold answer text (scoring)
    answer_start: int = -1  # character offset of the first answer in `context` (training)
    answer_text: str = ""


def load_squad_json(path: str, answers_optional: bool = False) -> list:
    """The `data` list of a KorQuAD 1.0 / SQuAD 1.x file, with its layout checked (errors name the file).
    answers_optional: a question without an "answers" key reads as unlabelled (a test set to predict); else it is
    an error (a training or scored file)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is skipped
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise ValueError(f"{path}: not a KorQuAD 1.0 / SQuAD 1.x file (no top-level \"data\" list)")
    version = str(obj.get("version", ""))
    if version.startswith(("KorQuAD_2", "KorQuAD_v2", "v2")):
        raise ValueError(f"{path}: version {version!r} is a 2.0 dataset; only KorQuAD 1.0 (SQuAD 1.x format) is read")
    n_questions = 0
    for i, article in enumerate(obj["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise ValueError(f"{path}: article {i} has no \"paragraphs\" list (not the KorQuAD 1.0 / SQuAD 1.x "
                             f"layout; KorQuAD 2.0 files have another)")
        for para in article["paragraphs"]:
            if not isinstance(para, dict) or not isinstance(para.get("context"), str) \
                    or not isinstance(para.get("qas"), list):
                raise ValueError(f"{path}: article {i} has a paragraph without a \"context\" string and \"qas\" list")
            for qa in para["qas"]:
                needed = ("id", "question") if answers_optional else ("id", "question", "answers")
                if not isinstance(qa, dict) or not all(k in qa for k in needed):
                    raise ValueError(f"{path}: article {i} has a question without " +
                                     " and ".join(f'"{k}"' for k in needed))
                if answers_optional:
                    qa.setdefault("answers", [])
                if qa.get("is_impossible"):
                    raise ValueError(f"{path}: question {qa['id']!r} is marked unanswerable (SQuAD 2.0 style), "
                                     f"which KorQuAD 1.0 fine-tuning does not support")
                _check_question(path, qa)
                n_questions += 1
    if n_questions == 0:
        raise ValueError(f"{path}: contains no questions")
    return obj["data"]


def _check_question(path: str, qa: dict):
    """Types of one question's fields, checked here so that a malformed file fails naming the question, not with a
    TypeError/KeyError in the reader or deep inside the tokenizer."""
    qid = qa["id"]
    if not isinstance(qid, (str, int)) or isinstance(qid, bool):
        raise ValueError(f"{path}: question id {qid!r} is neither a string nor an integer")
    if not isinstance(qa["question"], str):
        raise ValueError(f"{path}: question {qid!r}: \"question\" is {type(qa['question']).__name__}, not a string")
    answers = qa["answers"]
    if not isinstance(answers, list) or not all(isinstance(a, dict) and isinstance(a.get("text"), str)
                                                for a in answers):
        raise ValueError(f"{path}: question {qid!r}: \"answers\" must be a list of objects with a \"text\" string")


def split_by_article(path: str, eval_fraction: float, seed: int = 0) -> tuple[dict, dict]:
    """(train, eval) KorQuAD 1.0 objects holding disjoint sets of `path`'s articles, eval ~ eval_fraction of them.

    Whole articles go to one side, so no context (and no near-duplicate question about it) is seen on both;
    the choice depends only on (seed, number of articles). Used to train and score on the dev set alone when
    the training set is not at hand.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
    data = load_squad_json(path)
    if len(data) < 2:
        raise ValueError(f"{path}: {len(data)} article(s) cannot be split by article")
    n_eval = min(len(data) - 1, max(1, round(eval_fraction * len(data))))
    eval_idx = set(np.random.default_rng(seed).permutation(len(data))[:n_eval].tolist())
    version = "KorQuAD_v1.0"
    return ({"version": version, "data": [a for i, a in enumerate(data) if i not in eval_idx]},
            {"version": version, "data": [a for i, a in enumerate(data) if i in eval_idx]})


def read_korquad(path: str, is_training: bool, max_examples: int | None = None):
    """(examples, n_skipped) in file order, cut to the first `max_examples` questions.

    For training, a question whose first answer is not found verbatim at its answer_start (or has no answer)
    is skipped and counted, since its labels would point at the wrong tokens; a first answer whose answer_start
    is not an integer at all is a broken file (ValueError naming the question), not a mislabelled question.
    """
    examples, skipped, seen = [], 0, set()
    for article in load_squad_json(path, answers_optional=not is_training):
        for para in article["paragraphs"]:
            context = para["context"]
            for qa in para["qas"]:
                if max_examples is not None and len(examples) + skipped >= max_examples:
                    return examples, skipped
                qid = str(qa["id"])
                if qid in seen:
                    raise ValueError(f"{path}: question id {qid!r} occurs twice")
                seen.add(qid)
                ex = QAExample(qid, qa["question"], context, [a["text"] for a in qa["answers"]])
                if is_training:
                    if not qa["answers"]:
                        skipped += 1
                        continue
                    text, start = qa["answers"][0]["text"], qa["answers"][0].get("answer_start")
                    if not isinstance(start, int) or isinstance(start, bool):
                        raise ValueError(f"{path}: question {qid!r}: the first answer's \"answer_start\" is "
                                         f"{start!r}, not an integer offset into the context")
                    if start < 0 or context[start:start + len(text)] != text or not text.strip():
                        skipped += 1
                        continue
                    ex.answer_start, ex.answer_text = start, text
                examples.append(ex)
    return examples, skipped


# ----------------------------------------------------------------------------------------------------------------
# features

@dataclass
class QAFeatures:
    """One row per context window; token-level arrays are [N, max_seq_length]."""
    input_ids: np.ndarray        # int32, [CLS] question [SEP] window [SEP] then padding
    token_type_ids: np.ndarray   # int8, 1 on the window and its closing [SEP]
    attention_mask: np.ndarray   # int8, 1 on real tokens
    example_index: np.ndarray    # int32 [N], index into the examples list
    offsets: np.ndarray          # int32 [N, T, 2], (char_start, char_end) in the context; -1 off the window
    max_context: np.ndarray      # bool, the token sees more context in this window than in any other
    start_positions: np.ndarray  # int32 [N]; 0 ([CLS]) when the window does not contain the answer
    end_positions: np.ndarray

    def __len__(self):
        return len(self.example_index)

    def arrays(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _windows(n_tokens: int, max_len: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) windows over n_tokens, each max_len long, advancing by stride; the last one ends at n."""
    spans, start = [], 0
    while start < n_tokens:
        length = min(max_len, n_tokens - start)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, stride)
    return spans


def _best_window(n_tokens: int, spans) -> np.ndarray:
    """For each context token, the window where it has the most context on its shorter side (ties: earlier window)."""
    best_score = np.full(n_tokens, -np.inf)
    best = np.zeros(n_tokens, dtype=np.int32)
    for w, (s, length) in enumerate(spans):
        pos = np.arange(length)
        score = np.minimum(pos, length - 1 - pos) + 0.01 * length
        better = score > best_score[s:s + length]
        best_score[s:s + length][better] = score[better]
        best[s:s + length][better] = w
    return best


def convert_examples_to_features(examples, tokenizer, special_ids: dict, max_seq_length: int, doc_stride: int,
                                 max_query_length: int, is_training: bool) -> tuple[QAFeatures, int]:
    """(features, n_unmappable). `tokenizer` is a `tokenizers.Tokenizer` adding no special tokens.

    Each distinct context is tokenised once with character offsets; the answer's character span becomes the
    first and last tokens overlapping it. Training answers that cover no token at all are counted and dropped.
    """
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    ctx_index = {c: i for i, c in enumerate(contexts)}
    # tokenised in NFC, offsets mapped back: `tokenizers` gives offsets that stop inside a syllable for decomposed
    # (NFD) Hangul, e.g. text saved on macOS, which would cut answers short
    composed = [tokenization.nfc_with_spans(c) for c in contexts]
    ctx_enc = tokenizer.encode_batch([nfc for nfc, _ in composed], add_special_tokens=False)
    ctx_ids = [np.asarray(e.ids, dtype=np.int32) for e in ctx_enc]
    ctx_offs = [tokenization.original_offsets(np.asarray(e.offsets, dtype=np.int32).reshape(-1, 2), spans)
                for e, (_, spans) in zip(ctx_enc, composed)]
    q_enc = tokenizer.encode_batch([ex.question for ex in examples], add_special_tokens=False)

    plan = []  # (example index, question ids, context index, windows, answer token span)
    unmappable = 0
    for i, ex in enumerate(examples):
        q_ids = q_enc[i].ids[:max_query_length]
        c = ctx_index[ex.context]
        tok_span = None
        if is_training:
            a_start, a_end = ex.answer_start, ex.answer_start + len(ex.answer_text)
            offs = ctx_offs[c]
            hit = np.nonzero((offs[:, 0] < a_end) & (offs[:, 1] > a_start))[0]
            if len(hit) == 0:
                unmappable += 1
                continue
            tok_span = (int(hit[0]), int(hit[-1]))
        spans = _windows(len(ctx_ids[c]), max_seq_length - len(q_ids) - 3, doc_stride)
        plan.append((i, q_ids, c, spans, tok_span))

    n = sum(len(p[3]) for p in plan)
    T = max_seq_length
    feats = QAFeatures(
        input_ids=np.full((n, T), special_ids["pad"], dtype=np.int32),
        token_type_ids=np.zeros((n, T), dtype=np.int8),
        attention_mask=np.zeros((n, T), dtype=np.int8),
        example_index=np.zeros(n, dtype=np.int32),
        offsets=np.full((n, T, 2), -1, dtype=np.int32),
        max_context=np.zeros((n, T), dtype=bool),
        start_positions=np.zeros(n, dtype=np.int32),
        end_positions=np.zeros(n, dtype=np.int32),
    )
    f = 0
    for i, q_ids, c, spans, tok_span in plan:
        best = _best_window(len(ctx_ids[c]), spans)
        c0 = len(q_ids) + 2  # first context position: after [CLS] question [SEP]
        for w, (s, length) in enumerate(spans):
            row = feats.input_ids[f]
            row[0] = special_ids["cls"]
            row[1:c0 - 1] = q_ids
            row[c0 - 1] = special_ids["sep"]
            row[c0:c0 + length] = ctx_ids[c][s:s + length]
            row[c0 + length] = special_ids["sep"]
            feats.token_type_ids[f, c0:c0 + length + 1] = 1
            feats.attention_mask[f, :c0 + length + 1] = 1
            feats.example_index[f] = i
            feats.offsets[f, c0:c0 + length] = ctx_offs[c][s:s + length]
            feats.max_context[f, c0:c0 + length] = best[s:s + length] == w
            if tok_span is not None and s <= tok_span[0] and tok_span[1] < s + length:
                feats.start_positions[f] = c0 + tok_span[0] - s
                feats.end_positions[f] = c0 + tok_span[1] - s
            f += 1
    return feats, unmappable


# ----------------------------------------------------------------------------------------------------------------
# cache

def feature_cache_key(data_file, vocab_file, do_lower_case, morph_analyzer, max_seq_length, doc_stride,
                      max_query_length, is_training, max_examples) -> str:
    """Hash of everything the features depend on: this module's code (an edited labelling or windowing rule must not
    reuse old features), the tokenizer's code and library version, and with a morphological analyser its wrapper's
    code and the analyser's versions (its cuts move WordPiece boundaries)."""
    import tokenizers

    parts = {
        "features_code": file_sha256(__file__), "data": file_sha256(data_file), "vocab": file_sha256(vocab_file),
        "do_lower_case": bool(do_lower_case), "morph_analyzer": morph_analyzer,
        "max_seq_length": max_seq_length, "doc_stride": doc_stride, "max_query_length": max_query_length,
        "is_training": bool(is_training), "max_examples": max_examples,
        "tokenizer_code": file_sha256(tokenization.__file__), "tokenizers": tokenizers.__version__,
    }
    if morph_analyzer:  # only then: editing morphology.py must not invalidate every plain cache
        import morphology  # imports no analyser itself, so this works without kiwipiepy
        parts["morphology_code"] = file_sha256(morphology.__file__)
        # kiwipiepy_model holds the analyser's weights, released separately from the code
        parts["analyzer_versions"] = {name: _package_version(name) for name in ("kiwipiepy", "kiwipiepy_model")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _package_version(name: str) -> str | None:
    # metadata, not an import: loading kiwipiepy is slow, and a missing one fails later with the install hint
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def save_features(feats: QAFeatures, path: str, key: str, extra: dict):
    """np.savez to a temporary file in the same directory, then rename: readers never see a partial cache."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def fill(tmp):
        with open(tmp, "wb") as f:  # a file object: given a name, np.savez would append .npz to it
            np.savez(f, cache_key=np.array(key), **{k: np.array(v) for k, v in extra.items()}, **feats.arrays())

    atomic_write(path, fill)


def load_features(path: str, key: str):
    """(features, extra ints) from a cache file, or None when it is missing, stale or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["cache_key"]) != key:
                return None
            feats = QAFeatures(**{f.name: z[f.name] for f in fields(QAFeatures)})
            return feats, int(z["n_unmappable"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def load_or_build_features(examples, data_file, vocab_file, do_lower_case, morph_analyzer, max_seq_length,
                           doc_stride, max_query_length, is_training, max_examples, cache_dir, write_cache=True):
    """(features, n_unmappable, cache_path, from_cache); cache_dir None disables caching."""
    path = None
    if cache_dir:
        key = feature_cache_key(data_file, vocab_file, do_lower_case, morph_analyzer, max_seq_length, doc_stride,
                                max_query_length, is_training, max_examples)
        split = "train" if is_training else "eval"
        path = os.path.join(cache_dir, f"korquad-{split}-{key[:20]}.npz")
        hit = load_features(path, key) if os.path.exists(path) else None
        if hit is not None:
            return hit[0], hit[1], path, True
    tokenizer = tokenization.build_fast_tokenizer(vocab_file, do_lower_case=do_lower_case,
                                                  morph_analyzer=morph_analyzer)
    special = tokenization.special_token_ids(tokenization.load_vocab(vocab_file))
    feats, unmappable = convert_examples_to_features(examples, tokenizer, special, max_seq_length, doc_stride,
                                                     max_query_length, is_training)
    if path and write_cache:
        save_features(feats, path, key, {"n_unmappable": unmappable})
    return feats, unmappable, path, False


# ----------------------------------------------------------------------------------------------------------------
# post-processing: logits → answer strings

def postprocess_predictions(examples, feats: QAFeatures, start_logits: np.ndarray, end_logits: np.ndarray,
                            n_best_size: int = 20, max_answer_length: int = 30):
    """({qid: answer}, {qid: n-best list}, {qid: answer's character offset in the context, -1 if none}).

    Candidates per window are the n_best_size best starts (context tokens that have their maximum context in
    this window) times the n_best_size best ends (context tokens), kept when end >= start and the span is at
    most max_answer_length tokens; they are ranked across windows by start + end logit. The answer is the
    original context substring between the span's character offsets, so spacing and characters are preserved.
    """
    n, T = start_logits.shape
    k = min(n_best_size, T)
    in_ctx = feats.offsets[:, :, 0] >= 0
    start_ok = in_ctx & feats.max_context
    # Rank only admissible positions so a window never loses its candidates to question or padding tokens.
    s_top = np.argsort(np.where(start_ok, -start_logits, np.inf), axis=1, kind="stable")[:, :k]
    e_top = np.argsort(np.where(in_ctx, -end_logits, np.inf), axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    s_valid, e_valid = start_ok[rows, s_top], in_ctx[rows, e_top]
    S, E = s_top[:, :, None], e_top[:, None, :]
    ok = s_valid[:, :, None] & e_valid[:, None, :] & (E >= S) & (E - S < max_answer_length)
    f_idx, i_idx, j_idx = np.nonzero(ok)
    starts, ends = s_top[f_idx, i_idx], e_top[f_idx, j_idx]
    s_logit = start_logits[f_idx, starts].astype(np.float64)
    e_logit = end_logits[f_idx, ends].astype(np.float64)
    ex_idx = feats.example_index[f_idx]
    order = np.lexsort((-(s_logit + e_logit), ex_idx))  # by example, then best score first
    bounds = np.searchsorted(ex_idx[order], np.arange(len(examples) + 1))

    predictions, nbest, answer_starts = {}, {}, {}
    for e, ex in enumerate(examples):
        seen, entries = set(), []
        for c in order[bounds[e]:bounds[e + 1]]:
            f, s, t = f_idx[c], starts[c], ends[c]
            text = ex.context[feats.offsets[f, s, 0]:feats.offsets[f, t, 1]]
            if text in seen:  # the same answer from overlapping windows or another occurrence
                continue
            seen.add(text)
            entries.append({"text": text, "start_logit": float(s_logit[c]), "end_logit": float(e_logit[c]),
                            "char_start": int(feats.offsets[f, s, 0])})
            if len(entries) == n_best_size:
                break
        if not entries:
            entries = [{"text": "", "start_logit": 0.0, "end_logit": 0.0, "char_start": -1}]
        scores = np.array([x["start_logit"] + x["end_logit"] for x in entries])
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        nbest[ex.qid] = [{"text": x["text"], "probability": float(p), "start_logit": x["start_logit"],
                          "end_logit": x["end_logit"]} for x, p in zip(entries, probs)]
        predictions[ex.qid] = entries[0]["text"]
        answer_starts[ex.qid] = entries[0]["char_start"]
    return predictions, nbest, answer_starts
