"""Corpus mix (--source_weights): per-document sources recorded in the shards, documents sub-sampled or repeated per
epoch by their file's weight, the unweighted epoch left exactly as it was, and clear errors."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

import create_pretraining_data as cpd
import run_pretraining
from helpers import KOREAN_TEXT, expect_fail, text_lines, wikinews_vocab
from pretraining_data import (PretrainingDataset, parse_source_weights, read_meta, resolve_source_weights,
                              shard_path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_corpus_mix  # noqa: E402
L = 64



@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three files (news: hundreds of short documents; reports; the constitution), in several shards."""
    d = tmp_path_factory.mktemp("mix")
    vocab = wikinews_vocab(d, 1500, 2000)
    (d / "news.txt").write_text("\n".join(text_lines("boddari/wikinews.txt", 1500, 4187)) + "\n", encoding="utf-8")
    (d / "reports.txt").write_text("\n".join(text_lines("boddari/unesco_report.txt", 0, 600)) + "\n", encoding="utf-8")
    out = str(d / "shards")
    cpd.main(["--input_files", str(d / "news.txt"), str(d / "reports.txt"),
              os.path.join(KOREAN_TEXT, "konlpy/kolaw/constitution.txt"), "--vocab_file", vocab, "--output_dir", out,
              "--sentence_splitter", "regex", "--num_workers", "2", "--task_chars", "20000",
              "--shard_size_tokens", "30000"])
    return out


def documents(ds):
    """Per shard: document bounds (start tokens, then the end) and each document's input-file index."""
    out = []
    for s, so, do in zip(ds._shards, ds._sent_off, ds._doc_off):
        out.append((so[do], np.load(shard_path(ds.input_dir, s, "sources"))))
    return out


def copies_per_document(ds, epoch):
    """{(shard, document): how many times the epoch's chunks start at that document's first token} and the files of
    the documents that any chunk covers."""
    ds.set_epoch(epoch)
    counts, files = {}, set()
    for k, (starts, src) in enumerate(documents(ds)):
        mine = ds._chunk_shard == k
        doc = np.searchsorted(starts, ds._chunk_start[mine], "right") - 1
        files |= set(src[doc].tolist())
        first = ds._chunk_start[mine] == starts[doc]
        for d, n in zip(*np.unique(doc[first], return_counts=True)):
            counts[k, int(d)] = int(n)
    return counts, files


def test_sources_name_each_documents_file(shards):
    meta = read_meta(shards)
    assert len(meta["shards"]) > 2 and [os.path.basename(f) for f in meta["input_files"]] == [
        "news.txt", "reports.txt", "constitution.txt"]
    src = np.concatenate([np.load(shard_path(shards, s["name"], "sources")) for s in meta["shards"]])
    assert len(src) == meta["num_documents"] and (np.diff(src) >= 0).all()  # files in order, each a run
    assert set(src.tolist()) == {0, 1, 2} and (src == 0).sum() > 200  # wikinews: hundreds of short articles


def test_unit_weights_leave_the_epoch_unchanged(shards):
    plain = PretrainingDataset(shards, max_seq_length=L, seed=3)
    ones = PretrainingDataset(shards, max_seq_length=L, seed=3, source_weights={"*": 1.0})
    for epoch in (0, 2):
        plain.set_epoch(epoch)
        ones.set_epoch(epoch)
        for name in ("_chunk_shard", "_chunk_start", "_chunk_end", "_order"):
            assert np.array_equal(getattr(plain, name), getattr(ones, name)), name
        for g in (0, 17, len(plain) - 1):
            a, b = plain.example(g), ones.example(g)
            assert all(np.array_equal(a[k], b[k]) for k in a)
    assert plain.source_shares is None and sum(x for _, x in ones.source_shares) == pytest.approx(1)


