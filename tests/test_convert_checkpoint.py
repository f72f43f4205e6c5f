"""Checkpoint layouts: the original release's key names, Hugging Face state dicts, our own format, bad files,
and convert_checkpoint.py in every direction (directories saved by transformers itself: test_hf_import.py)."""
import os
import unicodedata

import pytest
import torch

import convert_checkpoint
from helpers import tiny_batch, tiny_config
from models.modeling import (BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertModel, checkpoint_config, checkpoint_vocab, load_checkpoint, save_checkpoint)

transformers = pytest.importorskip("transformers")

H, I, V, P, L = 64, 128, 1000, 512, 2  # tiny.json


def release_state_dict(prefix="", head=None, num_labels=3, seed=0):
    """Random weights under exactly the key names of the original release's files (written out literally)."""
    shapes = {"embeddings.word_embeddings.weight": (V, H), "embeddings.position_embeddings.weight": (P, H),
              "embeddings.token_type_embeddings.weight": (2, H),
              "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,)}
    for i in range(L):
        for name, w in [("attn.query", (H, H)), ("attn.key", (H, H)), ("attn.value", (H, H)),
                        ("attn.o_proj", (H, H)), ("attention_norm", (H,)), ("ffn.fc1", (I, H)),
                        ("ffn.fc2", (H, I)), ("ffn_norm", (H,))]:
            shapes[f"encoder.layer.{i}.{name}.weight"] = w
            shapes[f"encoder.layer.{i}.{name}.bias"] = w[:1]
    shapes.update({"pooler.dense.weight": (H, H), "pooler.dense.bias": (H,)})
    shapes = {prefix + k: v for k, v in shapes.items()}
    if head == "lm":
        shapes.update({"cls.predictions.transform.dense.weight": (H, H), "cls.predictions.transform.dense.bias": (H,),
                       "cls.predictions.transform.LayerNorm.weight": (H,),
                       "cls.predictions.transform.LayerNorm.bias": (H,), "cls.predictions.bias": (V,),
                       "cls.seq_relationship.weight": (2, H), "cls.seq_relationship.bias": (2,)})
    elif head == "qa":
        shapes.update({"qa_outputs.weight": (2, H), "qa_outputs.bias": (2,)})
    elif head == "classifier":
        shapes.update({"classifier.weight": (num_labels, H), "classifier.bias": (num_labels,)})
    g = torch.Generator().manual_seed(seed)
    # activations of order one (LayerNorm gains around 1), so a swapped or dropped tensor shows in the outputs
    sd = {k: torch.randn(s, generator=g) * (0.2 if len(s) > 1 else 0.5) + float(k.lower().endswith("norm.weight"))
          for k, s in shapes.items()}
    if head == "lm":  # the release's LM file stores the tied decoder as its own entry, equal to the embeddings
        sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].clone()
    return sd


# the release's names -> Hugging Face's, spelled out independently of the code under test
RELEASE_TO_HF = {"attn.query": "attention.self.query", "attn.key": "attention.self.key",
                 "attn.value": "attention.self.value", "attn.o_proj": "attention.output.dense",
                 "attention_norm": "attention.output.LayerNorm", "ffn.fc1": "intermediate.dense",
                 "ffn.fc2": "output.dense", "ffn_norm": "output.LayerNorm"}


def hf_from_release(hf_cls, sd, num_labels=2):
    out = {}
    for k, v in sd.items():
        for rel, hf in RELEASE_TO_HF.items():
            k = k.replace(f".{rel}.", f".{hf}.")
        out[k] = v
    if "cls.predictions.bias" in out:
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
    hf_cfg = transformers.BertConfig(**tiny_config(num_labels=num_labels).to_hf_dict(), attn_implementation="eager")
    model = getattr(transformers, hf_cls)(hf_cfg)
    if hf_cls == "BertForQuestionAnswering":  # HF's QA model has no pooler
        out = {k: v for k, v in out.items() if "pooler" not in k}
    model.load_state_dict(out, strict=True)
    return model.eval()


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def save_bin(sd, path):
    torch.save(sd, path)
    return str(path)


# ------------------------------------------------------------------------------------------------------------
# release layouts

