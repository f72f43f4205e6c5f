"""Answer-boundary post-processing (morphology.trim_answer) and the analyser wrapper it builds on."""
import json
import os
import sys
import unicodedata

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import morphology  # noqa: E402
from korquad_metric import evaluate, gold_answers  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV = os.path.join(REPO, "data", "korquad", "KorQuAD_v1.0_dev.json")


def test_missing_kiwipiepy_raises_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)  # makes `import kiwipiepy` fail
    morphology.load_analyzer.cache_clear()
    try:
        with pytest.raises(morphology.MissingAnalyzerError, match="pip install kiwipiepy"):
            morphology.load_analyzer("kiwi")
        assert morphology.analyzer_available("kiwi") is False
    finally:
        morphology.load_analyzer.cache_clear()  # later tests must get a real analyser, not the failure


def test_unknown_analyser_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown morphological analyser"):
        morphology.load_analyzer("mecab")


@pytest.fixture(scope="module")
def kiwi():
    pytest.importorskip("kiwipiepy")
    return morphology.load_analyzer("kiwi")


def trim(text, kiwi, **kw):
    return morphology.trim_answer(text, kiwi, **kw)


@pytest.mark.parametrize("raw, expected", [
    ("서울에서", "서울"), ("이순신은", "이순신"), ("1950년에", "1950년"), ("세종대왕이다", "세종대왕"),
    ("부산국제영화제에서", "부산국제영화제"), ("미네르바라는", "미네르바"),  # 라는 after a vowel: copula of length 0
    ("추신수와", "추신수"), ("BBC는", "BBC"), ("RDX라는", "RDX"), ("2위로", "2위"),
    ("3000 mAh이다.", "3000 mAh"), ("64%였다.", "64%"),
    ("거부했으며,", "거부"),  # verb-forming 하 + endings go, cut before the syllable 했 = 하 + 었
    ("공부하기를", "공부하기"), ("광년임", "광년"),  # a nominalised verb keeps its ETN; the copula's goes
])
def test_trailing_particles_endings_and_punctuation_are_trimmed(kiwi, raw, expected):
    assert trim(raw, kiwi) == expected


@pytest.mark.parametrize("raw", [
    # nouns whose last syllable looks like a particle (은, 이, 도, 과, 가, 로, 의), all KorQuAD dev gold answers
    "한국은행", "나이지리아", "오이", "강화도", "우루과이", "미켈란젤로", "그리스도", "세운상가", "민주주의",
    "수은", "천송이", "시나가와", "콜로라도", "플레이보이", "경부고속도로",
    # a verb answer: the only cut left would leave a bare stem (먹) or split a syllable
    "먹었다", "열린",
    # 황치훈 reads as 황치 + 후 + ㄴ(JX), and 훈 is one syllable: cutting before ㄴ would split it
    "황치훈",
    "달리기",  # ETN after a verb stem makes a noun
    "공부하기", "행복하기",  # ... and after a verb- or adjective-forming suffix (하/XSV, 하/XSA)
])
def test_nouns_and_unsplittable_words_are_kept(kiwi, raw):
    assert trim(raw, kiwi) == raw


@pytest.mark.parametrize("raw, expected", [
    ("", ""),
    ("BERT", "BERT"), ("Boney M.", "Boney M."), ("GPT-3", "GPT-3"),  # no Hangul; a Latin abbreviation keeps its dot
    ("漢字", "漢字"), ("實用政府", "實用政府"),  # Hanja only
    ("3.5%", "3.5%"), ("1,000원", "1,000원"), ("50%를", "50%"), ("1,000원을", "1,000원"),  # numbers with units
    ("《토지》", "《토지》"), ("《토지》를", "《토지》"), ("'토지'에서", "'토지'"),  # balanced quotes stay
    ("페인팅\"이라", "페인팅"), ("연산군)을", "연산군"), ("2015)으로", "2015"),  # unmatched ones go
    ("김경숙(당시", "김경숙"),  # the span ran into a parenthesis that closes later
    ("이유원(李裕元)의", "이유원"),  # a trailing gloss is dropped (the KorQuAD convention, 5 times in 6)
    ("Jai Ho!'와", "Jai Ho!"), ("  서울에서,  ", "서울"),
])
def test_bad_and_unusual_input(kiwi, raw, expected):
    assert trim(raw, kiwi) == expected


ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


