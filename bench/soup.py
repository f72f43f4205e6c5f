"""Model soups of a seed grid: the fine-tuned weights of several seeds averaged into one model of the same size.

    python bench/soup.py --task_name korsts --data_dir data/korsts \
        --checkpoints runs/quickstart/korsts_pretrained/seed-*/best --output_dir runs/quickstart/soup --do_test
    python bench/soup.py --task_name korsts --data_dir data/korsts --checkpoints R/korsts/*/best  # dev only

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
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import batching  # noqa: E402
import cls_data  # noqa: E402
import tokenization  # noqa: E402
import train_utils as tu  # noqa: E402
from eval_classifier import read_task_json  # noqa: E402
from models.checkpoint import checkpoint_config, checkpoint_vocab, load_checkpoint, save_checkpoint  # noqa: E402
from models.modeling import BertForSequenceClassification  # noqa: E402
from pretraining_data import vocab_sha256  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cls_data.add_task_args(p, max_seq_length=None)  # None: from the checkpoints' task.json
    g = p.add_argument_group("soup")
    g.add_argument("--checkpoints", nargs="+", required=True, help="fine-tuned checkpoint dirs: the ingredients")
    g.add_argument("--output_dir", default=None, help="soup.json and best/ (the chosen model); none: print only")
    g.add_argument("--do_test", action="store_true", help="score the model chosen on dev on test")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even when a GPU is present")
    batching.add_pad_multiple_arg(g)
    return p


def check_ingredients(paths: list[str], task) -> dict:
    """The ingredients' shared config, vocab and task.json; one-line ValueError naming the first that differs."""
    first = None
    for path in paths:
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


def split_views(args, task, split: str, ing: dict, multiple: int):
    """(views, labels) for a split, built once for every model scored, as eval_classifier.py builds them."""
    config = ing["config_obj"]
    examples = cls_data.read_split(args, task, split)
    tokenizer = tokenization.build_fast_tokenizer(ing["vocab_file"], do_lower_case=config.do_lower_case,
                                                  morph_analyzer=config.morph_analyzer)
    ids = tokenization.special_token_ids(tokenization.load_vocab(ing["vocab_file"]))
    max_len = args.max_seq_length or ing["max_seq_length"] or cls_data.DEFAULT_MAX_SEQ_LENGTH
    per_order = cls_data.convert_pair_orders(examples, tokenizer, ids["cls"], ids["sep"], max_len,
                                             cls_data.scores_both_orders(ing["pair_orders"]))
    return cls_data.eval_views(per_order, args.eval_batch_size, ids["pad"], task.is_regression, multiple, max_len)


def average(state_dicts: list[dict]) -> dict:
    """The mean of floating-point tensors (in float32); other tensors must agree and are kept."""
    out = {}
    for k, v in state_dicts[0].items():
        if v.is_floating_point():
            out[k] = (torch.stack([sd[k].float() for sd in state_dicts]).mean(0)).to(v.dtype)
        else:
            if any(not torch.equal(sd[k], v) for sd in state_dicts[1:]):
                raise ValueError(f"{k} is not a floating-point tensor and differs between ingredients")
            out[k] = v
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    task = cls_data.TASKS[args.task_name]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    multiple = batching.pad_multiple(args, device)
    paths = list(dict.fromkeys(args.checkpoints))  # a glob may name one twice
    if args.output_dir and os.path.exists(os.path.join(args.output_dir, "soup.json")):
        tu.fail(f"{os.path.join(args.output_dir, 'soup.json')} already exists; choose another --output_dir")
    try:
        ing = check_ingredients(paths, task)
        cls_data.check_task_args(args)
        dev_views, dev_labels = split_views(args, task, "dev", ing, multiple)
    except (ValueError, OSError) as e:
        tu.fail(str(e))
    model = BertForSequenceClassification(ing["config_obj"], num_labels=task.num_labels).to(device)

    def predict(sd) -> np.ndarray:
        model.load_state_dict(sd)
        return cls_data.predict_views(model, dev_views, device)

    def score(logits) -> float:
        return cls_data.score_for_selection(cls_data.compute_metrics(task, logits, dev_labels), task)

    singles = {}  # path -> (dev score, its state dict on the CPU, its dev logits)
    for path in paths:
        load_checkpoint(model, path, strict=True)
        sd = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        logits = predict(sd)
        singles[path] = (score(logits), sd, logits)
        print(f"{path}: dev {task.main_metric} {singles[path][0]:.2f}", flush=True)
    order = sorted(paths, key=lambda p: -singles[p][0])

    kept, greedy_dev = [order[0]], singles[order[0]][0]
    for path in order[1:]:
        dev = score(predict(average([singles[p][1] for p in kept + [path]])))
        print(f"greedy: + {path}: dev {dev:.2f} ({'kept' if dev >= greedy_dev else 'left out'})", flush=True)
        if dev >= greedy_dev:
            kept, greedy_dev = kept + [path], dev
    uniform_dev = score(predict(average([singles[p][1] for p in paths])))
    ensemble_dev = score(np.mean([singles[p][2] for p in paths], axis=0))
    candidates = {"best single": ([order[0]], singles[order[0]][0]), "greedy soup": (kept, greedy_dev),
                  "uniform soup": (paths, uniform_dev)}
    chosen = max(candidates, key=lambda name: candidates[name][1])  # ties: the first, the single model
    results = {"task_name": task.name, "main_metric": task.main_metric, "metric_scale": "x100",
               "ingredients": {p: singles[p][0] for p in order},
               "dev": {name: dev for name, (_, dev) in candidates.items()},
               "greedy_ingredients": kept, "ensemble_dev_not_one_model": ensemble_dev,
               "chosen_on_dev": chosen, "chosen_ingredients": candidates[chosen][0]}
    print(f"dev {task.main_metric}: best single {candidates['best single'][1]:.2f}, greedy soup of {len(kept)} "
          f"{greedy_dev:.2f}, uniform soup of {len(paths)} {uniform_dev:.2f} (ensemble of {len(paths)}, not one "
          f"model: {ensemble_dev:.2f}); chosen on dev: {chosen}", flush=True)
    model.load_state_dict(average([singles[p][1] for p in candidates[chosen][0]]))
    if args.do_test:
        try:
            views, labels = split_views(args, task, "test", ing, multiple)
        except (ValueError, OSError) as e:
            tu.fail(str(e))
        results["test"] = cls_data.json_safe(cls_data.compute_metrics(task, cls_data.predict_views(model, views,
                                                                                                   device), labels))
        print(f"test ({chosen}): " + " ".join(f"{k} {v:.2f}" for k, v in results["test"].items()), flush=True)
    if args.output_dir:
        best = os.path.join(args.output_dir, "best")
        save_checkpoint(model, best, vocab_file=ing["vocab_file"])
        tu.atomic_write_json(os.path.join(best, "task.json"), {**ing["task_json"], "epoch": None,
                                                               "soup": candidates[chosen][0]})
        tu.atomic_write_json(os.path.join(args.output_dir, "soup.json"), results)  # last: marks the run complete
    return results


if __name__ == "__main__":
    main()
