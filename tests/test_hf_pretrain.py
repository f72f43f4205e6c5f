"""bench/hf_pretrain.py, the plain Hugging Face baseline, and bench/cram.py --pretrainer hf: its windows are slices of
the shards' stream, transformers' masking sees our [CLS]/[SEP] as special, its outputs are what cram reads, its
weights load into our model with the same logits as transformers', and it stops cleanly."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import expect_fail, one_thread, text_lines, wikinews_vocab  # noqa: F401 (one_thread: autouse)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_bench(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf_pretrain = load_bench("hf_pretrain")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards of 900 held-out Wikinews lines in pieces of at most 12,000 tokens (several shards), a 1500-piece vocab,
    and the tiny config sized to it."""
    import create_pretraining_data

    d = tmp_path_factory.mktemp("hf_shards")
    vocab = wikinews_vocab(d, 3000, 1500)
    news = d / "news.txt"
    news.write_text("\n".join(text_lines("boddari/wikinews.txt", 3000, 3900)) + "\n", encoding="utf-8")
    out = d / "shards"
    create_pretraining_data.main(["--input_files", str(news), "--vocab_file", vocab, "--output_dir", str(out),
                                  "--shard_size_tokens", "12000", "--num_workers", "1"])
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        config = dict(json.load(f), vocab_size=len(open(vocab, encoding="utf-8").read().splitlines()))
    (d / "tiny.json").write_text(json.dumps(config), encoding="utf-8")
    return {"dir": str(out), "config": str(d / "tiny.json"), "vocab": vocab}


def shard_streams(shard_dir):
    meta = json.loads(open(os.path.join(shard_dir, "meta.json"), encoding="utf-8").read())
    return [np.load(os.path.join(shard_dir, f"{s['name']}.ids.npy")) for s in meta["shards"]]


def test_windows_are_slices_of_one_shard_drawn_over_the_whole_stream(shards):
    streams = shard_streams(shards["dir"])
    assert len(streams) >= 3
    ds = hf_pretrain.RandomWindows(shards["dir"], 32, seed=3, length=10_000)
    cls_id, sep_id = ds.cls_id, ds.sep_id
    found = []  # (shard, start) of each window
    for i in range(300):
        ids = ds[i]["input_ids"].numpy()
        assert ids.shape == (32,) and ids[0] == cls_id and ids[-1] == sep_id
        hits = [(k, int(s)) for k, stream in enumerate(streams)
                for s in np.flatnonzero((np.lib.stride_tricks.sliding_window_view(stream, 30) == ids[1:-1]).all(1))]
        assert hits, f"window {i} is not 30 consecutive tokens of one shard"
        found.append(hits[0])
    assert np.array_equal(ds[7]["input_ids"], hf_pretrain.RandomWindows(shards["dir"], 32, 3, 10)[7]["input_ids"])
    assert not np.array_equal(ds[7]["input_ids"], hf_pretrain.RandomWindows(shards["dir"], 32, 4, 10)[7]["input_ids"])
    # every shard is drawn from, about in proportion to its tokens, and from its first to its last window start
    lengths = np.array([len(s) for s in streams])
    share = np.bincount([k for k, _ in found], minlength=len(streams)) / len(found)
    assert np.abs(share - lengths / lengths.sum()).max() < 0.1, share
    rel = [s / (lengths[k] - 30) for k, s in found]
    assert min(rel) < 0.05 and max(rel) > 0.95


def test_transformers_masking_takes_our_special_tokens_as_special(shards):
    ds = hf_pretrain.RandomWindows(shards["dir"], 64, seed=0, length=10_000)
    collator = hf_pretrain.mlm_collator(shards["vocab"], False, 0.15)
    torch.manual_seed(0)
    items = [ds[i] for i in range(200)]
    batch = collator(items)
    original = torch.stack([it["input_ids"] for it in items])
    labels, ids = batch["labels"], batch["input_ids"]
    picked = labels != -100
    assert not picked[:, 0].any() and not picked[:, -1].any()  # [CLS] and [SEP] never masked
    assert 0.13 < picked.float().mean() < 0.17
    assert torch.equal(labels[picked], original[picked]) and torch.equal(ids[~picked], original[~picked])
    from tokenization import load_vocab, special_token_ids
    mask_id = special_token_ids(load_vocab(shards["vocab"]), shards["vocab"])["mask"]
    assert collator.tokenizer.mask_token_id == mask_id
    assert 0.75 < (ids[picked] == mask_id).float().mean() < 0.85