@pytest.mark.parametrize("zw", ZERO_WIDTH)
def test_zero_width_characters_at_the_edges_go_like_whitespace(zw):
    """str.isspace() is False for these; left on a span's edge they make an exact match fail invisibly. The analyser
    is a stand-in that finds no morphemes, so only the edge stripping is under test (and kiwipiepy is not needed)."""
    class NoMorphemes:
        def morphemes_batch(self, texts, units_as_nouns=False):
            return [[] for _ in texts]
    assert morphology.trim_answers([(f"{zw}서울{zw}", None, None), (f"서울{zw} ", None, None), (zw, None, None),
                                    (f"서울{zw}시", None, None)], NoMorphemes()) == ["서울", "서울", zw, f"서울{zw}시"]


@pytest.mark.parametrize("zw", ZERO_WIDTH)
def test_zero_width_characters_do_not_block_particle_trimming(kiwi, zw):
    assert trim(f"서울에서{zw}", kiwi) == "서울" and trim(f"{zw}세종대왕이다.{zw}", kiwi) == "세종대왕"


def test_trailing_gloss_can_be_kept(kiwi):
    assert morphology.trim_answers([("이유원(李裕元)의", None, None)], kiwi, drop_parenthetical=False) \
        == ["이유원(李裕元)"]
    assert trim("색도(hue)와 채도(saturation)", kiwi) == "색도(hue)와 채도(saturation)"  # glosses are the style here


@pytest.mark.parametrize("raw", ["은", "이다", "에서", "   ", "...", "()", "’", "-", "를."])
def test_never_returns_an_empty_answer(kiwi, raw):
    out = trim(raw, kiwi)
    assert out  # a span of nothing but particles/punctuation comes back as it was rather than as ""
    assert out == raw or (out.strip() and out in raw)


def test_context_disambiguates(kiwi):
    context = "임종석이 서울에서 열린 집회에 참석했다."
    start = context.index("서울에서")
    assert trim("서울에서", kiwi, context=context, start=start) == "서울"
    assert trim("서울", kiwi, context=context, start=start) == "서울"  # the rest of the word is seen, not cut
    # a dev gold answer: alone kiwi reads 발랑시 + 에(JKB) + ㄴ(JX); followed by 과의 it is read as one name
    context = "그는 발랑시엔과의 경기에서 골을 넣었다."
    assert trim("발랑시엔", kiwi) == "발랑시"
    assert trim("발랑시엔", kiwi, context=context, start=context.index("발랑시엔")) == "발랑시엔"
    with pytest.raises(ValueError, match="not found at offset"):
        trim("서울에서", kiwi, context=context, start=start + 1)


def test_postprocess_predictions(kiwi):
    preds = {"q1": "서울에서", "q2": "한국은행", "q3": ""}
    assert morphology.postprocess_predictions(preds, kiwi) == {"q1": "서울", "q2": "한국은행", "q3": ""}
    context = "그는 서울에서 태어났다."
    out = morphology.postprocess_predictions({"q1": "서울에서"}, kiwi, contexts={"q1": (context, 3)})
    assert out == {"q1": "서울"}


def test_morphemes_batch_matches_single_calls(kiwi):
    texts = ["서울에서 열린", "", "이순신은", "   ", "BERT는"]
    assert kiwi.morphemes_batch(texts) == [kiwi.morphemes(t) for t in texts]


