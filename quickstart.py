"""The whole pipeline on the bundled data, in one command: vocab -> shards -> pretraining -> KorSTS.

    make quickstart                                  # same as the next line, after installing requirements
    python quickstart.py --output_dir runs/quickstart
    python quickstart.py --output_dir runs/qs10 --budget_minutes 10   # pretrain for 10 minutes of wall time

Stages (each is an ordinary script run as a subprocess; its command line is printed so you can rerun it):
  1. build a WordPiece vocab from data/korean_text          (tokenization.py build-vocab)
  2. prepare pretraining shards                             (create_pretraining_data.py)
  3. pretrain a small BERT, n-gram masking + SOP, for 1,400 steps (GPU: 10 minutes)   (run_pretraining.py)
  4. fine-tune it on KorSTS train with seeds 1-3, each picking its epoch on dev   (run_classifier.py --seeds)
  5. evaluate every seed's model on KorSTS test              (eval_classifier.py)
  6-7. the same fine-tuning and evaluation from random initialisation (the control)
Then a results table is printed and written to OUTPUT_DIR/results.json, with plots in OUTPUT_DIR/*.png.

On the CPU, pretraining runs a fixed 1,400 steps (about 3 minutes on 2 cores), so every run of the quickstart on
the same kind of machine trains the same checkpoint and prints the same scores; --budget_minutes stops it by wall
time instead (the default on a GPU, whose speed varies too much for one step count), which varies the checkpoint
with the machine's load. The fine-tuning seed moves the test score by more than three CPU minutes of pretraining
gain, so both rows fine-tune with the same seeds and the table compares them seed by seed.
A stage whose output already exists is skipped, so a re-run after an interruption picks up where it stopped;
delete a stage's folder to redo it.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import torch

from cls_data import mean_std
from fileio import atomic_write_json, plot_jsonl, read_jsonl, resolve_checkpoint_dir, run_script
from stages import exit_on_termination, run_stage
from tokenization import SPECIAL_TOKENS
from train_utils import check_output_dir_path, fail, parse_seeds, warn

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = sorted(glob.glob(os.path.join(HERE, "data/korean_text/**/*.txt"), recursive=True))
KORSTS = os.path.join(HERE, "data/korsts")

# Defaults chosen so the CPU run fits in about 10 minutes on 2 cores; on a GPU the same pipeline trains the
# release's Small shape for longer. Pretraining stops after pretrain_steps, or budget_minutes of wall time.
# On a GPU, pretraining runs as bench/cram.py's measured recipe does (bench/RESULTS.md, 2026-11-27, third run):
# compiled with CUDA graphs, and run_pretraining.py's default loader workers (the usable cores less one, at most
# 8), since one worker masking 0.3-0.5 ms per sequence would hold the Small model to about a fifth of its
# compiled rate.
CPU = dict(config="models/configs/quickstart.json", vocab_size=8000, pretrain_steps=1400, budget_minutes=None,
           seq=64, batch=32, lr=2e-3, ft_epochs=3, ft_batch=32, ft_lr=1e-4, ft_seeds="1-3", amp="no",
           num_workers=1, compile_mode=None)
GPU = dict(config="models/configs/small.json", vocab_size=32000, pretrain_steps=None, budget_minutes=10.0,
           seq=128, batch=256, lr=5e-4, ft_epochs=5, ft_batch=32, ft_lr=1e-4, ft_seeds="1-3", amp="bf16",
           num_workers=None, compile_mode="reduce-overhead")


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="runs/quickstart")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--pretrain_steps", type=int, default=None,
                      help="pretraining steps (default on the CPU: 1400, about 3 minutes on 2 cores)")
    stop.add_argument("--budget_minutes", type=float, default=None,
                      help="pretrain for this much wall time instead, the schedule fitted to it (default on a GPU: 10)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=42, help="pretraining seed (fine-tuning: --ft_seeds)")
    p.add_argument("--max_corpus_mb", type=float, default=None, help="use only the first N MB of the corpus (smoke runs)")
    p.add_argument("--vocab_size", type=int, default=None, help="WordPiece vocab size (default: 8000 on CPU, 32000 on GPU)")
    p.add_argument("--ft_epochs", type=int, default=None, help="KorSTS fine-tuning epochs")
    p.add_argument("--ft_seeds", default=None, help="KorSTS fine-tuning seeds, both rows (default 1-3)")
    p.add_argument("--max_train_examples", type=int, default=None, help="KorSTS train rows (smoke runs)")
    p.add_argument("--max_eval_examples", type=int, default=None, help="KorSTS dev/test rows (smoke runs)")
    args = p.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():  # the GPU recipe on a CPU would not finish
        fail("--device cuda: no CUDA device is visible here (--device cpu, or auto, runs the CPU recipe)")
    if args.max_corpus_mb is not None and not 0 < args.max_corpus_mb < float("inf"):
        fail(f"--max_corpus_mb {args.max_corpus_mb}: must be a positive number")
    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    d = dict(GPU if on_gpu else CPU)
    if args.pretrain_steps is not None or args.budget_minutes is not None:
        d["pretrain_steps"], d["budget_minutes"] = args.pretrain_steps, args.budget_minutes
    if args.pretrain_steps is not None and args.pretrain_steps < 1:
        fail(f"--pretrain_steps {args.pretrain_steps}: must be at least 1")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        fail(f"--budget_minutes {args.budget_minutes}: must be positive")
    # checked here, not by the stage that reads them: that runs after minutes of pretraining
    for key, least in (("ft_epochs", 1), ("max_train_examples", 1), ("max_eval_examples", 1),
                       ("vocab_size", len(SPECIAL_TOKENS) + 1)):
        if getattr(args, key) is not None and getattr(args, key) < least:
            fail(f"--{key} {getattr(args, key)}: must be at least {least}")
    for key in ("ft_epochs", "ft_seeds", "vocab_size"):
        if getattr(args, key) is not None:
            d[key] = getattr(args, key)
    try:
        seeds = parse_seeds(d["ft_seeds"], flag="--ft_seeds")
    except ValueError as e:
        fail(str(e))
    try:
        check_output_dir_path(args.output_dir)
    except ValueError as e:
        fail(str(e))
    out = os.path.abspath(args.output_dir)
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    stages_path = os.path.join(out, "stages.json")
    stages = {}
    if os.path.exists(stages_path):
        try:
            with open(stages_path, encoding="utf-8") as f:
                stages = json.load(f)
        except ValueError as e:  # only a record of the commands run: the stages' own outputs say what is done
            warn(f"{stages_path} is unreadable ({e}); starting a new record of the stages")
    rows = ("pretrained", "scratch")
    names = {"vocab", "shards", "pretrain"} | {f"finetune_{row}" for row in rows} | {
        f"test_{row}_seed{s}" for row in rows for s in seeds}
    stages = {k: v for k, v in stages.items() if k in names}  # an earlier version's or seed list's stages

    made_now = set()  # stages run (not reused) by this invocation

    def stage(name, cmd, done_marker, inputs=()):
        # a stage's output, finished or not, built from the output of a stage that was just made again is another
        # run's (an interrupted fine-tuning's finished seeds would be reused as this pretraining's)
        redone = [i for i in inputs if i in made_now]
        folder = os.path.dirname(done_marker) if name != "vocab" else done_marker
        if redone and os.path.exists(folder):
            fail(f"{os.path.relpath(folder)} was made from the earlier {redone[0]} stage's output, which this run "
                 f"made again: delete it to redo it")
        if not os.path.exists(done_marker):
            made_now.add(name)
        run_stage(name, cmd, done_marker, stages, logs)
        atomic_write_json(stages_path, stages)  # after every stage: an interrupted run keeps the commands it ran
    py = sys.executable
    cpu_flags = [] if on_gpu else ["--no_cuda"]

    corpus = CORPUS
    if args.max_corpus_mb:  # named by its size: another size is another input, not a cached one
        corpus = [os.path.join(out, f"corpus_slice_{args.max_corpus_mb:g}MB.txt")]
        if not os.path.exists(corpus[0]):
            _write_corpus_slice(CORPUS, corpus[0], int(args.max_corpus_mb * 2**20))
    vocab = os.path.join(out, "vocab.txt")
    shards = os.path.join(out, "shards")
    pre = os.path.join(out, "pretrain")
    config = os.path.join(out, "config.json")
    pre_config = os.path.join(out, "config_pretrain.json")

    stage("vocab", [py, "tokenization.py", "build-vocab", "--corpus", *corpus,
                    "--vocab_size", str(d["vocab_size"]), "--output", vocab], vocab)
    write_config(os.path.join(HERE, d["config"]), vocab, config)
    # Same architecture without dropout for pretraining: the CPU run sees each token about once, so there is
    # nothing to regularise yet; fine-tuning on 5.7k KorSTS pairs keeps the config's dropout. (A GPU goes over the
    # bundled 2M tokens many times in its budget: there the quickstart shows the pipeline, bench/cram.py the recipe.)
    write_config(os.path.join(HERE, d["config"]), vocab, pre_config,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    stage("shards", [py, "create_pretraining_data.py", "--input_files", *corpus, "--vocab_file", vocab,
                     "--output_dir", shards, "--sentence_splitter", "regex"], os.path.join(shards, "meta.json"),
          inputs=("vocab",))
    stage("pretrain", pretrain_command(py, d, pre_config, shards, pre, args.seed, cpu_flags),
          os.path.join(pre, "DONE"), inputs=("vocab", "shards"))
    pretrained = final_checkpoint(pre)
    # a folder from an older quickstart records no command lines: its step count is what can still be checked
    if "command" not in stages["pretrain"] and d["pretrain_steps"] is not None and \
            os.path.basename(pretrained) != f"step-{d['pretrain_steps']}":
        warn(f"the pretraining found in {pre} ended at {os.path.basename(pretrained)}, not at step "
             f"{d['pretrain_steps']} (another run's settings): delete it and the korsts_* folders to redo them")

    results = {}
    for name, init in zip(rows, (["--checkpoint", pretrained], [])):
        ft = os.path.join(out, f"korsts_{name}")
        train_slice = ["--max_train_examples", str(args.max_train_examples)] if args.max_train_examples else []
        eval_slice = ["--max_eval_examples", str(args.max_eval_examples)] if args.max_eval_examples else []
        # batches of similar length: about half the time per epoch of random batches on KorSTS
        stage(f"finetune_{name}", [py, "run_classifier.py", "--task_name", "korsts", "--data_dir", KORSTS,
                                   *init, "--config_file", config, "--vocab_file", vocab, "--do_eval",
                                   "--output_dir", ft, "--max_seq_length", "128",
                                   "--train_batch_size", str(d["ft_batch"]), "--eval_batch_size", "64",
                                   "--learning_rate", str(d["ft_lr"]), "--num_train_epochs", str(d["ft_epochs"]),
                                   "--seeds", d["ft_seeds"], "--group_by_length",
                                   "--amp", d["amp"], *cpu_flags, *train_slice, *eval_slice],
              os.path.join(ft, "seed_grid.json"), inputs=("vocab", "shards", "pretrain") if init else ("vocab",))
        results[name] = {"grid": read_stage_json(os.path.join(ft, "seed_grid.json")), "test": {}}
        if sorted(results[name]["grid"]["seeds"], key=int) != [str(s) for s in sorted(seeds)]:
            fail(f"{ft} holds the fine-tuning of seeds {', '.join(results[name]['grid']['seeds'])} (another run's), "
                 f"not --ft_seeds {d['ft_seeds']}: delete it to fine-tune again")
        # every seed on test, not only the one best on dev: the rows are compared seed by seed
        for s in seeds:
            test_dir = os.path.join(ft, f"seed-{s}", "test")
            stage(f"test_{name}_seed{s}", [py, "eval_classifier.py", "--task_name", "korsts", "--data_dir", KORSTS,
                                           "--checkpoint", os.path.join(ft, f"seed-{s}", "best"),
                                           "--output_dir", test_dir, "--eval_batch_size", "64", *cpu_flags,
                                           *eval_slice],
                  os.path.join(test_dir, "eval_results.json"), inputs=(f"finetune_{name}",))
            results[name]["test"][s] = read_stage_json(os.path.join(test_dir, "eval_results.json"))
    summary = _summarise(out, pre, results, seeds, stages, d, on_gpu)
    atomic_write_json(os.path.join(out, "results.json"), summary)
    _print_table(summary)
    print(f"\nresults: {os.path.join(out, 'results.json')}  plots: {out}/*.png")
    return summary


def read_stage_json(path, redo="delete it to run the stage that wrote it again"):
    """A finished stage's JSON output. The stages write theirs atomically, so one that does not parse was cut or
    edited outside them: one line naming it and how to redo it, not a traceback."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        fail(f"{os.path.relpath(path)} is unreadable ({e}): {redo}")


