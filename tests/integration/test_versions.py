"""A node refuses a data directory written in a NEWER format than it reads: exit status 2 and a
message naming the file, the version found and the newest one this release reads — for every
versioned file (docs/architecture.md, "Versions and compatibility").

Place in the architecture: integration tests (tests/integration). A real one-node cluster
writes a real data directory (WAL segments with a snapshot mark, snapshot files; another one
with the SQLite backend); each test copies it, changes one version on disk the way a later
release would write it (checksums recomputed, so the file is intact, only newer) and starts
``fastraft node`` on it as a real process. A control test starts the unchanged copy.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from fastraft import processes
from fastraft.config import default_config, load_config
from fastraft.core import SEGMENT_HEADER_SIZE, WAL_VERSION
from fastraft.datadir import BACKEND_NAME, SQLITE_FILE, WAL_DIR
from fastraft.server.joining import IDENTITY_FILE, IDENTITY_FORMAT, joining_config, \
    write_identity
from fastraft.storage import snapshot as snapshot_module
from fastraft.storage import wal as wal_module
from fastraft.storage.sqlite import SCHEMA_VERSION

FAST = dict(heartbeat_ms=20, election_timeout_ms=200, snapshot_threshold=10,
            snapshot_keep_entries=5)
TIMEOUT = 60


def _fill(cl, writes: int) -> None:
    lead = cl.leader()
    c = cl.client(lead)
    sid = c.register().expect_ok()
    for i in range(1, writes + 1):
        assert c.put(sid, i, b"key%d" % i, b"value%d" % i).ok


def _marks(wal_dir: Path) -> list:
    return [(seg.file, r.offset) for seg in wal_module.scan(wal_dir) for r in seg.records
            if r.type == "SNAPSHOT"]


def _golden(base: Path, harness, storage: str):
    """A stopped one-node cluster's (config path, data dir) with data written by it."""
    cl = harness.Cluster(base, size=1, tuning=FAST, storage=storage)
    try:
        cl.start()
        _fill(cl, 45)
        node_dir = Path(cl.node(1).data_dir)
        if storage == "wal":     # two snapshots, so that the WAL carries a mark (backends.py)
            cl.wait_for(lambda: len(list((node_dir / "snap").glob("*.snap"))) >= 2
                        and _marks(node_dir / WAL_DIR), 30,
                        "two snapshot files and a snapshot mark in the WAL")
        assert cl.stop() == {1: 0}, cl.report()
        return cl.config_path, cl.config.data_dir
    finally:
        cl.close()


@pytest.fixture(scope="module")
def wal_golden(tmp_path_factory, harness):
    return _golden(tmp_path_factory.mktemp("golden-wal"), harness, "wal")


@pytest.fixture(scope="module")
def sqlite_golden(tmp_path_factory, harness):
    return _golden(tmp_path_factory.mktemp("golden-sqlite"), harness, "sqlite")


def _copy(golden, tmp_path: Path):
    """``(config path, data dir, node dir)`` of a fresh copy of a golden data directory."""
    config, data = golden
    shutil.copytree(data, tmp_path / "data")
    return config, tmp_path / "data", tmp_path / "data" / "1"


