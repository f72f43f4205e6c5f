"""create_pretraining_data.py on real Korean text: shard contents against the fast tokenizer, offsets, per-document
sources, determinism across worker counts, meta/summary counts, sentence splitting, overlong lines, the one-line
errors for bad input, and an --overwrite that points at someone else's folder. Stopping (dead workers, signals,
stale temp dirs): test_corpus_prep_stops.py."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import corpus_tasks
import create_pretraining_data as cpd
import tokenization
from helpers import corpus_prep_files, expect_fail, file_digests, text_lines
from pretraining_data import read_meta, shard_path, unpack_bits


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return corpus_prep_files(tmp_path_factory.mktemp("cpd"))


def run(argv):
    return cpd.main([str(a) for a in argv])


def load_shards(out):
    meta = read_meta(out)
    arrays = {part: [np.load(shard_path(out, s["name"], part)) for s in meta["shards"]]
              for part in ("ids", "word_start", "sentences", "documents", "sources")}
    return meta, arrays


def token_sources(arrays, k):
    """The input-file index of every token of shard k."""
    sent_off, doc_off = arrays["sentences"][k], arrays["documents"][k]
    return np.repeat(arrays["sources"][k], np.diff(sent_off[doc_off]))


def expected_documents(paths, sources=None):
    """Documents as lists of stripped non-blank lines, read independently of the script (universal newlines);
    `sources`, a list, gets each document's file index."""
    docs = []
    for k, path in enumerate(paths):
        cur = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    cur.append(line)
                elif cur:
                    docs.append(cur)
                    cur = []
        if cur:
            docs.append(cur)
        if sources is not None:
            sources.extend([k] * (len(docs) - len(sources)))
    return docs


@pytest.fixture(scope="module")
def plain(files):
    out = files["dir"] / "plain"
    meta = run(["--input_files", *files["inputs"], "--vocab_file", files["vocab"], "--output_dir", out,
                "--sentence_splitter", "none", "--num_workers", 1])
    return str(out), meta


def test_round_trip_ids_sentences_documents(files, plain):
    out, _ = plain
    meta, arr = load_shards(out)
    assert len(meta["shards"]) == 1 and meta["dtype"] == "uint16" and arr["ids"][0].dtype == np.uint16
    ids, sent_off, doc_off = arr["ids"][0], arr["sentences"][0], arr["documents"][0]
    tok = tokenization.build_fast_tokenizer(files["vocab"])
    sources = []
    docs = [[ln for ln in d if tok.encode(ln, add_special_tokens=False).ids]  # lines of only e.g. control chars
            for d in expected_documents(files["inputs"], sources)]
    sources = [k for k, d in zip(sources, docs) if d]
    docs = [d for d in docs if d]
    assert len(doc_off) - 1 == len(docs) == meta["num_documents"]
    assert arr["sources"][0].tolist() == sources and set(sources) == {0, 1}
    sentences = [s for d in docs for s in d]
    assert len(sent_off) - 1 == len(sentences) == meta["num_sentences"]
    assert sent_off[-1] == len(ids) == meta["num_tokens"]
    assert np.array_equal(np.diff(doc_off), [len(d) for d in docs])
    vocab = tokenization.load_vocab(files["vocab"])
    inv = {i: t for t, i in vocab.items()}
    ws = unpack_bits(arr["word_start"][0], 0, len(ids))
    for s, enc in enumerate(tok.encode_batch(sentences, add_special_tokens=False)):
        a, b = sent_off[s], sent_off[s + 1]
        assert ids[a:b].tolist() == enc.ids
        # word start = not a ## continuation (and every sentence starts a word)
        assert ws[a:b].tolist() == [i == 0 or not inv[t].startswith("##") for i, t in enumerate(enc.ids)]


