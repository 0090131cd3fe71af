"""No network: the hub is found unreachable at start, the server goes offline at once and says so, and the models it
cannot download are marked in every model dropdown."""

from __future__ import annotations

import socket
import time

from backend.generation.engine import Engine
from backend.models import hub
from backend.settings import Settings
from ui.common import model_choices


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens there


def test_unreachable_endpoint_is_found_quickly():
    began = time.monotonic()
    assert not hub.hub_reachable(f"http://127.0.0.1:{closed_port()}", timeout=2)
    assert time.monotonic() - began < 10  # refused at once, not retried for half a minute


def test_unreachable_hub_turns_the_server_offline_with_one_notice(tmp_path, caplog):
    settings = Settings(offline=False, output_dir=tmp_path)
    settled, notice = hub.settle_offline(settings, probe=lambda: False)
    assert settled.offline and "Cannot reach the Hugging Face hub" in notice and "needs download" in notice
    assert "Cannot reach the Hugging Face hub" in caplog.text
    # Reachable, or offline asked for: nothing changes and nothing is probed.
    assert hub.settle_offline(settings, probe=lambda: True) == (settings, "")
    offline = Settings(offline=True, output_dir=tmp_path)
    assert hub.settle_offline(offline, probe=lambda: 1 / 0) == (offline, "")


def test_models_that_need_a_download_are_marked(settings):
    engine = Engine(settings)  # offline, and SD 1.5 is not in the (empty) hub cache
    choices = dict((value, label) for label, value in model_choices(engine))
    assert choices["SD 1.5"] == "SD 1.5 — needs download"
    assert choices[settings.offline_model] == settings.offline_model
    assert engine.needs_download("SD 1.5") and not engine.needs_download(settings.offline_model)
    assert engine.default_model == settings.offline_model
