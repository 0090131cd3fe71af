"""Is the Hugging Face hub reachable? Asked once at start, so a box without network says so at once.

Without this, the first Generate of a hub model retries for about half a minute and then fails on a missing file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import urllib.error
import urllib.request

from backend.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def hub_reachable(endpoint: str | None = None, timeout: float = 4.0) -> bool:
    """Whether an HTTP request to the hub gets any answer within ``timeout`` seconds (an HTTP error is an answer)."""
    url = (endpoint or hub_endpoint()) + "/api/models?limit=1"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def settle_offline(settings: Settings, probe=hub_reachable) -> tuple[Settings, str]:
    """``settings`` as they stand when offline was asked for or the hub answers; otherwise offline, and the notice.

    Offline from here on means local folders and the local hub cache only, so nothing waits on the network.
    """
    if settings.offline or probe():
        return settings, ""
    notice = (
        f"Cannot reach the Hugging Face hub ({hub_endpoint()}): models that are not downloaded yet are marked "
        '"needs download" and cannot load; local models and the demo model work. Restart with network access '
        "to download them."
    )
    log.warning(notice)
    return dataclasses.replace(settings, offline=True), notice
