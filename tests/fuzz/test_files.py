"""File fuzzers: WAL segments, snapshot files, config files and SQLite databases, damaged in
every way a disk, an operator or a bad copy can damage them.

The properties:

- WAL: a valid WAL is written with WalStore (every operation synced), then its directory is
  damaged (bytes flipped, overwritten, inserted or deleted anywhere, truncated, garbage or
  zeros appended, ranges zero-filled, segment files dropped, swapped, renamed or
  duplicated, a stray ``.tmp`` left). ``WalStore.open`` must either recover exactly the state
  of a record-boundary prefix of what was written (the states are computed by opening clean
  cuts of the valid WAL, and the full one is checked against what the writer saw), or raise
  CorruptRecordError carrying the damaged file and a byte offset — nothing else.
- Snapshot files: a valid file (a real state machine's stream) damaged anywhere or renamed:
  ``verify``, ``read_chunks`` and ``KVStateMachine.restore`` raise only CorruptRecordError,
  and whatever passes the checksum is the original (data and restored state);
  ``SnapshotStore.latest`` never raises and falls back to the older valid snapshot.
- Config files: random TOML-ish text, and mutations of a rendered valid config (text and
  raw bytes): ``parse_config`` / ``load_config`` raise only ConfigError; an accepted file
  means exactly what its TOML says (every key is reflected in the Config) and renders back to
  an equal Config.
- SQLite: garbage, truncated or damaged database files: SqliteStore and its readers raise
  only StorageError or CorruptRecordError.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastraft import codec
from fastraft.config import (ConfigError, Config, NodeSpec, Tuning, format_address,
                             load_config, parse_address, parse_config, render_config)
from fastraft.core import SEGMENT_HEADER_SIZE, WAL_CLEAN, decode_records
from fastraft.datadir import NewerFormatError
from fastraft.errors import CorruptRecordError, StorageError
from fastraft.raft.messages import EntryBatch, HardState, SnapshotMeta
from fastraft.statemachine.machine import KVStateMachine
from fastraft.storage import snapshot as snapfile
from fastraft.storage.sqlite import SqliteStore
from fastraft.storage.wal import WalStore, parse_segment_name, segment_name


def _sibling(name: str):
    modname = f"fastraft_fuzz_{name}"
    if modname not in sys.modules:
        spec = importlib.util.spec_from_file_location(modname,
                                                      Path(__file__).with_name(f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    return sys.modules[modname]


mut = _sibling("mutate")

BATCH = settings(max_examples=60, deadline=None, database=None, print_blob=True,
                 suppress_health_check=list(HealthCheck))


def _state(rs):
    mark = None
    if rs.snapshot is not None:
        m = rs.snapshot
        mark = (m.index, m.term, frozenset(m.voters), frozenset(m.outgoing))
    return mark, tuple(rs.entries), tuple(rs.hard_state)


# -- 1. WAL ------------------------------------------------------------------------------------

class WalScenario:
    """A valid WAL written by a seeded script, and the states of all its clean prefixes."""

    def __init__(self, seed: int, root: str, segment_size: int) -> None:
        self.seed = seed
        self.dir = os.path.join(root, f"wal-{seed}")
        shutil.rmtree(self.dir, ignore_errors=True)
        rnd = random.Random(seed)
        st_ = WalStore.open(self.dir, segment_size=segment_size)
        term = 1
        seen = [_state(st_.recovered())]
        for _ in range(rnd.randrange(15, 40)):
            op = rnd.randrange(10)
            mark = st_.snapshot_mark.index if st_.snapshot_mark else 0
            first, last = st_.first_index, st_.last_index
            if op < 5 or last == 0:
                n = rnd.randrange(1, 4)
                if rnd.random() < 0.2:
                    term += 1
                st_.append(EntryBatch(last + 1, [(term, os.urandom(rnd.randrange(0, 40)))
                                                 for _ in range(n)]))
            elif op == 5 and last > mark:            # overwrite a suffix in a new term
                term += 1
                fi = rnd.randrange(max(mark, first - 1) + 1, last + 1)
                st_.append(EntryBatch(fi, [(term, os.urandom(rnd.randrange(0, 20)))]))
            elif op <= 7:
                st_.save_hard_state(HardState(term, rnd.randrange(0, 4),
                                              rnd.randrange(0, last + 1)))
            elif op == 8 and last > mark:            # a local snapshot, maybe compacted
                i = rnd.randrange(max(mark, first - 1) + 1, last + 1)
                st_.save_snapshot_mark(SnapshotMeta(i, st_.term(i), frozenset({1, 2, 3})))
                if rnd.random() < 0.6:
                    st_.compact(i)
            elif op == 9 and rnd.random() < 0.3:     # an installed snapshot (log reset)
                term += 1
                i = last + rnd.randrange(1, 5)
                st_.save_snapshot_mark(SnapshotMeta(i, term, frozenset({1, 2}), frozenset({3})))
            st_.sync()
            seen.append(_state(st_.recovered()))
        st_.close()
        self.final = seen[-1]
        self.names = sorted(n for n in os.listdir(self.dir) if parse_segment_name(n))
        self.files = {n: Path(self.dir, n).read_bytes() for n in self.names}
        self.prefix_states = self._prefix_states(root)
        assert self.final in self.prefix_states

    def _prefix_states(self, root: str) -> set:
        states = set()
        scratch = os.path.join(root, f"cut-{self.seed}")
        fresh = os.path.join(root, f"empty-{self.seed}")
        with WalStore.open(fresh) as s:
            states.add(_state(s.recovered()))
        for j, name in enumerate(self.names):
            data = self.files[name]
            recs, end, _status, _reason = decode_records(data, SEGMENT_HEADER_SIZE)
            cuts = [SEGMENT_HEADER_SIZE]
            pos = SEGMENT_HEADER_SIZE
            for r in recs:
                pos += 32 + len(r[3])
                cuts.append(pos)
            assert end == len(data)
            for cut in cuts:
                shutil.rmtree(scratch, ignore_errors=True)
                os.makedirs(scratch)
                for earlier in self.names[:j]:
                    Path(scratch, earlier).write_bytes(self.files[earlier])
                Path(scratch, name).write_bytes(data[:cut])
                try:
                    s = WalStore.open(scratch)
                except CorruptRecordError:
                    # a cut before the mark that justified deleting older segments: never
                    # a state of the disk (those records were durable before the deletion)
                    continue
                with s:
                    states.add(_state(s.recovered()))
        shutil.rmtree(scratch, ignore_errors=True)
        return states


_scenarios: dict = {}


def _scenario(seed: int) -> WalScenario:
    """The scenario of ``seed`` (kept in memory; its files are written in a temporary
    directory that is removed at once)."""
    if seed not in _scenarios:
        root = tempfile.mkdtemp(prefix="fastraft-fuzz-wal-")
        try:
            _scenarios[seed] = WalScenario(seed, root, segment_size=(200, 400, 1000)[seed % 3])
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return _scenarios[seed]


def test_wal_scenarios_leave_no_temporary_directory(tmp_path):
    """Building the WAL scenarios (as the fuzzer does) leaves nothing in the temp dir."""
    import subprocess

    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('fuzz_files', sys.argv[1])\n"
            "mod = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(mod)\n"
            "mod._scenario(0)\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code, __file__], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert os.listdir(tmp_path) == []


def _damage_wal(rnd: random.Random, sc: WalScenario, target: str) -> str:
    """Write a damaged copy of the scenario's WAL into ``target``; returns what was done."""
    files = dict(sc.files)
    names = list(sc.names)
    what = []
    for _ in range(rnd.randrange(1, 3)):
        kind = rnd.randrange(12)
        name = rnd.choice(names) if names else None
        if name is None:
            break
        data = files[name]
        n = len(data)
        if kind <= 3:                                       # bytes anywhere
            files[name] = mut.mutate_bytes(rnd, data, rnd.randrange(1, 3))
            what.append(f"mutate {name}")
        elif kind == 4:                                     # truncate
            cut = rnd.randrange(n + 1)
            files[name] = data[:cut]
            what.append(f"truncate {name} at {cut}")
        elif kind == 5:                                     # zero-fill a range
            lo = rnd.randrange(n + 1)
            hi = rnd.choice([n, min(n, lo + rnd.randrange(1, 64))])
            files[name] = data[:lo] + bytes(hi - lo) + data[hi:]
            what.append(f"zero {name} [{lo}:{hi}]")
        elif kind == 6:                                     # append zeros or garbage
            tail = bytes(rnd.randrange(1, 100)) if rnd.random() < 0.5 else os.urandom(
                rnd.randrange(1, 100))
            files[name] = data + tail
            what.append(f"append {len(tail)} bytes to {name}")
        elif kind == 7:                                     # drop a segment
            names.remove(name)
            del files[name]
            what.append(f"drop {name}")
        elif kind == 8 and len(names) >= 2:                 # swap two segments' contents
            other = rnd.choice([x for x in names if x != name])
            files[name], files[other] = files[other], files[name]
            what.append(f"swap {name} {other}")
        elif kind == 9:                                     # rename to another seq
            seq, index = parse_segment_name(name)
            new = segment_name(seq + rnd.choice([1, 2, 5, -1]) if seq else seq + 3, index)
            if new not in files:
                names[names.index(name)] = new
                files[new] = files.pop(name)
                what.append(f"rename {name} -> {new}")
        elif kind == 10:                                    # duplicate as a later segment
            seq = max(parse_segment_name(x)[0] for x in names) + 1
            new = segment_name(seq, 0)
            names.append(new)
            files[new] = data
            what.append(f"duplicate {name} as {new}")
        else:                                               # a stray temporary file
            files[segment_name(999, 0) + ".tmp"] = os.urandom(rnd.randrange(0, 60))
            what.append("stray .tmp")
    os.makedirs(target)
    for name, data in files.items():
        Path(target, name).write_bytes(data)
    segs = sorted(n for n in files if parse_segment_name(n))
    for name in segs[:-1]:
        data = files[name]
        if data != sc.files.get(name) and len(data) >= SEGMENT_HEADER_SIZE:
            if decode_records(data, SEGMENT_HEADER_SIZE)[2] == WAL_CLEAN:
                what.append(f"{name} (not the last) still decodes clean")
    return "; ".join(what)


