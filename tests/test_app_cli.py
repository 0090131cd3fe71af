"""``app.py``: the CLI starts the server offline without hanging, and its flags take effect."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import app
from tests.apphost import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.api


def test_parse_auth():
    assert app.parse_auth("me:se:cret") == ("me", "se:cret")
    assert app.parse_auth(None) is None
    with pytest.raises(SystemExit, match="user:password"):
        app.parse_auth("nopassword")


def test_env_equivalents(monkeypatch):
    monkeypatch.setenv("SDSTUDIO_PORT", "9000")
    monkeypatch.setenv("SDSTUDIO_AUTH", "a:b")
    args = app.parse_args([])
    assert args.port == 9000 and args.auth == "a:b"
    assert app.parse_args(["--port", "9100"]).port == 9100


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"server did not answer at {url} within {timeout}s")


@pytest.fixture
def start_app(tmp_path, cache_dir):
    procs = []

    def start(*flags: str) -> str:
        port = free_port()
        env = {**os.environ, "SDSTUDIO_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "app.py", "--offline", "--port", str(port), "--output-dir", str(tmp_path), *flags]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def test_offline_start_falls_back_and_says_so(start_app):
    url, proc = start_app()
    assert wait_for(url + "/config", proc) == 200
    with urllib.request.urlopen(url + "/config") as resp:
        config = resp.read().decode()
    assert "is not in the local Hugging Face cache" in config
    assert "Tiny (offline test model)" in config


def test_auth_flag_requires_login(start_app):
    url, proc = start_app("--auth", "ann:pw")
    assert wait_for(url + "/config", proc) == 401
