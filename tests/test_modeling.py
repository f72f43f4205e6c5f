"""BERT model: config parsing, shapes, padding invariance, and parity with Hugging Face transformers."""
import json

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_config
from models.modeling import (BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertModel, checkpoint_config, load_checkpoint)

transformers = pytest.importorskip("transformers")

CONFIGS = "models/configs"


def randomize(model, seed=0):
    """Weights far from the init (LayerNorm included), so a swapped or dropped tensor shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # activations of order one, so an erf-vs-tanh GELU or a dropped bias shows well above the tolerance
            scale, centre = (0.2, 0.0) if p.dim() > 1 else (0.5, float(name.lower().endswith("norm.weight")))
            p.copy_(torch.randn(p.shape, generator=g) * scale + centre)
    return model.eval()


def padded_batch(vocab_size=1000, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (3, 12), generator=g)
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # two rows carry padding of different lengths
    mask[2, 4:] = 0
    return ids, types, mask


# ------------------------------------------------------------------------------------------------------------
# config

def pretraining_param_count(c):
    H, I = c.hidden_size, c.intermediate_size
    embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * H + 2 * H
    layer = 4 * (H * H + H) + (H * I + I) + (I * H + H) + 4 * H
    pooler = H * H + H
    heads = (H * H + H) + 2 * H + c.vocab_size + (2 * H + 2)  # transform, LayerNorm, decoder bias, SOP
    return embeddings + c.num_hidden_layers * layer + pooler + heads


def test_release_config_keys_load_and_param_counts():
    small = BertConfig.from_json_file(f"{CONFIGS}/small.json")
    raw = json.load(open(f"{CONFIGS}/small.json"))
    assert {"act_fn", "ff_dim", "num_heads", "dropout_prob"} <= set(raw)  # written with the release's names
    assert (small.intermediate_size, small.num_attention_heads, small.hidden_act) == (1024, 8, "gelu")
    assert small.hidden_dropout_prob == small.attention_probs_dropout_prob == 0.1
    # the count formula is checked against real models here, then applied to large (no 330M-param allocation)
    for cfg in (small, tiny_config()):
        assert sum(p.numel() for p in BertForPreTraining(cfg).parameters()) == pretraining_param_count(cfg)
    counts = {name: pretraining_param_count(BertConfig.from_json_file(f"{CONFIGS}/{name}.json"))
              for name in ("small", "large_v1", "large_v2")}
    # small: 17,965,826 with vocab 32k (8.2M of them embeddings); large_v1: 337,741,058
    assert 17.5e6 < counts["small"] < 18.5e6
    assert 330e6 < counts["large_v1"] < 345e6
    assert counts["large_v1"] - counts["large_v2"] == (512 - 384) * 1024  # v2 differs only in max positions
    assert BertConfig.from_json_file(f"{CONFIGS}/tiny.json").num_hidden_layers == 2


def test_hf_config_keys_accepted():
    d = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, num_labels=3, layer_norm_eps=1e-7).to_dict()
    # keys that older transformers releases wrote
    d.update(gradient_checkpointing=False, position_embedding_type="absolute", output_past=True, directionality="bidi",
             pooler_fc_size=768, pooler_type="first_token_transform", torch_dtype="float32")
    cfg = BertConfig.from_dict(d)
    assert (cfg.vocab_size, cfg.num_labels, cfg.layer_norm_eps, cfg.intermediate_size) == (100, 3, 1e-7, 128)
    assert BertConfig.from_dict(cfg.to_hf_dict(["BertModel"])) == cfg
    assert BertConfig.from_dict(cfg.to_dict()) == cfg


def test_hf_config_label_names_as_transformers_writes_them():
    """to_hf_dict's id2label and label2id are transformers' own for those names (label2id's ids are ints); names
    that do not fit the head's size give transformers' placeholders, so the exported num_labels stays the head's."""
    cfg = tiny_config(num_labels=3)
    labels = ["contradiction", "entailment", "neutral"]
    hf = transformers.BertConfig(**cfg.to_hf_dict(labels=labels))
    assert hf.id2label == dict(enumerate(labels)) and hf.num_labels == 3
    assert hf.label2id == {name: i for i, name in enumerate(labels)}  # ids as ints, as transformers' pipelines read
    odd = tiny_config(num_labels=1).to_hf_dict(labels=labels)
    assert odd["id2label"] == {"0": "LABEL_0"} and transformers.BertConfig(**odd).num_labels == 1
    assert BertConfig.from_dict(odd).num_labels == 1


def test_hidden_act_names_are_read_in_any_case():
    """'GELU' (as some configs spell it) is the exact gelu, stored as 'gelu'."""
    assert BertConfig.from_dict({**tiny_config().to_dict(), "hidden_act": "GELU"}) == tiny_config()


def test_hf_config_problem_types():
    """problem_type as transformers writes it: kept where our heads do the same, refused where they would not."""
    def hf_dict(**kw):
        return transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=128, **kw).to_dict()
    assert BertConfig.from_dict(hf_dict(num_labels=1, problem_type="regression")).num_labels == 1
    assert BertConfig.from_dict(hf_dict(num_labels=3, problem_type="single_label_classification")).num_labels == 3
    with pytest.raises(ValueError, match=r"^hf: problem_type='regression' with num_labels=3 is not supported"):
        BertConfig.from_dict(hf_dict(num_labels=3, problem_type="regression"), source="hf")