def test_wal_damage(fuzz, tmp_path_factory):
    root = tmp_path_factory.mktemp("walfuzz")
    counter = [0]

    @BATCH
    @given(st.integers(0, 7), st.randoms(use_true_random=False))
    def batch(seed, rnd):
        fuzz.count("wal")
        sc = _scenario(seed)
        counter[0] += 1
        target = str(root / f"d{counter[0]}")
        what = _damage_wal(rnd, sc, target)
        try:
            store = WalStore.open(target)
        except CorruptRecordError as exc:
            assert isinstance(getattr(exc, "offset", None), int) and exc.offset >= 0, what
            assert exc.file in os.listdir(target) and exc.path in str(exc), what
            assert f"offset {exc.offset}" in str(exc), what
            fuzz.count("wal/corrupt-detected")
        else:
            try:
                got = _state(store.recovered())
            finally:
                store.close()
            assert got in sc.prefix_states, (
                f"seed {seed}: after [{what}] WalStore.open recovered a state that is "
                f"no prefix of what was written: {got}")
            fuzz.count("wal/recovered-prefix")
        shutil.rmtree(target, ignore_errors=True)

    fuzz.run("wal", batch)


# -- 2. snapshot files -------------------------------------------------------------------------

def _machine(seed: int) -> KVStateMachine:
    rnd = random.Random(seed)
    sm = KVStateMachine()
    sm.apply(1, codec.encode_command([codec.CMD_REGISTER, 10]))
    for i in range(2, rnd.randrange(3, 60)):
        key = bytes([rnd.randrange(97, 105)]) * rnd.randrange(1, 4)
        sm.apply(i, codec.encode_command([codec.CMD_PUT, 10 + i, 1, i - 1, i - 1, key,
                                          os.urandom(rnd.randrange(0, 50))]))
    return sm


