"""Short verification runs (fastraft.verify.nemesis through ``python -m fastraft.verify``'s
``main``): real nodes behind the fault proxies; between the two scenarios every workload
(register, set, session) and every fault kind (partition, kill, pause, degrade, wipe,
transfer, disk) runs at least once, seeded (the kinds are dealt as a deck, so each scenario
injects each of its kinds), and every check passes. Plus the options' validation. The long
run is on demand: ``python -m fastraft.verify --duration 600 --nodes 5``.
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
    with pytest.raises(ValueError):
        RunOptions(out=str(tmp_path), workloads=("register", "bank"))
    with pytest.raises(ValueError):
        RunOptions(out=str(tmp_path), workloads=())
    with pytest.raises(SystemExit) as e:
        main(["--nemesis", "partition,flood", "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--workload", "set,bank", "--out", str(tmp_path)])
    assert e.value.code == 2


def _run(out, capsys, nemesis, workload, duration, seed, extra=()):
    code = main(["--nemesis", nemesis, "--workload", workload, "--duration", str(duration),
                 "--nodes", "3", "--seed", str(seed), "--out", str(out), "--quiet", "0.4,0.8",
                 "--fault", "0.7,1.2", "--recover", "2", "--workers", "4",
                 "--check-budget", "30", *extra])
    text = capsys.readouterr().out
    print(text)
    assert "verdict: OK" in text, text
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "ok" and summary["seed"] == seed
    assert all(v == "ok" for v in summary["verdicts"].values()), summary["verdicts"]
    assert summary["anomalies"] == []
    for kind in nemesis.split(","):
        assert summary["faults"].get(kind, 0) >= 1, (kind, summary["faults"])
    return summary


def test_network_and_process_faults_register_and_set(tmp_path, capsys):
    """partition, kill, pause, degrade under the register and set workloads; then every
    node killed with -9 and restarted: no acknowledged insert lost."""
    out = tmp_path / "run"
    summary = _run(out, capsys, "partition,kill,pause,degrade", "register,set", 8, 7,
                   ["--no-plot"])
    ops = summary["operations"]
    assert ops["register"]["ok"] > 100 and ops["set"]["ok"] > 100
    assert summary["set"]["acked"] > 100 and summary["set"]["lost"] == []
    assert "session" not in ops
    nemesis = [json.loads(line) for line in (out / "nemesis.jsonl").read_text().splitlines()]
    assert [e["fault"] for e in nemesis[-3:]] == ["final", "final", "final"]
    history = to_operations(read_history(out / "history.jsonl"))
    assert len(history.linearizable) >= ops["register"]["checked"]
    assert history.stale_reads
    assert not (out / "latency.png").exists()


def test_wipe_transfer_disk_under_every_workload(tmp_path, capsys):
    """wipe (back through a snapshot), transfer (SIGTERM of the leader: exit 0), disk (torn
    tail cut / write error: exit 3) under register, set and session: linearizable, nothing
    lost, no session operation applied twice."""
    out = tmp_path / "run"
    summary = _run(out, capsys, "wipe,transfer,disk", "register,set,session", 11, 5,
                   ["--snapshot-threshold", "300"])
    ops = summary["operations"]
    assert ops["register"]["ok"] > 100 and ops["set"]["ok"] > 100
    assert ops["session"]["ok"] > 50
    assert summary["session"]["problems"] == [] and summary["session"]["incr_acked"] > 10
    assert summary["session"]["append_acked"] > 10
    outcomes = summary["fault_outcomes"]
    assert outcomes.get("transfer_clean_exit", 0) >= 1, outcomes
    assert outcomes.get("wipe_via_snapshot", 0) >= 1, outcomes
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert any("plot skipped" in n for n in summary["notes"])
    else:
        assert (out / "latency.png").stat().st_size > 1000
