"""Hugging Face directories saved by transformers itself (save_pretrained): the usual BertForMaskedLM and the
task classes, transformers 5's tokenizer.json without a vocab.txt, and its tokenizer settings, converted to ours and
read by the fine-tuning and evaluation scripts as they are."""
import os
import shutil
from pathlib import Path

import pytest
import torch

import convert_checkpoint
from helpers import tiny_batch, tiny_config
from models.checkpoint import checkpoint_tokenizer_vocab
from models.modeling import BertForPreTraining, checkpoint_config, load_checkpoint

transformers = pytest.importorskip("transformers")
V = tiny_config().vocab_size


def hf_saved(tmp_path, hf_cls, name, **config_kw):
    """A transformers model with random weights, saved by save_pretrained under tmp_path / name."""
    d = tiny_config(**config_kw).to_hf_dict()
    for ours_only in ("do_lower_case", "morph_analyzer"):  # a native HF config has neither
        del d[ours_only]
    hf_cfg = transformers.BertConfig(**d, attn_implementation="eager")
    torch.manual_seed(0)
    model = getattr(transformers, hf_cls)(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5))
    model.save_pretrained(str(tmp_path / name))
    return model, str(tmp_path / name)


def without_architectures(path):
    """The same checkpoint with no `architectures` in its config.json: the class is read off the weight names."""
    import json
    cfg = json.load(open(os.path.join(path, "config.json")))
    del cfg["architectures"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return path


def test_hf_masked_lm_converts_with_fresh_pooler_and_sop(tmp_path, capsys):
    """The usual HF BERT checkpoint (BertForMaskedLM: no pooler, no SOP head) becomes our BertForPreTraining,
    whose missing pieces start fresh and are named; the MLM logits are HF's."""
    hf, path = hf_saved(tmp_path, "BertForMaskedLM", "mlm")
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    for by_keys in (False, True):  # by config.json's architectures, then by the weight names
        out_dir = str(tmp_path / f"ours_{by_keys}")
        capsys.readouterr()
        convert_checkpoint.main(["--input", without_architectures(path) if by_keys else path, "--output", out_dir,
                                 "--to", "ours"])
        out, err = capsys.readouterr()
        assert "wrote BertForPreTraining" in out and "freshly initialised" in out
        fresh = [line for line in err.splitlines() if "fresh initialisation" in line]
        assert len(fresh) == 1 and all(k in fresh[0] for k in (
            "bert.pooler.dense.weight", "bert.pooler.dense.bias", "cls.seq_relationship.weight",
            "cls.seq_relationship.bias"))
        ours = load_checkpoint(BertForPreTraining(checkpoint_config(out_dir)), out_dir).eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(ids, types, mask)["mlm_logits"], ref, atol=1e-5, rtol=0)
    # only the pieces a masked-LM checkpoint cannot have start fresh: the rest stays strict
    from safetensors.torch import load_file, save_file
    st = os.path.join(path, "model.safetensors")
    save_file({k: v for k, v in load_file(st).items() if k != "cls.predictions.transform.dense.bias"}, st)
    with pytest.raises(SystemExit):
        convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "broken"), "--to", "ours"])
    assert "missing 1 [cls.predictions.transform.dense.bias]" in capsys.readouterr().err


