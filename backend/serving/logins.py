"""Logins for a shared server: users with hashed passwords, and a brake on password guessing.

A user file has one ``name:password`` per line (``#`` starts a comment). The password is either a hash made by

    python -m backend.serving.logins NAME          # asks for the password, prints the line to add

or, as in A1111's ``--gradio-auth-path`` files, plain text (accepted, with a warning in the log). The brake counts
failed logins per client address: after ``attempts`` failures within ``window`` seconds that address is refused for
``lockout`` seconds, doubling on each further lockout (at most an hour); a success clears its record.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SCHEME = "scrypt"
# scrypt's interactive-login cost (RFC 7914 suggests N=2^14, r=8): ~50 ms a check, 16 MiB each.
_N, _R, _P = 2**14, 8, 1
MAX_LOCKOUT = 3600.0


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{SCHEME}${salt.hex()}${digest.hex()}"


def _matches(stored: str, password: str) -> bool:
    if stored.startswith(SCHEME + "$"):
        try:
            _, salt, digest = stored.split("$")
            return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)
        except ValueError:  # a damaged hash never matches
            return False
    return hmac.compare_digest(stored.encode(), password.encode())


@dataclass
class Brake:
    """Failed logins per client address (see the module docstring)."""

    attempts: int = 5
    window: float = 600.0
    lockout: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _locked: dict[str, tuple[float, int]] = field(default_factory=dict)  # address -> (until, lockouts so far)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, address: str) -> float:
        """Seconds this address must wait before it may try again (0 = it may try now)."""
        with self._lock:
            until, _ = self._locked.get(address, (0.0, 0))
            return max(0.0, until - self.clock())

    def failed(self, address: str, user: str = "") -> None:
        with self._lock:
            now = self.clock()
            recent = [t for t in self._failures.get(address, []) if now - t < self.window] + [now]
            self._failures[address] = recent
            log.warning(
                "failed login%s from %s (%d within %.0f s)",
                f" as {user!r}" if user else "",
                address,
                len(recent),
                self.window,
            )
            if len(recent) >= self.attempts:
                _, times = self._locked.get(address, (0.0, 0))
                pause = min(MAX_LOCKOUT, self.lockout * 2**times)
                self._locked[address] = (now + pause, times + 1)
                self._failures[address] = []
                log.warning("login locked for %s for %.0f s after %d failures", address, pause, len(recent))

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
            self._locked.pop(address, None)


class Logins:
    """The server's users and the brake; ``verify`` is what Gradio's ``auth=`` and the API's Basic auth call."""

    def __init__(self, users: dict[str, str], brake: Brake | None = None):
        if not users:
            raise ValueError("a login needs at least one user")
        self.users = users
        self.brake = brake or Brake()

    def verify(self, user: str, password: str) -> bool:
        stored = self.users.get(user)
        # A missing user costs as much as a wrong password, so a timing does not tell which names exist.
        ok = _matches(stored if stored is not None else hash_password("-"), password)
        return ok and stored is not None

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], brake: Brake | None = None) -> Logins:
        return cls(dict(pairs), brake)


def parse_user_line(line: str, where: str) -> tuple[str, str] | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    user, sep, secret = text.partition(":")
    if not sep or not user.strip() or not secret:
        raise ValueError(f"{where}: expected name:password or name:{SCHEME}$…, got {text[:40]!r}")
    return user.strip(), secret


def read_user_file(path: str | Path) -> dict[str, str]:
    """``name:password`` lines (see the module docstring); plain passwords are logged as a risk, not refused."""
    users: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        pair = parse_user_line(line, f"{path}:{number}")
        if pair is None:
            continue
        if not pair[1].startswith(SCHEME + "$"):
            log.warning(
                "%s:%d: %s's password is stored in plain text; use python -m backend.serving.logins %s",
                path,
                number,
                pair[0],
                pair[0],
            )
        users[pair[0]] = pair[1]
    if not users:
        raise ValueError(f"{path}: no users in the file")
    return users


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m backend.serving.logins NAME   (prints the line for a user file)")
    password = getpass.getpass(f"password for {argv[0]}: ")
    if not password or password != getpass.getpass("again: "):
        raise SystemExit("the passwords are empty or differ")
    print(f"{argv[0]}:{hash_password(password)}")


if __name__ == "__main__":
    main(sys.argv[1:])
