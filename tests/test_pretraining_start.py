"""pretraining_start on hand-made run directories: where a run starts from, and which disagreements stop it.
The end-to-end resume/init runs are in test_run_pretraining.py; these cover every branch without training."""
import json
import os
import shutil
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pretraining_start as S  # noqa: E402
from pretraining_data import shards_fingerprint, vocab_sha256  # noqa: E402

TINY = os.path.join(ROOT, "models", "configs", "tiny.json")
META = {"vocab_size": 1000, "vocab_sha256": "0" * 64, "do_lower_case": False, "morph_analyzer": None}
ARGS = {"optimizer": "adam", "scheduler": "linear", "train_batch_size": 32, "learning_rate": 1e-3,
        "max_steps": 100, "max_seq_length": 128, "seed": 42, "short_seq_prob": 0.1, "masked_lm_prob": 0.15,
        "max_predictions_per_seq": 20, "max_ngram": 3, "no_whole_word": False, "no_sop": False}


def make_checkpoint(run_dir, step, args=ARGS, config=TINY):
    """run_dir/checkpoints/step-N with a train state and config, named by `latest` as the trainer leaves it."""
    d = run_dir / "checkpoints" / f"step-{step}"
    d.mkdir(parents=True)
    torch.save({"step": step, "args": dict(args)}, d / "train_state.pt")
    if config:
        shutil.copy(config, d / "config.json")
    (run_dir / "checkpoints" / "latest").write_text(f"step-{step}\n")
    return d


def error(fn, *args):
    with pytest.raises(ValueError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_resolve_start(tmp_path):
    run, other = tmp_path / "run", tmp_path / "phase1"
    assert S.resolve_start(str(run), None, None) == (None, None)
    assert S.resolve_start(str(run), "auto", None) == (None, None)  # auto before the first checkpoint: fresh
    assert S.resolve_start(str(run), "auto", str(TINY)) == (TINY, S.INIT)
    ckpt = make_checkpoint(run, 20)
    init = make_checkpoint(other, 60)
    assert S.resolve_start(str(run), "auto", None) == (str(ckpt), S.RESUME)
    # a resumed phase 2 continues itself, not the phase-1 weights it started from
    assert S.resolve_start(str(run), "auto", str(other)) == (str(ckpt), S.RESUME)
    assert S.resolve_start(str(tmp_path / "new"), None, str(other)) == (str(init), S.INIT)
    assert S.resolve_start(str(tmp_path / "new"), str(other / "checkpoints"), None) == (str(init), S.RESUME)
    assert "--resume auto to continue" in error(S.resolve_start, str(run), None, None)
    # --resume naming a checkpoint: its own run's, fine; another run's, into a dir with checkpoints of its own, not
    assert S.resolve_start(str(run), str(ckpt), None) == (str(ckpt), S.RESUME)
    assert "already holds checkpoints of another run" in error(S.resolve_start, str(run), str(init), None)
    assert "no such checkpoint" in error(S.resolve_start, str(run), str(tmp_path / "nope"), None)
    assert "no train_state.pt" in error(S.resolve_start, str(tmp_path / "new"), str(tmp_path), None)
    assert "--init_checkpoint" in error(S.resolve_start, str(tmp_path / "new"), None, str(tmp_path / "nope"))
    (ckpt / "train_state.pt").unlink()  # auto with a `latest` that names no train state is not a fresh start
    assert "no train_state.pt" in error(S.resolve_start, str(run), "auto", None)


def test_model_config(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run", 5)
    c = S.model_config(None, str(ckpt), S.RESUME, META, "shards", 128)
    assert c.hidden_size == 64 and c.morph_analyzer is None and c.do_lower_case is False
    c = S.model_config(TINY, None, None, META | {"do_lower_case": True, "morph_analyzer": "kiwi"}, "shards", 512)
    assert c.do_lower_case and c.morph_analyzer == "kiwi"  # the shards' tokenizer settings travel with the model
    assert "pass --config_file" in error(S.model_config, None, None, None, META, "shards", 128)
    assert "max_position_embeddings" in error(S.model_config, TINY, None, None, META, "shards", 513)
    assert "vocab_size=1000" in error(S.model_config, TINY, None, None, META | {"vocab_size": 8000}, "shards", 128)
    kiwi = tmp_path / "kiwi.json"
    kiwi.write_text(json.dumps(json.load(open(TINY)) | {"morph_analyzer": "kiwi"}))
    assert "morph_analyzer=None" in error(S.model_config, str(kiwi), None, None, META, "shards", 128)
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps(json.load(open(TINY)) | {"hidden_size": 128}))
    msg = error(S.model_config, str(wide), str(ckpt), S.RESUME, META, "shards", 128)
    assert "hidden_size (64 vs 128)" in msg and str(ckpt) in msg
    # --init_checkpoint takes the weights with a config of its own (dropout, say), but not one that gives the
    # weights other shapes, or the same shapes another function (heads, LayerNorm eps)
    nodrop = tmp_path / "nodrop.json"
    nodrop.write_text(json.dumps(json.load(open(TINY)) | {"hidden_dropout_prob": 0.0}))
    assert S.model_config(str(nodrop), str(ckpt), S.INIT, META, "shards", 128).hidden_dropout_prob == 0.0
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps(json.load(open(TINY)) | {"num_attention_heads": 8, "layer_norm_eps": 1e-5}))
    for config in (wide, heads):
        msg = error(S.model_config, str(config), str(ckpt), S.INIT, META, "shards", 128)
        assert "disagrees with the config stored with" in msg and str(ckpt) in msg
    assert "on num_attention_heads, layer_norm_eps" in msg
    # resumed without --config_file, the run keeps its own tokenizer settings: shards prepared otherwise stop it
    msg = error(S.model_config, None, str(ckpt), S.RESUME, META | {"do_lower_case": True}, "shards", 128)
    assert "the shards in shards" in msg and "do_lower_case (False vs True)" in msg
    assert "morph_analyzer" in error(S.model_config, None, str(ckpt), S.RESUME, META | {"morph_analyzer": "kiwi"},
                                     "shards", 128)


