"""model_args: a --config_file, --vocab_file or --do_lower_case given beside a checkpoint must agree with what the
checkpoint carries (how it split and cased text, its vocab), and unreadable or unusable files are one-line errors."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import model_args  # noqa: E402


def test_config_file_must_split_text_as_the_checkpoint_did(tmp_path, capsys):
    """A checkpoint pretrained on morpheme-split text, fine-tuned with a --config_file that does not split (or the
    reverse), would see text tokenised unlike anything it was trained on: one line naming both, exit 2."""
    import argparse
    import json

    import pytest
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        plain = dict(json.load(f), vocab_size=6)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(dict(plain, morph_analyzer="kiwi")), encoding="utf-8")
    (ckpt / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "가"]) + "\n",
                                    encoding="utf-8")
    (tmp_path / "plain.json").write_text(json.dumps(plain), encoding="utf-8")
    (tmp_path / "kiwi.json").write_text(json.dumps(dict(plain, morph_analyzer="kiwi")), encoding="utf-8")

    def resolve(config_file):
        return model_args.resolve_config_and_vocab(argparse.Namespace(checkpoint=str(ckpt), vocab_file=None,
                                                                       config_file=config_file))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        resolve(str(tmp_path / "plain.json"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "morph_analyzer=None" in err and "morph_analyzer='kiwi'" in err and "plain.json" in err
    assert resolve(str(tmp_path / "kiwi.json"))[0].morph_analyzer == "kiwi"  # agreeing: fine
    assert resolve(None)[0].morph_analyzer == "kiwi"  # the checkpoint's own config
    # a checkpoint config.json this code cannot read is not compared: the flag's config serves, as it always did
    unreadable = dict(plain, hidden_act="no_such_activation", morph_analyzer="kiwi")  # read, it would disagree
    (ckpt / "config.json").write_text(json.dumps(unreadable), encoding="utf-8")
    assert resolve(str(tmp_path / "plain.json"))[0].morph_analyzer is None


def test_config_file_and_vocab_file_must_agree_with_the_checkpoint(tmp_path, capsys):
    """Shape and numerics: a --config_file that differs from the checkpoint's own on heads or LayerNorm eps (no
    shape error would say so) is refused. Casing: a --config_file silent about it takes the checkpoint's
    do_lower_case, one that contradicts it is refused. Vocab: a --vocab_file with the checkpoint's size but other tokens (every id would change) is refused;
    the same tokens with other line ends pass."""
    import argparse
    import json

    import pytest
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        plain = dict(json.load(f), vocab_size=6)
    assert "do_lower_case" not in plain
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "가"]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(dict(plain, do_lower_case=True)), encoding="utf-8")
    (ckpt / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (tmp_path / "silent.json").write_text(json.dumps(plain), encoding="utf-8")
    (tmp_path / "cased.json").write_text(json.dumps(dict(plain, do_lower_case=False)), encoding="utf-8")
    (tmp_path / "same.txt").write_text("\r\n".join(tokens) + "\r\n", encoding="utf-8")
    # the same shapes, another function: more heads over the same weights, another LayerNorm eps
    (tmp_path / "heads.json").write_text(json.dumps(dict(plain, num_attention_heads=8)), encoding="utf-8")
    (tmp_path / "eps.json").write_text(json.dumps(dict(plain, layer_norm_eps=1e-5)), encoding="utf-8")
    (tmp_path / "other.txt").write_text("\n".join(tokens[:5] + ["나"]) + "\n", encoding="utf-8")

    def resolve(config_file, vocab_file=None):
        return model_args.resolve_config_and_vocab(argparse.Namespace(checkpoint=str(ckpt), vocab_file=vocab_file,
                                                                       config_file=config_file))
    assert resolve(str(tmp_path / "silent.json"))[0].do_lower_case is True
    assert resolve(str(tmp_path / "silent.json"), str(tmp_path / "same.txt"))[1] == str(tmp_path / "same.txt")
    for config_file, vocab_file, needle in (("heads.json", None, "stored with --checkpoint"),
                                            ("eps.json", None, "disagrees with the config stored with"),
                                            ("cased.json", None, "says do_lower_case=false"),
                                            ("silent.json", "other.txt", "differs from the vocab.txt")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            resolve(str(tmp_path / config_file), vocab_file and str(tmp_path / vocab_file))
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert "from line 6" in err
    # ... and the other way: a cased checkpoint's input lower-cased by a config beside it (other ids for every word
    # with a capital) is refused, as --do_lower_case=True is
    (ckpt / "config.json").write_text(json.dumps(dict(plain, do_lower_case=False)), encoding="utf-8")
    (tmp_path / "lower.json").write_text(json.dumps(dict(plain, do_lower_case=True)), encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        resolve(str(tmp_path / "lower.json"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "says do_lower_case=true, but --checkpoint" in err and "cased text" in err, err
    assert resolve(str(tmp_path / "cased.json"))[0].do_lower_case is False
    # a checkpoint that does not record casing (the release's config) leaves the flag's config as it is
    (ckpt / "config.json").write_text(json.dumps(plain), encoding="utf-8")
    assert resolve(str(tmp_path / "lower.json"))[0].do_lower_case is True


def test_do_lower_case_flag_may_not_contradict_the_model(tmp_path, capsys):
    """--do_lower_case (either value) against a checkpoint or --config_file that states the other casing is refused:
    it used to lower-case a cased model's input silently (other ids for every word with a capital; --do_lower_case
    =False against an uncased model was ignored instead). Where nothing states casing (the release's files), the
    flag decides, as the release's command lines need."""
    import argparse
    import json

    import pytest
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        plain = dict(json.load(f), vocab_size=6)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "가"]) + "\n",
                                        encoding="utf-8")
    for name, cfg in (("cased", dict(plain, do_lower_case=False)), ("uncased", dict(plain, do_lower_case=True)),
                      ("silent", plain)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg), encoding="utf-8")

    def resolve(flag, checkpoint=None, config_file=None):
        return model_args.resolve_config_and_vocab(argparse.Namespace(
            checkpoint=checkpoint and str(tmp_path / checkpoint), config_file=config_file and str(
                tmp_path / config_file), vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=flag))[0].do_lower_case
    for flag, checkpoint, config_file, source in ((True, "cased", None, "--checkpoint"),
                                                  (False, "uncased", None, "--checkpoint"),
                                                  (True, "silent", "cased.json", "--config_file"),
                                                  (True, None, "cased.json", "--config_file")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            resolve(flag, checkpoint, config_file)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        assert f"--do_lower_case={flag} contradicts {source}" in err and f"do_lower_case={not flag}" in err, err
    # a checkpoint whose casing cannot be read leaves the --config_file's to be checked
    (tmp_path / "silent" / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SystemExit):
        resolve(True, "silent", "cased.json")
    assert "--do_lower_case=True contradicts --config_file" in capsys.readouterr().err
    (tmp_path / "silent" / "tokenizer_config.json").unlink()
    assert resolve(True, "uncased") is True and resolve(False, "cased") is False  # agreeing: fine
    assert resolve(None, "uncased") is True and resolve(None, "cased") is False  # unsaid: the model's own
    assert resolve(True, "silent") is True and resolve(True, None, "silent.json") is True  # the release's files
    assert resolve(False, "silent", "silent.json") is False


def test_a_vocab_that_is_not_utf8_is_one_line_naming_it(tmp_path, capsys):
    """A vocab saved as CP949 (a Korean Windows default): the fine-tuning scripts and the converter say which file
    is not UTF-8 (it was the codec's message alone, or a UnicodeDecodeError traceback)."""
    import argparse
    import json

    import pytest

    import convert_checkpoint
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        (tmp_path / "config.json").write_text(json.dumps(dict(json.load(f), vocab_size=6)), encoding="utf-8")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "서울"]
    (tmp_path / "cp949.txt").write_bytes("\n".join(tokens).encode("cp949") + b"\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        model_args.resolve_config_and_vocab(argparse.Namespace(
            checkpoint=None, config_file=str(tmp_path / "config.json"), vocab_file=str(tmp_path / "cp949.txt")))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: vocab file ") and "cp949.txt is not UTF-8" in err
    assert len(err.splitlines()) == 1
    torch.save({}, tmp_path / "w.bin")
    with pytest.raises(SystemExit) as e:
        convert_checkpoint.main(["--input", str(tmp_path / "w.bin"), "--config_file", str(tmp_path / "config.json"),
                                 "--vocab_file", str(tmp_path / "cp949.txt"), "--output", str(tmp_path / "o"),
                                 "--to", "ours"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "cp949.txt is not UTF-8 (byte offset" in err and len(err.splitlines()) == 1


def test_a_model_with_one_segment_type_is_refused_in_one_line(tmp_path, capsys):
    """type_vocab_size 1 (a valid transformers config) cannot take the pair inputs every script builds: one line
    naming the config, where segment id 1 crashed inside the embedding lookup with a traceback."""
    import argparse
    import json

    import pytest

    import pretraining_start
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        (tmp_path / "config.json").write_text(json.dumps(dict(json.load(f), vocab_size=6, type_vocab_size=1)),
                                              encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n가\n", encoding="utf-8")
    capsys.readouterr()
    for checkpoint, config_file, named in ((None, tmp_path / "config.json", "--config_file"),
                                           (tmp_path, None, "--checkpoint")):
        with pytest.raises(SystemExit) as e:
            model_args.resolve_config_and_vocab(argparse.Namespace(
                checkpoint=checkpoint and str(checkpoint), config_file=config_file and str(config_file),
                vocab_file=str(tmp_path / "vocab.txt")))
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith(f"error: {named} ") and "type_vocab_size=1" in err, err
    with pytest.raises(ValueError, match=r"config.json\): type_vocab_size=1, but the pair inputs"):
        pretraining_start.model_config(str(tmp_path / "config.json"), None, None, {"vocab_size": 6},
                                       str(tmp_path), 32)


def _tiny(**overrides):
    import json
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        return dict(json.load(f), vocab_size=6, **overrides)


TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "가"]


def _refused(capsys, fn, *args):
    import pytest
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(*args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_a_vocab_of_another_size_or_order_is_refused(tmp_path, capsys):
    """The vocab must have exactly the config's vocab_size lines, fewer as well as more (ids past its end would
    never be produced, and every id would name another row if any line moved); a --vocab_file with the checkpoint's
    tokens in another order is refused as one with other tokens is."""
    import argparse
    import json
    (tmp_path / "config.json").write_text(json.dumps(_tiny()), encoding="utf-8")
    for n, tokens in (("short", TOKENS[:5]), ("long", TOKENS + ["나"])):
        (tmp_path / f"{n}.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
        err = _refused(capsys, model_args.resolve_config_and_vocab, argparse.Namespace(
            checkpoint=None, config_file=str(tmp_path / "config.json"), vocab_file=str(tmp_path / f"{n}.txt")))
        assert f"{n}.txt has {len(tokens)} tokens" in err and "vocab_size=6" in err
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(_tiny()), encoding="utf-8")
    (ckpt / "vocab.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    swapped = TOKENS[:3] + [TOKENS[4], TOKENS[3], TOKENS[5]]  # [SEP] and [MASK] exchanged: same set, other ids
    (tmp_path / "swapped.txt").write_text("\n".join(swapped) + "\n", encoding="utf-8")
    err = _refused(capsys, model_args.resolve_config_and_vocab, argparse.Namespace(
        checkpoint=str(ckpt), config_file=None, vocab_file=str(tmp_path / "swapped.txt")))
    assert "differs from the vocab.txt" in err and "from line 4" in err


def test_a_config_file_may_not_drop_the_checkpoints_word_splitting_nor_add_one(tmp_path, capsys):
    """Either direction: a plainly split checkpoint with a --config_file naming an analyser is refused too."""
    import argparse
    import json
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(_tiny()), encoding="utf-8")
    (ckpt / "vocab.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    (tmp_path / "kiwi.json").write_text(json.dumps(_tiny(morph_analyzer="kiwi")), encoding="utf-8")
    err = _refused(capsys, model_args.resolve_config_and_vocab, argparse.Namespace(
        checkpoint=str(ckpt), config_file=str(tmp_path / "kiwi.json"), vocab_file=None))
    assert "morph_analyzer='kiwi'" in err and "morph_analyzer=None" in err


def test_a_task_model_starts_from_an_encoder_checkpoint_with_a_fresh_head(tmp_path, capsys):
    """load_model_for_task: the encoder's weights are the checkpoint's and the head it lacks starts fresh, with a
    warning (fine-tuning from a pretrained encoder); an encoder weight the checkpoint lacks is an error."""
    import argparse
    import json

    from safetensors.torch import save_file

    from models.modeling import BertConfig, BertForSequenceClassification, BertModel, save_checkpoint
    (tmp_path / "vocab.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    encoder = BertModel(BertConfig.from_dict(_tiny()))
    save_checkpoint(encoder, str(tmp_path / "enc"), vocab_file=str(tmp_path / "vocab.txt"))
    args = argparse.Namespace(checkpoint=str(tmp_path / "enc"), config_file=None, vocab_file=None, do_lower_case=None)
    capsys.readouterr()
    model, config, vocab = model_args.load_model_for_task(args, BertForSequenceClassification, num_labels=3)
    assert "keeping their fresh initialisation" in capsys.readouterr().err and vocab.endswith("vocab.txt")
    assert model.classifier.weight.shape == (3, 64) and config.vocab_size == 6
    assert all(torch.equal(v, model.bert.state_dict()[k]) for k, v in encoder.state_dict().items())
    sd = {k: v for k, v in encoder.state_dict().items() if "layer.1.attn.query" not in k}
    (tmp_path / "holed").mkdir()
    save_file(sd, str(tmp_path / "holed" / "model.safetensors"))
    (tmp_path / "holed" / "config.json").write_text(json.dumps(_tiny()), encoding="utf-8")
    args.checkpoint, args.vocab_file = str(tmp_path / "holed"), str(tmp_path / "vocab.txt")
    err = _refused(capsys, model_args.load_model_for_task, args, BertForSequenceClassification)
    assert "missing" in err and "layer.1.attn.query.weight" in err


def test_a_tokenizer_json_vocab_is_written_once_per_checkpoint(tmp_path):
    """A checkpoint with only tokenizer.json (transformers 5) gets its vocab.txt written once per process, however
    many seeds resolve it, and the lines are the tokenizer's vocab in id order."""
    import argparse
    import json
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        config = dict(json.load(f), vocab_size=6)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "가"]
    (ckpt / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {
        t: i for i, t in enumerate(tokens)}}}), encoding="utf-8")
    args = argparse.Namespace(checkpoint=str(ckpt), vocab_file=None, config_file=None)
    _, first = model_args.resolve_config_and_vocab(args)
    _, second = model_args.resolve_config_and_vocab(args)
    assert first == second and open(first, encoding="utf-8").read().splitlines() == tokens