def test_hf_dir_sharded_as_bin_files(tmp_path, capsys):
    """A checkpoint split into pickled shards (pytorch_model.bin.index.json: transformers 4 with
    safe_serialization=False, and older) loads as transformers loads it, by its folder or by its index; a shard
    the index names that is missing, or a .safetensors shard under a .bin index, is one line naming the index."""
    import json
    from safetensors.torch import load_file
    from models.modeling import BertForQuestionAnswering
    hf, st_dir = hf_saved(tmp_path, "BertForQuestionAnswering", "st")
    sd = load_file(os.path.join(st_dir, "model.safetensors"))
    path = tmp_path / "bin"
    os.makedirs(path)
    shutil.copy(os.path.join(st_dir, "config.json"), path / "config.json")
    keys, weight_map = sorted(sd), {}
    for i, part in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:])):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, path / name)
        weight_map.update(dict.fromkeys(part, name))
    index = path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    oracle = transformers.BertForQuestionAnswering.from_pretrained(str(path)).eval()
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        ref = oracle(input_ids=ids, token_type_ids=types, attention_mask=mask).start_logits
        torch.testing.assert_close(ref, hf(input_ids=ids, token_type_ids=types, attention_mask=mask).start_logits)
    for given in (path, index):
        ours = load_checkpoint(BertForQuestionAnswering(checkpoint_config(str(given))), str(given)).eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(ids, types, mask)["start_logits"], ref, atol=1e-5, rtol=0)
    convert_checkpoint.main(["--input", str(path), "--output", str(tmp_path / "ours"), "--to", "ours"])
    assert "wrote BertForQuestionAnswering" in capsys.readouterr().out
    # a stale pytorch_model.bin beside newer safetensors shards: transformers loads the shards, and so do we
    mixed = tmp_path / "mixed"
    convert_checkpoint.main(["--input", str(path), "--output", str(mixed), "--to", "hf", "--max_shard_mb", "0.3"])
    assert (mixed / "model.safetensors.index.json").exists()
    torch.save({k: torch.zeros_like(v) for k, v in sd.items()}, mixed / "pytorch_model.bin")
    oracle = transformers.BertForQuestionAnswering.from_pretrained(str(mixed)).eval()
    ours = load_checkpoint(BertForQuestionAnswering(checkpoint_config(str(mixed))), str(mixed)).eval()
    with torch.no_grad():
        torch.testing.assert_close(oracle(input_ids=ids, token_type_ids=types, attention_mask=mask).start_logits, ref)
        torch.testing.assert_close(ours(ids, types, mask)["start_logits"], ref, atol=1e-5, rtol=0)
    os.remove(path / "pytorch_model-00002-of-00002.bin")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin.index.json: lists pytorch_model-00002-of-00002.bin"):
        load_checkpoint(BertForQuestionAnswering(checkpoint_config(str(path))), str(path))
    index.write_text(json.dumps({"weight_map": dict.fromkeys(keys, "model.safetensors")}))
    with pytest.raises(ValueError, match="weight_map must map tensor names to .bin files"):
        load_checkpoint(BertForQuestionAnswering(checkpoint_config(str(path))), str(path))


def test_hf_encoder_saved_without_a_pooler_converts_with_a_fresh_one(tmp_path, capsys):
    """BertForMaskedLM(...).bert.save_pretrained(d) writes an encoder with no pooler (add_pooling_layer=False): it
    converts to every layout with a freshly initialised pooler, named, as a masked LM does (it was refused as
    missing bert.pooler.*); the encoder's outputs are transformers'."""
    from models.modeling import BertModel
    d = tiny_config().to_hf_dict()
    for ours_only in ("do_lower_case", "morph_analyzer"):
        del d[ours_only]
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**d, attn_implementation="eager"),
                                add_pooling_layer=False).eval()
    hf.save_pretrained(str(tmp_path / "enc"))
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    for to, out in (("ours", "ours"), ("hf", "hf"), ("release", "enc.bin")):
        capsys.readouterr()
        convert_checkpoint.main(["--input", str(tmp_path / "enc"), "--output", str(tmp_path / out), "--to", to])
        assert "bert.pooler.dense.weight, bert.pooler.dense.bias freshly initialised" in capsys.readouterr().out
    ours = load_checkpoint(BertModel(checkpoint_config(str(tmp_path / "ours"))), str(tmp_path / "ours")).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, types, mask)[0], ref, atol=1e-5, rtol=0)


