"""Helpers for the run_qa.py / eval_qa.py tests: KorQuAD dev slices, predictions with a particle glued on, the
training command line (the fixtures that use them: conftest.py's qa_env and qa_trained)."""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV = os.path.join(ROOT, "data", "korquad", "KorQuAD_v1.0_dev.json")


def slice_file(path, articles, n_questions, version="KorQuAD_v1.0_dev"):
    """The first n_questions of the given dev articles as a KorQuAD file."""
    out, left = [], n_questions
    for art in articles:
        paras = []
        for p in art["paragraphs"]:
            qas = p["qas"][:left]
            left -= len(qas)
            if qas:
                paras.append({"context": p["context"], "qas": qas})
        if paras:
            out.append({"title": art["title"], "paragraphs": paras})
    path.write_text(json.dumps({"version": version, "data": out}, ensure_ascii=False), encoding="utf-8")
    return str(path)


def particle_predictions(data_file, tmp_path):
    """Every gold answer with the particle 에서 glued on (the typical error), written as a predictions file."""
    with open(data_file, encoding="utf-8") as f:
        gold = {qa["id"]: qa["answers"][0]["text"] for a in json.load(f)["data"]
                for p in a["paragraphs"] for qa in p["qas"]}
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({q: t + "에서" for q, t in gold.items()}, ensure_ascii=False), encoding="utf-8")
    return gold, preds


def question_ids(path):
    with open(path, encoding="utf-8") as f:
        return [qa["id"] for a in json.load(f)["data"] for p in a["paragraphs"] for qa in p["qas"]]


def train_argv(env, out, *extra):
    return ["--config_file", env["config"], "--vocab_file", env["vocab"], "--train_file", env["train"],
            "--predict_file", env["eval"], "--max_seq_length", "128", "--doc_stride", "64", "--max_query_length", "32",
            "--per_gpu_train_batch_size", "16", "--learning_rate", "1e-3", "--num_train_epochs", "1", "--seed", "7",
            "--num_workers", "0", "--logging_steps", "2", "--output_dir", str(out), *extra]