def test_meta_summary_and_vocab_copy(files, plain):
    out, meta_ret = plain
    meta, arr = load_shards(out)
    assert meta == meta_ret
    s = meta["summary"]
    ids = np.concatenate(arr["ids"])
    unk = tokenization.special_token_ids(tokenization.load_vocab(files["vocab"]))["unk"]
    assert s["tokens"] == meta["num_tokens"] == len(ids) == sum(x["num_tokens"] for x in meta["shards"])
    assert s["unk_tokens"] == int((ids == unk).sum()) and s["unk_rate"] == pytest.approx((ids == unk).mean())
    assert s["documents"] == meta["num_documents"] and s["sentences"] == meta["num_sentences"]
    assert s["input_bytes"] == sum(os.path.getsize(p) for p in files["inputs"]) and s["mb_per_s"] > 0
    with open(os.path.join(out, "vocab.txt"), "rb") as f, open(files["vocab"], "rb") as g:
        assert f.read() == g.read()
    assert meta["vocab_sha256"] == hashlib.sha256(open(files["vocab"], "rb").read()).hexdigest()
    assert meta["vocab_size"] == 4000 and meta["do_lower_case"] is False and meta["morph_analyzer"] is None
    assert not [n for n in os.listdir(files["dir"]) if ".tmp-" in n]  # the temp dir was renamed, not left


def test_output_independent_of_worker_count_and_sharding(files):
    outs = {}
    for workers, shard_size in ((1, 10**9), (2, 10**9), (2, 20000)):
        out = files["dir"] / f"w{workers}_{shard_size}"
        run(["--input_files", *files["inputs"], "--vocab_file", files["vocab"], "--output_dir", out,
             "--sentence_splitter", "regex", "--num_workers", workers, "--task_chars", 8000,
             "--shard_size_tokens", shard_size])
        outs[workers, shard_size] = load_shards(str(out))
    (m1, a1), (m2, a2), (m3, a3) = outs.values()
    assert len(m1["shards"]) == 1 and len(m3["shards"]) > 2
    for part in a1:
        assert all(np.array_equal(x, y) for x, y in zip(a1[part], a2[part]))
    drop = ("seconds", "mb_per_s", "num_workers")
    assert {k: v for k, v in m1["summary"].items() if k not in drop} == \
           {k: v for k, v in m2["summary"].items() if k not in drop}
    # smaller shards: same token stream and sentences; a document open at a shard end continues in the next shard
    assert np.array_equal(np.concatenate(a3["ids"]), a1["ids"][0])
    assert np.array_equal(np.concatenate([token_sources(a3, k) for k in range(len(a3["ids"]))]), token_sources(a1, 0))
    assert np.array_equal(np.concatenate([np.diff(o) for o in a3["sentences"]]), np.diff(a1["sentences"][0]))
    assert all(20000 <= s["num_tokens"] for s in m3["shards"][:-1])
    cut = m3["summary"]["documents_cut_at_shard_end"]
    assert m3["num_documents"] == m1["num_documents"] + cut and cut >= 1
    ws = np.concatenate([unpack_bits(w, 0, len(i)) for w, i in zip(a3["word_start"], a3["ids"])])
    assert np.array_equal(ws, unpack_bits(a1["word_start"][0], 0, len(a1["ids"][0])))
    # a shard closes at the first sentence end at or past the limit: a limit that falls on a sentence end closes
    # the shard right there
    at = int(a1["sentences"][0][5])
    run(["--input_files", *files["inputs"], "--vocab_file", files["vocab"], "--output_dir", files["dir"] / "exact",
         "--sentence_splitter", "regex", "--num_workers", 1, "--shard_size_tokens", at])
    assert read_meta(str(files["dir"] / "exact"))["shards"][0]["num_tokens"] == at


def test_regex_splitter():
    text = "2010. 11. 12. 국회에 제출되었다. 정말 그럴까? 그렇다고 한다!  “좋다.” 끝"
    assert corpus_tasks.split_regex(text) == ["2010. 11. 12. 국회에 제출되었다.", "정말 그럴까?", "그렇다고 한다!",
                                     "“좋다.”", "끝"]
    assert corpus_tasks.split_regex("1. 총칙 제1조 목적") == ["1. 총칙 제1조 목적"]


def test_cut_at_partitions_the_line_where_each_piece_follows_the_last():
    """The splitter's sentences are looked up in the line after the end of the previous one: a piece whose text
    also occurs earlier cuts at its own place, and a piece repeating the previous one's tail (as kiwi may return)
    cuts nothing."""
    cases = [("나는 간다. 간다", ["나는 간다.", "간다"], ["나는 간다.", "간다"]),
             ("가나다", ["가나다", "다"], ["가나다"]),
             ("서울에 갔다. 서울에 왔다.", ["서울에 갔다.", "서울에 왔다."], ["서울에 갔다.", "서울에 왔다."]),
             ("하나. 둘.", ["하나.", "", "둘."], ["하나.", "둘."])]
    for line, pieces, want in cases:
        got = corpus_tasks.cut_at(line, pieces)
        assert got == want, line
        assert " ".join(got) == line