def test_release_encoder_file_loads_by_name(tmp_path):
    sd = release_state_dict()
    model = load_checkpoint(BertModel(tiny_config()), save_bin(sd, tmp_path / "enc.bin")).eval()
    own = model.state_dict()
    assert set(own) == set(sd) and all(torch.equal(own[k], sd[k]) for k in sd)
    # the same weights with the `bert.` prefix (as inside the LM file) give the same encoder
    prefixed = load_checkpoint(BertModel(tiny_config()), save_bin(
        {"bert." + k: v for k, v in sd.items()}, tmp_path / "prefixed.bin")).eval()
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        close(model(ids, types, mask)[0], prefixed(ids, types, mask)[0])


def test_release_lm_file_matches_hf_and_round_trips(tmp_path, capsys):
    sd = release_state_dict("bert.", "lm")
    path = save_bin(sd, tmp_path / "lm.bin")
    ours = load_checkpoint(BertForPreTraining(tiny_config()), path).eval()
    hf = hf_from_release("BertForPreTraining", sd)
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        out, ref = ours(ids, types, mask), hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    close(out["mlm_logits"], ref.prediction_logits)
    close(out["sop_logits"], ref.seq_relationship_logits)
    # release -> ours -> release gives back the same tensors under the same names (--checkpoint: --input's other
    # spelling, as in the other scripts)
    convert_checkpoint.main(["--checkpoint", path, "--config_file", "models/configs/tiny.json",
                             "--output", str(tmp_path / "ours"), "--to", "ours"])
    convert_checkpoint.main(["--input", str(tmp_path / "ours"), "--output", str(tmp_path / "back.bin"),
                             "--to", "release"])
    back = torch.load(tmp_path / "back.bin", weights_only=True)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert "wrote BertForPreTraining" in capsys.readouterr().out


@pytest.mark.parametrize("head, our_cls, hf_cls", [
    ("qa", BertForQuestionAnswering, "BertForQuestionAnswering"),
    ("classifier", BertForSequenceClassification, "BertForSequenceClassification"),
])
def test_release_finetuned_files(tmp_path, head, our_cls, hf_cls):
    sd = release_state_dict("bert.", head, num_labels=3)
    path = save_bin(sd, tmp_path / f"{head}.bin")
    cfg = tiny_config(num_labels=3)
    ours = load_checkpoint(our_cls(cfg), path).eval()
    hf = hf_from_release(hf_cls, sd, num_labels=3 if head == "classifier" else 2)  # HF sizes qa_outputs by it
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        out, ref = ours(ids, types, mask), hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    for key in ("start_logits", "end_logits") if head == "qa" else ("logits",):
        close(out[key], getattr(ref, key))
    loads, real_load = [], torch.load
    with pytest.MonkeyPatch.context() as mp:  # the kind check and the load share one read of the pickle
        mp.setattr(torch, "load", lambda f, *a, **k: loads.append(str(f)) or real_load(f, *a, **k))
        convert_checkpoint.main(["--input", path, "--config_file", "models/configs/tiny.json",
                                 "--output", str(tmp_path / "back.bin"), "--to", "release"])
    assert loads == [str(path)]
    back = torch.load(tmp_path / "back.bin", weights_only=True)
    # the release's QA model has a pooler (never used) and loads strictly: ours has none, the file's is carried
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in back)


def test_qa_to_release_without_a_pooler_writes_an_unused_one(tmp_path, capsys):
    """Our QA checkpoints have no pooler; the release file gets a zero one that its strict load accepts."""
    torch.manual_seed(0)
    model = BertForQuestionAnswering(tiny_config())
    save_checkpoint(model, str(tmp_path / "ours"))
    convert_checkpoint.main(["--input", str(tmp_path / "ours"), "--output", str(tmp_path / "qa.bin"),
                             "--to", "release"])
    assert "zero pooler" in capsys.readouterr().out
    back = torch.load(tmp_path / "qa.bin", weights_only=True)
    assert set(back) == set(release_state_dict("bert.", "qa"))  # the release's KorQuAD file's key set
    assert not back["bert.pooler.dense.weight"].any() and back["bert.pooler.dense.weight"].shape == (H, H)
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


