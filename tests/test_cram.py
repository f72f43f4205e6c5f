"""bench/cram.py, the one-call GPU recipe, run end to end at CPU sizes (--smoke): every stage, the results file,
and that a failed fine-tuning stage is recorded while the next ones still run and a rerun picks it up."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(work, results, *extra):
    """results None: cram's default path (a smoke run's goes into its work dir, never bench/results/)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench", "cram.py"), "--smoke", "--work_dir",
                           str(work), *(["--results_json", str(results)] if results else []), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def refused(capsys, work, results, *extra) -> str:
    """cram.main in this process, for command lines refused before any stage runs (a process each would start
    torch a dozen times over): its one-line message. Exit status 2 asserted."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        load_cram().main(["--smoke", "--work_dir", str(work), "--results_json", str(results), *extra])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    return err


def test_cram_smoke_reports_every_task_and_survives_a_failed_stage(tmp_path, capsys):
    work, results = tmp_path / "work", tmp_path / "cram.json"
    # a bad grid or pool size: one line naming the flag, before anything runs
    for flag, value in (("--korsts_seeds", "1-x"), ("--korsts_lrs", "1e-4,y"), ("--korsts_epochs", "0"),
                        ("--parallel", "0"), ("--config", str(tmp_path / "nowhere.json"))):
        assert refused(capsys, work, results, flag, value).startswith(f"error: {flag} ")
        assert not results.exists() and not work.exists()
    work.mkdir()
    (work / "korsts").write_text("not a directory")  # run_classifier cannot write its output there: it fails
    # a model shape of one's own (--config): here the smoke's tiny model with one layer more
    with open(os.path.join(ROOT, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        shape = dict(json.load(f), num_hidden_layers=3)
    (tmp_path / "shape.json").write_text(json.dumps(shape), encoding="utf-8")
    grid = ["--korsts_lrs", "1e-4", "--korsts_poolers", "kept,new", "--config", str(tmp_path / "shape.json"),
            "--korsts_soup"]
    proc = run(work, results, *grid)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads(results.read_text(encoding="utf-8"))
    korsts_stages = [k for k in first["stages"] if k.startswith("korsts_")]
    assert len(korsts_stages) == 2 and all(first["stages"][k]["failed"] for k in korsts_stages), first["stages"]
    assert "korsts" not in first and "stage 'korsts_lr0.0001_pooler-kept_seed1' failed" in proc.stderr
    assert "korsts_soup" not in first and "korsts_soup" not in first["stages"]  # nothing to average
    assert "--korsts_soup: 0 KorSTS run(s) finished, nothing to average" in proc.stdout
    pt = first["pretraining"]
    assert pt["steps"] > 0 and pt["tokens"] == pt["steps"] * first["recipe"]["batch"] * first["recipe"]["seq"]
    done = json.loads((work / "pretrain" / "DONE").read_text(encoding="utf-8"))
    assert pt["steps"] == done["step"] and done["checkpoint"].endswith(f"step-{pt['steps']}")
    assert pt["steps"] - 5 < pt["last_logged_step"] <= pt["steps"]  # logged every 5 steps
    assert 0 <= pt["data_wait_median"] < 1
    assert 0 <= first["kornli"]["test"]["accuracy"] <= 100
    assert 0 <= first["korquad"]["exact_match"] <= first["korquad"]["f1"] <= 100
    # the held-out KorQuAD articles never appear in the fine-tuning file
    titles = [{a["title"] for a in json.loads((work / f"korquad_dev_{s}.json").read_text(encoding="utf-8"))["data"]}
              for s in ("train", "eval")]
    assert titles[0] and titles[1] and not titles[0] & titles[1]
    # the pretrained weights come back beside the results, float16, and load as the checkpoint they were
    from models.modeling import BertForPreTraining, checkpoint_config, load_checkpoint
    weights = tmp_path / "cram_weights"
    assert first["weights"]["dir"] == str(weights) and {"config.json", "vocab.txt"} <= set(first["weights"]["files"])
    ckpt = first["weights"]["from"]
    assert checkpoint_config(str(weights)).num_hidden_layers == first["model_config"]["num_hidden_layers"] == 3
    full = load_checkpoint(BertForPreTraining(checkpoint_config(ckpt)), ckpt)
    half = load_checkpoint(BertForPreTraining(checkpoint_config(str(weights))), str(weights))
    for (name, p), q in zip(full.state_dict().items(), half.state_dict().values()):
        assert torch.equal(p.half().float(), q), name

    # the tasks again from those weights alone, in another work dir: no shards, no pretraining
    results_before = set(os.listdir(os.path.join(ROOT, "bench", "results")))
    proc = run(tmp_path / "ft", None, "--from_weights", str(weights), "--tasks", "kornli",
               "--parallel", "1")  # one run at a time: each stage's output on screen
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[kornli] $ python run_classifier.py" in proc.stdout
    assert set(os.listdir(os.path.join(ROOT, "bench", "results"))) == results_before
    (ft_json,) = (tmp_path / "ft").glob("cram_cpu_*.json")
    ft = json.loads(ft_json.read_text(encoding="utf-8"))
    assert ft["pretraining"]["from_weights"] == str(weights) and "[pretrain]" not in proc.stdout
    assert f"no pretraining here: fine-tuned from {weights}" in proc.stdout and "None steps" not in proc.stdout
    shape_keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    assert [ft["model_config"][k] for k in shape_keys] == [first["model_config"][k] for k in shape_keys]
    assert 0 <= ft["kornli"]["test"]["accuracy"] <= 100 and "korsts" not in ft
    # other weights under the same folder name: their content differs, so the finished task is not reused
    other = tmp_path / "other" / "cram_weights"
    shutil.copytree(weights, other)
    shutil.copy(os.path.join(ckpt, "model.safetensors"), other / "model.safetensors")  # float32, other bytes
    assert "was made with other settings" in refused(capsys, tmp_path / "ft", tmp_path / "ft.json",
                                                     "--from_weights", str(other), "--tasks", "kornli")
    assert refused(capsys, tmp_path / "ft2", tmp_path / "ft2.json", "--from_weights",
                   str(tmp_path / "nowhere")).startswith("error: --from_weights")

    (work / "korsts").unlink()
    proc = run(work, results, *grid)  # same work dir: finished stages are reused, the failed ones run now
    assert proc.returncode == 0, proc.stderr[-2000:]
    second = json.loads(results.read_text(encoding="utf-8"))
    assert "[pretrain] cached" in proc.stdout and "[kornli] cached" in proc.stdout and "[weights] cached" in proc.stdout
    assert second["pretraining"] == first["pretraining"] and second["kornli"] == first["kornli"]
    # the grid (here the pooler kept or new x seed 1; its other axes: test_korsts_grid): the run best on dev gives
    # the test score
    sts = second["korsts"]
    assert sts["n_finished"] == 2 and set(sts["settings"]) == {"lr0.0001_pooler-kept", "lr0.0001_pooler-new"}
    best = sts["runs"][sts["best_on_dev"]]
    assert best["dev"] == max(r["dev"] for r in sts["runs"].values()) and sts["test"]["spearman"] == best["test"]
    assert -100 <= best["test"] <= 100 and best["seed"] == 1
    with open(work / "korsts" / sts["best_on_dev"] / "eval_results.json", encoding="utf-8") as f:
        args = json.load(f)["args"]
        assert args["reinit_pooler"] == (best["pooler"] == "new") and args["layer_lr_decay"] == 1.0
        assert args["learning_rate"] == best["lr"] == 1e-4
        assert args["pair_orders"] == "one"
    assert "| KorSTS test Spearman |" in proc.stdout
    # --korsts_soup: the two runs' weights averaged (bench/soup.py), the choice made on dev and scored on test
    soup = second["korsts_soup"]
    assert set(soup["dev"]) == {"best single", "greedy soup", "uniform soup"}
    # (the runs and the soup may use different thread counts: last-bit differences can swap a near-tie or two)
    assert soup["dev"]["best single"] == pytest.approx(sts["best_dev"], abs=0.05)
    assert soup["chosen_on_dev"] == max(soup["dev"], key=soup["dev"].get) and -100 <= soup["test"]["spearman"] <= 100
    soups = list(work.glob("korsts_soup_*/soup.json"))  # one folder per set of runs averaged
    assert len(soups) == 1 and len(json.loads(soups[0].read_text(encoding="utf-8"))["ingredients"]) == 2
    assert "KorSTS soups, dev:" in proc.stdout

    # other weights, or another fine-tuning, would be described by these results: refused before anything runs
    for flags, stage in ((["--learning_rate", "0.005"], "pretrain"), (["--korsts_epochs", "3"], "korsts"),
                         (["--korsts_layer_lr_decay", "0.9"], "korsts"),
                         (["--korsts_pair_orders", "both"], "korsts"),
                         (["--korsts_head_init_seed", "0"], "korsts"),
                         (["--config", os.path.join(ROOT, "models", "configs", "tiny.json")], "pretrain")):
        assert f"{work / stage} was made with other settings" in refused(capsys, work, results, *grid, *flags)
        assert json.loads(results.read_text(encoding="utf-8")) == second
    # another grid over the same runs' settings: the finished runs it holds are reused, the new seed is trained
    proc = run(work, results, "--korsts_lrs", "1e-4", "--korsts_poolers", "kept", "--korsts_seeds", "1-2",
               "--tasks", "korsts", "--config", str(tmp_path / "shape.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[korsts_lr0.0001_pooler-kept_seed1] cached" in proc.stdout
    assert "[korsts_lr0.0001_pooler-kept_seed2] started" in proc.stdout
    third = json.loads(results.read_text(encoding="utf-8"))["korsts"]
    assert set(third["runs"]) == {"lr0.0001_pooler-kept_seed1", "lr0.0001_pooler-kept_seed2"}
    assert third["runs"]["lr0.0001_pooler-kept_seed1"] == sts["runs"]["lr0.0001_pooler-kept_seed1"]


def load_cram():
    import importlib.util
    spec = importlib.util.spec_from_file_location("cram", os.path.join(ROOT, "bench", "cram.py"))
    cram = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cram)
    return cram


def load_cram_work():
    load_cram()  # puts bench/ and the repository root on sys.path
    import cram_work
    return cram_work


def test_stage_limit():
    stage_limit = load_cram().stage_limit
    assert stage_limit(None, True) == 300.0  # GPU or --smoke: per fine-tuning run
    assert stage_limit(100.0, False) == 100.0  # given: also on the CPU
    assert stage_limit(None, False) is None  # a CPU fine-tuning the real sizes: no limit


def test_a_stage_recorded_before_a_setting_existed_is_reused_at_its_old_value(tmp_path, capsys):
    cram_work = load_cram_work()
    (tmp_path / "korsts").mkdir()
    done = {"korsts": str(tmp_path / "korsts")}
    now = {"epochs": 8, "batch": 32, "layer_lr_decay": 1.0, "pair_orders": "one", "head_init_seed": None, "amp": "bf16"}
    older = {k: v for k, v in now.items() if k not in ("layer_lr_decay", "pair_orders", "head_init_seed")}
    (tmp_path / "stage_settings.json").write_text(json.dumps({"korsts": older}), encoding="utf-8")
    assert cram_work.check_reuse(str(tmp_path), done, {"korsts": now}) == set()  # the old value: the same
    assert json.loads((tmp_path / "stage_settings.json").read_text(encoding="utf-8")) == {"korsts": now}
    # an unfinished stage of other (or unrecorded) settings is reported, so that it is started again
    unfinished = {"pretrain": str(tmp_path / "pretrain" / "DONE")}
    assert cram_work.check_reuse(str(tmp_path), unfinished, {"pretrain": {"steps": 1}}) == {"pretrain"}
    assert cram_work.check_reuse(str(tmp_path), unfinished, {"pretrain": {"steps": 1}}) == set()
    assert cram_work.check_reuse(str(tmp_path), unfinished, {"pretrain": {"steps": 2}}) == {"pretrain"}
    (tmp_path / "stage_settings.json").write_text(json.dumps({"korsts": older}), encoding="utf-8")
    for changed in ({"pair_orders": "both"}, {"layer_lr_decay": 0.9}, {"head_init_seed": 0}, {"epochs": 4}):
        with pytest.raises(SystemExit) as e:
            cram_work.check_reuse(str(tmp_path), done, {"korsts": {**now, **changed}})
        assert e.value.code == 2 and "korsts was made with other settings" in capsys.readouterr().err



def test_the_summary_prints_a_pretraining_log_whose_last_row_has_no_mlm_numbers(tmp_path, capsys):
    """run_pretraining logs mlm_loss and mlm_acc as null for an interval without any masked token; the summary
    table printed them with a float format (a TypeError at the end of the run) and shows '-' now."""
    pre = tmp_path / "pretrain"
    pre.mkdir()
    (pre / "log.jsonl").write_text(json.dumps({"step": 10, "loss": 0.7, "mlm_loss": None, "mlm_acc": None,
                                               "sop_acc": 0.5, "seq_per_s": 100.0, "elapsed_s": 1.0}) + "\n")
    cram = load_cram()
    pt = cram.pretraining_summary(str(pre), {"batch": 8, "seq": 64})
    assert pt["mlm_acc_last"] is None and pt["steps"] == 10
    summary = {"card": "cpu", "torch": torch.__version__, "budget_minutes": 1, "pretraining": pt, "stages": {}}
    cram.print_summary(summary, str(tmp_path / "r.json"))
    assert "MLM acc -" in capsys.readouterr().out

def test_korsts_grid():
    grid = load_cram().korsts_grid
    runs = grid({"lrs": "1e-4,3e-4", "poolers": "kept,new", "seeds": "1-2", "epochs": 8, "layer_lr_decay": 1.0})
    assert len(runs) == 8 and runs[0] == {"name": "lr0.0001_pooler-kept_seed1", "lr": 1e-4, "pooler": "kept",
                                          "seed": 1}
    assert [r["name"] for r in grid({"lrs": "2e-4", "poolers": "new", "seeds": "3", "epochs": 1,
                                     "layer_lr_decay": 0.8})] == \
        ["lr0.0002_pooler-new_seed3"]
    for bad, flag in (({"lrs": "1e-4,x"}, "--korsts_lrs"), ({"lrs": "2"}, "--korsts_lrs"),
                      ({"poolers": "kept,old"}, "--korsts_poolers"), ({"seeds": "2-"}, "--korsts_seeds"),
                      ({"epochs": 0}, "--korsts_epochs"), ({"layer_lr_decay": 0}, "--korsts_layer_lr_decay")):
        with pytest.raises(ValueError, match=flag):
            grid({"lrs": "1e-4", "poolers": "kept", "seeds": "1", "epochs": 1, "layer_lr_decay": 1.0, **bad})


def test_unpack_shards_is_all_or_nothing(tmp_path):
    import tarfile
    cram_work = load_cram_work()
    src = tmp_path / "src" / "shards"
    src.mkdir(parents=True)
    (src / "meta.json").write_text("{}", encoding="utf-8")
    (src / "shard_00000.ids.npy").write_bytes(b"\x93NUMPY")
    good = tmp_path / "good.tar.xz"
    with tarfile.open(good, "w:xz") as tar:
        tar.add(src, arcname="shards")
    cram_work.unpack_shards(str(good), str(tmp_path / "w1"))
    assert sorted(os.listdir(tmp_path / "w1" / "shards")) == ["meta.json", "shard_00000.ids.npy"]
    assert os.listdir(tmp_path / "w1") == ["shards"]

    bad = tmp_path / "bad.tar.xz"  # no shards/meta.json: refused, nothing left behind
    with tarfile.open(bad, "w:xz") as tar:
        tar.add(src / "shard_00000.ids.npy", arcname="shards/shard_00000.ids.npy")
    (tmp_path / "w2").mkdir()
    with pytest.raises(SystemExit):
        cram_work.unpack_shards(str(bad), str(tmp_path / "w2"))
    assert os.listdir(tmp_path / "w2") == []
    with pytest.raises(SystemExit):
        cram_work.unpack_shards(str(tmp_path / "missing.tar.xz"), str(tmp_path / "w2"))


def test_pretrain_command_is_accepted_by_run_pretraining(tmp_path):
    """The GPU recipe's command line (CUDA graphs, loader workers) and the smoke one pass run_pretraining's own
    checks; flags given after the recipe's win, and a mode that needs --compile is not sent without it."""
    sys.path.insert(0, ROOT)
    from pretraining_start import check_args
    from run_pretraining import build_parser
    cram = load_cram()
    (tmp_path / "meta.json").write_text("{}", encoding="utf-8")
    gpu = dict(cram.RECIPE, num_workers=14)
    smoke = dict(gpu, compile=False, num_workers=1)
    for recipe, extra, mode, workers in ((gpu, [], "reduce-overhead", 14), (smoke, [], "default", 1),
                                         (gpu, ["--compile_mode", "default", "--num_workers", "6"], "default", 6)):
        cmd = cram.pretrain_command("python", recipe, "c.json", str(tmp_path), str(tmp_path / "out"), 3.5,
                                    ["--amp", "bf16", *extra])
        assert cmd[1] == "run_pretraining.py"
        args = build_parser().parse_args(cmd[2:])
        check_args(args)  # raises ValueError on a combination it refuses
        assert (args.compile_mode, args.num_workers, args.compile) == (mode, workers, recipe["compile"])
        assert args.max_time_minutes == 3.5 and args.schedule_by_time and args.train_batch_size == 256
    with pytest.raises(ValueError, match="--compile_mode reduce-overhead"):  # the check this test relies on
        check_args(build_parser().parse_args(cram.pretrain_command(
            "python", smoke, "c.json", str(tmp_path), "out", 1, ["--compile_mode", "reduce-overhead"])[2:]))
    # the Hugging Face baseline's: the same budget, batch, lr, workers and compile mode in its own script's flags
    spec = importlib.util.spec_from_file_location("hf_pretrain", os.path.join(ROOT, "bench", "hf_pretrain.py"))
    hf_pretrain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hf_pretrain)
    cmd = cram.pretrain_command("python", dict(gpu, pretrainer="hf"), "c.json", str(tmp_path), "out", 3.5, [])
    assert cmd[1] == os.path.join("bench", "hf_pretrain.py")
    args = hf_pretrain.build_parser().parse_args(cmd[2:])
    assert (args.max_time_minutes, args.schedule_by_time, args.train_batch_size, args.learning_rate,
            args.warmup_proportion, args.num_workers, args.compile, args.compile_mode) == \
        (3.5, True, 256, cram.RECIPE["lr"], cram.RECIPE["warmup"], 14, True, "reduce-overhead")