def test_kiwi_sentence_splitting_and_morph_word_starts(files, tmp_path):
    pytest.importorskip("kiwipiepy")
    from morphology import load_analyzer
    para = ("오바마는 2008년 11월 4일 대통령에 당선되었다 그는 2009년 1월 20일 취임하였다 "
            "취임식에는 많은 사람이 모였다.")
    # kiwi returns a 4th "sentence" here that repeats the last syllable; it must not be stored twice
    comment = "시즌2 만들어주세요. 이들 구성 다좋아 다시보고 싶어요...중대원들과 주인공 캐미 넘부러웠다욤"
    short = "짧은 줄이다."
    src = tmp_path / "k.txt"
    src.write_text(f"{para}\n{comment}\n{short}\n", encoding="utf-8")
    # the plain vocab serves: what is checked is how pieces of morpheme-split words are stored and marked
    vocab = files["vocab"]
    out = tmp_path / "morph"
    meta = run(["--input_files", src, "--vocab_file", vocab, "--output_dir", out, "--morph_analyzer", "kiwi",
                "--sentence_splitter", "kiwi", "--num_workers", 1])
    assert meta["morph_analyzer"] == "kiwi" and meta["sentence_splitter"] == "kiwi"
    kiwi = load_analyzer("kiwi")
    n_para = len(kiwi.split_sentences(para))
    assert n_para > 1  # kiwi cuts at the sentence endings even without punctuation
    _, arr = load_shards(str(out))
    ids, sent_off = arr["ids"][0], arr["sentences"][0]
    n_comment = len(sent_off) - 1 - n_para - 1
    assert n_comment >= 2
    tok = tokenization.build_fast_tokenizer(vocab, morph_analyzer="kiwi")
    first = np.cumsum([0, n_para, n_comment, 1])
    for k, line in enumerate((para, comment, short)):
        # every line's sentences hold exactly the line's tokens: nothing dropped, nothing repeated
        a, b = sent_off[first[k]], sent_off[first[k + 1]]
        assert ids[a:b].tolist() == tok.encode(line, add_special_tokens=False).ids
    sentences = [s.strip() for s in kiwi.split_sentences(para)] + [None] * n_comment + [short]
    ws = unpack_bits(arr["word_start"][0], 0, len(ids))
    n_glued = 0
    for s, text in enumerate(sentences):
        if text is None:
            continue
        enc = tok.encode(text, add_special_tokens=False)
        a, b = sent_off[s], sent_off[s + 1]
        assert ids[a:b].tolist() == enc.ids
        # with morpheme pre-splitting a piece starts a word exactly when whitespace (or the sentence start) precedes it
        oracle = [st == 0 or text[st - 1].isspace() for st, _ in enc.offsets]
        assert ws[a:b].tolist() == oracle
        n_glued += oracle.count(False)
    assert n_glued > 5


# ------------------------------------------------------------------------------------------------------- bad input

def expect_error(capsys, argv, *needles):
    return expect_fail(capsys, run, argv, *map(str, needles), alone=True)


def shards_of(tmp_path, tokens, text):
    """Shards of one corpus file `text` (a line per sentence, no sentence splitter) with a vocab of the special
    tokens and `tokens`: (vocab path, text path, output dir, meta)."""
    vocab, corpus, out = tmp_path / "vocab.txt", tmp_path / "c.txt", tmp_path / "out"
    vocab.write_text("\n".join([*tokenization.SPECIAL_TOKENS, *tokens]) + "\n", encoding="utf-8")
    corpus.write_text(text, encoding="utf-8")
    meta = run(["--input_files", corpus, "--vocab_file", vocab, "--output_dir", out, "--sentence_splitter", "none",
                "--num_workers", 1])
    return vocab, corpus, out, meta