def test_encoder_only_into_task_model(tmp_path, capsys):
    path = save_bin(release_state_dict(), tmp_path / "enc.bin")
    with pytest.raises(ValueError, match=r"missing 2 \[qa_outputs.weight, qa_outputs.bias\]"):
        load_checkpoint(BertForQuestionAnswering(tiny_config()), path)
    model = BertForQuestionAnswering(tiny_config())
    head_before = model.qa_outputs.weight.clone()
    load_checkpoint(model, path, strict=False)
    warning = capsys.readouterr().err.strip()
    assert "\n" not in warning and "qa_outputs.weight" in warning and "fresh initialisation" in warning
    assert torch.equal(model.qa_outputs.weight, head_before)
    expected = release_state_dict()["encoder.layer.1.ffn.fc2.weight"]
    assert torch.equal(model.bert.encoder.layer[1].ffn.fc2.weight, expected)


def test_head_of_another_size_starts_fresh_unless_strict(tmp_path, capsys):
    """A 3-label (KorNLI) checkpoint fine-tuned as a 1-output (KorSTS) classifier: loaded without strict, the
    mis-shaped head keeps its fresh initialisation with a warning and the encoder and pooler are the file's;
    strict, the shapes are an error. An encoder weight is never left fresh, even when named in fresh_ok."""
    sd = release_state_dict("bert.", "classifier", num_labels=3)
    path = save_bin(sd, tmp_path / "nli.bin")
    model = BertForSequenceClassification(tiny_config(), num_labels=1)
    head_before = model.classifier.weight.clone()
    load_checkpoint(model, path, strict=False)
    warning = capsys.readouterr().err.strip()
    assert "\n" not in warning and "classifier.weight" in warning and "fresh initialisation" in warning
    assert torch.equal(model.classifier.weight, head_before)
    assert torch.equal(model.bert.pooler.dense.weight, sd["bert.pooler.dense.weight"])
    assert torch.equal(model.bert.encoder.layer[0].attn.key.weight, sd["bert.encoder.layer.0.attn.key.weight"])
    with pytest.raises(ValueError, match=r"shape mismatch 2 \[classifier.weight file \(3, 64\) vs model \(1, 64\)"):
        load_checkpoint(BertForSequenceClassification(tiny_config(), num_labels=1), path)
    key = "bert.encoder.layer.1.ffn.fc1.bias"
    partial = save_bin({k: v for k, v in sd.items() if k != key}, tmp_path / "partial.bin")
    with pytest.raises(ValueError, match=r"missing 1 \[bert.encoder.layer.1.ffn.fc1.bias\]"):
        load_checkpoint(BertForSequenceClassification(tiny_config(), num_labels=3), partial, fresh_ok={key})


def test_other_heads_ignored_and_untied_decoder_rejected(tmp_path):
    sd = release_state_dict("bert.", "lm")
    with pytest.raises(ValueError) as e:  # cls.* and the pooler are ignored: only the QA head is reported
        load_checkpoint(BertForQuestionAnswering(tiny_config()), save_bin(sd, tmp_path / "lm.bin"))
    assert str(e.value).endswith("BertForQuestionAnswering: missing 2 [qa_outputs.weight, qa_outputs.bias]")
    sd["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ValueError, match="decoder.weight differs from the word embeddings"):
        load_checkpoint(BertForPreTraining(tiny_config()), save_bin(sd, tmp_path / "untied.bin"))


def test_hf_full_state_dict_with_buffers_and_decoder_bias(tmp_path):
    """An older-style pytorch_model.bin: tied decoder weight and bias stored, position_ids buffer present."""
    hf = hf_from_release("BertForPreTraining", release_state_dict("bert.", "lm"))
    sd = dict(hf.state_dict())
    assert "cls.predictions.decoder.bias" in sd
    sd["bert.embeddings.position_ids"] = torch.arange(P)[None]
    assert_bin_loads_as(hf, sd, tmp_path)


def assert_bin_loads_as(hf, sd, tmp_path):
    """`sd` saved as a Hugging Face directory's pytorch_model.bin loads into our model, which then predicts as the
    transformers model `hf` does."""
    os.makedirs(tmp_path / "hf")
    torch.save(sd, tmp_path / "hf" / "pytorch_model.bin")
    ours = load_checkpoint(BertForPreTraining(tiny_config()), str(tmp_path / "hf")).eval()
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        close(ours(ids, types, mask)["mlm_logits"], hf(input_ids=ids, attention_mask=mask).prediction_logits)


def test_hf_tf_era_layernorm_gamma_beta_names(tmp_path):
    """Checkpoints converted from TensorFlow name LayerNorm's scale and shift gamma and beta; transformers reads
    gamma as weight and beta as bias, and so must we (the two swapped would still load: same shapes)."""
    hf = hf_from_release("BertForPreTraining", release_state_dict("bert.", "lm"))
    sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in hf.state_dict().items()}
    assert sum("gamma" in k for k in sd) == sum("beta" in k for k in sd) > 2
    assert_bin_loads_as(hf, sd, tmp_path)


