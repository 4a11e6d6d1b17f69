"""The systemd unit in packaging/: it parses (`systemd-analyze verify`) and asks for
readiness notification, a dynamic user, a private state directory and a tight sandbox."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "packaging" / "countersign.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_asks_for_what_the_daemon_does() -> None:
    unit = directives()
    expected = {
        "Type": "notify",
        "DynamicUser": "yes",
        "StateDirectory": "countersign",
        "ProtectSystem": "strict",
        "UMask": "0077",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillMode": "mixed",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert "serve" in unit["ExecStart"][0]
    assert unit["WatchdogSec"] and unit["CapabilityBoundingSet"] == [""]


def test_systemd_analyze_verify_accepts_it(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked here")
    # verify wants ExecStart's binary to exist: point it at this checkout's entry point.
    binary = Path(sys.executable).with_name("countersign")
    copy = tmp_path / "countersign.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/countersign", str(binary)))
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [line for line in done.stderr.splitlines() if "countersign.service" in line]
    assert done.returncode == 0 and not complaints, done.stderr
