"""What a bench/cram.py run's results say: the summaries its results JSON holds (KorSTS over the seed grid, the
pretraining's log) and the table it prints at the end.

    from cram_report import korsts_summary, pretraining_summary, print_summary   # bench/ on sys.path
"""
from __future__ import annotations

if __name__ == "__main__":  # a module of bench/cram.py (its imports need bench/ and the root on sys.path)
    raise SystemExit("bench/cram_report.py is a module of bench/cram.py, not a script: run python bench/cram.py --help")

import os
import statistics

from cls_data import mean_std
from cram_work import load_json
from fileio import read_jsonl
from train_utils import fail


def korsts_summary(work, grid) -> dict:
    """Every finished run's best dev epoch and its test score; the run best on dev gives the result (the
    release's protocol, over learning rates and poolers too). Per setting, mean and std over its seeds."""
    runs = {}
    for run in grid:
        path = os.path.join(work, "korsts", run["name"], "eval_results.json")
        if os.path.isfile(path):
            r = load_json(path)
            runs[run["name"]] = {**run, "best_epoch": r["best_epoch"], "dev": (r["best"] or {}).get("spearman"),
                                 "test": r.get("test", {}).get("spearman")}
    out = {"runs": runs, "selection": "the run with the highest best-epoch dev Spearman", "n_runs": len(grid),
           "n_finished": len(runs)}
    defined = [r for r in runs.values() if r["dev"] is not None]
    if defined:
        best = max(defined, key=lambda r: r["dev"])
        out.update(best_on_dev=best["name"], best_dev=best["dev"], test={"spearman": best["test"]})
    by_setting = {}
    for r in runs.values():
        by_setting.setdefault(f"lr{r['lr']:g}_pooler-{r['pooler']}", []).append(r)
    out["settings"] = {}
    for key, rs in by_setting.items():
        row = {}
        for split in ("dev", "test"):  # an undefined score (a constant prediction) is left out of its mean
            row[f"{split}_mean"], row[f"{split}_std"], row[f"n_{split}"] = mean_std([r[split] for r in rs])
        out["settings"][key] = row
    return out


def pretraining_summary(pre, recipe) -> dict:
    rows = [r for r in read_jsonl(os.path.join(pre, "log.jsonl")) if "loss" in r]
    if not rows:
        fail(f"{pre}/log.jsonl has no training rows: pretraining did not get to its first log step")
    # the first window holds start-up: left out, unless it is the only one (a short budget on a slow machine)
    steady = [r["seq_per_s"] for r in rows[1:]] or [rows[0]["seq_per_s"]]
    waits = [r["data_wait"] for r in (rows[1:] or rows) if r.get("data_wait") is not None]
    last = rows[-1]
    # the run's final step (DONE), which the log's last row (every --log_steps) may fall short of
    steps = load_json(os.path.join(pre, "DONE"))["step"] if os.path.isfile(os.path.join(pre, "DONE")) else last["step"]
    return {"steps": steps, "last_logged_step": last["step"], "elapsed_s": round(last["elapsed_s"], 1),
            "sequences": steps * recipe["batch"], "tokens": steps * recipe["batch"] * recipe["seq"],
            "seq_per_s_median": round(statistics.median(steady), 1),
            # the loader's share of the wall time (logs from before the field have none)
            "data_wait_median": round(statistics.median(waits), 3) if waits else None, "loss_first": rows[0]["loss"],
            "loss_last": last["loss"], "mlm_loss_last": last["mlm_loss"], "mlm_acc_last": last["mlm_acc"],
            "sop_acc_last": last["sop_acc"]}


def print_summary(s, path):
    pt, shape = s.get("pretraining", {}), s.get("model_config", {})
    head = f"\n{s['card']} | torch {s['torch']} | {shape.get('num_hidden_layers')}x{shape.get('hidden_size')} | "
    if "from_weights" in pt:  # no pretraining in this run: say whose weights were fine-tuned
        print(head + f"no pretraining here: fine-tuned from {pt['from_weights']}")
    else:
        print(head + f"pretraining {s['budget_minutes']} min: {pt.get('steps')} steps, "
              f"{pt.get('seq_per_s_median')} seq/s (loader wait {pt.get('data_wait_median')}), "
              f"loss {pt.get('loss_first', 0):.2f} -> {pt.get('loss_last', 0):.2f}, "
              # null when the last log interval had no masked token (run_pretraining logs no MLM numbers then)
              f"MLM acc {'-' if pt.get('mlm_acc_last') is None else format(pt['mlm_acc_last'], '.3f')}")
    sts, nli, qa = s.get("korsts", {}), s.get("kornli", {}), s.get("korquad", {})

    def f(x):
        return "-" if x is None else f"{x:.2f}"

    print("| KorSTS test Spearman | KorNLI test acc | KorQuAD EM / F1 |")
    print("|---|---|---|")
    print(f"| {f(sts.get('test', {}).get('spearman'))} | {f(nli.get('test', {}).get('accuracy'))} | "
          f"{f(qa.get('exact_match'))} / {f(qa.get('f1'))} |")
    for key, row in sts.get("settings", {}).items():
        print(f"KorSTS {key}: dev {f(row['dev_mean'])} +- {f(row['dev_std'])}, test {f(row['test_mean'])} +- "
              f"{f(row['test_std'])} over {row['n_dev']} / {row['n_test']} seed(s)")
    if sts.get("best_on_dev"):
        print(f"KorSTS best on dev: {sts['best_on_dev']} (dev {f(sts['best_dev'])})")
    soup = s.get("korsts_soup")
    if soup:
        print("KorSTS soups, dev: " + ", ".join(f"{k} {f(v)}" for k, v in soup["dev"].items())
              + f"; chosen on dev: {soup['chosen_on_dev']}, test {f(soup['test']['spearman'])}")
    failed = [k for k, v in s["stages"].items() if v.get("failed")]
    if failed:
        print(f"failed stages: {', '.join(failed)} (logs in the work dir's logs/)")
    print(f"results: {path}")