def test_only_double_hash_pieces_continue_a_word(tmp_path):
    """Word starts are every piece but a "##" continuation (WordPiece's definition, as the fast tokenizer marks
    them): the "#" of a hashtag, a vocab token that merely starts with "#", starts a word of its own."""
    vocab, text, out, _ = shards_of(tmp_path, ["#", "태그", "##그", "태", "가", "##가", "1"],
                                    "#태그 가가 #1 태그#\n태그가\n")
    _, arr = load_shards(str(out))
    ids = arr["ids"][0]
    encs = tokenization.build_fast_tokenizer(str(vocab)).encode_batch(text_lines_of(text), add_special_tokens=False)
    assert ids.tolist() == [i for e in encs for i in e.ids]
    want = [not t.startswith("##") for e in encs for t in e.tokens]
    assert unpack_bits(arr["word_start"][0], 0, len(ids)).tolist() == want and want.count(False) >= 2


def test_a_vocab_listing_a_token_twice_keeps_one_row_per_line(tmp_path):
    """Ids are line numbers (a token listed twice keeps its last), so the model's embedding has a row per line:
    meta.json's vocab_size counts lines, not distinct tokens, and the shards load against that vocab."""
    from fileio import read_vocab_lines
    vocab, _, out, meta = shards_of(tmp_path, ["가", "태그", "가", "##그", "태"],
                                    "태그 가 태그\n가 태그 가\n\n태그 가\n가 가\n")
    assert meta["vocab_size"] == len(read_vocab_lines(str(vocab))) == 10
    from pretraining_data import PretrainingDataset
    assert len(PretrainingDataset(str(out), max_seq_length=16, seed=0)) > 0


def test_a_line_that_tokenises_to_nothing_keeps_the_document_breaks_in_place(tmp_path):
    """A line of only invisible characters gives no tokens and is dropped; the blank line after it still ends its
    document there, not one sentence later."""
    _, _, out, _ = shards_of(tmp_path, ["가", "나", "다", "라"], "가 나\n\u200b\x07\n\n다 라\n\n라 가\n\u200b\n\n나\n")
    meta, arr = load_shards(str(out))
    assert arr["documents"][0].tolist() == [0, 1, 2, 3, 4]  # four documents of one sentence each
    assert np.diff(arr["sentences"][0]).tolist() == [2, 2, 2, 1]
    assert meta["summary"]["empty_sentences_dropped"] == 2


def text_lines_of(path):
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def test_bad_inputs(files, tmp_path, capsys):
    v = files["vocab"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n", encoding="utf-8")
    expect_error(capsys, ["--input_files", empty, "--vocab_file", v, "--output_dir", tmp_path / "o1"],
                 empty, "empty")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("첫 줄입니다.\n둘째 줄.\n".encode() + "caf\xe9 au lait\n".encode("latin-1"))
    expect_error(capsys, ["--input_files", files["inputs"][1], bad, "--vocab_file", v, "--output_dir",
                          tmp_path / "o2", "--sentence_splitter", "none", "--num_workers", 2], f"{bad}:3", "UTF-8")
    missing = tmp_path / "nope.txt"
    expect_error(capsys, ["--input_files", missing, "--vocab_file", v, "--output_dir", tmp_path / "o3"],
                 "--input_files", missing)
    no_specials = tmp_path / "vocab_nospecial.txt"
    no_specials.write_text("\n".join(t for t in open(v, encoding="utf-8").read().splitlines() if t != "[MASK]"),
                           encoding="utf-8")
    expect_error(capsys, ["--input_files", files["inputs"][1], "--vocab_file", no_specials, "--output_dir",
                          tmp_path / "o4"], no_specials, "[MASK]")
    (tmp_path / "a_file").write_text("")  # an --output_dir under a file: one line, not a FileExistsError traceback
    expect_error(capsys, ["--input_files", files["inputs"][1], "--vocab_file", v, "--output_dir",
                          tmp_path / "a_file" / "o5"], "--output_dir", "cannot create its parent")
    for o in ("o1", "o2", "o3", "o4"):  # nothing published, no temp dir left behind
        assert not (tmp_path / o).exists()
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_existing_output_is_not_clobbered(files, plain, tmp_path, capsys):
    out = tmp_path / "shards"
    shutil.copytree(plain[0], out)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    def args(o):
        return ["--input_files", files["inputs"][1], "--vocab_file", files["vocab"], "--output_dir", o,
                "--sentence_splitter", "none", "--num_workers", 1]
    argv = args(out)
    expect_error(capsys, argv, out, "--overwrite")
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    expect_error(capsys, args(other), other, "not an empty directory")
    assert os.listdir(other) == ["keep.txt"]
    meta = run(argv + ["--overwrite"])
    assert json.load(open(out / "meta.json", encoding="utf-8")) == meta
    assert meta["num_tokens"] < json.loads(before["meta.json"])["num_tokens"]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]