def _sm_state(sm):
    return b"".join(sm.snapshot_chunks())


def test_snapshot_file_damage(fuzz, tmp_path_factory):
    root = tmp_path_factory.mktemp("snapfuzz")
    counter = [0]

    @BATCH
    @given(st.integers(0, 20), st.randoms(use_true_random=False), st.integers(0, 9))
    def batch(seed, rnd, how):
        fuzz.count("snapshot_file")
        counter[0] += 1
        d = root / f"s{counter[0]}"
        store = snapfile.SnapshotStore(d, keep=2)
        sm = _machine(seed)
        old = store.save(SnapshotMeta(1, 1, frozenset({1, 2, 3})), _machine(seed + 1000)
                         .snapshot_chunks(17))
        meta = SnapshotMeta(sm.applied_index, 2, frozenset({1, 2, 3}), frozenset({4}))
        path = store.save(meta, sm.snapshot_chunks(rnd.randrange(1, 200)))
        original = Path(path).read_bytes()
        if how == 9:                                # renamed: the header no longer matches
            new = os.path.join(d, snapfile.snapshot_name(3, meta.index + 1))
            os.rename(path, new)
            path = new
        else:
            Path(path).write_bytes(mut.mutate_bytes(rnd, original, rnd.randrange(1, 4)))
        damaged = Path(path).read_bytes()
        untouched = damaged == original and how != 9
        try:
            got_meta = snapfile.verify(path)
        except CorruptRecordError as exc:
            assert path in str(exc)
            verified = False
        else:
            verified = True
            assert untouched, "a damaged snapshot file passed verify"
            assert got_meta == meta
        try:
            data = b"".join(snapfile.read_chunks(path, rnd.randrange(1, 100)))
        except CorruptRecordError:
            assert not verified
        else:
            assert verified and data == b"".join(sm.snapshot_chunks())
        try:
            restored = KVStateMachine.restore(snapfile.read_chunks(path))
        except CorruptRecordError:
            assert not verified
        else:
            # restore may finish before read_chunks reaches its CRC check only if it stops
            # consuming; it consumes everything, so success means the CRC passed
            assert verified and _sm_state(restored) == _sm_state(sm)
        try:
            latest = store.latest()
        except NewerFormatError:
            # the damage turned the version field into a later release's: by design that is
            # refused, not skipped as damage (snapshot.py, "Refusing a newer format")
            assert not verified and snapfile.file_version(path) > snapfile.VERSION
            fuzz.count("snapshot_file/newer-version")
            shutil.rmtree(d, ignore_errors=True)
            return
        assert latest is not None
        if verified:
            assert latest[1] == path
        else:
            assert latest[1] == old
        if verified:
            fuzz.count("snapshot_file/intact")
        else:
            fuzz.count("snapshot_file/corrupt-detected")
        shutil.rmtree(d, ignore_errors=True)

    fuzz.run("snapshot_file", batch)