def test_finetune_jobs_are_accepted_by_their_scripts(tmp_path):
    """The GPU recipe's fine-tuning command lines (bf16, loader workers, the whole KorSTS grid) parse with their
    scripts' own parsers and carry the recipe's settings: a renamed flag fails here, not on a GPU machine."""
    sys.path.insert(0, ROOT)
    import run_classifier
    import run_qa
    cram = load_cram()
    ft = {task: dict(v) for task, v in cram.FINETUNE.items()}
    ft["korsts"].update(pair_orders="score_both", head_init_seed=3)
    grid = cram.korsts_grid(dict(ft["korsts"], poolers="kept,new"))
    common = ["--checkpoint", "ckpt", "--config_file", "config.json", "--amp", "bf16"]
    done = {"korquad": "q", "kornli": "n"}
    jobs = cram.finetune_jobs("python", str(tmp_path), ["korquad", "kornli", "korsts"], ft, grid, common,
                              ["--num_workers", "2"], [], done)
    assert [name for name, _, _ in jobs][:2] == ["korquad", "kornli"] and len(jobs) == 2 + 20
    for name, cmd, marker in jobs:
        parser = (run_qa if cmd[1] == "run_qa.py" else run_classifier).build_parser()
        args = parser.parse_args(cmd[2:])
        assert args.amp == "bf16" and args.checkpoint == "ckpt", name
        if name == "korquad":
            f = ft["korquad"]
            assert (args.max_seq_length, args.doc_stride, args.train_batch_size, args.learning_rate,
                    args.num_train_epochs, args.num_workers) == (f["seq"], f["stride"], f["batch"], f["lr"],
                                                                 f["epochs"], 2)
            assert json.loads(open(args.train_file, encoding="utf-8").read())["data"] and marker == "q"
        elif name == "kornli":
            assert (args.task_name, args.learning_rate, args.num_train_epochs) == ("kornli", 1e-4, 3)
        else:
            run = next(r for r in grid if name == f"korsts_{r['name']}")
            assert (args.task_name, args.seed, args.learning_rate, args.reinit_pooler, args.pair_orders,
                    args.head_init_seed, args.num_workers) == ("korsts", run["seed"], run["lr"],
                                                               run["pooler"] == "new", "score_both", 3, 0)
            assert marker == os.path.join(str(tmp_path), "korsts", run["name"], "eval_results.json")