def test_weights_subsample_repeat_and_drop_documents(shards):
    ds = PretrainingDataset(shards, max_seq_length=L, seed=5,
                            source_weights={"news*": 0.25, "reports.txt": 2, "constitution.txt": 0})
    docs = documents(ds)
    chunked = {(k, d) for k, (starts, _) in enumerate(docs) for d in np.flatnonzero(np.diff(starts) >= 2)}
    news_docs = {(k, d) for k, d in chunked if docs[k][1][d] == 0}
    report_docs = {(k, d) for k, d in chunked if docs[k][1][d] == 1}
    assert len(news_docs) > 200 and report_docs
    picked = []
    for epoch in range(8):
        counts, files = copies_per_document(ds, epoch)
        assert files == {0, 1}  # the constitution's weight is 0: none of its tokens
        news = {key for key in counts if key in news_docs}
        assert all(counts[key] == 1 for key in news)
        assert {key: n for key, n in counts.items() if key in report_docs} == dict.fromkeys(report_docs, 2)
        assert 0.15 < len(news) / len(news_docs) < 0.35
        picked.append(news)
    # 0.25: every news document exactly once in epochs 0-3, and again once in 4-7 (the same rotation)
    for block in (picked[:4], picked[4:]):
        assert set.union(*block) == news_docs and sum(map(len, block)) == len(news_docs)
    assert picked[4:] == picked[:4]
    tokens = np.zeros(3)
    for starts, src in docs:
        np.add.at(tokens, src, np.diff(starts))
    share = tokens * [0.25, 2, 0]
    assert [x for _, x in ds.source_shares] == pytest.approx((share / share.sum()).tolist())
    # a weight of 1.5 alternates one and two copies, 1.5 on average over two epochs
    ds = PretrainingDataset(shards, max_seq_length=L, seed=5, source_weights={"reports.txt": 1.5})
    two = [copies_per_document(ds, e)[0] for e in (0, 1)]
    assert all({two[0].get(key, 0), two[1].get(key, 0)} == {1, 2} for key in report_docs)


def test_same_epoch_on_every_rank(shards):
    weights = {"news*": 0.5, "reports.txt": 1.5}
    ranks = [PretrainingDataset(shards, max_seq_length=L, seed=9, rank=r, world_size=2, source_weights=weights)
             for r in (0, 1)]
    one = PretrainingDataset(shards, max_seq_length=L, seed=9, source_weights=weights)
    for ds in ranks + [one]:
        ds.set_epoch(1)
    for name in ("_chunk_shard", "_chunk_start", "_chunk_end", "_order"):
        assert np.array_equal(getattr(ranks[0], name), getattr(ranks[1], name))
        assert np.array_equal(getattr(ranks[0], name), getattr(one, name))
    assert len(ranks[0]) == len(ranks[1]) == len(one) // 2
    for i in (0, 5, len(ranks[1]) - 1):  # rank r's item i is the one-rank run's item r + 2i
        for r in (0, 1):
            a, b = ranks[r][i], one[r + 2 * i]
            assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_weights_are_named(shards, tmp_path):
    for specs, needle in ((["court"], "court: not PATTERN=WEIGHT"), (["a=b"], "a=b"), (["=1"], "=1"),
                          (["x=1", "x=2"], "x is given twice")):
        with pytest.raises(ValueError, match=needle):
            parse_source_weights(specs)
    assert parse_source_weights(["a=b=0.5", "c*=2"]) == {"a=b": 0.5, "c*": 2.0}
    files = read_meta(shards)["input_files"]
    for weights, needle in (({"court*": 1}, "court\\* matches none"), ({"*.txt": 1, "news*": 2}, "both"),
                            ({"news*": -1}, "finite number >= 0"), ({"news*": float("nan")}, "finite")):
        with pytest.raises(ValueError, match=needle):
            resolve_source_weights(files, weights)
    with pytest.raises(ValueError, match="no documents"):
        PretrainingDataset(shards, max_seq_length=L, source_weights={"*": 0})
    old = tmp_path / "old"  # shards written before per-document sources
    shutil.copytree(shards, old)
    for f in old.glob("*.sources.npy"):
        f.unlink()
    PretrainingDataset(str(old), max_seq_length=L)  # still load without weights
    with pytest.raises(ValueError, match=r"shard_00000\.sources\.npy is missing"):
        PretrainingDataset(str(old), max_seq_length=L, source_weights={"news*": 0.5})


def run_argv(shards, out, cfg, *extra):
    return ["--config_file", str(cfg), "--input_dir", shards, "--output_dir", str(out), "--max_seq_length", str(L),
            "--max_predictions_per_seq", "8", "--train_batch_size", "8", "--max_steps", "2", "--log_steps", "1",
            "--save_steps", "2", "--num_workers", "0", "--no_cuda", *extra]


