"""bench/soup.py: averaging, the greedy rule, the chosen model written as a checkpoint eval_classifier.py scores the
same, and one-line errors for ingredients that cannot be averaged."""
import json
import os
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.join(ROOT, "bench"))

import eval_classifier  # noqa: E402
import run_classifier  # noqa: E402
import soup  # noqa: E402
from cls_helpers import STS_DIR, eval_argv, train_argv  # noqa: E402
from helpers import expect_fail, one_thread  # noqa: E402,F401 (one_thread: autouse)


def soup_argv(paths, *extra):
    return ["--task_name", "korsts", "--data_dir", STS_DIR, "--checkpoints", *map(str, paths),
            "--max_eval_examples", "100", "--no_cuda", *extra]


@pytest.fixture(scope="module")
def seeds(cls_env, korsts_run, tmp_path_factory):
    """Two seeds fine-tuned from the same fine-tuned checkpoint (head included): ingredients from one start."""
    out = tmp_path_factory.mktemp("soup_seeds")
    run_classifier.main(train_argv(cls_env, out, "--checkpoint", str(korsts_run[0] / "best"), "--do_eval",
                                   "--seeds", "1,2", n_train=48))
    return [out / "seed-1" / "best", out / "seed-2" / "best"]


def test_soup_sums_floats_and_keeps_equal_integers():
    a = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1])}
    b = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([0, 1])}
    c = {"w": torch.tensor([2.0, 1.0]), "ids": torch.tensor([0, 1])}
    one, three = soup.Soup().add(a), soup.Soup().add(a).add(b).add(c)
    assert torch.equal(one.mean()["w"], a["w"]) and torch.equal(three.mean()["w"], torch.tensor([2.0, 3.0]))
    assert torch.equal(three.mean()["ids"], a["ids"]) and torch.equal(a["w"], torch.tensor([1.0, 2.0]))  # a intact
    with pytest.raises(ValueError, match="ids"):
        one.add({**b, "ids": torch.tensor([1, 1])})


def test_greedy_keeps_what_does_not_lower_the_running_score():
    scores = {("a", "b"): 6.0, ("a", "b", "c"): 5.5, ("a", "b", "d"): 6.0, ("a", "b", "d", "e"): 5.9}
    asked = []

    def score_with(members):
        asked.append(tuple(members))
        return scores[tuple(members)]

    # b raises a's 5.0 (kept); c is above a alone but below the soup so far (left out); d ties it (kept); e lowers it
    assert soup.greedy(list("abcde"), 5.0, score_with) == (["a", "b", "d"], 6.0)
    assert asked == [("a", "b"), ("a", "b", "c"), ("a", "b", "d"), ("a", "b", "d", "e")]


