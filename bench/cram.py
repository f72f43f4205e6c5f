"""A time-budgeted ("crammed") pretraining run on one GPU, then KorSTS, KorNLI and KorQuAD from its checkpoint.

    bash bench/cram_prepare.sh                                   # CPU, once: 32k vocab + shards, packed (~3 min)
    python bench/cram.py --results_json bench/results/cram.json  # GPU: 3.5 min pretraining + the three tasks
    python bench/cram.py --smoke --results_json /tmp/cram.json   # CPU: every stage on bundled text, tiny sizes
    python bench/cram.py --pretrainer hf                         # GPU: the same after plain Hugging Face pretraining
    python bench/cram.py --results_json R/cram.json --tasks       # GPU: pretraining and its weights only, then
    python bench/cram.py --from_weights R/cram_weights --work_dir bench/_work/cram/ft  # the tasks, e.g. on a CPU

Stages (each an ordinary script run as a subprocess; its command is printed and logged in WORK/logs):
  0. shards: unpack bench/_work/cram/cram_shards.tar.xz (bench/cram_prepare.sh) into WORK, or --input_dir
  1. pretrain: the release's Small shape for --budget_minutes of wall time, RECIPE below, dropout off
     (run_pretraining.py --max_time_minutes --schedule_by_time: warm-up and decay fit the budget, which counts
     from the end of the first step: torch.compile's compilation is not part of it, as in the reference's 210 s
     = 7,762 steps at 9,457 seq/s); --pretrainer hf runs bench/hf_pretrain.py instead, the plain Hugging Face
     baseline, under the same budget and schedule
  2. KorSTS: one run per learning rate x pooler (kept or new) x seed of the grid (--korsts_lrs, --korsts_poolers,
     --korsts_seeds), each picking its epoch on dev; the run best on dev gives the test Spearman (every run's
     test score is recorded too, so each setting's mean over seeds can be read, never chosen from)
  3. KorNLI: fine-tune on xnli.dev.ko.tsv, accuracy on xnli.test.ko.tsv after the last epoch (no held-out dev)
  4. KorQuAD: the dev set split by article (80% train / 20% scored, seed 0); EM/F1 after the last epoch
     (windows batched by length, --group_by_length: about 1.45x fewer positions than random batches at seq 384)
  Stages 2-4 are independent runs; on a GPU up to --parallel of them go at once, each logged to WORK/logs/NAME.log.
  A finished KorSTS run is reused by a later grid that holds it (same epochs, batch, weights and precision).
The results (recipe, pretraining steps/throughput/losses, scores, stage times, card, versions) are written to
--results_json after every stage, so a run cut short still reports what it finished. The pretrained weights go
beside them (RESULTS_weights/: float16, shards of at most 16 MiB with a model.safetensors.index.json), loadable
as --checkpoint by every script here; --from_weights runs stages 2-4 from them on any machine (on the CPU in
fp32, eager, with no stage time limit). A CPU is slow for it: the Small model took 2.1 s per KorSTS step (32
pairs) on 2 cores, so the whole KorSTS grid would take hours there; narrow it with --korsts_seeds, --korsts_lrs,
--korsts_poolers and --tasks, or fine-tune on a GPU. Scores are x100 as the fine-tuning scripts print them. The
fine-tuning grid is fixed in advance and its choice made on dev; nothing is tuned on test sets.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shlex
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))  # also when imported from elsewhere (the tests)

import torch  # noqa: E402

import qa_data  # noqa: E402
from fileio import atomic_write_json, file_sha256, run_script  # noqa: E402
from models.checkpoint import checkpoint_config, weights_files  # noqa: E402
from models.config import BertConfig  # noqa: E402
from pretraining_data import read_meta, shards_fingerprint  # noqa: E402
from optimization import OPTIMIZERS, check_layer_lr_decay  # noqa: E402
from cram_report import korsts_summary, pretraining_summary, print_summary  # noqa: E402
from cram_work import check_reuse, load_json, prepare_shards  # noqa: E402
from quickstart import final_checkpoint, write_config  # noqa: E402
from stages import exit_on_termination, run_stage, run_stages_parallel  # noqa: E402
from train_utils import fail, parse_seeds, usable_cpus  # noqa: E402

ARCHIVE = os.path.join(ROOT, "bench", "_work", "cram", "cram_shards.tar.xz")
DATA = os.path.join(ROOT, "data")

# Pretraining: the release's Small shape (12 x 256); MLM scored at the masked positions only, n-gram whole-word
# masking + SOP. Dropout off: a run of minutes sees each token a few times, there is nothing to regularise yet.
# Compiled with CUDA graphs (a small model is overhead-bound: the reference ran 4,770 seq/s eager, 10,136
# compiled, same card), and masked by one loader worker per CPU core less two (num_workers None), at most 14:
# masking costs 0.3-0.5 ms per sequence on one core, so 17,000 seq/s keep 5-9 workers busy, near
# run_pretraining's default of 8. Together the two took the H200's 210 s from 5,988 steps to 13,442
# (bench/RESULTS.md, 2026-11-27, third run; which one did how much was not measured apart); the logged
# data_wait says whether the loader holds a run back.
RECIPE = dict(config="models/configs/small.json", seq=128, max_predictions=20, batch=256, lr=5e-4,
              optimizer="adam", scheduler="linear", warmup=0.1, amp="bf16", num_workers=None, compile=True,
              compile_mode="reduce-overhead")
# Fine-tuning: KorSTS as in the Hugging Face reference (lr 1e-4, batch 32, epoch chosen on dev) for 12 epochs,
# with the release's grid of 10 seeds. lr and pooler are the setting chosen on dev from a grid of lr 1e-4/3e-4 x
# pooler kept/new (bench/RESULTS.md, 2026-11-27, second run: 3e-4 lost 13-18 points of dev Spearman; a fresh
# pooler made no clear difference). On a GPU every fine-tuning run goes at once: a small model's fine-tuning
# leaves the GPU mostly idle, and 10 seeds take the wall time of one. KorNLI and KorQuAD with settings usual for
# a small model, fixed before any run.
FINETUNE = dict(korsts=dict(lrs="1e-4", poolers="kept", epochs=12, batch=32, seeds="1-10", layer_lr_decay=1.0,
                            pair_orders="one", head_init_seed=None),
                kornli=dict(lr=1e-4, epochs=3, batch=32),
                korquad=dict(lr=2e-4, epochs=3, batch=32, seq=384, stride=128, eval_fraction=0.2))
# --smoke: the same stages at CPU sizes on bundled text, to check the pipeline end to end in about a minute
SMOKE = dict(config="models/configs/tiny.json", seq=64, max_predictions=10, batch=16, lr=1e-3, amp="no",
             num_workers=1, compile=False, vocab_size=2000, budget_minutes=0.15, max_train=64, max_eval=64,
             seeds="1", text=os.path.join(DATA, "korean_text", "boddari", "wikinews.txt"))
SMOKE_FINETUNE = dict(korsts=dict(epochs=2), kornli=dict(epochs=1), korquad=dict(epochs=1, seq=128, stride=64))
POOLERS = {"kept": [], "new": ["--reinit_pooler"]}


def build_parser():
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", default=None, help="default: bench/_work/cram/run (--smoke: .../smoke; "
                   "--pretrainer hf: run_hf, smoke_hf); finished stages found there are reused")
    p.add_argument("--results_json", default=None, help="default: bench/results/cram_<card>_<date>_<time>.json "
                                                        "(with --smoke: in the work dir, not among the real runs)")
    p.add_argument("--input_dir", default=None, help="prepared shards (with vocab.txt); default: unpack ARCHIVE")
    p.add_argument("--archive", default=ARCHIVE, help="shards packed by bench/cram_prepare.sh")
    p.add_argument("--budget_minutes", type=float, default=3.5,
                   help="pretraining wall time (3.5 = the Hugging Face reference's 210 s)")
    p.add_argument("--config", "--config_file", dest="config", default=None,
                   help=f"model shape, a config JSON (default {RECIPE['config']}, the release's Small; --smoke: "
                        f"{SMOKE['config']}); vocab_size comes from the shards. --config_file: the other scripts' "
                        "spelling")
    p.add_argument("--learning_rate", type=float, default=None, help=f"pretraining peak lr (default {RECIPE['lr']})")
    p.add_argument("--train_batch_size", type=int, default=None, help=f"default {RECIPE['batch']}")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--no_compile", action="store_true", help="pretrain eager (RECIPE compiles the model)")
    p.add_argument("--pretrainer", choices=["ours", "hf"], default="ours",
                   help="hf: the plain Hugging Face baseline instead of run_pretraining.py (bench/hf_pretrain.py: "
                        "BertForMaskedLM with the config's dropout, 15%% token masking, AdamW; same shards, budget, "
                        "batch, lr, warm-up, precision and compilation), then the same fine-tuning")
    p.add_argument("--pretrain_args", default="", help="more flags for the pretraining script, one quoted string")
    p.add_argument("--korsts_seeds", default=None, help=f"KorSTS seed grid (default {FINETUNE['korsts']['seeds']})")
    p.add_argument("--korsts_lrs", default=None, help=f"KorSTS learning rates (default {FINETUNE['korsts']['lrs']})")
    p.add_argument("--korsts_epochs", type=int, default=None,
                   help=f"KorSTS epochs per run (default {FINETUNE['korsts']['epochs']})")
    p.add_argument("--korsts_poolers", default=None,
                   help="KorSTS pooler: kept (from the checkpoint), new, or both as kept,new "
                        f"(default {FINETUNE['korsts']['poolers']})")
    p.add_argument("--korsts_layer_lr_decay", type=float, default=None, metavar="D",
                   help="KorSTS layer-wise lr decay, every run of the grid (run_classifier.py --layer_lr_decay; "
                        f"default {FINETUNE['korsts']['layer_lr_decay']}: off)")
    p.add_argument("--korsts_pair_orders", choices=["one", "both", "score_both"], default=None,
                   help="KorSTS: score_both scores each pair in both orders, both also trains on them (twice the "
                        "steps per epoch), "
                        f"every run of the grid (run_classifier.py --pair_orders; default "
                        f"{FINETUNE['korsts']['pair_orders']})")
    p.add_argument("--korsts_head_init_seed", type=int, default=None, metavar="N",
                   help="KorSTS: every run's classifier head starts from seed N (run_classifier.py --head_init_seed), "
                        "so the seeds differ in data order and dropout only; default: each from its own seed")
    p.add_argument("--korsts_soup", action="store_true",
                   help="after the KorSTS grid, average its runs' weights (bench/soup.py: uniform and greedy soups, "
                        "chosen on dev against the best single run) and score the choice on test")
    p.add_argument("--parallel", type=int, default=None,
                   help="fine-tuning runs at a time (default: on a GPU, one per CPU core but two, at most 16; "
                        "--smoke 2; else 1)")
    p.add_argument("--tasks", nargs="*", default=["korsts", "kornli", "korquad"],
                   choices=["korsts", "kornli", "korquad"], help="none: pretraining (and its weights) only")
    p.add_argument("--from_weights", default=None,
                   help="no pretraining: fine-tune these weights (a run's RESULTS_weights/), on a GPU or the CPU")
    p.add_argument("--stage_timeout_s", type=float, default=None,
                   help="a fine-tuning run lasting longer is stopped: SIGTERM, and SIGKILL to it and what it started "
                        "30 s later (default 300 s on a GPU or with --smoke; none with --from_weights on the CPU)")
    p.add_argument("--smoke", action="store_true", help="CPU check of every stage: tiny model, bundled text")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    gpu = torch.cuda.is_available() and not args.smoke
    if not gpu and not args.smoke and not args.from_weights:
        fail("no GPU here: pretraining is sized for one; use --smoke for a CPU check of the pipeline, or "
             "--from_weights to fine-tune a GPU run's weights here")
    recipe = dict(RECIPE, **({k: SMOKE[k] for k in RECIPE if k in SMOKE} if args.smoke else {}))
    if not gpu:
        recipe.update(amp="no", compile=False)  # the CPU has no bf16 speed to gain, and no time to compile
    for key, flag in (("lr", "learning_rate"), ("batch", "train_batch_size"), ("optimizer", "optimizer")):
        if getattr(args, flag) is not None:
            recipe[key] = getattr(args, flag)
    recipe["compile"] = recipe["compile"] and not args.no_compile
    recipe["pretrainer"] = args.pretrainer
    if args.pretrainer == "hf":
        if args.optimizer == "lamb":
            fail("--optimizer lamb: the Hugging Face baseline (--pretrainer hf) trains with AdamW")
        recipe["max_predictions"] = None  # transformers' masking draws 15% of the tokens, with no cap
    if args.config is not None:
        if args.from_weights:
            fail("--config: not with --from_weights (the weights carry their own shape)")
        recipe["config"] = os.path.abspath(args.config)
    # the shape is part of what the results describe (and of when a finished pretraining is reused): the config's,
    # or with --from_weights the weights' own (read with them below)
    shape = None
    if not args.from_weights:
        try:
            shape = BertConfig.from_json_file(os.path.join(ROOT, recipe["config"])).to_dict()
        except (ValueError, OSError) as e:
            fail(f"--config {args.config or recipe['config']}: {e}")
        shape.pop("vocab_size")
    if recipe["num_workers"] is None:
        recipe["num_workers"] = max(1, min(14, usable_cpus() - 2))
    budget = SMOKE["budget_minutes"] if args.smoke else args.budget_minutes
    ft = {task: dict(v, **(SMOKE_FINETUNE[task] if args.smoke else {})) for task, v in FINETUNE.items()}
    if args.smoke:
        ft["korsts"]["seeds"] = SMOKE["seeds"]
    for key in ("seeds", "lrs", "poolers", "epochs", "layer_lr_decay", "pair_orders", "head_init_seed"):
        if getattr(args, f"korsts_{key}") is not None:
            ft["korsts"][key] = getattr(args, f"korsts_{key}")
    try:
        grid = korsts_grid(ft["korsts"])
    except ValueError as e:
        fail(str(e))
    if args.parallel is not None and args.parallel < 1:
        fail(f"--parallel {args.parallel}: must be at least 1")
    # on a GPU one run per core, less two for this process and the loaders, at most 16 (14 KorSTS runs at once
    # took 1.7x as long each as alone on an H200; more would stretch each run further towards its time limit)
    parallel = args.parallel or (min(16, max(1, usable_cpus() - 2)) if gpu else 2 if args.smoke else 1)
    timeout_s = stage_limit(args.stage_timeout_s, gpu or args.smoke)
    work = os.path.abspath(args.work_dir or os.path.join(ROOT, "bench", "_work", "cram", ("smoke" if args.smoke else
                                                         "run") + ("_hf" if args.pretrainer == "hf" else "")))
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    card = torch.cuda.get_device_name(0) if gpu else "cpu"
    stamp = datetime.datetime.now()
    results_json = args.results_json or os.path.join(
        work if args.smoke else os.path.join(ROOT, "bench", "results"),
        f"cram_{card.replace(' ', '_')}_{stamp:%Y%m%d_%H%M}.json")
    py, device_flags = sys.executable, ([] if gpu else ["--no_cuda"])
    amp = ["--amp", recipe["amp"]]
    stages = {}
    summary = {"card": card, "date": stamp.date().isoformat(), "torch": torch.__version__, "smoke": args.smoke,
               "budget_minutes": budget, "recipe": recipe, "model_config": shape,
               "pretrain_args": args.pretrain_args, "finetune": ft, "stages": stages}

    def save():
        atomic_write_json(results_json, summary)

    # ---- 0. shards (--from_weights: none; the weights carry their vocab)
    config = os.path.join(work, "config.json")
    if args.from_weights:
        ckpt = os.path.abspath(args.from_weights)
        vocab = os.path.join(ckpt, "vocab.txt")
        if not (os.path.isdir(ckpt) and os.path.isfile(os.path.join(ckpt, "config.json"))
                and os.path.isfile(vocab)):
            fail(f"--from_weights {args.from_weights}: not a checkpoint folder with config.json, vocab.txt and "
                 "weights (e.g. RESULTS_weights/)")
        try:
            shape = {k: v for k, v in checkpoint_config(ckpt).to_dict().items() if k != "vocab_size"}
            summary["model_config"] = shape
            files, _ = weights_files(ckpt)  # the files the fine-tuning scripts will read
        except (ValueError, OSError) as e:
            fail(f"--from_weights {args.from_weights}: {e}")
        # fine-tune the weights' own shape, with the recipe's fine-tuning dropout
        tpl = BertConfig.from_json_file(os.path.join(ROOT, recipe["config"]))
        write_config(os.path.join(ckpt, "config.json"), vocab, config, hidden_dropout_prob=tpl.hidden_dropout_prob,
                     attention_probs_dropout_prob=tpl.attention_probs_dropout_prob)
        # the tasks' results belong to these weights: their content, not their folder's name, is compared on reuse
        start = {"from_weights": ckpt, "weights_sha256": hashlib.sha256(
            "".join(file_sha256(f) for f in files).encode()).hexdigest()}
    else:
        shards = prepare_shards(work, logs, stages, py, input_dir=args.input_dir, archive=args.archive,
                                smoke_text=SMOKE["text"] if args.smoke else None,
                                smoke_vocab_size=SMOKE["vocab_size"])
        vocab = os.path.join(shards, "vocab.txt")
        # how the shards split text (e.g. morphemes first: cram_prepare.sh MORPH=kiwi) goes into both configs, so
        # the fine-tuning tokenizer splits as pretraining did
        try:
            shard_meta = read_meta(shards)
        except (ValueError, OSError) as e:
            fail(str(e))
        text_split = {"morph_analyzer": shard_meta.get("morph_analyzer"),
                      "do_lower_case": bool(shard_meta.get("do_lower_case"))}
        write_config(os.path.join(ROOT, recipe["config"]), vocab, config, **text_split)
        start = None

    # ---- 1. pretraining
    pre = os.path.join(work, "pretrain")
    pre_config = os.path.join(work, "config_pretrain.json")
    cmd = None if args.from_weights else pretrain_command(
        py, recipe, pre_config, shards, pre, budget, amp + device_flags + shlex.split(args.pretrain_args),
        log_steps=5 if args.smoke else 50)
    done = {"pretrain": os.path.join(pre, "DONE"), "korsts": os.path.join(work, "korsts"),
            "kornli": os.path.join(work, "kornli", "eval_results.json"),
            "korquad": os.path.join(work, "korquad", "train_results.json")}
    # a task's results belong to its start and to how it ran (a CPU rerun is not a GPU result)
    task_key = dict(start or {}, amp=recipe["amp"])
    # a KorSTS run's directory names its lr, pooler and seed, so a grid can grow or shrink over finished runs;
    # what else shapes every run must be as it was
    korsts_key = {k: v for k, v in ft["korsts"].items() if k not in ("lrs", "poolers", "seeds")}
    # the shards' content too: the command names their folder, whatever was unpacked there
    pretrain_key = {"command": cmd[1:], "model_config": shape,
                    "shards": shards_fingerprint(shard_meta)} if cmd else start
    stale = check_reuse(work, done, {"pretrain": pretrain_key, "korsts": dict(korsts_key, **task_key),
                                     "kornli": dict(ft["kornli"], **task_key),
                                     "korquad": dict(ft["korquad"], **task_key)})
    if args.from_weights:
        summary["pretraining"] = start
    else:
        # dropout off is ours; the Hugging Face baseline keeps the config's, as a transformers user would
        write_config(os.path.join(ROOT, recipe["config"]), vocab, pre_config, **text_split,
                     **({} if args.pretrainer == "hf" else dict(hidden_dropout_prob=0.0,
                                                                 attention_probs_dropout_prob=0.0)))
        # the budget counts from the end of the first step, which compiles: 5 minutes on top for that (a fresh GPU
        # machine compiles with a cold cache) and start-up. A SIGTERM lets the step it lands in finish and save.
        # an interrupted pretraining of these settings continues (--resume auto; the time budget is the whole
        # run's); another run's, or the Hugging Face baseline's (which has no resume), starts again
        if os.path.isdir(pre) and not os.path.exists(done["pretrain"]) and ("pretrain" in stale or
                                                                           args.pretrainer == "hf"):
            print(f"{pre}: an unfinished pretraining that cannot be continued: starting it again", flush=True)
            shutil.rmtree(pre)
        resume = [] if args.pretrainer == "hf" else ["--resume", "auto"]
        run_stage("pretrain", cmd + resume, done["pretrain"], stages, logs, timeout_s=budget * 60 + 300)
        summary["pretraining"] = pretraining_summary(pre, recipe)
        save()
        ckpt = final_checkpoint(pre)
        # the pretrained weights as float16 shards of at most 16 MiB each (a size limit on the files a GPU machine
        # may hand back), made in the work dir (they belong to its pretraining) and copied beside the results, so
        # the tasks can be rerun from them anywhere (--from_weights)
        made, weights = os.path.join(work, "weights"), os.path.splitext(results_json)[0] + "_weights"
        shutil.rmtree(made + ".tmp", ignore_errors=True)  # a cut earlier try; a finished folder is renamed
        if run_stage("weights", [py, "convert_checkpoint.py", "--input", ckpt, "--output", made + ".tmp",
                                 "--to", "ours", "--max_shard_mb", "16", "--dtype", "float16"],
                     made, stages, logs, timeout_s=120, check=False) and os.path.isdir(made + ".tmp"):
            os.replace(made + ".tmp", made)
        if os.path.isdir(made):
            shutil.rmtree(weights, ignore_errors=True)  # this run's weights replace an older run's, as its JSON does
            shutil.copytree(made, weights)
            summary["weights"] = {"dir": weights, "from": ckpt, "dtype": "float16",
                                  "files": sorted(os.listdir(weights))}
        save()
    common = ["--checkpoint", ckpt, "--config_file", config, *amp, *device_flags]
    loader = ["--num_workers", "0" if args.smoke else "2"]

    # ---- 2-4. fine-tuning, every run an independent job: a failed or slow one is recorded, the others still run
    caps = ["--max_train_examples", str(SMOKE["max_train"]), "--max_eval_examples", str(SMOKE["max_eval"])] \
        if args.smoke else []
    jobs = finetune_jobs(py, work, args.tasks, ft, grid, common, loader, caps, done)

    def record(name, succeeded):  # as each run ends: a run cut short still reports the ones that finished
        if succeeded and name.startswith("korsts_"):
            summary["korsts"] = korsts_summary(work, grid)
        elif succeeded and name == "kornli":
            summary["kornli"] = {"test": load_json(done["kornli"])["test"], "train_file": "xnli.dev.ko.tsv",
                                 "epochs": ft["kornli"]["epochs"]}
        elif succeeded and name == "korquad":
            f, res = ft["korquad"], load_json(done["korquad"])
            last = res["epochs"][-1]  # the last epoch, not the best: the scored articles are the test set here
            summary["korquad"] = {"exact_match": last["dev_exact_match"], "f1": last["dev_f1"],
                                  "epoch": last["epoch"], "train_windows": res["train_windows"],
                                  "split": f"dev articles {1 - f['eval_fraction']:.0%} train / "
                                           f"{f['eval_fraction']:.0%} scored, seed 0"}
        save()

    run_stages_parallel(jobs, stages, logs, parallel, timeout_s, on_done=record)
    save()
    finished = sorted(summary.get("korsts", {}).get("runs", {}))
    if args.korsts_soup and len(finished) < 2:
        print(f"--korsts_soup: {len(finished)} KorSTS run(s) finished, nothing to average", flush=True)
    elif args.korsts_soup:
        # one folder per set of runs: a grid grown or cut since is averaged afresh, not read from an older soup
        soup_dir = os.path.join(work, "korsts_soup_" + hashlib.sha256("\n".join(finished).encode()).hexdigest()[:10])
        finished = [os.path.join(work, "korsts", name, "best") for name in finished]
        if run_stage("korsts_soup", [py, os.path.join(ROOT, "bench", "soup.py"), "--task_name", "korsts",
                                     "--data_dir", os.path.join(DATA, "korsts"), "--checkpoints", *finished,
                                     "--eval_batch_size", "128", "--do_test", "--output_dir", soup_dir,
                                     *device_flags, *caps[2:]],
                     os.path.join(soup_dir, "soup.json"), stages, logs, timeout_s, check=False):
            s = load_json(os.path.join(soup_dir, "soup.json"))
            summary["korsts_soup"] = {k: s[k] for k in ("dev", "chosen_on_dev", "greedy_ingredients", "test",
                                                        "ensemble_dev_not_one_model")}
        save()
    print_summary(summary, results_json)
    return summary


def finetune_jobs(py, work, tasks, ft, grid, common, loader, caps, done) -> list[tuple[str, list[str], str]]:
    """The fine-tuning runs as (stage name, command line, file that marks it done), KorQuAD first (the longest).
    common: the flags every run shares (checkpoint, config, amp, device); loader: KorQuAD's and KorNLI's loader
    workers; caps: --smoke's example limits. KorQuAD's article split of the dev set is written into `work`."""
    jobs = []
    if "korquad" in tasks:
        f, split = ft["korquad"], {}
        for name, part in zip(("train", "eval"), qa_data.split_by_article(
                os.path.join(DATA, "korquad", "KorQuAD_v1.0_dev.json"), f["eval_fraction"], seed=0)):
            split[name] = os.path.join(work, f"korquad_dev_{name}.json")
            atomic_write_json(split[name], part)
        jobs.append(("korquad", [py, "run_qa.py", "--train_file", split["train"], "--predict_file", split["eval"],
                                 *common, "--seed", "42", *loader, "--max_seq_length", str(f["seq"]),
                                 "--doc_stride", str(f["stride"]), "--train_batch_size", str(f["batch"]),
                                 "--batch_size", "64", "--learning_rate", str(f["lr"]), "--num_train_epochs",
                                 str(f["epochs"]), "--group_by_length", "--output_dir", os.path.join(work, "korquad"),
                                 *caps], done["korquad"]))
    if "kornli" in tasks:
        f = ft["kornli"]
        jobs.append(("kornli", [py, "run_classifier.py", "--task_name", "kornli", "--data_dir",
                                os.path.join(DATA, "kornli"), "--train_file",
                                os.path.join(DATA, "kornli", "xnli.dev.ko.tsv"), *common, "--seed", "42", *loader,
                                "--do_test", "--max_seq_length", "128", "--train_batch_size", str(f["batch"]),
                                "--eval_batch_size", "128", "--learning_rate", str(f["lr"]), "--num_train_epochs",
                                str(f["epochs"]), "--output_dir", os.path.join(work, "kornli"), *caps], done["kornli"]))
    if "korsts" in tasks:
        f = ft["korsts"]
        for run in grid:
            out = os.path.join(work, "korsts", run["name"])
            # no loader workers: the features are made up front, and the CPU cores go to the runs beside this one
            jobs.append((f"korsts_{run['name']}", [
                py, "run_classifier.py", "--task_name", "korsts", "--data_dir", os.path.join(DATA, "korsts"),
                *common, "--seed", str(run["seed"]), "--num_workers", "0", *POOLERS[run["pooler"]], "--do_eval",
                "--do_test", "--max_seq_length", "128", "--train_batch_size", str(f["batch"]), "--eval_batch_size",
                "128", "--learning_rate", str(run["lr"]), "--layer_lr_decay", str(f["layer_lr_decay"]),
                "--pair_orders", f["pair_orders"], "--num_train_epochs", str(f["epochs"]), "--output_dir", out,
                *([] if f["head_init_seed"] is None else ["--head_init_seed", str(f["head_init_seed"])]), *caps],
                os.path.join(out, "eval_results.json")))
    return jobs


def pretrain_command(py, recipe, config, shards, output_dir, budget_minutes, extra, log_steps=50) -> list[str]:
    """The pretraining stage's command line for `recipe` (its num_workers set): a wall-time budget with the lr
    schedule fitted to it, no step limit, one checkpoint at the end. `extra` comes last, so its flags win.
    run_pretraining.py, or with recipe["pretrainer"] "hf" bench/hf_pretrain.py, the plain Hugging Face baseline,
    under the same budget, batch, lr, warm-up, workers and compilation (its masking is transformers' 15% of tokens
    and its optimizer AdamW: max_predictions, optimizer and scheduler do not apply)."""
    if recipe.get("pretrainer") == "hf":
        script, own = os.path.join("bench", "hf_pretrain.py"), []
    else:
        script = "run_pretraining.py"
        own = ["--max_predictions_per_seq", str(recipe["max_predictions"]), "--optimizer", recipe["optimizer"],
               "--scheduler", recipe["scheduler"], "--save_steps", "10000000"]
    return [py, script, "--config_file", config, "--input_dir", shards, "--output_dir", output_dir,
            "--max_seq_length", str(recipe["seq"]), "--train_batch_size", str(recipe["batch"]),
            "--learning_rate", str(recipe["lr"]), "--warmup_proportion", str(recipe["warmup"]),
            "--max_steps", "10000000", "--max_time_minutes", str(budget_minutes), "--schedule_by_time",
            "--log_steps", str(log_steps), "--seed", "42", "--num_workers", str(recipe["num_workers"]), *own,
            *(["--compile", "--compile_mode", recipe["compile_mode"]] if recipe["compile"] else []), *extra]


def stage_limit(stage_timeout_s, fixed_sizes: bool) -> float | None:
    """The time limit of one fine-tuning run, in seconds; None: no limit. By default 300 s where the sizes make
    that ample (a GPU: on an H200, 8-epoch KorSTS runs took 138-142 s each with 14 runs going at once, KorQuAD
    110 s; the --smoke sizes anywhere), and none otherwise: a CPU fine-tunes the real sizes for hours."""
    if stage_timeout_s is not None:
        return stage_timeout_s
    return 300.0 if fixed_sizes else None


def korsts_grid(f: dict) -> list[dict]:
    """The KorSTS runs: every learning rate x pooler x seed of the grid settings (ValueError names the flag)."""
    if f["epochs"] < 1:
        raise ValueError(f"--korsts_epochs {f['epochs']}: must be at least 1")
    check_layer_lr_decay(f["layer_lr_decay"], "--korsts_layer_lr_decay")
    seeds = parse_seeds(f["seeds"], "--korsts_seeds")
    try:
        lrs = [float(x) for x in f["lrs"].split(",")]
    except ValueError:
        raise ValueError(f"--korsts_lrs {f['lrs']!r}: expected numbers separated by commas, e.g. 1e-4,3e-4") from None
    if any(not 0 < lr < 1 for lr in lrs) or len(set(lrs)) != len(lrs):
        raise ValueError(f"--korsts_lrs {f['lrs']!r}: each must be in (0, 1), and appear once")
    poolers = f["poolers"].split(",")
    if not set(poolers) <= set(POOLERS) or len(set(poolers)) != len(poolers):
        raise ValueError(f"--korsts_poolers {f['poolers']!r}: expected kept, new or kept,new")
    return [{"name": f"lr{lr:g}_pooler-{pooler}_seed{seed}", "lr": lr, "pooler": pooler, "seed": seed}
            for lr in lrs for pooler in poolers for seed in seeds]


if __name__ == "__main__":
    exit_on_termination()
    run_script(main)