def test_hf_config_unknown_keys_warn_ours_fail(capsys):
    """Real Hugging Face configs carry hub/runtime keys: harmless ones pass silently, others with one warning
    line; in our own (or release-style) config an unknown key is a typo and an error."""
    d = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128).to_dict()
    d.update(_attn_implementation_autoset=True, use_bfloat16=False, xla_device=None, model_max_length=512)
    expected = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128)
    assert BertConfig.from_dict(d, source="hub.json") == expected
    assert capsys.readouterr().err == ""
    assert BertConfig.from_dict({**d, "flash_mode": 1, "zeta": 2}, source="hub.json") == expected
    assert capsys.readouterr().err == "warning: hub.json: ignoring unknown config key(s) flash_mode, zeta\n"
    ours = {k: v for k, v in expected.to_dict().items()}
    for extra in ({"use_bfloat16": False}, {"flash_mode": 1}):
        with pytest.raises(ValueError, match="ours.json: unknown config key"):
            BertConfig.from_dict({**ours, **extra}, source="ours.json")


def test_config_json_round_trip(tmp_path):
    cfg = tiny_config(morph_analyzer="kiwi", do_lower_case=True, num_labels=1)
    cfg.to_json_file(tmp_path / "c.json")
    assert BertConfig.from_json_file(tmp_path / "c.json") == cfg


def test_arch_differences_cover_every_field_that_changes_the_function():
    """Two configs meant for the same weights are compared on every field but dropout, the initialiser, the head's
    size and the tokenizer's settings, so a field added to BertConfig (a pre-LayerNorm switch, say) is compared too:
    a --config_file beside a checkpoint, or phase 2's, that differs on it is refused, not silently used."""
    import dataclasses

    from models.config import arch_differences
    base = tiny_config()
    loose = dataclasses.replace(base, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                initializer_range=0.5, num_labels=3, do_lower_case=True, morph_analyzer="kiwi")
    assert arch_differences(base, loose) == []
    assert arch_differences(base, dataclasses.replace(base, num_attention_heads=8, layer_norm_eps=1e-5)) == [
        "num_attention_heads", "layer_norm_eps"]
    WithPreLN = dataclasses.make_dataclass("WithPreLN", [("pre_layer_norm", bool, False)], bases=(BertConfig,))
    post, pre = (WithPreLN(**base.to_dict(), pre_layer_norm=v) for v in (False, True))
    assert arch_differences(post, pre) == ["pre_layer_norm"]
    assert arch_differences(pre, base) == ["pre_layer_norm"] and arch_differences(post, base) == []