def test_shards_belong_to_the_archive_they_were_unpacked_from(tmp_path, capsys):
    """A work dir's unpacked shards are reused for the same archive only: another one (cram_prepare.sh MORPH=kiwi's,
    say) is refused with one line, not silently served the shards of the first."""
    import tarfile
    cram_work = load_cram_work()
    archives = {}
    for name in ("plain", "kiwi"):
        src = tmp_path / name / "shards"
        src.mkdir(parents=True)
        (src / "meta.json").write_text(json.dumps({"name": name}), encoding="utf-8")
        (src / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
        archives[name] = tmp_path / f"{name}.tar.xz"
        with tarfile.open(archives[name], "w:xz") as tar:
            tar.add(src, arcname="shards")
    work, stages = tmp_path / "work", {}

    def prepare(archive):
        return cram_work.prepare_shards(str(work), str(work / "logs"), stages, sys.executable, archive=str(archive))
    work.mkdir()
    shards = prepare(archives["plain"])
    assert "unpack" in stages and json.loads(open(os.path.join(shards, "meta.json")).read()) == {"name": "plain"}
    stages.clear()
    assert prepare(archives["plain"]) == shards and "unpack" not in stages  # the same archive: reused
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        prepare(archives["kiwi"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "unpacked from another archive" in err and "plain.tar.xz" in err
    assert json.loads(open(os.path.join(shards, "meta.json")).read()) == {"name": "plain"}
    # shards with no record of their archive (or a damaged one) are not known to be any archive's
    for damage in ("", "{not json"):
        record = work / "shards_archive.json"
        record.unlink()
        if damage:
            record.write_text(damage, encoding="utf-8")
        with pytest.raises(SystemExit) as e:
            prepare(archives["plain"])
        assert e.value.code == 2 and "unpacked from another archive (not recorded)" in capsys.readouterr().err
        record.write_text(json.dumps({"archive": str(archives["plain"]), "sha256": "x"}), encoding="utf-8")


def test_morpheme_split_shards_reach_every_config_and_the_fine_tuning(tmp_path):
    """Shards prepared with --morph_analyzer kiwi: cram writes it into the pretraining and fine-tuning configs, so
    the fine-tuning scripts, given that config and the pretrained checkpoint, tokenise as pretraining did (they
    refuse a config that disagrees with the checkpoint's: tests/test_train_utils.py)."""
    pytest.importorskip("kiwipiepy")
    import argparse

    import model_args
    text = tmp_path / "news.txt"
    with open(os.path.join(ROOT, "data", "korean_text", "boddari", "wikinews.txt"), encoding="utf-8") as f:
        text.write_text("".join(f.readline() for _ in range(800)), encoding="utf-8")
    py = sys.executable
    for cmd in ([py, "tokenization.py", "build-vocab", "--corpus", str(text), "--vocab_size", "2000",
                 "--morph_analyzer", "kiwi", "--num_workers", "1", "--output", str(tmp_path / "vocab.txt")],
                [py, "create_pretraining_data.py", "--input_files", str(text), "--vocab_file",
                 str(tmp_path / "vocab.txt"), "--output_dir", str(tmp_path / "shards"), "--morph_analyzer", "kiwi",
                 "--num_workers", "1"]):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    work = tmp_path / "work"
    # a few steps are enough to make the checkpoint the configs travel with (flags in --pretrain_args come last)
    proc = run(work, tmp_path / "kiwi.json", "--input_dir", str(tmp_path / "shards"), "--tasks", "--pretrain_args",
               "--max_steps 3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("config.json", "config_pretrain.json"):
        assert json.loads((work / name).read_text(encoding="utf-8"))["morph_analyzer"] == "kiwi", name
    ckpt = json.loads((tmp_path / "kiwi.json").read_text(encoding="utf-8"))["weights"]["from"]
    # what every fine-tuning stage resolves: cram's config with the pretrained checkpoint, accepted, splitting
    config, _ = model_args.resolve_config_and_vocab(argparse.Namespace(
        checkpoint=ckpt, config_file=str(work / "config.json"), vocab_file=None))
    assert config.morph_analyzer == "kiwi"