def _dev_sample(n=600):
    # 600 rather than 300: on the whole dev set about 1.4-1.8% of gold answers change, and a 300-question estimate of
    # that rate is too noisy to hold against a 3% bound (one such sample measured 10/300)
    with open(DEV, encoding="utf-8") as f:
        dataset = json.load(f)["data"]
    qas = [(para["context"], qa) for art in dataset for para in art["paragraphs"] for qa in para["qas"]]
    step = len(qas) // n  # spread over all articles, fixed
    out = []
    for context, qa in qas[::step][:n]:
        ans = qa["answers"][0]
        start, end = ans["answer_start"], ans["answer_start"] + len(ans["text"])
        while end < len(context) and not context[end].isspace():
            end += 1
        out.append({"id": qa["id"], "context": context, "start": start, "gold": ans["text"],
                    "extended": context[start:end]})
    return gold_answers(dataset), out


def test_cuts_fall_on_morpheme_boundaries_of_the_raw_span(kiwi):
    """Wherever a trimmed answer ends between two Hangul syllables, the span's own analysis starts a morpheme there
    and no morpheme runs across it."""
    _, sample = _dev_sample()
    raws = [ex["extended"] for ex in sample]
    outs = morphology.trim_answers([(r, None, None) for r in raws], kiwi)
    checked = 0
    for raw, out, morphs in zip(raws, outs, kiwi.morphemes_batch(raws, units_as_nouns=True)):
        assert out and out in raw
        cut = raw.index(out) + len(out)
        if 0 < cut < len(raw) and all("\uac00" <= ch <= "\ud7a3" for ch in raw[cut - 1:cut + 1]):
            checked += 1
            assert any(s == cut for s, _, _ in morphs)
            assert not any(s < cut < e for s, e, _ in morphs)
    assert checked > 50


def test_decomposed_hangul_is_trimmed_as_its_nfc_form(kiwi):
    """A context in NFD (a file saved on macOS): kiwi reads only composed syllables, so the analysis runs on the NFC
    text and its offsets come back onto the given one. The spans trimmed in an NFD context are the NFD of those
    trimmed in the NFC context (before: 서울에서 came back whole, the word read as one unknown noun)."""
    _, sample = _dev_sample(200)
    nfd = [unicodedata.normalize("NFD", ex["context"]) for ex in sample]
    starts = [len(unicodedata.normalize("NFD", ex["context"][:ex["start"]])) for ex in sample]
    words = [unicodedata.normalize("NFD", ex["extended"]) for ex in sample]
    composed = morphology.trim_answers([(ex["extended"], ex["context"], ex["start"]) for ex in sample], kiwi)
    decomposed = morphology.trim_answers(list(zip(words, nfd, starts)), kiwi)
    assert sum(c != ex["extended"] for c, ex in zip(composed, sample)) > 100  # trimming happened
    assert [unicodedata.normalize("NFD", c) for c in composed] == decomposed
    assert trim(unicodedata.normalize("NFD", "서울에서"), kiwi) == unicodedata.normalize("NFD", "서울")
    text = unicodedata.normalize("NFD", "서울에서 열린")  # offsets index the text given
    assert [(s, e) for s, e, _ in kiwi.morphemes(text)] == [(0, 5), (5, 9), (10, 16), (13, 16)]


def test_dev_sample_regression_guard(kiwi):
    """On 600 real dev questions: trimming leaves gold answers (nearly) alone and fixes word-extended spans."""
    gold, sample = _dev_sample()
    gold = {ex["id"]: gold[ex["id"]] for ex in sample}
    for use_context in (False, True):
        def items(field):
            return [(ex[field], ex["context"] if use_context else None, ex["start"] if use_context else None)
                    for ex in sample]
        trimmed_gold = morphology.trim_answers(items("gold"), kiwi)
        changed = sum(t != ex["gold"] for t, ex in zip(trimmed_gold, sample))
        assert changed <= 0.03 * len(sample), (use_context, changed)

        raw = evaluate(gold, {ex["id"]: ex["extended"] for ex in sample})
        post = evaluate(gold, dict(zip((ex["id"] for ex in sample), morphology.trim_answers(items("extended"), kiwi))))
        assert raw["exact_match"] < 40  # the sample does show the problem
        assert post["exact_match"] >= raw["exact_match"] + 40 and post["exact_match"] >= 64, (raw, post)
        assert post["f1"] > raw["f1"]