def _write_corpus_slice(files, path, n_bytes):
    """First n_bytes of the corpus, cut at a document (blank-line) boundary, streamed."""
    written = 0
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        for fn in files:
            with open(fn, encoding="utf-8", errors="strict") as f:
                for line in f:
                    out.write(line)
                    written += len(line.encode("utf-8"))
                    if written >= n_bytes and not line.strip():
                        break
            out.write("\n")
            if written >= n_bytes:
                break
    os.replace(path + ".tmp", path)


def write_config(template, vocab, path, **overrides):
    """The model config with vocab_size set to the vocab just built, and overrides (config keys) set."""
    with open(template, encoding="utf-8") as f:
        cfg = json.load(f)
    with open(vocab, encoding="utf-8") as f:
        cfg["vocab_size"] = sum(1 for _ in f)
    release_names = {"hidden_dropout_prob": "dropout_prob", "attention_probs_dropout_prob": "dropout_prob"}
    for key in [k for k in overrides if k not in cfg and k in release_names]:  # the HF name replaces the release's
        cfg.pop(release_names[key], None)
    cfg.update(overrides)
    atomic_write_json(path, cfg)


def pretrain_command(py, d, config, shards, output_dir, seed, device_flags):
    """run_pretraining.py's command line for the settings d (CPU or GPU, with the run's overrides)."""
    return [py, "run_pretraining.py", "--config_file", config, "--input_dir", shards, "--output_dir", output_dir,
            "--max_seq_length", str(d["seq"]), "--max_predictions_per_seq", str(max(1, round(0.15 * d["seq"]))),
            "--train_batch_size", str(d["batch"]), "--learning_rate", str(d["lr"]), "--optimizer", "adam",
            "--scheduler", "linear", "--warmup_proportion", "0.1", *pretrain_stop_flags(d),
            *pretrain_speed_flags(d), "--save_steps", "200", "--log_steps", "10", "--seed", str(seed),
            "--amp", d["amp"], *device_flags, "--resume", "auto"]  # an interrupted run continues where it saved


