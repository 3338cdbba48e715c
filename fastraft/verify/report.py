"""The words of a verification run's summary: what each count means, which faults ran, which
were skipped and why, and what came of each.

Place in the architecture: part of the verification framework (``fastraft.verify``); pure
functions of the counts ``nemesis.run`` gathers (the plan of ``schedule.py``, the faults
started, the outcomes, the operations per workload). ``nemesis.RunResult.text()`` is
``summary_text``; ``fault_coverage`` is the ``fault_coverage`` object of ``summary.json``.
"""

from __future__ import annotations

from .schedule import FAULT_KINDS, FaultPlan

__all__ = ["fault_coverage", "summary_text", "operations_lines", "faults_lines",
           "OUTCOMES", "FAIL_REASONS"]

# fault outcome counter (Nemesis.stats) -> (its kind, what it means)
OUTCOMES = {
    "wipe_via_snapshot": ("wipe", "the wiped node came back through a snapshot"),
    "wipe_snapshot_not_seen": ("wipe", "no snapshot install seen in the wiped node's log "
                                       "by the end"),
    "transfer_clean_exit": ("transfer", "the leader handed leadership over and exited 0"),
    "transfer_no_leader": ("transfer", "no leader was known: nothing done"),
    "disk_error_exit_3": ("disk", "write error: the node exited 3, as it must"),
    "disk_error_not_reached": ("disk", "write error: the node had not reached its size "
                                       "limit by the heal (still running)"),
    "torn_tail_recovered": ("disk", "torn WAL tail: the node restarted and cut it"),
    "member_learner_added": ("member", "learners added (new ids, started with --join)"),
    "member_promoted": ("member", "learners promoted to voters"),
    "member_removed": ("member", "members removed"),
    "member_removed_leader": ("member", "removals of the leader"),
    "member_removed_down": ("member", "removals of a voter that was down (a dead machine)"),
    "member_removed_exit_0": ("member", "removed nodes that exited 0 by themselves"),
    "member_removed_restarted": ("member", "removed nodes restarted while removed (each "
                                           "must learn it and exit 0)"),
    "member_promote_refused": ("member", "promotions refused as Busy (the learner not caught "
                                         "up yet; some tried at once after the add)"),
    "member_refused_busy": ("member", "other changes refused as Busy or NotLeader (retried)"),
    "member_refused_invalid": ("member", "changes refused as InvalidRequest (the nemesis "
                                         "believed them valid)"),
    "member_outcome_unknown": ("member", "changes whose outcome the client could not settle"),
    "member_outcome_resolved": ("member", "unknown outcomes resolved from a committed member "
                                          "list"),
    "member_catch_up_slow": ("member", "new nodes not caught up within 20 s (retried at the "
                                       "next member fault)"),
}

# the value a workload records with a fail / info completion -> words
FAIL_REASONS = {
    "full": "found their append key full (the token moved on to the next key: nothing lost)",
    "gave_up": "gave up after retrying for 3 x --op-deadline (no attempt applied)",
    "stopped": "lost a cas race as the run ended (not retried: not applied)",
    "cancelled": "cancelled at the end of the run",
    "LockLost": "lost the lock while waiting for it (its lease could not be kept alive)",
}

_OK = "ok: acknowledged"
_FAILED = "failed: certainly not applied (NotLeader, Busy, InvalidRequest, ...)"
_UNKNOWN = ("unknown outcome: may or may not have been applied (Timeout, ConnectionLost, "
            "...)")
_NO_CHECK = "no check of its own: judged by the checks and the node anomalies"
_NOT_STARTED = ("planned, but the run ended before its turn (setting up the faults before "
                "it took longer than planned)")


def fault_coverage(plan: FaultPlan, ran: dict, cut_short: dict, outcomes: dict) -> dict:
    """The ``fault_coverage`` object of ``summary.json``: ``requested`` (the ``--nemesis``
    kinds), ``planned`` (those in the plan), ``ran`` (kind -> faults started, every requested
    kind), ``cut_short`` (kind -> faults healed early by the end of the run), ``skipped``
    (kind -> why it never ran), ``all_ran``, ``outcomes`` (kind -> outcome counter -> n) and
    the ``plan`` itself."""
    requested = list(plan.kinds)
    skipped = {}
    for k in requested:
        if ran.get(k, 0):
            continue
        skipped[k] = plan.skipped.get(k, _NOT_STARTED)
    by_kind: dict = {k: {} for k in requested}
    for name, n in sorted(outcomes.items()):
        kind = OUTCOMES.get(name, (name.split("_")[0],))[0]
        by_kind.setdefault(kind if kind in FAULT_KINDS else "other", {})[name] = n
    return {"requested": requested, "planned": plan.planned,
            "ran": {k: ran.get(k, 0) for k in requested},
            "cut_short": {k: n for k, n in cut_short.items() if n},
            "skipped": skipped, "all_ran": not skipped, "outcomes": by_kind,
            "plan": plan.to_json()}