# -- 3. config files ---------------------------------------------------------------------------

hosts = st.sampled_from(["127.0.0.1", "localhost", "::1", "node-a.example", "10.0.0.7"])
ports = st.integers(1, 65535)


@st.composite
def configs(draw):
    n = draw(st.integers(1, 4))
    ids = draw(st.lists(st.integers(1, 2**40), min_size=n, max_size=n, unique=True))
    used = set()
    specs = []
    for i in ids:
        addrs = []
        for _ in range(draw(st.sampled_from([2, 3]))):
            while True:
                a = (draw(hosts), draw(ports))
                if (a[0].lower(), a[1]) not in used:
                    used.add((a[0].lower(), a[1]))
                    addrs.append(a)
                    break
        specs.append(NodeSpec(i, addrs[0], addrs[1], addrs[2] if len(addrs) > 2 else None))
    tick = draw(st.integers(1, 50))
    hb = draw(st.integers(tick, tick * 10))
    tuning = Tuning(tick_ms=tick, heartbeat_ms=hb,
                    election_timeout_ms=draw(st.integers((hb // tick + 1) * tick, 100_000)),
                    fsync=draw(st.booleans()), storage=draw(st.sampled_from(["wal", "sqlite"])),
                    max_value_bytes=draw(st.integers(0, 1 << 20)))
    name = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                      blacklist_characters="\x7f"), min_size=1, max_size=20)
                .filter(lambda s: s.strip()))
    return Config(name, tuple(specs), tuning, draw(st.sampled_from(["./d", "/var/x", "é"])))