def test_run_pretraining_flag(shards, tmp_path, capsys):
    cfg = json.load(open(os.path.join(ROOT, "models", "configs", "tiny.json"))) | {"vocab_size": 2000}
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    cfg = tmp_path / "tiny.json"
    expect_fail(capsys, run_pretraining.main, run_argv(shards, tmp_path / "a", cfg, "--source_weights", "news"),
                "--source_weights news", "PATTERN=WEIGHT")
    expect_fail(capsys, run_pretraining.main, run_argv(shards, tmp_path / "b", cfg, "--source_weights", "court*=0"),
                "--source_weights court*=0", "matches none", "news.txt")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    run_pretraining.main(run_argv(shards, tmp_path / "c", cfg, "--source_weights", "news*=0.25", "constitution*=0"))
    out = capsys.readouterr().out
    assert "corpus mix (expected share of an epoch's tokens): news.txt" in out and "constitution.txt 0.0%" in out
    state = run_pretraining.torch.load(tmp_path / "c" / "checkpoints" / "step-2" / "train_state.pt",
                                       weights_only=True)
    assert state["args"]["source_weights"] == ["constitution*=0.0", "news*=0.25"]  # one spelling per mix
    old = tmp_path / "old"  # shards written before per-document sources still train without the flag
    shutil.copytree(shards, old)
    for f in old.glob("*.sources.npy"):
        f.unlink()
    run_pretraining.main(run_argv(str(old), tmp_path / "d", cfg))
    assert (tmp_path / "d" / "checkpoints" / "step-2" / "model.safetensors").is_file()


def test_a_file_given_twice_keeps_both_shares(shards, tmp_path):
    d = os.path.dirname(shards)
    news, reports = os.path.join(d, "news.txt"), os.path.join(d, "reports.txt")
    cpd.main(["--input_files", news, reports, news, "--vocab_file", os.path.join(shards, "vocab.txt"),
              "--output_dir", str(tmp_path / "dup"), "--num_workers", "1"])
    ds = PretrainingDataset(str(tmp_path / "dup"), max_seq_length=L, source_weights={"reports.txt": 0.5})
    shares = ds.source_shares
    assert [os.path.basename(f) for f, _ in shares] == ["news.txt", "reports.txt", "news.txt"]
    assert sum(x for _, x in shares) == pytest.approx(1) and shares[0][1] == pytest.approx(shares[2][1])


def test_mixture_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(300, 0.3), size=3)
    target = np.round(1e7 * (np.array([0.7, 0.3, 0.0]) @ probs))  # token counts drawn as the mixture's expectation
    assert bench_corpus_mix.fit_mixture(target, probs, iters=2000) == pytest.approx([0.7, 0.3, 0.0], abs=2e-3)
    # cross-entropy in bits: a source scores the text it generated best, and exactly its own entropy
    own = np.round(1e7 * probs[0])
    assert bench_corpus_mix.bits_per_token(own, probs[0]) == pytest.approx(-(probs[0] * np.log2(probs[0])).sum(),
                                                                            rel=1e-4)
    assert bench_corpus_mix.bits_per_token(own, probs[1]) > bench_corpus_mix.bits_per_token(own, probs[0])


def test_corpus_mix_bench_counts_every_token(shards, tmp_path):
    out = tmp_path / "mix.json"
    sources, mixes = bench_corpus_mix.main(["--input_dir", shards, "--results_json", str(out),
                                            "--mixes", "", "news*=0.5 constitution*=0"])
    meta = read_meta(shards)
    assert [r["source"] for r in sources] == ["news", "reports", "constitution"]
    tokens = [r["tokens"] for r in sources]
    assert sum(tokens) == meta["num_tokens"] == mixes[0]["tokens_per_epoch"]
    assert mixes[1]["tokens_per_epoch"] == int(0.5 * tokens[0] + tokens[1])
    assert mixes[1]["shares"]["constitution"] == 0 and json.loads(out.read_text())["mixes"] == mixes
    assert bench_corpus_mix.source_name("a/court_x.part12.txt") == "court_x" == bench_corpus_mix.source_name("court_x.txt")


def test_corpus_mix_bench_splits_the_task_text_as_the_shards_were(shards, tmp_path, monkeypatch):
    """Shards prepared with a morphological analyser: the tasks' text is tokenised with it too, or its pieces
    (##에서 where the shards hold 에서) are not the ones the shards count."""
    made = []
    real_meta, real_tokenizer = bench_corpus_mix.read_meta, bench_corpus_mix.build_fast_tokenizer
    monkeypatch.setattr(bench_corpus_mix, "read_meta", lambda d: dict(real_meta(d), morph_analyzer="kiwi"))
    monkeypatch.setattr(bench_corpus_mix, "build_fast_tokenizer", lambda vocab, **kw: made.append(kw) or
                        real_tokenizer(vocab, **dict(kw, morph_analyzer=None)))  # the analyser itself: not needed
    bench_corpus_mix.main(["--input_dir", shards, "--results_json", str(tmp_path / "mix.json"), "--mixes", ""])
    assert [kw.get("morph_analyzer") for kw in made] == ["kiwi"]