def test_hf_token_classification_is_refused(tmp_path, capsys):
    hf, path = hf_saved(tmp_path, "BertForTokenClassification", "tok", num_labels=5)
    hf.save_pretrained(str(tmp_path / "sharded"), max_shard_size="100KB")
    index = str(tmp_path / "sharded" / "model.safetensors.index.json")
    # by config.json's architectures (the folder's, also when its shard index is named), then by the weight names
    # (a classifier with no pooler)
    for given, why in ((path, "architectures=BertForTokenClassification"),
                       (index, "architectures=BertForTokenClassification"),
                       (None, "classifier head without a pooler")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            convert_checkpoint.main(["--input", given or without_architectures(path),
                                     "--output", str(tmp_path / "out"), "--to", "ours"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and why in err and "token classification" in err and "\n" not in err
    assert not os.path.exists(tmp_path / "out")


def test_hf_dir_with_tokenizer_json_only(tmp_path, capsys):
    """transformers 5 saves tokenizer.json and no vocab.txt, and do_lower_case in tokenizer_config.json: both
    come over, so the converted checkpoint tokenizes as the HF one did."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "서울", "##에서", "hello"] + [f"t{i}" for i in range(V - 8)]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    _, path = hf_saved(tmp_path, "BertForSequenceClassification", "hf", num_labels=3)
    tok = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)  # first argument: the vocab
    tok.save_pretrained(path)
    if os.path.exists(os.path.join(path, "vocab.txt")):
        pytest.skip("this transformers writes vocab.txt itself")
    convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "ours"), "--to", "ours"])
    assert (tmp_path / "ours" / "vocab.txt").read_text(encoding="utf-8") == "".join(t + "\n" for t in tokens)
    cfg = checkpoint_config(str(tmp_path / "ours"))
    assert cfg.do_lower_case is True and cfg.num_labels == 3
    # transformers' uncased default strips accents, and with them Hangul syllables into jamo: said once
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "jamo" in err and err.endswith("trained\n"), err
    with open(tmp_path / "ours" / "vocab.txt", encoding="utf-8") as f:  # same ids as the HF tokenizer
        ours = {t.rstrip("\n"): i for i, t in enumerate(f)}
    assert [ours[t] for t in tok.tokenize("HELLO 서울에서")] == tok("HELLO 서울에서", add_special_tokens=False)["input_ids"]
    kept = shutil.copytree(path, tmp_path / "hf_kept")  # a new path: each tokenizer config is warned about once
    transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True, strip_accents=False).save_pretrained(kept)
    convert_checkpoint.main(["--input", str(kept), "--output", str(tmp_path / "kept"), "--to", "ours"])
    assert "warning" not in capsys.readouterr().err  # accents kept: the tokenisers agree
    cased = shutil.copytree(path, tmp_path / "hf_cased_stripped")  # cased, but told to strip: jamo all the same
    transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False, strip_accents=True).save_pretrained(cased)
    convert_checkpoint.main(["--input", str(cased), "--output", str(tmp_path / "cased"), "--to", "ours"])
    assert capsys.readouterr().err.count("jamo") == 1


def test_scripts_take_an_hf_dir_with_tokenizer_json_only(tmp_path):
    """The fine-tuning and evaluation scripts read a transformers 5 directory as it is: its tokenizer.json gives
    the vocab, and the scores equal those of the same model converted to ours first."""
    import eval_classifier
    from helpers import text_lines, tiny_model_files
    vocab, _, _ = tiny_model_files(tmp_path, "\n".join(text_lines("unlabeled_comments_5.txt", 0, 3000)), 600)
    with open(vocab, encoding="utf-8") as f:
        n = len(f.read().splitlines())
    _, path = hf_saved(tmp_path, "BertForSequenceClassification", "hf", num_labels=1, vocab_size=n)
    transformers.BertTokenizer(vocab, do_lower_case=False).save_pretrained(path)
    if os.path.exists(os.path.join(path, "vocab.txt")):
        pytest.skip("this transformers writes vocab.txt itself")
    argv = ["--task_name", "korsts", "--data_dir", "data/korsts", "--max_eval_examples", "40", "--no_cuda"]
    direct = eval_classifier.main(argv + ["--checkpoint", path])
    convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "ours"), "--to", "ours"])
    converted = eval_classifier.main(argv + ["--checkpoint", str(tmp_path / "ours")])
    assert direct["examples"] == 40 and direct["spearman"] == converted["spearman"]
    assert direct["pearson"] == converted["pearson"]
    # split into shards and named by its index: the folder's tokenizer.json still gives the vocab
    sharded = tmp_path / "sharded"
    transformers.BertForSequenceClassification.from_pretrained(path).save_pretrained(str(sharded),
                                                                                    max_shard_size="100KB")
    for name in os.listdir(path):
        if name.startswith("tokenizer"):
            shutil.copy(os.path.join(path, name), sharded / name)
    by_index = eval_classifier.main(argv + ["--checkpoint", str(sharded / "model.safetensors.index.json")])
    assert by_index["spearman"] == direct["spearman"]
    convert_checkpoint.main(["--input", str(sharded / "model.safetensors.index.json"), "--output",
                             str(tmp_path / "ours_by_index"), "--to", "ours"])
    assert (tmp_path / "ours_by_index" / "vocab.txt").read_text(encoding="utf-8") == \
        (tmp_path / "ours" / "vocab.txt").read_text(encoding="utf-8")
    tok = transformers.AutoTokenizer.from_pretrained(path)  # a vocab that covers the text: not all [UNK]
    ids = tok("서울에서 열린 회의에 참석했다", add_special_tokens=False)["input_ids"]
    assert len(set(ids) - {tok.unk_token_id}) >= 3


def test_hf_tokenizer_json_with_holes_and_no_vocab_at_all(tmp_path, capsys):
    import json
    _, path = hf_saved(tmp_path, "BertModel", "hf")
    vocab = {f"t{i}": i for i in range(V)}
    vocab["t3"] = V + 7  # id 3 missing, one past the end
    (tmp_path / "hf" / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": vocab}}))
    capsys.readouterr()  # save_pretrained's progress bar
    with pytest.raises(SystemExit):
        convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "o1"), "--to", "ours"])
    err = capsys.readouterr().err.strip()
    assert "tokenizer.json: model.vocab ids are not 0..999" in err and "\n" not in err
    os.remove(tmp_path / "hf" / "tokenizer.json")
    convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "o2"), "--to", "ours"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: ") and "has no vocab" in err and "\n" not in err
    assert sorted(os.listdir(tmp_path / "o2")) == ["config.json", "model.safetensors"]


def test_hf_tokens_added_after_training_are_refused(tmp_path, capsys):
    """tokenizer.add_tokens puts a token in tokenizer.json's added_tokens only, and transformers cuts it out of the
    text before WordPiece: a vocab.txt cannot carry that, so such a directory is refused in one line, by the
    converter and by the scripts that read it directly; the special tokens (also listed there) are not a reason."""
    import eval_classifier
    from helpers import text_lines, tiny_model_files
    vocab, _, _ = tiny_model_files(tmp_path, "\n".join(text_lines("unlabeled_comments_5.txt", 0, 3000)), 600)
    with open(vocab, encoding="utf-8") as f:
        n = len(f.read().splitlines())
    tok = transformers.BertTokenizer(vocab, do_lower_case=False)
    plain = tmp_path / "plain"
    tok.save_pretrained(plain)
    if os.path.exists(plain / "vocab.txt"):
        pytest.skip("this transformers writes vocab.txt itself")
    assert checkpoint_tokenizer_vocab(str(plain)) == Path(vocab).read_text(encoding="utf-8").splitlines()
    assert tok.add_tokens(["신조어"]) == 1
    assert tok.tokenize("신조어가") == ["신조어", "가"]  # cut out first: "가" starts a word, not "##가"
    _, path = hf_saved(tmp_path, "BertForSequenceClassification", "hf", num_labels=1, vocab_size=n + 1)
    tok.save_pretrained(path)
    capsys.readouterr()
    want = f"tokenizer.json: 1 added token(s) outside model.vocab (first: '신조어', id {n})"
    with pytest.raises(SystemExit):
        convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "ours"), "--to", "ours"])
    err = capsys.readouterr().err.strip()
    assert want in err and "\n" not in err and not (tmp_path / "ours").exists()
    with pytest.raises(SystemExit):
        eval_classifier.main(["--task_name", "korsts", "--data_dir", "data/korsts", "--checkpoint", path,
                              "--max_eval_examples", "8", "--no_cuda"])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --checkpoint {path}: ") and want in err and "\n" not in err


def test_added_tokens_must_be_the_vocab_entries_they_name(tmp_path):
    """added_tokens that repeat model.vocab's entries (the special tokens, as transformers writes them) are fine;
    one whose id holds another token, or a negative id, is refused like a token past the end."""
    import json
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "서울", "##에서"])}

    def write(added):
        (tmp_path / "tokenizer.json").write_text(json.dumps(
            {"model": {"type": "WordPiece", "vocab": vocab}, "added_tokens": added}), encoding="utf-8")
        return str(tmp_path)

    special = [{"id": i, "content": t, "special": True} for t, i in vocab.items() if t.startswith("[")]
    assert checkpoint_tokenizer_vocab(write(special)) == list(vocab)
    for bad in ({"id": 5, "content": "부산"}, {"id": -1, "content": "##에서"}):
        with pytest.raises(ValueError, match=f"1 added token\\(s\\) outside model.vocab \\(first: '{bad['content']}'"):
            checkpoint_tokenizer_vocab(write(special + [bad]))


def test_tokenizer_json_vocab_is_read_in_id_order(tmp_path):
    """model.vocab is a mapping: a tokenizer.json written by another tool may list it in any order, and the
    vocab.txt lines follow the ids, not the listing."""
    import json
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "서울", "##에서"]
    listed = {t: i for i, t in reversed(list(enumerate(tokens)))}
    assert list(listed) != tokens
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": listed}}),
                                             encoding="utf-8")
    assert checkpoint_tokenizer_vocab(str(tmp_path)) == tokens