def pretrain_stop_flags(d):
    """run_pretraining flags that end pretraining: d's step count, or its wall-time budget with the schedule fitted
    to the budget (the step count then only bounds it)."""
    if d["budget_minutes"] is not None:
        return ["--max_steps", "1000000", "--max_time_minutes", str(d["budget_minutes"]), "--schedule_by_time"]
    return ["--max_steps", str(d["pretrain_steps"])]


def pretrain_speed_flags(d):
    """run_pretraining flags for d's loader workers (None: the script's default) and compilation."""
    return ([] if d["num_workers"] is None else ["--num_workers", str(d["num_workers"])]) + \
        ([] if d["compile_mode"] is None else ["--compile", "--compile_mode", d["compile_mode"]])


def final_checkpoint(pre_dir):
    """The checkpoint a pretraining run's checkpoints/latest names (fileio.resolve_checkpoint_dir)."""
    ckpt = resolve_checkpoint_dir(pre_dir)
    if ckpt == pre_dir:
        fail(f"no pretraining checkpoint under {pre_dir}/checkpoints")
    return ckpt


def steps_done(pre_dir, rows) -> int | None:
    """The step pretraining stopped at: DONE's, since log.jsonl has a row only every 10 steps and a time budget
    stops in between; else the last logged step."""
    done = os.path.join(pre_dir, "DONE")
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f).get("step")
    return rows[-1].get("step") if rows else None


