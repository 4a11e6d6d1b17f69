"""The wheel: one importable top-level name, and a daemon that runs from it alone.

A wheel is built from the checkout and installed in a virtual environment of
its own (its dependencies from the package index, as an operator's pip gets
them); `countersign serve` then runs from an empty directory, far from the
checkout, on the embedded defaults.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "countersign"


def test_every_folder_with_an_init_is_packaged() -> None:
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        ".".join((PACKAGE, *init.parent.relative_to(ROOT).parts))
        for top in ("rules", "config", "store", "workflow", "gateway", "scheduler", "templates")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert declared == folders | {PACKAGE}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("countersign-*.whl")
    return found


def test_the_wheel_installs_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {PACKAGE}
    assert f"{PACKAGE}/daemon.py" in names and f"{PACKAGE}/config/__init__.py" in names
    assert any(name.startswith(f"{PACKAGE}/templates/en/") for name in names)
    assert any(name.startswith(f"{PACKAGE}/store/migrations/versions/") for name in names)
    assert not any("/tests/" in name or "/bench/" in name for name in names)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=600)
    yield venv


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_runs_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    smtp_port, web_port = _free_port(), _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "COUNTERSIGN_INBOUND_SMTP_PORT": str(smtp_port),
        "COUNTERSIGN_WEB_PORT": str(web_port),
    }
    daemon = subprocess.Popen([str(installed / "bin" / "countersign"), "serve"], cwd=empty, env=env)
    try:
        _wait_for_port(smtp_port, daemon)
        _wait_for_port(web_port, daemon)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    assert code == 0
    assert (empty / "var" / "countersign.db").exists()
    probe = "import importlib.util as u; print([n for n in ('config', 'store', 'daemon') if u.find_spec(n)])"
    found = subprocess.run(
        [str(installed / "bin" / "python"), "-c", probe],
        cwd=empty,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == "[]"


def _wait_for_port(port: int, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert daemon.poll() is None, "countersign serve exited before it listened"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"nothing listened on {port} within 60 s")