def test_transformers_masking_draws_random_tokens_from_the_whole_vocab(shards):
    """The 10% random replacements come from range(len(tokenizer)): the collator's tokenizer must hold the vocab
    (before, transformers 5 ignored vocab_file= and built its 5 special tokens alone, so every random replacement was
    [PAD], [UNK], [CLS] or [SEP])."""
    from tokenization import load_vocab
    vocab = load_vocab(shards["vocab"])
    collator = hf_pretrain.mlm_collator(shards["vocab"], False, 0.15)
    assert len(collator.tokenizer) == len(vocab)
    assert collator.tokenizer.convert_tokens_to_ids(list(vocab)[-1]) == len(vocab) - 1
    ds = hf_pretrain.RandomWindows(shards["dir"], 64, seed=0, length=10_000)
    torch.manual_seed(0)
    items = [ds[i] for i in range(200)]
    ids = collator(items)["input_ids"]
    original = torch.stack([it["input_ids"] for it in items])
    replaced = ids[(ids != original) & (ids != vocab["[MASK]"])]
    assert len(replaced) > 50 and (replaced >= 5).float().mean() > 0.95


def test_a_run_writes_what_cram_reads_and_weights_our_model_loads(shards, tmp_path):
    import transformers

    from models.modeling import BertForPreTraining, checkpoint_config, load_checkpoint
    out = tmp_path / "run"
    argv = ["--config_file", shards["config"], "--input_dir", shards["dir"], "--output_dir", str(out),
            "--max_seq_length", "32", "--train_batch_size", "16", "--max_steps", "60", "--log_steps", "10",
            "--learning_rate", "2e-3", "--warmup_proportion", "0.5", "--num_workers", "0", "--no_cuda"]
    assert hf_pretrain.main(argv) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[-1]["mlm_loss"] < rows[0]["mlm_loss"] - 0.5  # it learns (unigram statistics at least)
    peak = max(r["lr"] for r in rows)
    assert rows[0]["lr"] < peak and rows[-1]["lr"] < 0.05 * peak  # warm-up, then linear decay to 0 at --max_steps
    cram = load_bench("cram")
    summary = cram.pretraining_summary(str(out), {"batch": 16, "seq": 32})
    assert summary["steps"] == 60 and summary["sop_acc_last"] is None and 0 <= summary["mlm_acc_last"] <= 1
    ckpt = cram.final_checkpoint(str(out))
    assert ckpt.endswith("step-60") and {"config.json", "vocab.txt"} <= set(os.listdir(ckpt))
    # the oracle: transformers' own model on the saved folder; ours loads it by the key map
    hf = transformers.BertForMaskedLM.from_pretrained(ckpt).eval()
    ours = load_checkpoint(BertForPreTraining(checkpoint_config(ckpt)), ckpt, strict=False).eval()
    x = torch.randint(5, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["mlm_logits"], hf(x).logits, atol=1e-5, rtol=1e-5)
    # a second run into the same folder is refused and leaves it as it was
    before = (out / "log.jsonl").read_text(encoding="utf-8")
    with pytest.raises(SystemExit):
        hf_pretrain.main(argv)
    assert (out / "log.jsonl").read_text(encoding="utf-8") == before


def test_bad_input_is_one_line_naming_the_flag(shards, tmp_path, capsys):
    base = ["--input_dir", shards["dir"], "--output_dir", str(tmp_path / "o"), "--no_cuda"]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(dict(json.loads(open(shards["config"]).read()), vocab_size=999)), encoding="utf-8")
    expect_fail(capsys, hf_pretrain.main, ["--config_file", str(wrong), *base], "--config_file", "vocab_size 999")
    expect_fail(capsys, hf_pretrain.main, ["--config_file", shards["config"], *base, "--schedule_by_time"],
                "--schedule_by_time")
    expect_fail(capsys, hf_pretrain.main, ["--config_file", shards["config"], *base, "--input_dir", str(tmp_path)],
                "--input_dir")
    for flags, needle in ((["--seed", "-1"], "--seed"), (["--warmup_proportion", "3"], "--warmup_proportion"),
                          (["--learning_rate", "nan"], "--learning_rate"), (["--num_workers", "-1"], "--num_workers"),
                          (["--max_time_minutes", "-1", "--schedule_by_time"], "--max_time_minutes"),
                          (["--compile_mode", "reduce-overhead"], "--compile_mode")):
        expect_fail(capsys, hf_pretrain.main, ["--config_file", shards["config"], *base, *flags], needle)
    assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("not a folder")
    expect_fail(capsys, hf_pretrain.main, ["--config_file", shards["config"], *base, "--output_dir",
                                           str(tmp_path / "file")], "--output_dir")
    # a shard with an id past the vocab is named before anything runs
    damaged = tmp_path / "damaged"
    shutil.copytree(shards["dir"], damaged)
    ids_file = sorted(damaged.glob("*.ids.npy"))[1]
    ids = np.load(ids_file)
    ids[5] = 60000
    np.save(ids_file, ids)
    expect_fail(capsys, hf_pretrain.main, ["--config_file", shards["config"], *base, "--input_dir", str(damaged)],
                ids_file.name, "token id 60000")