def test_hf_export_refuses_a_field_transformers_cannot_hold(tmp_path):
    """A field added to BertConfig for a variant transformers' BERT does not have (a pre-LayerNorm switch, say) is
    refused when set: exported, it would ride along as an extra key that transformers ignores, and the weights
    would load into a post-LN model without a word. At its default it changes nothing and exports as before."""
    import dataclasses

    from models.modeling import save_checkpoint
    base = tiny_config()
    WithPreLN = dataclasses.make_dataclass("WithPreLN", [("pre_layer_norm", bool, False)], bases=(BertConfig,))
    assert WithPreLN(**base.to_dict()).to_hf_dict()["hidden_size"] == base.hidden_size
    with pytest.raises(ValueError, match="transformers' BertConfig cannot represent pre_layer_norm=True"):
        WithPreLN(**base.to_dict(), pre_layer_norm=True).to_hf_dict()
    model = BertForPreTraining(WithPreLN(**base.to_dict(), pre_layer_norm=True))
    with pytest.raises(ValueError, match="pre_layer_norm=True"):
        save_checkpoint(model, str(tmp_path / "hf"), layout="hf")
    assert not (tmp_path / "hf").exists()
    save_checkpoint(model, str(tmp_path / "ours"))  # our own layout holds every field
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["pre_layer_norm"] is True