# ------------------------------------------------------------------------------------------------------------
# our format and Hugging Face export

def test_save_checkpoint_round_trip(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"tok{i}\n" for i in range(V)), encoding="utf-8")
    model = BertForSequenceClassification(tiny_config(morph_analyzer="kiwi"), num_labels=1).eval()
    save_checkpoint(model, str(tmp_path / "ckpt"), vocab_file=str(vocab))
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors", "vocab.txt"]  # no temps
    cfg = checkpoint_config(str(tmp_path / "ckpt"))
    assert cfg == model.config and cfg.num_labels == 1 and cfg.morph_analyzer == "kiwi"
    assert checkpoint_vocab(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt" / "vocab.txt")
    bare = str(tmp_path / "ckpt" / "model.safetensors")
    assert checkpoint_config(bare) == cfg  # the config rides in the file's metadata
    assert checkpoint_vocab(bare) == str(tmp_path / "ckpt" / "vocab.txt")  # the vocab is found beside it
    assert checkpoint_vocab(str(tmp_path / "elsewhere" / "model.safetensors")) is None
    loaded = load_checkpoint(BertForSequenceClassification(cfg), bare).eval()
    ids, types, mask = tiny_batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, types, mask)["logits"], model(ids, types, mask)["logits"])
    # a hand-edited metadata config is one error naming the file, not a traceback or the JSON parser's words alone
    from safetensors.torch import load_file, save_file
    for text, why in (("[1, 2]", "expected a JSON object"), ("{not json", "not valid JSON")):
        save_file(load_file(bare), str(tmp_path / "edited.safetensors"), metadata={"bert_config": text})
        with pytest.raises(ValueError, match=r"edited.safetensors \(metadata bert_config\): " + why):
            checkpoint_config(str(tmp_path / "edited.safetensors"))
    assert checkpoint_config(save_bin(model.state_dict(), tmp_path / "x.bin")) is None


def test_label_names_are_written_only_when_they_fit_the_head(tmp_path):
    """labels name the head's rows in config.json's id2label; names that do not match the head's size are not
    written (id2label would say num_labels), so the checkpoint still reloads as the head it holds."""
    from models.checkpoint import checkpoint_label_names
    model = BertForSequenceClassification(tiny_config(), num_labels=3)
    save_checkpoint(model, str(tmp_path / "fits"), labels=["contradiction", "entailment", "neutral"])
    assert checkpoint_label_names(str(tmp_path / "fits")) == ["contradiction", "entailment", "neutral"]
    assert checkpoint_config(str(tmp_path / "fits")) == model.config
    regression = BertForSequenceClassification(tiny_config(), num_labels=1)
    save_checkpoint(regression, str(tmp_path / "odd"), labels=["contradiction", "entailment", "neutral"])
    assert checkpoint_label_names(str(tmp_path / "odd")) is None
    assert checkpoint_config(str(tmp_path / "odd")).num_labels == 1