def test_schedule_by_time_fits_warm_up_and_decay_to_the_budget(shards, tmp_path):
    """--max_time_minutes with --schedule_by_time: the lr follows the share of the budget spent, so a 4 s budget warms
    up and decays within it, far from --max_steps, and the run ends as finished (DONE)."""
    out = tmp_path / "timed"
    assert hf_pretrain.main(["--config_file", shards["config"], "--input_dir", shards["dir"], "--output_dir", str(out),
                             "--max_seq_length", "32", "--train_batch_size", "8", "--max_steps", "100000",
                             "--max_time_minutes", str(4 / 60), "--schedule_by_time", "--warmup_proportion", "0.25",
                             "--log_steps", "2", "--num_workers", "0", "--no_cuda"]) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    lrs = [r["lr"] for r in rows]
    done = json.loads((out / "DONE").read_text(encoding="utf-8"))
    assert 10 < done["step"] < 100000 and rows[-1]["step"] == done["step"]
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and max(lrs) > 0.8 * 5e-4  # warmed up to near the peak lr within the budget
    assert lrs[-1] < 0.2 * max(lrs)  # and decayed towards 0 as the budget ran out


def test_sigterm_to_the_process_group_finishes_the_step_and_saves(shards, tmp_path):
    """As a job scheduler sends it: to the whole group, loader workers included (they ignore it, so the step they
    feed can finish)."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "hf_pretrain.py"), "--config_file",
                             shards["config"], "--input_dir", shards["dir"], "--output_dir", str(out),
                             "--max_seq_length", "32", "--train_batch_size", "8", "--max_steps", "100000",
                             "--log_steps", "5", "--num_workers", "1", "--no_cuda"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith("step 5:"):
            os.killpg(proc.pid, signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, rest
    saved = open(out / "checkpoints" / "latest", encoding="utf-8").read().strip()
    assert saved.startswith("step-") and int(saved[5:]) >= 5 and (out / "checkpoints" / saved / "config.json").exists()
    assert not (out / "DONE").exists()  # interrupted, not done: a pipeline reruns it


def test_cram_runs_the_baseline_and_hands_back_its_weights(tmp_path, capsys):
    argv = ["--smoke", "--pretrainer", "hf", "--tasks", "--work_dir", str(tmp_path / "work"), "--results_json",
            str(tmp_path / "hf.json")]
    spec = importlib.util.spec_from_file_location("cram", os.path.join(ROOT, "bench", "cram.py"))
    cram = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cram)
    with pytest.raises(SystemExit) as e:  # in this process: refused before anything runs
        cram.main(argv + ["--optimizer", "lamb"])
    assert e.value.code == 2 and "--optimizer lamb" in capsys.readouterr().err and not (tmp_path / "work").exists()
    # a few steps are enough for the weights to come back (flags in --pretrain_args come last)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "cram.py"), *argv, "--pretrain_args",
                           "--max_steps 4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "$ python bench/hf_pretrain.py" in proc.stdout
    res = json.loads((tmp_path / "hf.json").read_text(encoding="utf-8"))
    assert res["recipe"]["pretrainer"] == "hf" and res["pretraining"]["steps"] > 0
    assert res["pretraining"]["sop_acc_last"] is None
    # the baseline keeps the config's dropout; ours pretrains without
    pre_config = json.loads((tmp_path / "work" / "config_pretrain.json").read_text(encoding="utf-8"))
    assert pre_config["hidden_dropout_prob"] == 0.1
    from models.modeling import BertForPreTraining, checkpoint_config, load_checkpoint
    weights = res["weights"]["dir"]
    load_checkpoint(BertForPreTraining(checkpoint_config(weights)), weights)  # strict: pooler/SOP head filled in
