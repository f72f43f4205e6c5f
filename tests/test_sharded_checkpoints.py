"""Checkpoints split into shards (transformers' model.safetensors.index.json layout) and stored in float16:
written by save_checkpoint / convert_checkpoint.py --max_shard_mb --dtype, read by every loader here and by
transformers, and refused clearly when a shard or the index is wrong."""
import json
import os

import pytest
import torch

import convert_checkpoint
from helpers import expect_fail
from models.modeling import BertConfig, BertForPreTraining, checkpoint_config, load_checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")
MIB = 2 ** 20


@pytest.fixture
def ours(tmp_path):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.from_json_file("models/configs/tiny.json")).eval()
    save_checkpoint(model, str(tmp_path / "ours"))
    return model, str(tmp_path / "ours")


def test_float16_shards_round_trip(ours, tmp_path):
    model, path = ours
    out = tmp_path / "half"
    convert_checkpoint.main(["--input", path, "--output", str(out), "--to", "ours", "--max_shard_mb", "0.3",
                             "--dtype", "float16"])
    files = sorted(os.listdir(out))
    shards = [f for f in files if f.startswith("model-")]
    assert "model.safetensors" not in files and "model.safetensors.index.json" in files and len(shards) >= 2
    assert all(os.path.getsize(out / f) <= 0.3 * MIB for f in shards)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    # total_size counts bytes, as transformers writes it: the fp16 tensors' data, two bytes an element
    assert index["metadata"]["total_size"] == 2 * sum(p.numel() for p in model.state_dict().values())
    assert checkpoint_config(str(out)) == model.config  # config.json beside the shards
    back = load_checkpoint(BertForPreTraining(model.config), str(out))
    for (name, p), q in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(p.half().float(), q), name


def test_max_shard_mb_counts_mebibytes(ours, tmp_path):
    """--max_shard_mb is in MiB (2**20 bytes), as its help says: 0.25 MiB = 262,144 bytes holds the tiny model's
    largest tensor, the 1000 x 64 float32 word embeddings (256,000 bytes), with its header; 250,000 bytes would not."""
    model, path = ours
    largest = max(p.numel() * p.element_size() for p in model.state_dict().values())
    assert largest == 256_000 and 250_000 < largest + 1000 < 0.25 * MIB
    out = tmp_path / "quarter"
    convert_checkpoint.main(["--input", path, "--output", str(out), "--to", "ours", "--max_shard_mb", "0.25"])
    shards = [f for f in os.listdir(out) if f.startswith("model-")]
    assert len(shards) >= 2 and all(os.path.getsize(out / f) <= 0.25 * MIB for f in shards)
    assert max(os.path.getsize(out / f) for f in shards) > 250_000


def test_hf_shards_load_in_transformers(ours, tmp_path):
    model, path = ours
    convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "hf"), "--to", "hf", "--max_shard_mb", "0.3"])
    assert len([f for f in os.listdir(tmp_path / "hf") if f.startswith("model-")]) >= 2
    hf = transformers.BertForPreTraining.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    ids = torch.randint(5, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(input_ids=ids)
        out = model(ids)
    torch.testing.assert_close(out["mlm_logits"], ref.prediction_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["sop_logits"], ref.seq_relationship_logits, rtol=1e-5, atol=1e-5)
    # and back: our loader reads transformers' index as well as ours
    again = load_checkpoint(BertForPreTraining(model.config), str(tmp_path / "hf"))
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))


def test_bad_shards_fail_on_one_line(ours, tmp_path, capsys):
    model, path = ours
    convert_checkpoint.main(["--input", path, "--output", str(tmp_path / "s"), "--to", "ours", "--max_shard_mb", "0.3"])
    index = tmp_path / "s" / "model.safetensors.index.json"
    good = json.loads(index.read_text())
    argv = ["--input", str(tmp_path / "s"), "--to", "ours", "--output"]

    first = next(iter(good["weight_map"].values()))
    bad = dict(good, weight_map={**good["weight_map"], "bert.extra.weight": first})
    index.write_text(json.dumps(bad))
    expect_fail(capsys, convert_checkpoint.main, argv + [str(tmp_path / "o1")], "disagree on 1 tensor",
                "bert.extra.weight")
    # and the other way: a tensor in a shard that the index does not list
    index.write_text(json.dumps(dict(good, weight_map={k: v for k, v in good["weight_map"].items()
                                                       if k != "bert.pooler.dense.bias"})))
    expect_fail(capsys, convert_checkpoint.main, argv + [str(tmp_path / "o1b")], "disagree on 1 tensor",
                "bert.pooler.dense.bias")
    index.write_text(json.dumps(dict(good, weight_map={k: "../x.safetensors" for k in good["weight_map"]})))
    expect_fail(capsys, convert_checkpoint.main, argv + [str(tmp_path / "o2")], "weight_map must map")
    index.write_text(json.dumps(good))
    os.remove(tmp_path / "s" / sorted(set(good["weight_map"].values()))[-1])
    expect_fail(capsys, convert_checkpoint.main, argv + [str(tmp_path / "o3")], "which is not there")
    # the largest tensor (the word embeddings) cannot fit a smaller shard: refused before anything is written
    expect_fail(capsys, convert_checkpoint.main, ["--input", path, "--to", "ours", "--max_shard_mb", "0.1",
                                                  "--output", str(tmp_path / "o4")], "word_embeddings", "MiB")
    assert not (tmp_path / "o4").exists()
    expect_fail(capsys, convert_checkpoint.main, ["--input", path, "--to", "release", "--dtype", "float16",
                                                  "--output", str(tmp_path / "r.bin")], "--to release")


def test_saving_shards_over_a_single_file_checkpoint_replaces_it(ours, tmp_path):
    """Re-saving into the same directory, now in shards: the older model.safetensors goes, since every loader (ours
    and transformers') would read it in the shards' place; the new weights are what loads."""
    model, path = ours
    torch.manual_seed(1)
    newer = BertForPreTraining(model.config).eval()
    save_checkpoint(newer, path, max_shard_bytes=int(0.3 * MIB))
    assert "model.safetensors" not in os.listdir(path) and "model.safetensors.index.json" in os.listdir(path)
    loaded = load_checkpoint(BertForPreTraining(model.config), path)
    assert all(torch.equal(p, q) for p, q in zip(newer.state_dict().values(), loaded.state_dict().values()))
