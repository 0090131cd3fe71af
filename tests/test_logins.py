"""Logins on a shared server: hashed users, a brake on guessing (page and API), nothing shown before the login."""

from __future__ import annotations

import logging

import pytest
import requests

import app
from backend.generation.engine import Engine
from backend.serving.logins import Brake, Logins, hash_password, read_user_file
from backend.settings import Settings

from .apphost import serve


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hashed_and_plain_passwords():
    logins = Logins({"ann": hash_password("s3cret"), "bob": "plain", "eve": "scrypt$zz$damaged"})
    assert logins.verify("ann", "s3cret") and not logins.verify("ann", "S3cret")
    assert logins.verify("bob", "plain") and not logins.verify("bob", "")
    assert not logins.verify("eve", "anything")  # a damaged hash never matches
    assert not logins.verify("nobody", "s3cret")
    assert hash_password("s3cret") != hash_password("s3cret")  # salted


def test_user_file(tmp_path, caplog):
    path = tmp_path / "users.txt"
    path.write_text(f"# the studio's users\nann:{hash_password('a')}\n\nbob:b:with:colons\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        users = read_user_file(path)
    assert set(users) == {"ann", "bob"} and users["bob"] == "b:with:colons"
    assert "bob's password is stored in plain text" in caplog.text and "ann's" not in caplog.text
    path.write_text("no-colon-here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="users.txt:1: expected name:password"):
        read_user_file(path)
    # The command line joins both sources; a bad file stops the start with its reason.
    good = tmp_path / "good.txt"
    good.write_text("ann:a\n", encoding="utf-8")
    logins = app.build_logins("cy:c", str(good))
    assert logins is not None and set(logins.users) == {"ann", "cy"}
    assert app.build_logins(None, None) is None
    with pytest.raises(SystemExit, match="--auth-file: .*expected name:password"):
        app.build_logins(None, str(path))


def test_brake_locks_an_address_then_doubles_and_clears_on_success(caplog):
    clock = Clock()
    brake = Brake(attempts=3, window=60, lockout=10, clock=clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            brake.failed("10.0.0.5", "ann")
    assert brake.wait("10.0.0.5") == 0
    assert "failed login as 'ann' from 10.0.0.5" in caplog.text
    brake.failed("10.0.0.5")
    assert brake.wait("10.0.0.5") == 10 and brake.wait("10.0.0.6") == 0  # only that address
    clock.now += 11
    assert brake.wait("10.0.0.5") == 0
    for _ in range(3):
        brake.failed("10.0.0.5")
    assert brake.wait("10.0.0.5") == 20  # the second lockout is twice as long
    clock.now += 21
    brake.succeeded("10.0.0.5")
    for _ in range(3):
        brake.failed("10.0.0.5")
    assert brake.wait("10.0.0.5") == 10  # a success started it over
    # Failures spread beyond the window do not add up.
    slow = Brake(attempts=3, window=60, lockout=10, clock=clock)
    for _ in range(5):
        slow.failed("10.0.0.7")
        clock.now += 61
    assert slow.wait("10.0.0.7") == 0


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, cache_dir):
    engine = Engine(Settings(offline=True, output_dir=tmp_path_factory.mktemp("out"), cache_dir=cache_dir))
    logins = Logins({"ann": hash_password("s3cret")}, Brake(attempts=3, window=600, lockout=300))
    with serve(engine, api=True, auth=logins) as url:
        yield url, logins


@pytest.mark.api
def test_login_page_shows_nothing_of_the_app_before_the_login(guarded):
    url, logins = guarded
    page = requests.get(url).text
    assert '"auth_required": true' in page or '"auth_required":true' in page  # the login form is served
    for secret in ("txt2img", "Tiny (offline test model)", "negative_prompt", "sampler_grid"):
        assert secret not in page, secret
    session = requests.Session()
    assert session.post(f"{url}login", data={"username": "ann", "password": "s3cret"}).status_code == 200
    logins.brake.succeeded("127.0.0.1")
    page = session.get(url).text
    assert "txt2img" in page and "Tiny (offline test model)" in page  # logged in: the whole app


@pytest.mark.api
def test_guessing_is_braked_on_the_page_and_the_api_alike(guarded):
    url, logins = guarded
    try:
        for _ in range(3):
            answer = requests.post(f"{url}login", data={"username": "ann", "password": "guess"})
            assert answer.status_code == 400
        # Locked: even the right password waits, and the API shares the brake.
        answer = requests.post(f"{url}login", data={"username": "ann", "password": "s3cret"})
        assert answer.status_code == 429 and "try again in" in answer.json()["detail"]
        assert int(answer.headers["retry-after"]) > 200
        api = requests.get(f"{url}sdapi/v1/samplers", auth=("ann", "s3cret"))
        assert api.status_code == 429 and "Too many failed logins" in api.text
    finally:
        logins.brake.succeeded("127.0.0.1")
    assert requests.get(f"{url}sdapi/v1/samplers", auth=("ann", "s3cret")).status_code == 200
    for _ in range(3):
        assert requests.get(f"{url}sdapi/v1/samplers", auth=("ann", "guess")).status_code == 401
    try:
        assert requests.post(f"{url}login", data={"username": "ann", "password": "s3cret"}).status_code == 429
    finally:
        logins.brake.succeeded("127.0.0.1")
