"""Every script's --help shows the runnable commands its docstring opens with, and a flag of one script is spelled
as the other scripts spell it."""
import argparse
import importlib
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

SCRIPTS = ["run_pretraining", "create_pretraining_data", "run_qa", "eval_qa", "run_classifier", "eval_classifier",
           "convert_checkpoint", "quickstart", "bench_cls_features", "bench_corpus_mix", "bench_data_prep",
           "bench_finetune", "bench_morph_korquad", "bench_optimizer", "bench_pretraining", "bench_qa_features",
           "cram", "hf_pretrain", "korsts_genres", "soup"]
# tokenization.py's CLI is vocab_builder's: the commands are those of tokenization.py's docstring
SUBCOMMANDS = [("tokenization", []), ("tokenization", ["build-vocab"])]


def logical_lines(text):
    """Lines with backslash continuations joined and runs of spaces collapsed (a docstring that is not raw drops
    its backslash-newlines, leaving the indentation of the next line inside the command)."""
    text = re.sub(r"[ \t]*\\\n[ \t]*", " ", text)
    return [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines() if line.strip()]


def command_lines(doc):
    """The docstring's second paragraph: its commands."""
    block = doc.split("\n\n")[1]
    lines = logical_lines(block)
    assert lines and any(line.startswith(("python", "torchrun", "bash", "make")) for line in lines), block
    return lines


def help_text(capsys, module, argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        module.main(argv + ["--help"])
    assert e.value.code == 0
    return logical_lines(capsys.readouterr().out)


def test_help_shows_the_docstring_commands(capsys):
    missing = {}
    for name, argv in [(name, []) for name in SCRIPTS] + SUBCOMMANDS:
        module = importlib.import_module(name)
        out = help_text(capsys, module, argv)
        lines = [line for line in command_lines(module.__doc__) if line not in out]
        if lines:
            missing[" ".join([f"{name}.py", *argv, "--help"])] = lines
    assert not missing, missing


def test_docstring_commands_keep_their_line_continuations():
    """A backslash-newline in a docstring that is not raw is a line continuation inside the string: --help then
    printed each continued command as one long line with a gap in it."""
    dropped = []
    for name, _ in [(name, []) for name in SCRIPTS] + SUBCOMMANDS[:1] + [("vocab_builder", [])]:
        module = importlib.import_module(name)
        with open(module.__file__, encoding="utf-8") as f:
            source = f.read()
        written = source[:source.index('"""', source.index('"""') + 3)]
        if written.count("\\\n") != module.__doc__.count("\\\n"):
            dropped.append(name)
    assert not dropped, dropped


class Parsed(Exception):
    pass


def parsed(monkeypatch, module, argv):
    """The arguments module.main(argv) parses, without running it (unknown flags fail as they would)."""
    def parse_args(self, args=None, namespace=None):
        raise Parsed(argparse.ArgumentParser.parse_known_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    with pytest.raises(Parsed) as e:
        module.main(argv)
    namespace, unknown = e.value.args[0]
    assert not unknown, unknown
    return namespace


def test_results_json_and_config_file_are_spelled_alike(monkeypatch):
    """--results_json (bench/cram.py, bench_corpus_mix.py) also names the other benchmarks' results file, and
    --config_file (every other script) also bench/cram.py's model config."""
    for name, dest in (("bench_pretraining", "json"), ("bench_finetune", "json"), ("bench_optimizer", "json"),
                       ("bench_morph_korquad", "output"), ("bench_corpus_mix", "results_json"),
                       ("cram", "results_json")):
        assert getattr(parsed(monkeypatch, importlib.import_module(name), ["--results_json", "r.json"]), dest) == \
            "r.json", name
    for name, dest, more in (("cram", "config", []), ("hf_pretrain", "config_file", ["--output_dir", "o"]),
                             ("run_pretraining", "config_file", ["--output_dir", "o"])):
        args = parsed(monkeypatch, importlib.import_module(name),
                      ["--config_file", "c.json", "--input_dir", "d", *more])
        assert getattr(args, dest) == "c.json", name


@pytest.mark.parametrize("module", ["bench_common", "cram_report", "cram_work"])
def test_a_bench_module_run_as_a_script_says_which_script_to_run(module):
    """bench/'s modules run as scripts ended in an import traceback (cram_report, cram_work) or silently with exit 0
    (bench_common); they name the scripts to run instead, in one line."""
    import subprocess
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", f"{module}.py"), "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not a script: run python bench/" in proc.stderr


LAUNCHERS = ("python", "python3", ".venv/bin/python", "torchrun")


def documented_commands():
    """(where, command) for every python/torchrun command written in the README, data/README.md, the next GPU
    run's list in bench/RESULTS.md and each script's docstring, continuations joined and comments cut."""
    found = []

    def add(where, text):
        for line in logical_lines(text):
            line = re.sub(r"^\[\w+\] \$ ", "", line)  # the quickstart's printed stage commands
            line = re.sub(r"\s+#.*$", "", line)
            abridged = re.search(r"\.\.\.\w", line)  # "run_pretraining.py ...same flags..."
            module_run = re.match(r"\S+ -m ", line)  # python -m pytest, -m venv: no script of ours
            if (line.split(" ")[0] in LAUNCHERS or line.startswith("timeout ")) and not abridged and not module_run:
                found.append((where, line))

    for rel in ("README.md", os.path.join("data", "README.md")):
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            text = f.read()
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
            add(rel, block)
    with open(os.path.join(ROOT, "bench", "RESULTS.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("### For the next GPU run (")
    section = text[start:text.index("\n## ", start)]
    for span in re.findall(r"`([^`]*\.py[^`]*)`", section):
        add("bench/RESULTS.md", re.sub(r"\s*\n\s*", " ", span))
    for name, _ in [(name, []) for name in SCRIPTS] + SUBCOMMANDS[:1]:
        add(f"{name}'s docstring", "\n".join(command_lines(importlib.import_module(name).__doc__)))
    return found


def test_documented_commands_parse(monkeypatch):
    """Every documented command names a script of this repository and only flags and values its parser takes (the
    arguments are parsed, nothing is run), so a renamed or removed flag cannot leave a stale command behind."""
    import shlex
    commands = documented_commands()
    assert len(commands) > 60 and {where for where, _ in commands} >= {"README.md", "bench/RESULTS.md"}
    bad = []
    for where, line in commands:
        words = shlex.split(re.sub(r"\$\([^)]*\)", "X", line))
        script = next((w for w in words if w.endswith(".py")), None)
        name = os.path.splitext(os.path.basename(script or ""))[0]
        if script is None or not os.path.isfile(os.path.join(ROOT, script)) or name not in SCRIPTS + ["tokenization"]:
            bad.append((where, line, "no script of this repository"))
            continue
        try:
            with monkeypatch.context() as m:
                parsed(m, importlib.import_module(name), words[words.index(script) + 1:])
        except (AssertionError, SystemExit) as e:
            bad.append((where, line, repr(e)))
    assert not bad, "\n".join(map(str, bad))
