"""bench/bench_cls_features.py runs on the CPU: every KorNLI dev + test row converted once per repeat, and one
epoch through run_classifier's loader with its workers measured."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_cls_features  # noqa: E402


def test_one_repeat_of_the_bundled_rows(cls_env, capsys):
    result = bench_cls_features.main(["--repeat", "1", "--vocab_file", str(cls_env["vocab"]), "--num_workers", "1",
                                      "--max_seq_length", "32"])
    assert result["rows"] == 2490 + 5010 and result["batches"] == -(-7500 // 32)  # xnli dev + test
    assert len(result["worker_private_mb_early"]) == len(result["worker_private_mb_late"]) == 1
    assert 0 < result["feature_arrays_mb"] < 2  # int32 ids, at most 32 a row
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"rows": 7500')
