"""Short verification runs (fastraft.verify.nemesis through ``python -m fastraft.verify``'s
``main``): real nodes behind the fault proxies; between the two scenarios every workload
(register, set, session) and every fault kind (partition, kill, pause, degrade, wipe,
transfer, disk; member in test_membership.py) runs at least once, seeded (the kinds are
dealt as a deck, so each scenario injects each of its kinds that fits in its duration), and
every check passes (the membership and every member's state included); the summary
(stdout, summary.txt, summary.json) says which kinds ran, which were skipped and why. Plus
the options' validation. The long run is on demand: ``python -m fastraft.verify --duration
600 --nodes 5``.
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


def _run(out, capsys, nemesis, workload, duration, seed, extra=(), skipped=()):
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
    kinds = nemesis.split(",")
    cov = summary["fault_coverage"]
    assert cov["requested"] == kinds and sorted(cov["skipped"]) == sorted(skipped), cov
    assert cov["all_ran"] == (not skipped)
    assert (f"faults injected: {len(kinds) - len(skipped)} of the {len(kinds)} kinds asked "
            "for ran" in text)
    assert (out / "summary.txt").read_text().strip() == text[text.index("verdict:"):].strip()
    outcomes = text[text.index("fault outcomes (per kind):"):].splitlines()
    for kind in kinds:
        line = next(li for li in outcomes if li.startswith(f"  {kind}: "))
        if kind in skipped:
            assert cov["ran"][kind] == 0 and summary["faults"].get(kind, 0) == 0
            assert line == f"  {kind}: skipped: {cov['skipped'][kind]}"
            assert cov["skipped"][kind].startswith("not enough time"), cov
        else:
            assert summary["faults"].get(kind, 0) >= 1, (kind, summary["faults"])
            assert cov["ran"][kind] == summary["faults"][kind]
            assert line.startswith(f"  {kind}: ran {cov['ran'][kind]}"), line
    return summary


def test_network_and_process_faults_register_and_set(tmp_path, capsys):
    """partition, kill, pause, degrade under the register and set workloads; then every
    node killed with -9 and restarted: no acknowledged insert lost. A wipe (at least 3 s)
    does not fit in the 8 s after the four others: skipped, and the summary says so."""
    out = tmp_path / "run"
    summary = _run(out, capsys, "partition,kill,pause,degrade,wipe", "register,set", 8, 7,
                   ["--no-plot"], skipped=["wipe"])
    ops = summary["operations"]
    assert ops["register"]["ok"] > 100 and ops["set"]["ok"] > 100
    assert summary["set"]["acked"] > 100 and summary["set"]["lost"] == []
    assert "session" not in ops
    nemesis = [json.loads(line) for line in (out / "nemesis.jsonl").read_text().splitlines()]
    assert [e["fault"] for e in nemesis[-3:]] == ["final", "final", "final"]
    assert [(e["action"], e["fault"]) for e in nemesis[:1]] == [("skip", "wipe")]
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