TOML_BITS = ["=", "\"", "'", "[", "]", "[[", "]]", "\n", " ", "#", ",", "{", "}", ".", "-",
             "true", "false", "1", "0", "-1", "1e3", "0x10", "9" * 30, "inf", "nan",
             "1979-05-27", "07:32:00", "node", "id", "raft", "client", "raft_listen",
             "cluster", "name", "tuning", "data_dir", "tick_ms", "storage", "fsync",
             "\"127.0.0.1:1\"", "\"[::1]:2\"", "\"h:0\"", "\"h:65536\"", "\"\"", "\\u0000",
             "\\", "\t", "\r\n", "\x00", "é", "\ud7ff"]

toml_ish = st.lists(st.sampled_from(TOML_BITS) | st.text(max_size=3), max_size=60).map("".join)


def mutate_text(rnd: random.Random, text: str) -> str:
    lines = text.split("\n")
    for _ in range(rnd.randrange(1, 4)):
        kind = rnd.randrange(7)
        i = rnd.randrange(len(lines))
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif kind == 2:
            j = rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 3 and "=" in lines[i]:            # another value for a key
            key = lines[i].split("=", 1)[0]
            lines[i] = key + "= " + rnd.choice(TOML_BITS[9:])
        elif kind == 4:                                 # characters
            s = lines[i]
            p = rnd.randrange(len(s) + 1)
            lines[i] = s[:p] + rnd.choice(TOML_BITS) + s[p + rnd.randrange(0, 3):]
        elif kind == 5:
            lines.insert(i, rnd.choice(["[tuning]", "[cluster]", "[[node]]", "[node]",
                                        "x = 1", "tick_ms = 5", "id = 2"]))
        else:
            s = lines[i]
            p = rnd.randrange(len(s) + 1)
            lines[i] = s[:p] + s[p + 1:]
    return "\n".join(lines)


def _check_meaning(text: str, cfg: Config) -> None:
    """An accepted file means exactly what its TOML says."""
    doc = tomllib.loads(text)
    assert set(doc) <= {"data_dir", "cluster", "tuning", "node"}
    assert cfg.data_dir == doc.get("data_dir", "./fastraft-data")
    assert cfg.cluster_name == doc["cluster"]["name"]
    for k, v in doc.get("tuning", {}).items():
        assert getattr(cfg.tuning, k) == v and type(getattr(cfg.tuning, k)) is type(v), k
    assert len(cfg.nodes) == len(doc["node"])
    by_id = {n.id: n for n in cfg.nodes}
    for raw in doc["node"]:
        n = by_id[raw["id"]]
        assert n.raft == parse_address(raw["raft"]) and n.client == parse_address(raw["client"])
        assert n.raft_listen == (parse_address(raw["raft_listen"]) if "raft_listen" in raw
                                 else None)
        assert format_address(n.raft) == n.raft_addr
    assert parse_config(render_config(cfg)) == cfg


def test_config_damage(fuzz, tmp_path_factory):
    root = tmp_path_factory.mktemp("cfgfuzz")

    @BATCH
    @given(configs(), st.randoms(use_true_random=False), st.integers(0, 3), toml_ish)
    def batch(cfg, rnd, how, noise):
        fuzz.count("config")
        text = render_config(cfg)
        assert parse_config(text) == cfg
        if how == 0:
            candidate = noise
        elif how == 1:
            candidate = mutate_text(rnd, text)
        elif how == 2:
            candidate = text + "\n" + noise
        else:
            candidate = None
        path = root / "c.toml"
        if candidate is None:
            path.write_bytes(mut.mutate_bytes(rnd, text.encode(), rnd.randrange(1, 4)))
        else:
            path.write_bytes(candidate.encode("utf-8", "surrogatepass"))
        try:
            got = load_config(path)
        except ConfigError as exc:
            assert str(path) in str(exc)
            fuzz.count("config/refused")
            return
        _check_meaning(path.read_text(), got)
        fuzz.count("config/accepted")

    fuzz.run("config", batch)


# -- 4. SQLite ---------------------------------------------------------------------------------