def test_soup_of_two_seeds(seeds, capsys, tmp_path):
    out = tmp_path / "soup"
    r = soup.main(soup_argv(seeds, "--output_dir", str(out), "--do_test"))
    assert json.loads((out / "soup.json").read_text()) == r
    dev = r["ingredients"]
    assert set(dev) == {str(s) for s in seeds} and dev[str(seeds[0])] != dev[str(seeds[1])]
    # each ingredient's dev score is what eval_classifier gives it
    for s in seeds:
        m = eval_classifier.main(eval_argv(s, "korsts", "--eval_file", os.path.join(STS_DIR, "sts-dev.tsv")))
        assert dev[str(s)] == pytest.approx(m["spearman"], abs=1e-4)
    # the uniform soup's dev score is that of the plain mean of the two weight files
    a, b = (load_file(str(s / "model.safetensors")) for s in seeds)
    mean = {k: (a[k] + b[k]) / 2 if a[k].is_floating_point() else a[k] for k in a}
    by_hand = tmp_path / "mean"
    shutil.copytree(seeds[0], by_hand)
    save_file(mean, str(by_hand / "model.safetensors"), metadata=load_metadata(seeds[0]))
    m = eval_classifier.main(eval_argv(by_hand, "korsts", "--eval_file", os.path.join(STS_DIR, "sts-dev.tsv")))
    assert r["dev"]["uniform soup"] == pytest.approx(m["spearman"], abs=1e-4)
    # greedy: the better seed first, the other kept only if the pair scores at least as well on dev
    first = max(dev, key=dev.get)
    assert r["greedy_ingredients"][0] == first and r["dev"]["best single"] == dev[first]
    assert (len(r["greedy_ingredients"]) == 2) == (r["dev"]["uniform soup"] >= dev[first])
    assert r["chosen_on_dev"] == max(r["dev"], key=r["dev"].get)
    # the chosen model is written as a checkpoint, and scoring it again gives the test score reported
    test = eval_classifier.main(eval_argv(out / "best", "korsts"))
    assert r["test"]["spearman"] == pytest.approx(test["spearman"], abs=1e-4)
    meta = json.loads((out / "best" / "task.json").read_text())
    assert meta["soup"] == r["chosen_ingredients"] == [str(s) for s in r["chosen_ingredients"]] and meta["epoch"] is None
    assert all(os.path.isabs(p) for p in meta["soup"])
    expect_fail(capsys, soup.main, soup_argv(seeds, "--output_dir", str(out)), "soup.json already exists")
    # a run stopped after writing best/ but before soup.json: the same command replaces its best/
    (out / "soup.json").unlink()
    assert soup.main(soup_argv(seeds, "--output_dir", str(out))) == {k: v for k, v in r.items() if k != "test"}
    # a run killed while saving leaves best.tmp, never a best/ without the task.json that marks it: a rerun goes on
    (out / "soup.json").unlink()
    shutil.rmtree(out / "best")
    (out / "best.tmp").mkdir()
    (out / "best.tmp" / "config.json").write_text("{}")
    soup.main(soup_argv(seeds, "--output_dir", str(out)))
    assert not (out / "best.tmp").exists() and json.loads((out / "best" / "task.json").read_text())["soup"]
    # ... but never a model that is not an unfinished soup: here one of the ingredients
    expect_fail(capsys, soup.main, soup_argv(seeds, "--output_dir", str(seeds[0].parent)), "already exists")


def load_metadata(ckpt):
    from safetensors import safe_open
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        return f.metadata()


def test_one_checkpoint_twice_is_itself(seeds, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(seeds[0], twin)
    r = soup.main(soup_argv([seeds[0], twin, seeds[0], f"{seeds[0]}{os.sep}"]))
    assert len(r["ingredients"]) == 2  # the repeated path counts once, however it is spelled
    assert len(set(r["dev"].values())) == 1 and r["chosen_on_dev"] == "best single"
    assert r["ensemble_dev_not_one_model"] == pytest.approx(r["dev"]["best single"], abs=1e-6)


def test_ingredients_that_cannot_be_averaged_fail_in_one_line(seeds, korsts_run, capsys, tmp_path):
    expect_fail(capsys, soup.main, soup_argv([seeds[0], tmp_path]), "not a fine-tuned checkpoint")
    nli = tmp_path / "nli"
    shutil.copytree(seeds[0], nli)
    meta = json.loads((nli / "task.json").read_text())
    (nli / "task.json").write_text(json.dumps({**meta, "task_name": "kornli"}))
    expect_fail(capsys, soup.main, soup_argv([seeds[0], nli]), "fine-tuned for kornli, not --task_name korsts")
    longer = tmp_path / "longer"
    shutil.copytree(seeds[0], longer)
    (longer / "task.json").write_text(json.dumps({**meta, "max_seq_length": 64}))
    expect_fail(capsys, soup.main, soup_argv([seeds[0], longer]), "differs from")
    # the same shape and task, another start: the seeds were fine-tuned from korsts_run's best, which was
    # fine-tuned from scratch (each run's eval_results.json beside its best/ says so)
    expect_fail(capsys, soup.main, soup_argv([seeds[0], korsts_run[0] / "best"]),
                "was fine-tuned from scratch", "share one start")
    # run_classifier's training flags, which a soup would ignore
    for flag, value in (("--train_file", str(tmp_path / "train.tsv")), ("--max_train_examples", "10")):
        expect_fail(capsys, soup.main, soup_argv(seeds, flag, value), flag, "trains nothing")
