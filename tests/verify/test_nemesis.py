"""A short verification run (fastraft.verify.nemesis through ``python -m fastraft.verify``'s
``main``): real nodes behind the fault proxies, the register workload, every fault kind, and
a linearizable verdict. Plus the options' validation. The long run is on demand:
``python -m fastraft.verify --duration 600 --nodes 5``.
"""

from __future__ import annotations

import json

import pytest

from fastraft.verify.__main__ import main
from fastraft.verify.history import read_history, to_operations
from fastraft.verify.nemesis import RunOptions


def test_options_validation(tmp_path):
    with pytest.raises(ValueError):
        RunOptions(out=str(tmp_path), nemesis=("flood",))
    with pytest.raises(ValueError):
        RunOptions(out=str(tmp_path), nodes=0)
    assert RunOptions(out=str(tmp_path)).seed is not None
    with pytest.raises(SystemExit) as e:
        main(["--nemesis", "partition,flood", "--out", str(tmp_path)])
    assert e.value.code == 2


def test_short_run_with_every_fault_kind(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--nemesis", "partition,kill,pause,degrade", "--duration", "10", "--nodes", "3",
                 "--seed", "7", "--out", str(out), "--quiet", "0.5,1", "--fault", "0.7,1.5",
                 "--recover", "3", "--workers", "4", "--check-budget", "30"])
    text = capsys.readouterr().out
    assert "verdict: OK" in text, text
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "ok" and summary["seed"] == 7
    assert sum(summary["faults"].values()) >= 3, summary["faults"]
    assert summary["operations"]["ok"] > 100
    nemesis = [json.loads(line) for line in (out / "nemesis.jsonl").read_text().splitlines()]
    assert nemesis[-1]["fault"] == "final"
    ops = to_operations(read_history(out / "history.jsonl"))
    assert len(ops.linearizable) >= summary["operations"]["checked"]
    assert ops.stale_reads