def _sqlite_db(path: str, seed: int) -> bytes:
    rnd = random.Random(seed)
    s = SqliteStore(path)
    s.append(EntryBatch(1, [(1, os.urandom(rnd.randrange(0, 300))) for _ in range(30)]))
    s.save_hard_state(HardState(1, 1, 10))
    s.apply_batch(5, [(os.urandom(4), os.urandom(rnd.randrange(0, 100))) for _ in range(40)],
                  (), [(1, 0, b"blob")], (), 123)
    if seed % 2:
        s.save_snapshot_mark(SnapshotMeta(5, 1, frozenset({1, 2, 3})))
        s.compact(5)
    s.sync()
    s.close()
    return Path(path).read_bytes()


def test_sqlite_damage(fuzz, tmp_path_factory):
    root = tmp_path_factory.mktemp("sqlfuzz")
    originals = {}
    counter = [0]

    @BATCH
    @given(st.integers(0, 3), st.randoms(use_true_random=False), st.integers(0, 5))
    def batch(seed, rnd, how):
        fuzz.count("sqlite")
        if seed not in originals:
            originals[seed] = _sqlite_db(str(root / f"orig{seed}.db"), seed)
        data = originals[seed]
        counter[0] += 1
        path = str(root / f"t{counter[0]}.db")
        if how == 0:
            damaged = os.urandom(rnd.randrange(0, 9000))
        elif how == 1:
            damaged = data[:rnd.randrange(len(data) + 1)]
        elif how == 2:                        # zero or garbage pages
            page = rnd.randrange(max(1, len(data) // 4096))
            fill = bytes(4096) if rnd.random() < 0.5 else os.urandom(4096)
            damaged = data[:page * 4096] + fill + data[(page + 1) * 4096:]
        else:
            damaged = bytearray(data)
            for _ in range(rnd.randrange(1, 30)):
                damaged[rnd.randrange(len(damaged))] = rnd.randrange(256)
            damaged = bytes(damaged)
        Path(path).write_bytes(damaged)
        try:
            s = SqliteStore(path, timeout=0.5)
            try:
                s.recovered()
                s.kv_scan(b"")
                s.session_rows()
                s.machine_clock()
                s.applied_index()
                s.append(EntryBatch(s.last_index + 1, [(s.hard_state.term + 1, b"new")]))
                s.sync()
            finally:
                s.close()
        except (StorageError, CorruptRecordError):
            fuzz.count("sqlite/refused")
        else:
            fuzz.count("sqlite/opened")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                pass

    fuzz.run("sqlite", batch)


def _db_with_bad_table_name(path: str) -> None:
    """A SQLite database holding ``CREATE TABLE t (x)`` whose sqlite_master ``name`` column
    (the byte "t") was damaged to 0x80 (not UTF-8)."""
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    d = bytearray(Path(path).read_bytes())
    i = d.rfind(b"CREATE TABLE t")
    assert d[i - 3:i - 1] == b"tt"          # name, tbl_name, rootpage, sql
    d[i - 3] = 0x80
    Path(path).write_bytes(bytes(d))


# Regression test (found by the fuzzers, fixed in e0e0028): a non-UTF-8 table name
# in sqlite_master escaped SqliteStore as UnicodeDecodeError.
def test_sqlite_undecodable_schema_name_is_storage_error(tmp_path):
    path = str(tmp_path / "bad.db")
    _db_with_bad_table_name(path)
    with pytest.raises((StorageError, CorruptRecordError)):
        SqliteStore(path)


# Regression test (found by the fuzzers, fixed in 6492d6e): an older
# segment copied or renamed to a later sequence number rolled the hard state back.
def test_wal_hard_state_never_goes_backwards(tmp_path):
    from fastraft.core import encode_records, encode_segment_header
    from fastraft.storage.wal import HARD_STATE, encode_hard_state

    def seg(hs: HardState) -> bytes:
        return encode_segment_header() + encode_records(
            [(HARD_STATE, hs.commit, hs.term, encode_hard_state(hs))])

    (tmp_path / segment_name(0, 1)).write_bytes(seg(HardState(2, 1, 0)))
    (tmp_path / segment_name(1, 1)).write_bytes(seg(HardState(1, 0, 0)))   # an older copy
    with pytest.raises(CorruptRecordError):
        WalStore.open(tmp_path).close()


# Regression test (found by the fuzzers, fixed in e0e0028): losing the oldest segments
# dropped their entries silently.
def test_wal_lost_oldest_segments_are_damage(tmp_path):
    d = str(tmp_path / "wal")
    s = WalStore.open(d, segment_size=1)       # every write opens a new segment
    s.append(EntryBatch(1, [(1, b"a"), (1, b"b")]))
    s.save_hard_state(HardState(1, 1, 2))
    s.sync()
    s.save_hard_state(HardState(1, 1, 2))
    s.sync()
    names = s.segment_names()
    s.close()
    # wal-0: [HS]; wal-1: [HS, ENTRY 1, ENTRY 2]; wal-2: [HS, HS]; wal-3: [HS, HS]
    os.unlink(os.path.join(d, names[0]))
    os.unlink(os.path.join(d, names[1]))
    with pytest.raises(CorruptRecordError):
        store = WalStore.open(d)
        try:
            got = store.recovered()
        finally:
            store.close()
        assert got.entries == [(1, b"a"), (1, b"b")]   # (it recovers [] instead)


# Regression test (found by the fuzzers, fixed in e0e0028): a segment before the last
# cut at a record boundary decoded clean and lost its last records silently.
def test_wal_segment_cut_at_a_record_boundary_is_damage(tmp_path):
    d = str(tmp_path / "wal")
    s = WalStore.open(d, segment_size=1)       # every write opens a new segment
    s.append(EntryBatch(1, [(1, b"a"), (1, b"b")]))
    s.save_hard_state(HardState(1, 1, 2))
    s.sync()
    names = s.segment_names()
    s.close()
    # wal-1: [HS at 16, ENTRY 1 at 72, ENTRY 2 at 105]: cut before ENTRY 2
    path = os.path.join(d, names[1])
    with open(path, "r+b") as f:
        f.truncate(16 + 56 + 33)
    with pytest.raises(CorruptRecordError):
        store = WalStore.open(d)
        try:
            got = store.recovered()
        finally:
            store.close()
        assert len(got.entries) == 2      # (it recovers [entry 1] only)


# Regression test (found by the fuzzers, fixed in e0e0028): node ids beyond u64 were
# accepted.
def test_config_node_id_beyond_u64_is_refused():
    text = ('[cluster]\nname = "c"\n\n[[node]]\nid = 18446744073709551616\n'
            'raft = "127.0.0.1:1"\nclient = "127.0.0.1:2"\n')
    with pytest.raises(ConfigError):
        parse_config(text)


# Regression test (found by the fuzzers, fixed in a431e80): a log table
# with COUNT(*) > 0 and MAX(idx) NULL raised TypeError.
def test_sqlite_null_log_index_is_corruption(tmp_path):
    path = str(tmp_path / "nul.db")
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE log (idx, term, payload)")     # no INTEGER PRIMARY KEY
    c.execute("INSERT INTO log VALUES (NULL, 1, x'00')")
    c.commit()
    c.close()
    with pytest.raises((StorageError, CorruptRecordError)):
        SqliteStore(path)


# Regression test (found by the fuzzers, fixed in a431e80): an integer
# snapshot_mark.voters raised AttributeError.
def test_sqlite_mark_ids_of_another_type_are_corruption(tmp_path):
    path = str(tmp_path / "mark.db")
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE snapshot_mark (id, idx, term, voters, outgoing, keep)")
    c.execute("INSERT INTO snapshot_mark VALUES (0, 5, 1, 7, '', 1)")
    c.commit()
    c.close()
    with pytest.raises((StorageError, CorruptRecordError)):
        SqliteStore(path)


def test_sqlite_kv_row_of_another_type_is_corruption(tmp_path):
    path = str(tmp_path / "kv.db")
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB)")     # value nullable
    c.execute("INSERT INTO kv VALUES (x'6b', NULL)")
    c.commit()
    c.close()
    with pytest.raises((StorageError, CorruptRecordError)):
        s = SqliteStore(path)
        try:
            s.kv_scan(b"")
        finally:
            s.close()