@pytest.mark.parametrize("change, message", [
    ({"foo_bar": 1, "hidden_dropuot_prob": 0.1}, "unknown config key(s) foo_bar, hidden_dropuot_prob"),
    ({"num_attention_heads": 5}, "not divisible by num_attention_heads=5"),
    ({"hidden_act": "relu"}, "only exact (erf) 'gelu'"),
    ({"hidden_act": "gelu_new"}, "only exact (erf) 'gelu'"),
    ({"model_type": "roberta"}, "model_type='roberta' is not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"dropout_prob": 0.2}, "conflicts with"),
    ({"vocab_size": None}, "vocab_size must be a positive integer"),
    # a string "false" is truthy: the Python and fast tokenizers would disagree on lower-casing
    ({"do_lower_case": "false"}, "do_lower_case must be true or false, got 'false'"),
    ({"layer_norm_eps": -1}, "layer_norm_eps must be a positive number, got -1"),
    ({"initializer_range": "0.02"}, "initializer_range must be a positive number, got '0.02'"),
    ({"hidden_dropout_prob": "0.1"}, "hidden_dropout_prob must be a number in [0, 1), got '0.1'"),
    ({"attention_probs_dropout_prob": True}, "attention_probs_dropout_prob must be a number in [0, 1), got True"),
    ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob must be a number in [0, 1), got 1.0"),  # drops everything
    # problem types our classifier does not implement (it regresses with 1 label, classifies with more)
    ({"model_type": "bert", "problem_type": "regression", "num_labels": 3},
     "problem_type='regression' with num_labels=3 is not supported"),
    ({"model_type": "bert", "problem_type": "single_label_classification", "num_labels": 1},
     "problem_type='single_label_classification' with num_labels=1 is not supported"),
    ({"model_type": "bert", "problem_type": "multi_label_classification"},
     "problem_type='multi_label_classification' is not supported"),
])
def test_config_errors_name_the_file_and_key(tmp_path, change, message):
    d = {**tiny_config().to_dict(), **change}
    path = tmp_path / "bad_config.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError) as e:
        BertConfig.from_json_file(str(path))
    assert message in str(e.value) and str(path) in str(e.value)


def test_missing_config_key_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match="missing config key.*intermediate_size"):
        BertConfig.from_dict({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_heads": 2})
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertConfig.from_json_file(str(tmp_path / "c.json"))
    (tmp_path / "utf16.json").write_bytes(b"\xff\xfe{\x00}\x00")  # a UTF-16 file, as some editors save
    with pytest.raises(ValueError, match=r"utf16.json: not UTF-8 \(byte offset 0\)"):
        BertConfig.from_json_file(str(tmp_path / "utf16.json"))


# ------------------------------------------------------------------------------------------------------------
# model behaviour

def test_shapes_and_init():
    cfg = tiny_config()
    ids, types, mask = padded_batch()
    B, T = ids.shape
    model = BertModel(cfg)
    seq, pooled = model(ids, types, mask)
    assert seq.shape == (B, T, 64) and pooled.shape == (B, 64)
    assert abs(model.embeddings.word_embeddings.weight.std().item() - cfg.initializer_range) < 2e-3
    assert torch.all(model.encoder.layer[0].attn.query.bias == 0)
    assert torch.all(model.encoder.layer[0].ffn_norm.weight == 1)
    out = BertForPreTraining(cfg)(ids, types, mask)
    assert out["mlm_logits"].shape == (B, T, 1000) and out["sop_logits"].shape == (B, 2)
    qa = BertForQuestionAnswering(cfg)(ids, types, mask)
    assert qa["start_logits"].shape == qa["end_logits"].shape == (B, T)
    assert BertForSequenceClassification(cfg, num_labels=3)(ids, types, mask)["logits"].shape == (B, 3)
    assert BertForSequenceClassification(cfg, num_labels=1).config.num_labels == 1
    # a QA model fine-tuned from a 3-label (KorNLI) checkpoint records its 2 outputs, not the 3 it came with
    assert BertForQuestionAnswering(tiny_config(num_labels=3)).config.num_labels == 2


def test_every_module_starts_from_the_configs_initializer():
    """As in BERT: every Linear and Embedding weight (the pre-training heads' and the task heads' too) is drawn with
    std initializer_range, biases are zero and LayerNorms start as the identity; a config's own range is used."""
    cfg = tiny_config(initializer_range=0.2)
    torch.manual_seed(0)
    for model in (BertForPreTraining(cfg), BertForQuestionAnswering(cfg),
                  BertForSequenceClassification(cfg, num_labels=3)):
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                w = module.weight.detach()
                tol = 0.25 if w.numel() < 200 else 0.1  # the 2- and 3-output heads hold few samples
                assert abs(w.std().item() - 0.2) < tol * 0.2 and abs(w.mean().item()) < 0.05, name
            if isinstance(module, torch.nn.Linear):
                assert torch.all(module.bias == 0), name
            if isinstance(module, torch.nn.LayerNorm):
                assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
        if isinstance(model, BertForPreTraining):
            assert torch.all(model.cls.predictions.bias == 0)


def test_position_limit_is_max_position_embeddings():
    """A sequence of exactly max_position_embeddings tokens runs; one token more is refused, naming the limit."""
    model = BertModel(tiny_config(max_position_embeddings=16)).eval()
    with torch.no_grad():
        assert model(torch.ones(1, 16, dtype=torch.long))[0].shape == (1, 16, 64)
        with pytest.raises(ValueError, match="sequence length 17 exceeds max_position_embeddings=16"):
            model(torch.ones(1, 17, dtype=torch.long))


def test_token_types_default_to_segment_a():
    """Without token_type_ids every token is segment A (type 0), as in BERT and Hugging Face."""
    model = randomize(BertModel(tiny_config()))
    ids, _, mask = padded_batch()
    with torch.no_grad():
        seq, pooled = model(ids, attention_mask=mask)
        ref_seq, ref_pooled = model(ids, torch.zeros_like(ids), mask)
    assert torch.equal(seq, ref_seq) and torch.equal(pooled, ref_pooled)


def test_classifier_drops_out_the_pooled_vector_in_training():
    """As in BERT, dropout sits between the pooler and the classifier: in training the logits are not the
    classifier of the pooled vector (the encoder is held in eval here so only that dropout acts); in eval they are."""
    model = randomize(BertForSequenceClassification(tiny_config(hidden_dropout_prob=0.5), num_labels=3))
    ids, types, mask = padded_batch()
    model.train()
    model.bert.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        _, pooled = model.bert(ids, types, mask)
        undropped = model.classifier(pooled)
        assert not torch.allclose(model(ids, types, mask)["logits"], undropped, atol=1e-4)
        model.eval()
        torch.testing.assert_close(model(ids, types, mask)["logits"], undropped)


def test_padding_invariance():
    model = randomize(BertModel(tiny_config()))
    ids, types, _ = padded_batch()
    with torch.no_grad():
        seq, pooled = model(ids, types, torch.ones_like(ids))
        pad = torch.zeros(3, 5, dtype=ids.dtype)
        mask = torch.cat([torch.ones_like(ids), pad], 1)
        seq_p, pooled_p = model(torch.cat([ids, pad], 1), torch.cat([types, pad], 1), mask)
    torch.testing.assert_close(seq_p[:, :12], seq, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled_p, pooled, atol=1e-5, rtol=0)


def test_qa_logits_are_fp32_under_autocast():
    """Under bf16 autocast the start/end logits still come from an fp32 head (autocast would run it in bf16):
    no bf16 rounding of the logits, so no ties to reorder the n-best answers."""
    model = randomize(BertForQuestionAnswering(tiny_config())).eval()
    ids, types, mask = padded_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, types, mask)
        seq, _ = model.bert(ids, types, mask)
    assert out["start_logits"].dtype == out["end_logits"].dtype == torch.float32
    with torch.no_grad():
        start, end = model.qa_outputs(seq.float()).unbind(-1)
    assert torch.equal(out["start_logits"], start) and torch.equal(out["end_logits"], end)


def test_qa_loss_does_not_depend_on_padding():
    """Extra padding columns (a wider batch, widths rounded up) change neither the logits of real positions nor
    the loss: padding takes no share of the start/end softmax."""
    model = randomize(BertForQuestionAnswering(tiny_config())).eval()
    ids, types, mask = padded_batch()
    start, end = torch.tensor([1, 4, 2]), torch.tensor([2, 7, 3])
    pad = torch.zeros(3, 5, dtype=ids.dtype)
    with torch.no_grad():
        out = model(ids, types, mask, start_positions=start, end_positions=end)
        wide = model(torch.cat([ids, pad], 1), torch.cat([types, pad], 1), torch.cat([mask, pad], 1),
                     start_positions=start, end_positions=end)
    torch.testing.assert_close(wide["start_logits"][:, :12][mask == 1], out["start_logits"][mask == 1])
    torch.testing.assert_close(wide["loss"], out["loss"], atol=1e-6, rtol=0)


def test_qa_loss_ignores_positions_outside_the_window():
    """A row whose answer lies past the window is left out of the mean; a batch of only such rows has loss 0 and
    zero gradients, not NaN (cross_entropy's mean over no rows is 0/0)."""
    model = randomize(BertForQuestionAnswering(tiny_config()))
    ids, types, mask = padded_batch()
    T = ids.size(1)
    start, end = torch.tensor([1, T, 2]), torch.tensor([2, T + 3, 3])
    out = model(ids, types, mask, start_positions=start, end_positions=end)
    kept = model(ids[[0, 2]], types[[0, 2]], mask[[0, 2]], start_positions=start[[0, 2]], end_positions=end[[0, 2]])
    torch.testing.assert_close(out["loss"], kept["loss"], atol=1e-6, rtol=0)
    none = model(ids, types, mask, start_positions=torch.tensor([T, T + 1, 50]), end_positions=torch.full((3,), T))
    assert none["loss"].item() == 0.0
    none["loss"].backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters() if p.grad is not None)