def test_check_vocab(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n")
    meta = META | {"vocab_sha256": vocab_sha256(str(vocab))}
    ckpt = make_checkpoint(tmp_path / "run", 5)
    S.check_vocab(str(vocab), str(ckpt), S.RESUME, meta, "shards", "shards/vocab.txt")
    shutil.copy(vocab, ckpt / "vocab.txt")
    S.check_vocab(None, str(ckpt), S.RESUME, meta, "shards", "shards/vocab.txt")
    (ckpt / "vocab.txt").write_text("[UNK]\n")
    assert error(S.check_vocab, None, str(ckpt), S.INIT, meta, "shards", "v").startswith("--init_checkpoint: ")
    assert error(S.check_vocab, str(ckpt / "vocab.txt"), None, None, meta, "shards", "v").startswith("--vocab_file")
    for missing in (tmp_path / "nowhere.txt", tmp_path):  # a traceback from the hashing, before
        assert error(S.check_vocab, str(missing), None, None, meta, "shards", "v") == \
            f"--vocab_file {missing}: no such file"
    # a weights file is checked against the vocab.txt beside it
    assert "is not the vocabulary" in error(S.check_vocab, None, str(ckpt / "model.safetensors"), S.INIT, meta,
                                            "shards", "v")


def test_load_train_state(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run", 7)
    state, changed = S.load_train_state(str(ckpt), ARGS, ("optimizer", "scheduler"))
    assert state["step"] == 7 and changed == []
    _, changed = S.load_train_state(str(ckpt), ARGS | {"seed": 1, "learning_rate": 2e-3}, ("optimizer",))
    assert changed == ["learning_rate", "seed"]
    assert "--optimizer lamb differs from adam" in error(S.load_train_state, str(ckpt), ARGS | {"optimizer": "lamb"},
                                                         ("optimizer",))
    _, changed = S.load_train_state(str(ckpt), ARGS | {"max_ngram": 1, "no_sop": True,
                                                       "source_weights": ["court_*=0.25"]}, ())
    assert changed == ["max_ngram", "no_sop", "source_weights"]
    # a run extended or given another batch on resume is not the uninterrupted run either
    _, changed = S.load_train_state(str(ckpt), ARGS | {"max_steps": 200, "train_batch_size": 64}, ())
    assert changed == ["train_batch_size", "max_steps"]
    # a flag added for an experiment (a masking variant, say) is named too, without being listed anywhere; the
    # ones that do not change what is computed are not
    _, changed = S.load_train_state(str(ckpt), ARGS | {"span_distribution": "geometric", "num_workers": 4,
                                                       "save_steps": 10, "gradient_accumulation_steps": 2}, ())
    assert changed == ["span_distribution"]
    saved = ARGS | {"span_distribution": "geometric"}
    torch.save({"step": 7, "args": saved}, ckpt / "train_state.pt")
    assert S.load_train_state(str(ckpt), saved, ())[1] == []
    assert S.load_train_state(str(ckpt), saved | {"span_distribution": "uniform"}, ())[1] == ["span_distribution"]
    torch.save({"step": 7, "args": dict(ARGS), "shards_fingerprint": "a" * 64}, ckpt / "train_state.pt")
    assert S.load_train_state(str(ckpt), ARGS, (), shards_fingerprint="a" * 64)[1] == []
    _, changed = S.load_train_state(str(ckpt), ARGS, (), shards_fingerprint="b" * 64)
    assert len(changed) == 1 and changed[0].startswith("shards")
    (ckpt / "train_state.pt").write_bytes((ckpt / "train_state.pt").read_bytes()[:50])
    assert "unreadable" in error(S.load_train_state, str(ckpt), ARGS, ())


def test_shards_fingerprint_ignores_the_preparation_timing():
    """The same shards prepared again (other timing, other worker count) keep their fingerprint; other counts do not."""
    meta = {"vocab_sha256": "a" * 64, "num_tokens": 100, "shards": [{"name": "shard_00000", "num_tokens": 100}],
            "summary": {"seconds": 41.2, "mb_per_s": 3.9, "num_workers": 2}}
    again = meta | {"summary": {"seconds": 39.8, "mb_per_s": 4.1, "num_workers": 8}}
    assert shards_fingerprint(again) == shards_fingerprint(meta)
    other = meta | {"shards": [{"name": "shard_00000", "num_tokens": 99}]}
    assert shards_fingerprint(other) != shards_fingerprint(meta)


def test_check_args_refuses_values_that_would_fail_late(tmp_path):
    """The optimisation and loader flags run_pretraining shares with the fine-tuning scripts are checked before
    anything opens; --max_grad_norm 0 (no clipping) is allowed, a negative one is not."""
    from run_pretraining import build_parser
    (tmp_path / "meta.json").write_text("{}")
    base = ["--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--config_file", TINY]
    S.check_args(build_parser().parse_args(base + ["--max_grad_norm", "0"]))
    # the fine-tuning scripts' --logging_steps spells --log_steps too
    assert build_parser().parse_args(base + ["--logging_steps", "7"]).log_steps == 7
    for flags, needle in ((["--learning_rate", "nan"], "--learning_rate nan: must be >= 0"),
                          (["--num_workers", "-2"], "--num_workers -2: must be >= 0"),
                          (["--max_grad_norm", "-1"], "--max_grad_norm -1.0: must be >= 0"),
                          (["--warmup_proportion", "1"], "--warmup_proportion 1.0: must be in [0, 1)"),
                          (["--weight_decay", "-0.1"], "--weight_decay -0.1: must be >= 0"),
                          # nothing to predict, or nothing left unmasked to predict it from
                          (["--masked_lm_prob", "0"], "--masked_lm_prob must be in (0, 1), got 0.0"),
                          (["--masked_lm_prob", "1"], "--masked_lm_prob must be in (0, 1), got 1.0")):
        assert needle in error(S.check_args, build_parser().parse_args(base + flags))


def test_shards_fingerprint_covers_the_input_files():
    """Shards made from other files are other shards, even with the same vocab and counts: a resume must not take
    them for the run's own."""
    meta = {"vocab_sha256": "x", "shards": [], "input_files": ["a.txt"], "summary": {}}
    assert shards_fingerprint(meta) != shards_fingerprint(dict(meta, input_files=["b.txt"]))