def _summarise(out, pre, results, seeds, stages, d, on_gpu):
    rows = read_jsonl(os.path.join(pre, "log.jsonl"))
    losses = [r["loss"] for r in rows if "loss" in r]
    plot_jsonl(os.path.join(pre, "log.jsonl"), ["loss", "mlm_loss", "sop_loss"],
               os.path.join(out, "pretrain_loss.png"), "pretraining loss")
    _plot_dev_curves(out, ["pretrained", "scratch"], seeds, d["ft_seeds"], os.path.join(out, "finetune_dev.png"))
    summary = {}
    for name, r in results.items():
        grid, test = r["grid"], r["test"]
        per_seed = {str(s): {"dev_spearman": grid["seeds"][str(s)].get("spearman"),
                             "best_epoch": grid["seeds"][str(s)].get("best_epoch"),
                             "test_spearman": test[s].get("spearman"), "test_pearson": test[s].get("pearson")}
                    for s in seeds}
        mean, std, n = mean_std(v["test_spearman"] for v in per_seed.values())
        summary[name] = {"spearman": mean, "spearman_std": std, "n_seeds_in_mean": n,  # undefined ones left out
                         "pearson": mean_std(v["test_pearson"] for v in per_seed.values())[0],
                         "dev_spearman_mean": grid.get("dev_spearman_mean"),
                         "dev_spearman_std": grid.get("dev_spearman_std"),
                         "best_seed_on_dev": grid.get("best_seed_on_dev"),
                         "test_spearman_of_best_seed_on_dev": test[grid["best_seed_on_dev"]].get("spearman"),
                         "seeds": per_seed}
    diffs = {}
    for s in map(str, seeds):
        a, b = (summary[name]["seeds"][s]["test_spearman"] for name in ("pretrained", "scratch"))
        diffs[s] = None if a is None or b is None else a - b
    summary["pretrained_minus_scratch"] = {"test_spearman_per_seed": diffs, "mean": mean_std(diffs.values())[0]}
    summary["pretraining"] = {
        "loss_start": losses[0] if losses else None, "loss_end": losses[-1] if losses else None,
        "steps": steps_done(pre, rows), "max_steps": d["pretrain_steps"],
        "budget_minutes": d["budget_minutes"], "device": "cuda" if on_gpu else "cpu",
    }
    summary["stages_seconds"] = {k: v.get("seconds") for k, v in stages.items()}
    summary["settings"] = d
    return summary