def test_a_trailing_tilde_is_trimmed(kiwi):
    assert trim("서울~", kiwi) == "서울"


def test_answers_are_analysed_with_their_neighbouring_words():
    """The analyser sees the answer inside its context (the words around it change how it is tagged), not alone."""
    seen = []

    class Recorder:
        def morphemes_batch(self, texts, units_as_nouns=False):
            seen.extend(texts)
            return [[] for _ in texts]
    context = "a b c 서울에서 d e f"
    morphology.trim_answers([("서울에서", context, context.index("서울에서"))], Recorder())
    assert "b c 서울에서 d e" in seen[0]
    # how many (_context_window): a span that is whole words gets CONTEXT_WORDS + 1 words each side; one that cuts
    # into a word gets the rest of that word and CONTEXT_WORDS more
    assert morphology.CONTEXT_WORDS == 2
    context = "v w x y z 서울에서 p q r s t"
    seen.clear()
    morphology.trim_answers([("서울에서", context, context.index("서울에서")),
                             ("울에", context, context.index("울에"))], Recorder())
    assert seen == ["x y z 서울에서 p q r", "y z 서울에서 p q"]


def test_boundaries_are_inner_cuts_between_whole_morphemes(kiwi):
    """boundaries: offsets strictly inside the text (no 0, no len) where a morpheme starts and none is cut in two
    (열린 = 열리 + ㄴ shares a syllable: no cut at 1)."""
    for text in ("서울에서 열린", "세종대왕이다", "가", "먹었다", "한국은행에서"):
        spans = kiwi.morphemes(text)
        cuts = kiwi.boundaries(text)
        assert cuts == sorted(set(cuts)) and all(0 < c < len(text) for c in cuts), text
        assert all(any(s == c for s, _, _ in spans) and not any(s < c < e for s, e, _ in spans) for c in cuts)
    assert kiwi.boundaries("서울에서") == [2]


def test_a_stripped_leading_blank_does_not_hide_the_noun_before_the_particle(kiwi):
    """kiwi reads some names across a space (메이지 천황 as one NNP); that morpheme starts before a span that begins at
    the space, and once the blank is stripped it still ends where the particle starts (before: 천황을 came back)."""
    context = "메이지 천황을 포장했다."
    start = context.index(" 천황을")
    assert trim(" 천황을", kiwi, context=context, start=start) == "천황"
    assert trim("천황을", kiwi, context=context, start=start + 1) == "천황"
    assert trim("\u200b천황을", kiwi, context=context.replace(" 천황", "\u200b천황"), start=start) == "천황"


def test_context_without_spaces_is_cut_to_a_bounded_window(kiwi):
    """A context side without spaces was analysed whole (kiwi's time grows faster than its length: 12.6 s for one
    answer beside 40,000 characters); each side is capped at CONTEXT_CHARS and the trimmed answer is unchanged."""
    seen = []

    class Recorder:
        def morphemes_batch(self, texts, units_as_nouns=False):
            seen.extend(texts)
            return kiwi.morphemes_batch(texts, units_as_nouns=units_as_nouns)
    run = "가" * 5000
    context = f"{run} 서울에서 {run}"
    assert morphology.trim_answers([("서울에서", context, context.index("서울에서"))], Recorder()) == ["서울"]
    assert len(seen[0]) == len("서울에서") + 2 * morphology.CONTEXT_CHARS
    assert "서울에서" in seen[0]