@pytest.mark.parametrize("our_cls, hf_cls, kw, config_kw", [
    (BertModel, "BertModel", {}, {}),
    (BertForPreTraining, "BertForPreTraining", {}, {}),
    (BertForQuestionAnswering, "BertForQuestionAnswering", {}, {}),
    # fine-tuned from a 3-label (KorNLI) checkpoint: still 2 QA outputs, and the exported config says so
    (BertForQuestionAnswering, "BertForQuestionAnswering", {}, {"num_labels": 3}),
    (BertForSequenceClassification, "BertForSequenceClassification", {"num_labels": 3}, {}),
])
def test_convert_ours_to_hf_loads_in_transformers(tmp_path, our_cls, hf_cls, kw, config_kw):
    torch.manual_seed(0)
    model = our_cls(tiny_config(**config_kw), **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(["[UNK]\n", "[PAD]\n"] + [f"t{i}\n" for i in range(V - 2)]), encoding="utf-8")
    save_checkpoint(model, str(tmp_path / "ours"), vocab_file=str(vocab))
    convert_checkpoint.main(["--input", str(tmp_path / "ours"), "--output", str(tmp_path / "hf"), "--to", "hf"])
    hf, info = getattr(transformers, hf_cls).from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.pad_token_id == 1 and os.path.isfile(tmp_path / "hf" / "vocab.txt")
    ids, types, mask = tiny_batch()
    hf.eval()
    with torch.no_grad():
        out, ref = model(ids, types, mask), hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    if our_cls is BertModel:
        close(out[0], ref.last_hidden_state)
        close(out[1], ref.pooler_output)
    elif our_cls is BertForPreTraining:
        close(out["mlm_logits"], ref.prediction_logits)
        close(out["sop_logits"], ref.seq_relationship_logits)
    elif our_cls is BertForQuestionAnswering:
        close(out["start_logits"], ref.start_logits)
        close(out["end_logits"], ref.end_logits)
    else:
        close(out["logits"], ref.logits)
    # and back: the HF directory converts to ours with identical weights and config
    convert_checkpoint.main(["--input", str(tmp_path / "hf"), "--output", str(tmp_path / "again"), "--to", "ours"])
    again = load_checkpoint(our_cls(checkpoint_config(str(tmp_path / "again")), **kw), str(tmp_path / "again"))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert checkpoint_config(str(tmp_path / "again")) == model.config


# ------------------------------------------------------------------------------------------------------------
# bad input