def test_mlm_scores_only_masked_positions():
    model = randomize(BertForPreTraining(tiny_config()))
    ids, types, mask = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 1] = 7, 9, ids[2, 1]
    with torch.no_grad():
        full = model(ids, types, mask)["mlm_logits"]
        out = model(ids, types, mask, mlm_labels=labels, sop_labels=torch.tensor([0, 1, 1]))
    sel = labels != -100
    # one masked position per row: K = 1, gathered in order
    assert out["mlm_logits"].shape == (3, 1, 1000) and out["mlm_count"].item() == 3
    torch.testing.assert_close(out["mlm_logits"][:, 0], full[sel], atol=1e-5, rtol=0)
    assert torch.equal(out["mlm_targets"][:, 0], labels[sel])
    assert out["mlm_correct"].item() == (full[sel].argmax(-1) == labels[sel]).sum().item()
    assert out["sop_correct"].item() == (out["sop_logits"].argmax(-1) == torch.tensor([0, 1, 1])).sum().item()
    torch.testing.assert_close(out["loss"], out["mlm_loss"] + out["sop_loss"])


def test_mlm_loss_of_a_batch_with_nothing_masked_is_zero():
    """A batch without one masked token (short rows, a low masking rate) gives an MLM loss of zero, not 0/0 = NaN,
    and a finite gradient."""
    model = BertForPreTraining(tiny_config())
    ids, types, mask = padded_batch()
    out = model(ids, types, mask, mlm_labels=torch.full_like(ids, -100), sop_labels=torch.tensor([0, 1, 1]))
    assert out["mlm_count"].item() == 0 and out["mlm_loss"].item() == 0
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_found_mlm_positions_keep_sequence_order():
    """Without mlm_positions the masked tokens are gathered in their order along the row (mlm_targets follow
    mlm_labels read left to right), padded after the last one."""
    model = BertForPreTraining(tiny_config(max_position_embeddings=128)).eval()
    ids = torch.randint(5, 1000, (2, 128), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[0, [3, 40, 77, 100]] = torch.tensor([11, 12, 13, 14])
    labels[1, [0, 127]] = torch.tensor([21, 22])
    with torch.no_grad():
        out = model(ids, mlm_labels=labels)
    assert out["mlm_targets"].tolist() == [[11, 12, 13, 14], [21, 22, -100, -100]]


def test_given_mlm_positions_match_found_ones():
    """The data pipeline's padded positions (static shape, no sync) give what finding them from the labels gives."""
    model = randomize(BertForPreTraining(tiny_config()))
    ids, types, mask = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[0, [2, 5, 9]], labels[1, 5], labels[2, [1, 3]] = torch.tensor([7, 8, 9]), 9, torch.tensor([ids[2, 1], 4])
    positions = torch.tensor([[2, 5, 9, 0, 0], [5, 0, 0, 0, 0], [1, 3, 0, 0, 0]])  # padded with [CLS] to K = 5
    sop = torch.tensor([0, 1, 1])
    with torch.no_grad():
        found = model(ids, types, mask, mlm_labels=labels, sop_labels=sop)
        given = model(ids, types, mask, mlm_labels=labels, sop_labels=sop, mlm_positions=positions)
        full = model(ids, types, mask)["mlm_logits"]
    assert found["mlm_logits"].shape == (3, 3, 1000) and given["mlm_logits"].shape == (3, 5, 1000)
    for key in ("mlm_loss", "mlm_count", "mlm_correct", "loss"):
        torch.testing.assert_close(given[key], found[key])
    sel = labels != -100
    torch.testing.assert_close(given["mlm_logits"][given["mlm_targets"] != -100], full[sel], atol=1e-5, rtol=0)
    expected = F.cross_entropy(full[sel], labels[sel])
    torch.testing.assert_close(given["mlm_loss"], expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------------
# parity with Hugging Face transformers: weights made by HF, saved with save_pretrained, loaded by us

def hf_model(hf_cls, cfg, impl):
    hf_cfg = transformers.BertConfig(**cfg.to_hf_dict(), attn_implementation=impl)
    return randomize(getattr(transformers, hf_cls)(hf_cfg))


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_parity_hf_to_ours(tmp_path, impl):
    ids, types, mask = padded_batch()
    T = ids.size(1)
    cases = [("BertModel", BertModel, 2), ("BertForPreTraining", BertForPreTraining, 2),
             ("BertForQuestionAnswering", BertForQuestionAnswering, 2),
             ("BertForSequenceClassification", BertForSequenceClassification, 3),
             ("BertForSequenceClassification", BertForSequenceClassification, 1)]
    for hf_cls, our_cls, num_labels in cases:
        # a large eps: at the usual 1e-12 a LayerNorm that ignored the config's eps would agree to 3e-6
        hf = hf_model(hf_cls, tiny_config(num_labels=num_labels, layer_norm_eps=0.1), impl)
        out_dir = tmp_path / f"{hf_cls}_{num_labels}"
        hf.save_pretrained(out_dir)
        cfg = checkpoint_config(str(out_dir))
        assert cfg.num_labels == num_labels
        ours = load_checkpoint(our_cls(cfg), str(out_dir)).eval()
        kw = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
        with torch.no_grad():
            if our_cls is BertModel:
                seq, pooled = ours(ids, types, mask)
                ref = hf(**kw)
                close(seq, ref.last_hidden_state)
                close(pooled, ref.pooler_output)
            elif our_cls is BertForPreTraining:
                labels = torch.full_like(ids, -100)
                labels[0, 3], labels[1, 0], labels[2, 2], labels[0, 9] = 11, 12, 13, 14
                sop = torch.tensor([1, 0, 1])
                ref = hf(**kw, labels=labels, next_sentence_label=sop)
                out = ours(ids, types, mask, mlm_labels=labels, sop_labels=sop)
                close(out["mlm_logits"][out["mlm_targets"] != -100], ref.prediction_logits[labels != -100])
                close(out["sop_logits"], ref.seq_relationship_logits)
                close(out["mlm_loss"], F.cross_entropy(ref.prediction_logits.view(-1, 1000), labels.view(-1)))
                close(out["loss"], ref.loss)
                close(ours(ids, types, mask)["mlm_logits"], ref.prediction_logits)
            elif our_cls is BertForQuestionAnswering:
                start, end = torch.tensor([1, 4, T + 3]), torch.tensor([2, 7, T + 3])  # last: answer outside
                ref = hf(**kw, start_positions=start, end_positions=end)
                out = ours(ids, types, mask, start_positions=start, end_positions=end)
                close(out["start_logits"], ref.start_logits)
                close(out["end_logits"], ref.end_logits)
                # our loss leaves padding out of the softmax, HF's spans it: the same on row 0 (no padding), and
                # on the padded rows the same as HF's logits scored with the padding masked
                row0 = hf(**{k: v[:1] for k, v in kw.items()}, start_positions=start[:1], end_positions=end[:1])
                close(ours(ids[:1], types[:1], mask[:1], start_positions=start[:1], end_positions=end[:1])["loss"],
                      row0.loss)
                masked = [F.cross_entropy(logits.masked_fill(mask == 0, -1e4), pos.clamp(0, T), ignore_index=T)
                          for logits, pos in ((ref.start_logits, start), (ref.end_logits, end))]
                close(out["loss"], sum(masked) / 2)
                assert not torch.allclose(out["loss"], ref.loss)  # the padded rows did make a difference
            else:
                labels = torch.tensor([0.5, 3.0, 1.2]) if num_labels == 1 else torch.tensor([2, 0, 1])
                ref = hf(**kw, labels=labels)
                out = ours(ids, types, mask, labels=labels)
                close(out["logits"], ref.logits)
                close(out["loss"], ref.loss)
                if num_labels == 1:  # [B,1] scores as labels: no broadcast to [B,B]
                    close(ours(ids, types, mask, labels=labels[:, None])["loss"], hf(**kw, labels=labels[:, None]).loss)


def test_pretraining_step_is_one_graph_for_torch_compile():
    """With the data pipeline's mlm_positions nothing in the forward waits for the GPU or changes shape with the
    data, so torch.compile captures the whole model (boolean indexing would break the graph at the MLM head)."""
    import torch._dynamo as dynamo

    model = BertForPreTraining(tiny_config())
    ids, types, mask = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5] = 7, 9
    positions = torch.tensor([[2, 0], [5, 0], [0, 0]])
    dynamo.reset()
    explained = dynamo.explain(model)(ids, types, mask, mlm_labels=labels, mlm_positions=positions,
                                      sop_labels=torch.tensor([0, 1, 1]))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    dynamo.reset()


def test_wrapper_prefixes_in_either_order_are_stripped(tmp_path):
    """A state dict saved from torch.compile(DDP(model)) has keys under _orig_mod.module., one from
    DDP(torch.compile(model)) under module._orig_mod.: both load as the bare model's (the first order used to load
    as every key missing)."""
    from safetensors.torch import save_file

    model = BertForSequenceClassification(tiny_config(), num_labels=3)
    for prefix in ("_orig_mod.module.", "module._orig_mod.", "module."):
        path = str(tmp_path / f"{prefix.replace('.', '_')}.safetensors")
        save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, path)
        other = load_checkpoint(BertForSequenceClassification(tiny_config(), num_labels=3), path, strict=True)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