def _reasons(reasons: dict | None) -> str:
    parts = []
    for r, n in sorted((reasons or {}).items(), key=lambda x: (-x[1], str(x[0]))):
        if r == "full":
            continue                    # said on its own: not a failure
        words = FAIL_REASONS.get(r)
        parts.append(f"{n} {words}" if words else f"{r} {n}")
    return " (" + ", ".join(parts) + ")" if parts else ""


def operations_lines(operations: dict) -> list:
    """The operations section: per workload, each count with its meaning."""
    lines = [f"operations ({_OK}; {_FAILED}; {_UNKNOWN}):"]
    for w, c in operations.items():
        ok, fail, info = c.get("ok", 0), c.get("fail", 0), c.get("info", 0)
        what = {"register": "reads, stale reads, writes and cas", "set": "inserts",
                "session": "increments and appends", "watch": "watched puts",
                "lock": "lock operations (acquire, read, fenced write: a refusal by the "
                        "fence check counts as ok)",
                "lease": "lease operations (grant, put, keep-alive, revoke, scan)"
                }.get(w, "operations")
        total = c.get("invoked", ok + fail + info)
        full = (c.get("fail_reasons") or {}).get("full", 0)
        text = (f"  {w}: {total} {what}: {ok} ok, {fail - full} failed"
                f"{_reasons(c.get('fail_reasons'))}")
        if full:
            text += (f", {full} appends found their key full (recorded as failed, but not a "
                     "failure: the token moved on to the next key)")
        text += f", {info} with unknown outcome{_reasons(c.get('info_reasons'))}"
        if total > ok + fail + info:
            text += f", {total - ok - fail - info} never completed (unknown outcome)"
        if w == "register":
            text += (f"; {c.get('checked', 0)} of them searched for a linearizable order "
                     "(failed operations and reads with unknown outcome left out: they "
                     f"changed nothing), {c.get('stale_reads', 0)} stale reads checked on "
                     "their own")
        elif "checked" in c:
            text += f"; {c['checked']} checked against the final state"
        lines.append(text)
    return lines


def faults_lines(faults: dict, coverage: dict | None) -> list:
    """The faults sections: the kinds that ran / were skipped, then per kind its outcome."""
    if not coverage:
        shown = ", ".join(f"{k} {v}" for k, v in faults.items()) or "none"
        return [f"faults injected: {shown}"]
    requested = coverage["requested"]
    if not requested:
        return ["faults injected: none (--nemesis none)"]
    ran = [k for k in requested if coverage["ran"].get(k, 0)]
    skipped = coverage["skipped"]
    head = (f"faults injected: {len(ran)} of the {len(requested)} kinds asked for ran: "
            + (", ".join(f"{k} {coverage['ran'][k]}" for k in ran) or "none"))
    if skipped:
        head += "; skipped: " + ", ".join(skipped) + " (reasons below)"
    lines = [head]
    plan = coverage.get("plan") or {}
    if plan.get("compressed"):
        lines.append("  (to fit into --duration, the first round's quiet and fault times were "
                     "drawn towards the low ends of --quiet / --fault)")
    lines.append("fault outcomes (per kind):")
    for k in requested:
        if k in skipped:
            lines.append(f"  {k}: skipped: {skipped[k]}")
            continue
        n = coverage["ran"][k]
        text = f"  {k}: ran {n}"
        cut = coverage.get("cut_short", {}).get(k, 0)
        if cut:
            text += f" ({cut} healed early: the run ended during it)"
        outs = coverage.get("outcomes", {}).get(k, {})
        if outs:
            text += ": " + "; ".join(f"{OUTCOMES.get(name, (k, name))[1]}: {v}"
                                     for name, v in outs.items())
        else:
            text += f"; {_NO_CHECK}"
        lines.append(text)
    for name, v in coverage.get("outcomes", {}).get("other", {}).items():
        lines.append(f"  other: {name} {v}")
    return lines


def summary_text(r) -> str:
    """``summary.txt`` of a ``nemesis.RunResult``."""
    verdicts = ", ".join(f"{k} {v}" for k, v in r.verdicts.items())
    lines = [f"verdict: {r.verdict.upper()}   (seed {r.seed})", f"checks: {verdicts}"]
    if getattr(r, "transport", ""):
        lines.append(r.transport)
    lines += operations_lines(r.operations)
    lines += faults_lines(r.faults, r.fault_coverage)
    lines += [x for x in (r.linearizability, r.stale_reads, r.set_result, r.session_result,
                          *getattr(r, "coord", {}).values(), r.membership, r.replicas) if x]
    lines.append(f"node anomalies (a node exiting or misbehaving against its contract): "
                 f"{len(r.anomalies)}")
    lines += [f"  {a}" for a in r.anomalies[:20]]
    lines += [f"note: {n}" for n in r.notes]
    lines += [f"history: {r.history}", f"nemesis log: {r.nemesis_log}",
              f"summary: {r.summary_path}"]
    return "\n".join(lines)