def _plot_dev_curves(out, names, seeds, seeds_text, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for color, name in zip(("C0", "C1"), names):
        for i, s in enumerate(seeds):
            ft = os.path.join(out, f"korsts_{name}")
            epochs = read_stage_json(os.path.join(ft, f"seed-{s}", "eval_results.json"),
                                     f"delete {os.path.relpath(ft)} to fine-tune again").get("epochs", [])
            ax.plot([e["epoch"] for e in epochs], [e["spearman"] for e in epochs], marker="o", color=color,
                    alpha=0.8, label=None if i else f"{name} (seeds {seeds_text})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("KorSTS dev Spearman")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _print_table(s):
    def f(x, nd=1, sign=False):
        return "-" if x is None else f"{x:{'+' if sign else ''}.{nd}f}"

    seeds = list(s["pretrained"]["seeds"])
    print(f"\nKorSTS Spearman x100, fine-tuned with seeds {', '.join(seeds)} (epoch picked on dev for each seed)")
    print("\n| model | test, mean +- sd | test per seed | dev, mean +- sd | test of the seed best on dev |")
    print("|---|---|---|---|---|")
    for name in ("pretrained", "scratch"):
        r = s[name]
        print(f"| {name} | {f(r['spearman'])} +- {f(r['spearman_std'])} | "
              f"{' / '.join(f(v['test_spearman']) for v in r['seeds'].values())} | "
              f"{f(r['dev_spearman_mean'])} +- {f(r['dev_spearman_std'])} | "
              f"{f(r['test_spearman_of_best_seed_on_dev'])} (seed {r['best_seed_on_dev']}) |")
    diff = s["pretrained_minus_scratch"]
    print(f"\npretrained - scratch, same seed (test): "
          f"{' / '.join(f(v, sign=True) for v in diff['test_spearman_per_seed'].values())}; "
          f"mean {f(diff['mean'], sign=True)}")
    pt = s["pretraining"]
    limit = f"{pt['budget_minutes']} min budget" if pt["budget_minutes"] is not None else f"{pt['max_steps']} steps"
    print(f"pretraining ({pt['device']}, {limit}, {pt['steps']} steps done): "
          f"loss {f(pt['loss_start'], 2)} -> {f(pt['loss_end'], 2)}")
    print("stage wall time (s): " + ", ".join(f"{k} {'cached' if v is None else v}"
                                             for k, v in s["stages_seconds"].items()))


if __name__ == "__main__":
    exit_on_termination()
    run_script(main)
