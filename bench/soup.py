"""Model soups of a seed grid: the fine-tuned weights of several seeds averaged into one model of the same size.

    python bench/soup.py --task_name korsts --data_dir data/korsts \\
        --checkpoints runs/quickstart/korsts_pretrained/seed-*/best --output_dir runs/quickstart/soup --do_test
    python bench/soup.py --task_name korsts --data_dir data/korsts --checkpoints WORK/korsts/*/best  # dev only

Every seed of a grid starts from the same pretrained weights, so the fine-tuned weights may lie in one basin,
where their average scores above each of them (Wortsman et al., 2022, "Model soups"). The ingredients are the
given checkpoints (each seed's best dev epoch), all of one task, shape and vocabulary. Each is scored on dev; the
greedy soup takes them in order of dev score and keeps each one whose addition does not lower the soup's dev
score; the uniform soup averages all of them. Only dev chooses: of the best single checkpoint, the greedy and the
uniform soup, the one with the highest dev score is the result, written to OUTPUT_DIR/best (weights, config,
vocab, task.json; eval_classifier.py scores it like any fine-tuned checkpoint), and --do_test scores that one
alone on test. For scale, the mean of the ingredients' predictions (an ensemble, not one model) is reported on
dev. Pairs are scored as the checkpoints were fine-tuned (task.json's pair_orders).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import batching  # noqa: E402
import cls_data  # noqa: E402
import cls_features  # noqa: E402
import tokenization  # noqa: E402
import train_utils as tu  # noqa: E402
from fileio import atomic_write_json, run_script  # noqa: E402
from eval_classifier import read_task_json, resolve_max_seq_length  # noqa: E402
from models.checkpoint import checkpoint_config, checkpoint_vocab, load_checkpoint, save_checkpoint  # noqa: E402
from models.config import read_json_object  # noqa: E402
from models.modeling import BertForSequenceClassification  # noqa: E402
from pretraining_data import vocab_sha256  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cls_data.add_task_args(p, max_seq_length=None)  # None: from the checkpoints' task.json
    g = p.add_argument_group("soup")
    g.add_argument("--checkpoints", nargs="+", required=True, help="fine-tuned checkpoint dirs: the ingredients")
    g.add_argument("--output_dir", default=None, help="soup.json and best/ (the chosen model); none: print only")
    g.add_argument("--do_test", action="store_true", help="score the model chosen on dev on test")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even when a GPU is present")
    batching.add_pad_multiple_arg(g)
    return p


UNKNOWN = object()


def fine_tuned_from(path: str):
    """The --checkpoint an ingredient was fine-tuned from (realpath; None: from scratch), read from the
    eval_results.json run_classifier writes beside its best/; UNKNOWN without one."""
    meta = os.path.join(os.path.dirname(os.path.abspath(path)), "eval_results.json")
    try:
        args = read_json_object(meta).get("args") if os.path.isfile(meta) else None
    except ValueError:
        return UNKNOWN
    if not isinstance(args, dict) or "checkpoint" not in args:
        return UNKNOWN
    return None if args["checkpoint"] is None else os.path.realpath(args["checkpoint"])


def check_ingredients(paths: list[str], task) -> dict:
    """The ingredients' shared config, vocab and task.json, and their one start where it is recorded (averaging
    runs fine-tuned from different weights, or one of them from scratch, makes no model); one-line ValueError
    naming the first that differs."""
    first, start = None, (None, UNKNOWN)  # (path, the first recorded start)
    for path in paths:
        began = fine_tuned_from(path)
        if began is not UNKNOWN and start[1] is UNKNOWN:
            start = (path, began)
        elif began is not UNKNOWN and began != start[1]:
            raise ValueError(f"{path} was fine-tuned from {began or 'scratch'}, {start[0]} from "
                             f"{start[1] or 'scratch'}: the ingredients of a soup share one start")
        config, vocab, meta = checkpoint_config(path), checkpoint_vocab(path), read_task_json(path)
        if config is None or vocab is None or not meta:
            raise ValueError(f"{path}: not a fine-tuned checkpoint of run_classifier.py (config.json, vocab.txt and "
                             "task.json)")
        if meta.get("task_name") != task.name:
            raise ValueError(f"{path} was fine-tuned for {meta.get('task_name')}, not --task_name {task.name}")
        mine = {"config": config.to_dict(), "vocab": vocab_sha256(vocab),
                "max_seq_length": meta.get("max_seq_length"), "pair_orders": meta.get("pair_orders", "one")}
        if first is None:
            first = dict(mine, path=path, config_obj=config, vocab_file=vocab, task_json=meta)
            continue
        for key in mine:
            if mine[key] != first[key]:
                raise ValueError(f"{path} differs from {first['path']} in its {key}: the ingredients of a soup "
                                 "share one shape, vocabulary and input format")
    return first


def split_views(args, task, splits: list[str], ing: dict, multiple: int, max_len: int) -> dict:
    """{split: (views, labels)}, built once for every model scored, as eval_classifier.py builds them."""
    config = ing["config_obj"]
    tokenizer = tokenization.build_fast_tokenizer(ing["vocab_file"], do_lower_case=config.do_lower_case,
                                                  morph_analyzer=config.morph_analyzer)
    ids = tokenization.special_token_ids(tokenization.load_vocab(ing["vocab_file"]))
    views = {}
    for split in splits:
        both = cls_data.scores_both_orders(ing["pair_orders"])
        per_order = cls_features.convert_pair_orders(cls_data.read_split(args, task, split), tokenizer, ids["cls"],
                                                     ids["sep"], max_len, both)
        views[split] = cls_features.eval_views(per_order, args.eval_batch_size, ids["pad"], task.is_regression,
                                               multiple, max_len)
    return views


class Soup:
    """A running sum of state dicts (floating-point tensors in float32; any other tensor must be equal in all), so
    that memory holds one sum however many ingredients there are."""

    def __init__(self):
        self.total, self.n = None, 0

    def add(self, sd: dict) -> "Soup":
        out = Soup()
        out.n = self.n + 1
        if self.total is None:
            out.total = {k: v.float().clone() if v.is_floating_point() else v for k, v in sd.items()}
            return out
        out.total = {}
        for k, v in self.total.items():
            if v.is_floating_point():
                out.total[k] = v + sd[k].float()
            elif not torch.equal(v, sd[k]):
                raise ValueError(f"{k} is not a floating-point tensor and differs between ingredients")
            else:
                out.total[k] = v
        return out

    def mean(self) -> dict:
        return {k: v / self.n if v.is_floating_point() else v for k, v in self.total.items()}


def unfinished_soup(path: str) -> bool:
    try:
        return "soup" in read_task_json(path)
    except (ValueError, OSError):
        return False


def greedy(order: list, first_score: float, score_with) -> tuple[list, float]:
    """Wortsman et al.'s greedy soup: walk `order` (best first), keep each item whose addition scores at least as
    well as the soup so far (score_with(kept + [item])); (kept, its score)."""
    kept, best = [order[0]], first_score
    for item in order[1:]:
        value = score_with(kept + [item])
        print(f"greedy: + {item}: dev {value:.2f} ({'kept' if value >= best else 'left out'})", flush=True)
        if value >= best:
            kept, best = kept + [item], value
    return kept, best


def main(argv=None):
    args = build_parser().parse_args(argv)
    task = cls_data.TASKS[args.task_name]
    rt = tu.setup_runtime(args)  # as the other scripts: the same device choice and matmul precision
    try:
        multiple = batching.pad_multiple(args.pad_to_multiple_of, rt.device)
        # the task flags are run_classifier's: a soup trains nothing, so these would be ignored
        for flag in ("train_file", "max_train_examples"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag}: a soup averages fine-tuned weights and trains nothing; leave it out")
    except ValueError as e:
        tu.fail(str(e))
    # a glob may name one twice, or two spellings (a trailing slash, ./, a link) the same folder
    paths = list(dict.fromkeys(os.path.realpath(p) for p in args.checkpoints))
    out_best = os.path.abspath(os.path.join(args.output_dir, "best")) if args.output_dir else None
    if args.output_dir and os.path.exists(os.path.join(args.output_dir, "soup.json")):
        tu.fail(f"{os.path.join(args.output_dir, 'soup.json')} already exists; choose another --output_dir")
    # OUTPUT_DIR/best is replaced only when it is what an unfinished soup run left (its task.json says "soup")
    if out_best and os.path.exists(out_best) and (
            not unfinished_soup(out_best) or os.path.realpath(out_best) in map(os.path.realpath, paths)):
        tu.fail(f"{out_best} already exists (a model this run would overwrite); choose another --output_dir")
    try:
        cls_data.check_task_args(args)
        ing = check_ingredients(paths, task)
        cls_data.check_pair_orders(ing["pair_orders"], task, f"{ing['path']}'s task.json pair_orders")
        max_len = resolve_max_seq_length(args, ing["task_json"], ing["path"], ing["config_obj"])
        # every split read up front: a bad test file fails before any work
        views = split_views(args, task, ["dev", "test"] if args.do_test else ["dev"], ing, multiple, max_len)
        model = BertForSequenceClassification(ing["config_obj"], num_labels=task.num_labels).to(rt.device)

        def weights(path) -> dict:
            load_checkpoint(model, path, strict=True)
            return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}

        def predict(split="dev") -> np.ndarray:
            return cls_features.predict_views(model, views[split][0], rt.device)

        def score(logits) -> float:
            return cls_data.score_for_selection(cls_data.compute_metrics(task, logits, views["dev"][1]), task)

        sums = {(): Soup()}  # members -> their sum; kept: the last soup and the one before it, which the
        # greedy walk extends next whether it keeps the last addition or not

        def score_soup(members) -> float:
            members = tuple(members)
            if members not in sums:
                head = members[:-1] if members[:-1] in sums else ()
                soup = sums[head]
                for path in members[len(head):]:
                    soup = soup.add(weights(path))
                sums.update({members: soup})
                for key in [k for k in sums if k not in ((), members, members[:-1])]:
                    del sums[key]
            model.load_state_dict(sums[members].mean())
            return score(predict())

        singles, logits = {}, {}  # path -> dev score, its dev predictions
        for path in paths:
            load_checkpoint(model, path, strict=True)
            logits[path] = predict()
            singles[path] = score(logits[path])
            print(f"{path}: dev {task.main_metric} {singles[path]:.2f}", flush=True)
        order = sorted(paths, key=lambda p: -singles[p])
        kept, greedy_dev = greedy(order, singles[order[0]], score_soup)
        uniform_dev = score_soup(paths)
    except (ValueError, OSError) as e:
        tu.fail(str(e))
    ensemble_dev = score(np.mean([logits[p] for p in paths], axis=0))
    candidates = {"best single": ([order[0]], singles[order[0]]), "greedy soup": (kept, greedy_dev),
                  "uniform soup": (paths, uniform_dev)}
    chosen = max(candidates, key=lambda name: candidates[name][1])  # ties: the first, the single model

    def finite(x):  # an undefined correlation ranks as -inf; JSON gets null
        return x if np.isfinite(x) else None

    results = {"task_name": task.name, "main_metric": task.main_metric, "metric_scale": "x100",
               "ingredients": {p: finite(singles[p]) for p in order},
               "dev": {name: finite(dev) for name, (_, dev) in candidates.items()},
               "greedy_ingredients": kept, "ensemble_dev_not_one_model": finite(ensemble_dev),
               "chosen_on_dev": chosen, "chosen_ingredients": candidates[chosen][0]}
    print(f"dev {task.main_metric}: best single {candidates['best single'][1]:.2f}, greedy soup of {len(kept)} "
          f"{greedy_dev:.2f}, uniform soup of {len(paths)} {uniform_dev:.2f} (ensemble of {len(paths)}, not one "
          f"model: {ensemble_dev:.2f}); chosen on dev: {chosen}", flush=True)
    score_soup(candidates[chosen][0])  # the chosen model, in `model`
    if args.do_test:
        results["test"] = cls_data.json_safe(cls_data.compute_metrics(task, predict("test"), views["test"][1]))
        print(f"test ({chosen}): " + " ".join(f"{k} {v:.2f}" for k, v in results["test"].items()), flush=True)
    if args.output_dir:
        # written beside best/ and renamed into place: a run killed while saving leaves no best/ without the
        # task.json that marks it as this script's (which the next run would refuse to replace)
        tmp = out_best + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_checkpoint(model, tmp, vocab_file=ing["vocab_file"])
        atomic_write_json(os.path.join(tmp, "task.json"), {**ing["task_json"], "epoch": None,
                                                              "soup": candidates[chosen][0]})
        if os.path.isdir(out_best):  # an unfinished soup run's (checked at the start)
            shutil.rmtree(out_best)
        os.replace(tmp, out_best)
        atomic_write_json(os.path.join(args.output_dir, "soup.json"), results)  # last: marks the run complete
    return results


if __name__ == "__main__":
    run_script(main)