def test_overwrite_replaces_only_this_scripts_output(files, plain, tmp_path, monkeypatch, capsys):
    def args(o):
        return ["--input_files", files["inputs"][1], "--vocab_file", files["vocab"], "--output_dir", o,
                "--sentence_splitter", "none", "--num_workers", 1, "--overwrite"]
    mixed = tmp_path / "checkpoints"  # shards copied next to a user's own files
    shutil.copytree(plain[0], mixed)
    (mixed / "model.safetensors").write_bytes(b"weights")
    foreign = tmp_path / "other_format"  # only shard-like names, but a meta.json of something else
    foreign.mkdir()
    (foreign / "meta.json").write_text('{"format": "something-else"}', encoding="utf-8")
    (foreign / "shard_00000.ids.npy").write_bytes(b"x")
    no_meta = tmp_path / "no_meta"
    no_meta.mkdir()
    (no_meta / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine", encoding="utf-8")
    for path, why in ((mixed, "model.safetensors"), (foreign, "meta.json"), (no_meta, "meta.json"),
                      (a_file, "not a directory")):
        before = file_digests(path) if path.is_dir() else path.read_bytes()
        expect_error(capsys, args(path), path, why)
        assert (file_digests(path) if path.is_dir() else path.read_bytes()) == before
    # the directory is checked again before the rename: something put there during the run is not wiped
    out = tmp_path / "shards"
    shutil.copytree(plain[0], out)
    before = file_digests(out)
    prepare = cpd.prepare

    def prepare_then_add_a_file(a, tmp_dir):
        meta = prepare(a, tmp_dir)
        (out / "notes.txt").write_text("written during the run", encoding="utf-8")
        return meta
    monkeypatch.setattr(cpd, "prepare", prepare_then_add_a_file)
    expect_error(capsys, args(out), out, "notes.txt")
    assert (out / "notes.txt").exists() and {k: v for k, v in file_digests(out).items() if k != "notes.txt"} == before
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]


