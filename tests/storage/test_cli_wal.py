"""`fastraft wal-dump` and `fastraft wal-repair` on real WAL directories, as an operator
would use them after an incident (subprocesses, run outside the checkout)."""

import json
import os
import subprocess
import sys

from fastraft.errors import CorruptRecordError
from fastraft.raft import EntryBatch, HardState
from fastraft.storage.wal import WalStore, parse_segment_name, segment_name


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "fastraft", *map(str, args)], cwd=tmp_path,
                          capture_output=True, text=True)


def _make_wal(d):
    s = WalStore.open(d, segment_size=400)
    for i in range(1, 8):
        s.append(EntryBatch(i, [(1, b"x" * 50)]))
        s.save_hard_state(HardState(1, 1, i - 1))
        s.sync()
    s.close()


def test_wal_dump_lists_every_record(tmp_path):
    d = tmp_path / "wal"
    _make_wal(d)
    out = _cli(tmp_path, "wal-dump", d, "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    entries = [r for r in rows if r.get("type") == "ENTRY"]
    assert [r["index"] for r in entries] == list(range(1, 8))
    assert all(r["size"] == 50 and r["term"] == 1 for r in entries)
    segs = [r for r in rows if "status" in r]
    assert len(segs) == len(os.listdir(d)) >= 2 and {s["status"] for s in segs} == {"clean"}
    text = _cli(tmp_path, "wal-dump", d)
    assert text.returncode == 0 and "ENTRY" in text.stdout and "HARD_STATE" in text.stdout


def test_damage_is_reported_then_repaired_by_the_named_command(tmp_path):
    d = tmp_path / "wal"
    _make_wal(d)
    first = sorted(os.listdir(d))[1]          # damage the middle segment
    path = d / first
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    dump = _cli(tmp_path, "wal-dump", d)
    assert dump.returncode == 1 and "corrupt" in dump.stdout
    try:
        WalStore.open(d)
    except CorruptRecordError as e:
        err = e
    else:
        raise AssertionError("a damaged WAL opened")
    assert err.file == first and f"fastraft wal-repair {d} {first} {err.offset}" in str(err)
    rep = _cli(tmp_path, "wal-repair", d, err.file, err.offset)
    assert rep.returncode == 0, rep.stderr
    assert "truncated" in rep.stdout
    with WalStore.open(d) as s:                # opens now, with the log before the damage
        assert s.last_index < 7
        assert [t for t, _ in s.entries(s.first_index, s.last_index + 1)] == \
            [1] * (s.last_index - s.first_index + 1)


def test_wal_dump_refuses_a_missing_directory(tmp_path):
    out = _cli(tmp_path, "wal-dump", tmp_path / "nope")
    assert out.returncode == 2 and "not a directory" in out.stderr


def _backend_dir(tmp_path, kind: str):
    """A node's data directory as the node's storage backend lays it out."""
    from fastraft.config import Tuning
    from fastraft.server.backends import open_backend

    d = tmp_path / "data" / "1"
    b = open_backend(kind, str(d), frozenset({1}), Tuning())
    b.close()
    return d


def test_wal_dump_and_repair_accept_a_node_data_directory(tmp_path):
    node = _backend_dir(tmp_path, "wal")
    wal = next(p for p in node.iterdir() if p.is_dir() and any(
        parse_segment_name(q.name) for q in p.iterdir()))
    _make_wal(wal)
    by_node = _cli(tmp_path, "wal-dump", node, "--json")
    assert by_node.returncode == 0, by_node.stderr
    assert by_node.stdout == _cli(tmp_path, "wal-dump", wal, "--json").stdout
    assert '"type": "ENTRY"' in by_node.stdout
    last = sorted(n for n in os.listdir(wal) if parse_segment_name(n))[-1]
    rep = _cli(tmp_path, "wal-repair", node, last, 100)
    assert rep.returncode == 0 and "truncated" in rep.stdout, rep.stderr
    out = _cli(tmp_path, "wal-repair", node, segment_name(99, 1), 1)
    assert out.returncode == 2 and "is not a file in" in out.stderr


def test_wal_dump_without_a_wal_says_what_to_give(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _cli(tmp_path, "wal-dump", empty)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"fastraft wal-dump: no WAL segments in {empty}: give a node's "
                          "data directory (DATA_DIR/<id>) or its wal/ directory\n")
    sqlite_node = _backend_dir(tmp_path / "s", "sqlite")
    out = _cli(tmp_path, "wal-dump", sqlite_node)
    assert out.returncode == 2 and "uses the SQLite backend" in out.stderr
    wal_node = _backend_dir(tmp_path / "w", "wal")
    out = _cli(tmp_path, "wal-dump", wal_node.parent)        # DATA_DIR, not DATA_DIR/<id>
    assert out.returncode == 2 and f"e.g. {wal_node}" in out.stderr
    out = _cli(tmp_path, "wal-repair", empty, segment_name(1, 1), 0)
    assert out.returncode == 2 and "no WAL segments in" in out.stderr