def _run(argv: list, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


def _refused(config, data: Path, tmp_path: Path, *argv: str) -> str:
    """Start node 1 on ``data``: it must exit with status 2; its stderr."""
    out = _run(processes.node_argv(1, str(config), str(data), *argv), tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr
    return out.stderr


def _check(stderr: str, path: Path, found, supported) -> None:
    assert str(path) in stderr, stderr
    assert f"version {found} is newer than this fastraft" in stderr, stderr
    assert f"(up to version {supported})" in stderr, stderr
    assert "--rejoin" in stderr and "wal-repair" not in stderr, stderr


# -- the control: the unchanged copy runs ---------------------------------------------------

def test_the_unchanged_copy_starts(wal_golden, tmp_path, harness, wire):
    config, data, _node = _copy(wal_golden, tmp_path)
    proc = processes.spawn(processes.node_argv(1, str(config), str(data)),
                           stdout=subprocess.DEVNULL, cwd=tmp_path)
    try:
        addr = load_config(config).node(1).client_addr

        def serves():
            assert proc.poll() is None, f"node exited with {proc.returncode}"
            with wire.WireClient(addr, 1.0) as c:
                return c.get(b"key45").value == b"value45"

        harness.wait_for(serves, 30, "the copied node to serve its data")
    finally:
        processes.stop([proc], 15)
    assert proc.returncode == 0


# -- every format, one by one ---------------------------------------------------------------

def test_a_newer_wal_segment_is_refused(wal_golden, tmp_path):
    config, data, node = _copy(wal_golden, tmp_path)
    seg = sorted((node / WAL_DIR).glob("wal-*.log"))[-1]
    raw = bytearray(seg.read_bytes())
    assert struct.unpack_from("<I", raw, 8)[0] == WAL_VERSION
    struct.pack_into("<I", raw, 8, WAL_VERSION + 1)          # as a later release writes it
    struct.pack_into("<I", raw, 12, zlib.crc32(bytes(raw[:12])))
    seg.write_bytes(bytes(raw))
    before = {p.name: p.stat().st_size for p in (node / WAL_DIR).iterdir()}
    err = _refused(config, data, tmp_path)
    _check(err, seg, WAL_VERSION + 1, WAL_VERSION)
    assert "WAL segment format" in err
    assert {p.name: p.stat().st_size for p in (node / WAL_DIR).iterdir()} == before
    # the tools refuse it too: nothing is cut, nothing is reported as damage
    dump = _run([sys.executable, "-P", "-m", "fastraft", "wal-dump", str(node)], tmp_path)
    assert dump.returncode == 2 and "later fastraft release" in dump.stderr, dump
    repair = _run([sys.executable, "-P", "-m", "fastraft", "wal-repair", str(node), seg.name,
                   str(SEGMENT_HEADER_SIZE)], tmp_path)
    assert repair.returncode == 2 and "newer than this fastraft" in repair.stderr, repair
    assert {p.name: p.stat().st_size for p in (node / WAL_DIR).iterdir()} == before


def test_a_version_byte_changed_without_its_checksum_is_damage_not_newer(wal_golden,
                                                                         tmp_path):
    config, data, node = _copy(wal_golden, tmp_path)
    seg = sorted((node / WAL_DIR).glob("wal-*.log"))[0]
    raw = bytearray(seg.read_bytes())
    raw[8] += 1
    seg.write_bytes(bytes(raw))
    out = _run(processes.node_argv(1, str(config), str(data)), tmp_path)
    assert out.returncode == 3, out.stderr[-2000:]
    assert "checksum mismatch" in out.stderr and "wal-repair" in out.stderr


def test_a_newer_wal_snapshot_mark_layout_is_refused(wal_golden, tmp_path):
    config, data, node = _copy(wal_golden, tmp_path)
    name, off = _marks(node / WAL_DIR)[0]
    seg = node / WAL_DIR / name
    raw = bytearray(seg.read_bytes())
    rtype, length = raw[off + 8], struct.unpack_from("<I", raw, off + 4)[0]
    payload = bytearray(raw[off + 32:off + 32 + length])
    assert struct.unpack_from("<I", raw, off)[0] == zlib.crc32(bytes([rtype]) + payload)
    assert payload[0] & wal_module.SNAP_V2
    payload[0] |= 1 << wal_module.MARK_LAYOUT            # the bit of layout MARK_LAYOUT + 1
    raw[off + 32:off + 32 + length] = payload
    struct.pack_into("<I", raw, off, zlib.crc32(bytes([rtype]) + payload))
    struct.pack_into("<I", raw, off + 28, zlib.crc32(bytes(raw[off:off + 28])))
    seg.write_bytes(bytes(raw))
    err = _refused(config, data, tmp_path)
    _check(err, seg, wal_module.MARK_LAYOUT + 1, wal_module.MARK_LAYOUT)
    assert f"SNAPSHOT record at byte offset {off}" in err and "snapshot mark layout" in err


def test_a_newer_snapshot_file_is_refused(wal_golden, tmp_path):
    config, data, node = _copy(wal_golden, tmp_path)
    snap = sorted((node / "snap").glob("*.snap"))[-1]
    raw = bytearray(snap.read_bytes())
    assert struct.unpack_from("<H", raw, 8)[0] == snapshot_module.VERSION
    struct.pack_into("<H", raw, 8, snapshot_module.VERSION + 1)
    struct.pack_into("<I", raw, len(raw) - 8, zlib.crc32(bytes(raw[:-16])))
    snap.write_bytes(bytes(raw))
    err = _refused(config, data, tmp_path)
    _check(err, snap, snapshot_module.VERSION + 1, snapshot_module.VERSION)
    assert "snapshot file format" in err and snap.exists()


def test_a_newer_sqlite_schema_is_refused(sqlite_golden, tmp_path):
    config, data, node = _copy(sqlite_golden, tmp_path)
    db = node / SQLITE_FILE
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    finally:
        conn.close()
    err = _refused(config, data, tmp_path, "--storage", "sqlite")
    _check(err, db, SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert "SQLite schema" in err
    conn = sqlite3.connect(db)        # left as it was
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        conn.close()


def test_a_backend_marker_naming_a_newer_backend_is_refused(wal_golden, tmp_path):
    config, data, node = _copy(wal_golden, tmp_path)
    marker = node / BACKEND_NAME
    assert marker.read_text() == "wal\n"
    marker.write_text("rocks\n")
    err = _refused(config, data, tmp_path)
    assert str(marker) in err and "'rocks'" in err, err
    assert "newer than this fastraft" in err and "'wal' and 'sqlite'" in err, err
    assert marker.read_text() == "rocks\n"


def test_a_newer_node_identity_file_is_refused(tmp_path):
    base = default_config(data_dir=str(tmp_path / "data"))
    write_identity(joining_config(base, 4, "127.0.0.1:1", "127.0.0.1:2", None), 4)
    path = tmp_path / "data" / "4" / IDENTITY_FILE
    text = path.read_text()
    head = f"# fastraft node identity, format {IDENTITY_FORMAT}\n"
    assert text.startswith(head)
    path.write_text(text.replace(head, f"# fastraft node identity, format "
                                       f"{IDENTITY_FORMAT + 1}\n", 1))
    out = _run([sys.executable, "-P", "-m", "fastraft", "node", "--id", "4", "--data-dir",
                str(tmp_path / "data")], tmp_path)
    assert out.returncode == 2, out
    _check(out.stderr, path, IDENTITY_FORMAT + 1, IDENTITY_FORMAT)
    assert "node identity file format" in out.stderr