def test_long_line_is_read_in_bounded_pieces(files, tmp_path, monkeypatch, capsys):
    cap = 100  # not a multiple of 3: the cuts of a run of Hangul fall inside characters unless moved
    monkeypatch.setattr(corpus_tasks, "MAX_LINE_BYTES", cap)
    words = " ".join(" ".join(text_lines("konlpy/kolaw/constitution.txt", 0, 60)).split())
    assert max(len(w.encode()) for w in words.split()) < cap // 2  # so every cut can be at a space
    run_ = "가나다라마바사" * 40  # no whitespace: cut between characters
    src = tmp_path / "long.txt"
    src.write_bytes(("\ufeff" + words + "\n짧은 줄.\n\n" + run_ + "\n" + " " * 300 + "\n끝.\n").encode())
    tasks = list(corpus_tasks.read_tasks([str(src)], 100, lambda n: None))
    lines = [x for _, t in tasks for x in t]
    assert all(len(x.encode()) <= cap for x in lines if x is not None) and {k for k, _ in tasks} == {0}
    assert all(sum(len(x) for x in t if x is not None) < 100 + cap for _, t in tasks)  # task size stays bounded
    breaks = [i for i, x in enumerate(lines) if x is None]
    assert breaks[0] == 0 and len(breaks) == 3  # file start, the blank line, the all-space line: nothing else
    first, second, third = lines[1:breaks[1]], lines[breaks[1] + 1:breaks[2]], lines[breaks[2] + 1:]
    assert len(first) > 10 and " ".join(first[:-1]) == words and first[-1] == "짧은 줄."  # cut at spaces only
    assert "".join(second) == run_ and third == ["끝."]
    # CR-only line ends (one "line" to readline, cut at its CRs) and CRLF ones read as LF's do: every line its
    # own, a blank line ends a document; a CRLF cut between its CR and LF ends one line, not two
    short_lines = [f"{i}번째 줄입니다." for i in range(30)]
    lf_text = "\n".join(short_lines[:12]) + "\n\n" + "\n".join(short_lines[12:]) + "\n"
    expected = [None, *short_lines[:12], None, *short_lines[12:]]
    for name, text in (("mac", lf_text.replace("\n", "\r")), ("dos", lf_text.replace("\n", "\r\n")),
                       ("mac_no_end", lf_text.replace("\n", "\r")[:-1]),
                       ("dos_via_text_mode", lf_text.replace("\n", "\r\r\n"))):  # CRLF text written as text
        (tmp_path / f"{name}.txt").write_bytes(text.encode())
        counts = {}
        tasks = corpus_tasks.read_tasks([str(tmp_path / f"{name}.txt")], 100, lambda n: None, counts)
        assert [x for _, t in tasks for x in t] == expected, name
        assert counts["long_line_cuts"] == 0, name  # the CR-only files come in pieces, cut at line ends only
    assert len(lf_text.encode()) > 3 * cap
    for end in ("\r\n", "\r\r\n"):  # the cap falls between the line end's first CR and the rest
        monkeypatch.setattr(corpus_tasks, "MAX_LINE_BYTES", len("가나다\r".encode()))
        (tmp_path / "cut.txt").write_bytes(f"가나다{end}라{end}{end}마\n".encode())
        tasks = corpus_tasks.read_tasks([str(tmp_path / "cut.txt")], 100, lambda n: None)
        assert [x for _, t in tasks for x in t] == [None, "가나다", "라", None, "마"], end
    monkeypatch.setattr(corpus_tasks, "MAX_LINE_BYTES", cap)
    # a line indented by more than the cap: its first pieces are blank but do not end the line, so no document ends
    (tmp_path / "indented.txt").write_bytes(("첫 줄.\n" + " " * 300 + "들여쓴 줄.\n끝.\n").encode())
    tasks = corpus_tasks.read_tasks([str(tmp_path / "indented.txt")], 100, lambda n: None)
    assert [x for _, t in tasks for x in t] == [None, "첫 줄.", "들여쓴 줄.", "끝."]
    # the pieces are tokenised as if the file had been split there: same shards, and the same ids as the whole line
    common = ["--vocab_file", files["vocab"], "--sentence_splitter", "none", "--num_workers", 1]
    meta = run(["--input_files", src, "--output_dir", tmp_path / "long", *common])
    split = tmp_path / "split.txt"
    split.write_text("\n".join("" if x is None else x for x in lines[1:]) + "\n", encoding="utf-8")
    run(["--input_files", split, "--output_dir", tmp_path / "split", *common])
    (_, a), (_, b) = load_shards(str(tmp_path / "long")), load_shards(str(tmp_path / "split"))
    for part in a:
        assert np.array_equal(a[part][0], b[part][0]), part
    tok = tokenization.build_fast_tokenizer(files["vocab"])
    n = sum(len(tok.encode(x, add_special_tokens=False).ids) for x in first[:-1])
    assert a["ids"][0][:n].tolist() == tok.encode(words, add_special_tokens=False).ids
    cuts = (len(first) - 2) + (len(second) - 1) + 300 // cap  # the all-space line: 3 pieces and its line end
    assert meta["num_documents"] == 3 and meta["summary"]["long_line_cuts"] == cuts
    assert f"longer than {cap} bytes" in capsys.readouterr().err
    # a bad byte past the cap is still reported at its line and column
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n" + words[:600].encode() + b" \xff tail\n")
    at = len(words[:600].encode()) + 1
    expect_error(capsys, ["--input_files", bad, "--output_dir", tmp_path / "bad", *common], f"{bad}:2",
                 f"column {at + 1}", "UTF-8")


def test_summary_counts_single_sentence_documents(plain):
    meta, arrays = load_shards(plain[0])
    assert meta["summary"]["single_sentence_documents"] == sum(int((np.diff(d) == 1).sum())
                                                               for d in arrays["documents"])
