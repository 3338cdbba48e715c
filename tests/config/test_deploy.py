"""The deployment files: the systemd unit ``deploy/fastraft@.service`` and the config file of
``docs/deploy.md`` are what the code accepts.

Place in the architecture: tests of shipped files (no node runs). The unit is read
configparser-style; its ExecStart must be a ``fastraft node`` command whose flags the node
command parses (checked with the real console script's ``node --help`` and with the cli's
parser), and its settings must agree with the node (graceful stop, exit codes, data
directory). When ``systemd-analyze`` is installed, it verifies the unit too. The guide's
config file must parse, one file serving three machines.
"""

from __future__ import annotations

import configparser
import inspect
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastraft import cli
from fastraft.config import Tuning, parse_config
from fastraft.launcher import STOP_GRACE_S
from fastraft.server.node import Node

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "fastraft@.service"
GUIDE = ROOT / "docs" / "deploy.md"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.optionxform = str            # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def _exec_start() -> list[str]:
    return shlex.split(_unit()["Service"]["ExecStart"])


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("fastraft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fastraft"]


def test_the_unit_parses_and_runs_a_node_as_an_unprivileged_user():
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["User"] == "fastraft" and service["Group"] == "fastraft"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    argv = _exec_start()
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "fastraft"
    assert argv[1:] == ["node", "--id", "%i", "--config", "/etc/fastraft/cluster.toml",
                        "--data-dir", "/var/lib/fastraft"]


def test_the_exec_start_flags_are_the_node_commands():
    argv = [a.replace("%i", "2") for a in _exec_start()[1:]]
    args = cli._build_parser().parse_args(argv)
    assert (args.command, args.id, args.config, args.data_dir) == (
        "node", 2, "/etc/fastraft/cluster.toml", "/var/lib/fastraft")
    out = subprocess.run([*_console_script(), "node", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    flags = [a for a in argv if a.startswith("--")]
    assert all(f in out.stdout for f in flags), (flags, out.stdout)


def test_the_unit_agrees_with_the_node():
    service = _unit()["Service"]
    grace = inspect.signature(Node.shutdown).parameters["grace"].default
    stop = int(service["TimeoutStopSec"])
    assert stop > STOP_GRACE_S > grace           # more than the launcher gives a node
    assert service["KillSignal"] == "SIGTERM"    # the graceful stop
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"   # a configuration problem
    assert service["ExecReload"].split()[-2:] == ["-HUP", "$MAINPID"]  # TLS files re-read
    assert int(service["LimitNOFILE"]) >= 4 * Tuning().max_client_connections
    # the data directory is the unit's state directory: writable under ProtectSystem=strict
    data_dir = _exec_start()[_exec_start().index("--data-dir") + 1]
    assert service["ProtectSystem"] == "strict"
    assert data_dir == "/var/lib/" + service["StateDirectory"]
    assert "@system-service" in service["SystemCallFilter"]     # fsync, flock, fork
    assert "MemoryDenyWriteExecute" not in service


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    script = Path(sys.executable).with_name("fastraft")
    if not script.exists():
        pytest.skip("no fastraft console script beside the interpreter")
    text = UNIT.read_text().replace(_exec_start()[0], str(script))
    (tmp_path / "fastraft@.service").write_text(text)
    out = subprocess.run([analyze, "verify", str(tmp_path / "fastraft@1.service")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out


def test_the_guides_config_file_is_one_file_for_three_machines():
    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S)
    cfg = parse_config(next(b for b in blocks if "[[node]]" in b), "docs/deploy.md")
    assert [n.id for n in cfg.nodes] == [1, 2, 3]
    assert cfg.client_endpoints() == ["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"]
    for n in cfg.nodes:
        assert n.client_bind == ("0.0.0.0", 7001) and n.raft_bind == ("0.0.0.0", 7101)
        assert n.metrics == (n.client[0], 7201)
    assert cfg.data_dir == "/var/lib/fastraft"
    tls = next(b for b in blocks if "[tls]" in b)
    assert parse_config(tls + "[cluster]\nname = \"x\"\n[[node]]\nid = 1\n"
                        "raft = \"h:1\"\nclient = \"h:2\"\n", "tls").tls is not None
    text = GUIDE.read_text()
    assert "deploy/fastraft@.service" in text and "fastraft snapshot save" in text