def test_bad_checkpoint_files(tmp_path):
    model = BertModel(tiny_config())
    garbage = save_bin({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(2)}, tmp_path / "garbage.bin")
    with pytest.raises(ValueError) as e:
        load_checkpoint(model, garbage)
    assert "unexpected 2 [foo.weight, bar.bias]" in str(e.value) and "missing 39 [" in str(e.value)
    good = save_bin(release_state_dict(), tmp_path / "good.bin")
    data = open(good, "rb").read()
    (tmp_path / "truncated.bin").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.bin").write_text("this is not a checkpoint\n")
    save_checkpoint(model, str(tmp_path / "ours"))
    st = (tmp_path / "ours" / "model.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(st[: len(st) // 2])
    torch.save({"weights": [1, 2, 3]}, tmp_path / "not_tensors.bin")
    for name in ("truncated.bin", "text.bin", "truncated.safetensors", "not_tensors.bin"):
        with pytest.raises(ValueError, match=f"{name}: not a"):
            load_checkpoint(model, str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(model, str(tmp_path / "nope.bin"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no model.safetensors, pytorch_model.bin or shard index"):
        load_checkpoint(model, str(tmp_path / "empty"))
    wide = release_state_dict()
    wide["embeddings.word_embeddings.weight"] = torch.zeros(V + 1, H)
    with pytest.raises(ValueError, match=r"shape mismatch 1 \[embeddings.word_embeddings.weight file \(1001, 64\) vs"):
        load_checkpoint(model, save_bin(wide, tmp_path / "wide.bin"), strict=False)


def test_only_the_fine_tuning_scripts_files_travel_with_a_conversion(tmp_path, capsys):
    """task.json and qa_train.json beside the input go to the output (eval scripts read them as the model's own
    settings); a file of that name that is not one (a KorQuAD training file beside a release .bin) stays behind."""
    import json
    enc = save_bin(release_state_dict(), tmp_path / "enc.bin")
    (tmp_path / "qa_train.json").write_text(json.dumps({"version": "KorQuAD_v1.0_train", "data": []}))
    (tmp_path / "task.json").write_text(json.dumps({"task_name": "korsts", "max_seq_length": 64}))
    convert_checkpoint.main(["--input", enc, "--config_file", "models/configs/tiny.json", "--output",
                             str(tmp_path / "ours"), "--to", "ours"])
    assert sorted(p for p in os.listdir(tmp_path / "ours") if p.endswith(".json")) == ["config.json", "task.json"]
    err = capsys.readouterr().err
    assert "qa_train.json is not a qa_train.json the fine-tuning scripts write (no 'max_seq_length'); not copied" in err


def test_convert_cli_errors_are_one_line(tmp_path, capsys):
    enc = save_bin(release_state_dict(), tmp_path / "enc.bin")
    os.makedirs(tmp_path / "other")
    bad_vocab = tmp_path / "other" / "vocab.txt"  # not beside enc.bin, where it would be taken as its vocab
    bad_vocab.write_text("a\nb\n")
    os.makedirs(tmp_path / "taken")
    (tmp_path / "taken" / "keep.txt").write_text("precious")
    cases = [
        (["--input", enc, "--output", str(tmp_path / "o1"), "--to", "hf"], "carries no config: pass --config_file"),
        (["--input", enc, "--config_file", "models/configs/tiny.json", "--output", str(tmp_path / "taken"),
          "--to", "ours"], "already exists"),
        (["--input", enc, "--config_file", "models/configs/tiny.json", "--vocab_file", str(bad_vocab),
          "--output", str(tmp_path / "o2"), "--to", "hf"], "has 2 tokens but the config says vocab_size=1000"),
        (["--input", enc, "--config_file", "models/configs/small.json", "--output", str(tmp_path / "o3"),
          "--to", "ours"], "shape mismatch"),
        (["--input", enc, "--config_file", "models/configs/tiny.json", "--output", str(enc) + "/hf", "--to", "hf"],
         "--output " + str(enc) + "/hf: cannot be made, "),
        (["--input", enc, "--output", str(enc) + "/x.bin", "--to", "release"],
         f"--output {enc}/x.bin: cannot be made, {enc} is a file"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            convert_checkpoint.main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and message in err and "\n" not in err and err.startswith("error: ")
    assert os.listdir(tmp_path / "taken") == ["keep.txt"] and not os.path.exists(tmp_path / "o3")


def test_hf_export_tokenizer_keeps_hangul(tmp_path):
    """The exported directory's tokenizer (loaded by transformers) gives our ids on Korean text: no NFD jamo."""
    from tokenization import FullTokenizer

    vocab = tmp_path / "vocab.txt"
    words = ["서울", "##에서", "열린", "회의", "##에", "한국", "##어", "大", "韓", "."]
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
                               + [f"tok{i}" for i in range(V - 15)]) + "\n", encoding="utf-8")
    save_checkpoint(BertModel(tiny_config()), str(tmp_path / "ours"), vocab_file=str(vocab))
    convert_checkpoint.main(["--input", str(tmp_path / "ours"), "--output", str(tmp_path / "hf"), "--to", "hf"])
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "서울에서 열린 한국어 회의. 大韓"
    ours = FullTokenizer(str(vocab))
    expected = ours.convert_tokens_to_ids(ours.tokenize(text))
    assert 1 not in expected  # the text is fully covered by the vocab, so an [UNK] would be a decomposition bug
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == expected
    # decomposed Hangul (text saved on macOS) too: the exported pipeline has our NFC step
    assert hf_tok(unicodedata.normalize("NFD", text), add_special_tokens=False)["input_ids"] == expected
    # pairs as BERT builds them, and inputs cut at the model's positions
    enc = hf_tok("서울", "한국어")
    assert enc["input_ids"] == [2, 5, 3, 10, 11, 3] and enc["token_type_ids"] == [0, 0, 0, 1, 1, 1]
    assert len(hf_tok("서울 " * 600, truncation=True)["input_ids"]) == tiny_config().max_position_embeddings
    # a vocab saved with a byte-order mark: ours keep it byte for byte (its sha256 ties it to shards), the hf export
    # drops it, or transformers' BertTokenizer would read its first token as '\ufeff[PAD]'
    vocab.write_bytes(b"\xef\xbb\xbf" + vocab.read_bytes())
    save_checkpoint(BertModel(tiny_config()), str(tmp_path / "ours_bom"), vocab_file=str(vocab))
    assert (tmp_path / "ours_bom" / "vocab.txt").read_bytes() == vocab.read_bytes()
    convert_checkpoint.main(["--input", str(tmp_path / "ours_bom"), "--output", str(tmp_path / "hf_bom"), "--to", "hf"])
    assert (tmp_path / "hf_bom" / "vocab.txt").read_bytes() == vocab.read_bytes()[3:]
    assert transformers.BertTokenizer(str(tmp_path / "hf_bom" / "vocab.txt")).convert_tokens_to_ids("[PAD]") == 0


def test_hf_export_of_an_uncased_model_lower_cases(tmp_path):
    """A model whose config says do_lower_case was trained on lower-cased ids: its exported tokenizer lower-cases
    as transformers' own BertTokenizer does with do_lower_case (accents kept, as ours keep them)."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "seoul", "서울", "##에서"]
                               + [f"tok{i}" for i in range(V - 9)]) + "\n", encoding="utf-8")
    for lower in (True, False):
        out = tmp_path / f"hf_{lower}"
        save_checkpoint(BertModel(tiny_config(do_lower_case=lower)), str(tmp_path / f"ours_{lower}"),
                        vocab_file=str(vocab))
        convert_checkpoint.main(["--input", str(tmp_path / f"ours_{lower}"), "--output", str(out), "--to", "hf"])
        hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
        peer = transformers.BertTokenizer(vocab=str(vocab), do_lower_case=lower, strip_accents=False)
        for text in ("HELLO Seoul 서울에서", "hello SEOUL"):
            assert hf_tok(text)["input_ids"] == peer(text)["input_ids"], (lower, text)
        assert (hf_tok("HELLO", add_special_tokens=False)["input_ids"] == [5]) == lower


def test_hf_export_of_a_morpheme_model_writes_no_tokenizer(tmp_path, capsys):
    """transformers' tokenizer cannot pre-split morphemes: rather than a tokenizer giving other ids, none."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(["[PAD]\n", "[UNK]\n", "[CLS]\n", "[SEP]\n", "[MASK]\n"]
                             + [f"t{i}\n" for i in range(V - 5)]), encoding="utf-8")
    model = BertModel(tiny_config(morph_analyzer="kiwi"))
    save_checkpoint(model, str(tmp_path / "ours"), vocab_file=str(vocab))
    capsys.readouterr()
    convert_checkpoint.main(["--input", str(tmp_path / "ours"), "--output", str(tmp_path / "hf"), "--to", "hf"])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("warning: ") and "morph_analyzer='kiwi'" in err
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors", "morph_vocab.txt"]
    hf, info = transformers.BertModel.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert checkpoint_config(str(tmp_path / "hf")) == model.config  # morph_analyzer rides in config.json
    try:  # transformers' tokenizer classes do not read the vocab (transformers 5 builds an empty one)
        n_tokens = len(transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf")))
    except (OSError, ValueError, TypeError):
        n_tokens = 0
    assert n_tokens < V
    # the vocab comes back with the weights (it was lost: the export kept none)
    convert_checkpoint.main(["--input", str(tmp_path / "hf"), "--output", str(tmp_path / "back"), "--to", "ours"])
    assert (tmp_path / "back" / "vocab.txt").read_bytes() == vocab.read_bytes()
    assert checkpoint_config(str(tmp_path / "back")) == model.config


def test_checkpoint_files_take_the_users_umask(tmp_path):
    """Written through a private temp file, a checkpoint still gets the mode the user's files get."""
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            save_checkpoint(BertModel(tiny_config()), str(tmp_path / f"u{umask:o}"))
        finally:
            os.umask(old)
        assert os.stat(tmp_path / f"u{umask:o}" / "model.safetensors").st_mode & 0o777 == mode


def test_wrapper_prefixes_are_dropped_in_any_number_and_order(tmp_path):
    """A state dict saved from a DDP-wrapped (module.) or compiled (_orig_mod.) model, or both in either order (a
    compiled model wrapped in DDP, or the reverse), loads as the plain one does."""
    from models.checkpoint import canonical_state_dict
    sd = release_state_dict("bert.", "classifier")
    plain = canonical_state_dict(sd)
    want = load_checkpoint(BertForSequenceClassification(tiny_config(), num_labels=3), save_bin(sd, tmp_path / "p.bin"))
    for prefix in ("module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."):
        wrapped = {prefix + k: v for k, v in sd.items()}
        assert list(canonical_state_dict(wrapped)) == list(plain), prefix
        got = load_checkpoint(BertForSequenceClassification(tiny_config(), num_labels=3),
                              save_bin(wrapped, tmp_path / "w.bin"))
        assert all(torch.equal(a, b) for a, b in zip(want.state_dict().values(), got.state_dict().values())), prefix


def test_label_names_in_another_order_or_case_give_the_head_rows_in_the_tasks_order(tmp_path):
    """transformers' id2label says which classifier row is which label, matched whatever the case (MNLI models
    name theirs CONTRADICTION, NEUTRAL, ENTAILMENT); its placeholders LABEL_0, LABEL_1, ... name nothing. reorder_head
    moves the weight and bias rows alike: the reordered head's logit j is the stored head's logit for the task's
    label j."""
    from models.checkpoint import head_rows, reorder_head
    labels = ("contradiction", "entailment", "neutral")  # kornli's order
    mnli = transformers.BertConfig(num_labels=3, id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
    mnli.save_pretrained(str(tmp_path / "mnli"))
    rows = head_rows(str(tmp_path / "mnli"), labels, "kornli")
    assert rows == [0, 2, 1]
    transformers.BertConfig(num_labels=3).save_pretrained(str(tmp_path / "placeholders"))  # LABEL_0, LABEL_1, ...
    assert transformers.AutoConfig.from_pretrained(str(tmp_path / "placeholders")).id2label[2] == "LABEL_2"
    assert head_rows(str(tmp_path / "placeholders"), labels, "kornli") is None
    transformers.BertConfig(num_labels=3, id2label=dict(enumerate(["Contradiction", "Entailment", "Neutral"]))
                            ).save_pretrained(str(tmp_path / "same"))
    assert head_rows(str(tmp_path / "same"), labels, "kornli") is None
    assert head_rows(str(tmp_path / "mnli"), None, "korsts") is None  # regression: no labels to match
    # one placeholder among real names is no placeholder set: the names still disagree with the task's
    transformers.BertConfig(num_labels=3, id2label={0: "LABEL_0", 1: "neutral", 2: "entailment"}
                            ).save_pretrained(str(tmp_path / "mixed"))
    with pytest.raises(ValueError, match="id2label names label_0, neutral, entailment, not kornli's labels"):
        head_rows(str(tmp_path / "mixed"), labels, "kornli")
    cyclic = transformers.BertConfig(num_labels=3, id2label={0: "neutral", 1: "contradiction", 2: "entailment"})
    cyclic.save_pretrained(str(tmp_path / "cyclic"))
    assert head_rows(str(tmp_path / "cyclic"), labels, "kornli") == [1, 2, 0]  # not its inverse, [2, 0, 1]
    g = torch.Generator().manual_seed(0)
    sd = {"classifier.weight": torch.randn(3, H, generator=g), "classifier.bias": torch.randn(3, generator=g),
          "bert.pooler.dense.bias": torch.randn(H, generator=g)}
    x = torch.randn(5, H, generator=g)
    stored = x @ sd["classifier.weight"].T + sd["classifier.bias"]
    for name, config in (("mnli", mnli), ("cyclic", cyclic)):
        by_name = {config.id2label[i].lower(): stored[:, i] for i in range(3)}
        new = reorder_head(sd, head_rows(str(tmp_path / name), labels, "kornli"))
        torch.testing.assert_close(x @ new["classifier.weight"].T + new["classifier.bias"],
                                   torch.stack([by_name[label] for label in labels], 1))
        assert new["bert.pooler.dense.bias"] is sd["bert.pooler.dense.bias"]
