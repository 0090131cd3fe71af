"""Schemathesis over the A1111 API's own OpenAPI schema: every operation, valid and invalid generated requests,
and no answer is a 5xx (the server keeps serving after).

Bodies are made cheap before they are sent (the tiny model, 64², one step; numbers that would be valid sizes or
counts become the cheapest), while out-of-range numbers and wrong types go through as generated, to be refused.
"""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from backend.generation.engine import Engine
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY

pytestmark = pytest.mark.api


def _png(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PICTURE = _png((64, 64))
# The cheapest valid value of each field that sets how much work a request is.
CHEAP = {
    "width": 64,
    "height": 64,
    "steps": 1,
    "batch_size": 1,
    "n_iter": 1,
    "hr_scale": 1.0,
    "hr_second_pass_steps": 1,
    "hr_resize_x": 64,
    "hr_resize_y": 64,
    "firstphase_width": 64,
    "firstphase_height": 64,
    "seed_resize_from_w": 64,
    "seed_resize_from_h": 64,
    "upscaling_resize": 1,
    "upscaling_resize_w": 64,
    "upscaling_resize_h": 64,
    "inpaint_full_res_padding": 0,
    "controlnet_processor_res": 64,
}
FAR = 100_000  # beyond every limit: such numbers are refused before any work, so they are sent as generated
PICTURE_FIELDS = ("image", "mask", "init_images", "imageList", "controlnet_input_images", "controlnet_images")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


GENERATING = {"width": 64, "height": 64, "steps": 1}  # absent, A1111's defaults are a costly 512², 20 steps


def cheapen(body: Any, pictures: bool, generates: bool) -> Any:
    """``body`` with costly valid values made cheap and, when ``pictures``, its picture strings made real 64² PNGs
    (so the routes get past decoding); everything else as generated."""
    if not isinstance(body, dict):
        return body
    body = {**GENERATING, **body} if generates else dict(body)
    for key, cheap in CHEAP.items():
        if key in body and _number(body[key]) and abs(body[key]) < FAR:
            body[key] = cheap
    if generates and isinstance(body.get("override_settings", {}), dict):
        # Never another (costly, or not offline) checkpoint; a junk override_settings still goes through.
        body["override_settings"] = {**body.get("override_settings", {}), "sd_model_checkpoint": TINY}
    if pictures:
        for key in PICTURE_FIELDS:
            value = body.get(key)
            if isinstance(value, str):
                body[key] = PICTURE
            elif isinstance(value, list):
                body[key] = [{"data": PICTURE, "name": "x"} if isinstance(v, dict) else PICTURE for v in value[:2]]
    return body


@pytest.fixture(scope="module")
def app(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("schemathesis-out")
    engine = Engine(Settings(offline=True, output_dir=out, cache_dir=cache_dir, default_model=TINY))
    with serve(engine, api=True) as url:
        schema = schemathesis.openapi.from_url(f"{url}docs/openapi.json")
        yield url, schema


def operations(schema) -> list:
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 30  # the schema lists every route (tests/snapshots/a1111_openapi.json)
    return found


def _strategy(operation) -> st.SearchStrategy:
    """Valid and invalid requests; routes without parameters or a body have only valid ones."""
    has_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_input else [GenerationMode.POSITIVE]
    return st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))


def exercise(url: str, operation, examples: int, session: requests.Session) -> Counter:
    statuses: Counter = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(_strategy(operation), st.booleans())
    def check(case, pictures):
        if case.body is not None and not isinstance(case.body, NotSet):
            generates = operation.path.endswith(("/txt2img", "/img2img"))
            case.body = cheapen(case.body, pictures, generates)
        if case.headers:  # the schema's HTTP Basic login: the server here has none (test_a1111_api tests logins)
            case.headers.pop("Authorization", None)
        response = case.call(base_url=url.rstrip("/"), session=session, timeout=120)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (operation.label, case.body, case.query, response.text[:500])

    check()
    return statuses


def run_all(app, examples: int) -> dict[str, Counter]:
    url, schema = app
    session = requests.Session()
    seen = {}
    for operation in operations(schema):
        started = time.monotonic()
        seen[operation.label] = exercise(url, operation, examples, session)
        seen[operation.label]["seconds"] = round(time.monotonic() - started, 1)
    print({label: dict(c) for label, c in seen.items()})
    assert all(sum(v for k, v in c.items() if k != "seconds") for c in seen.values())  # every operation was sent
    # Still serving: a list answers and a (tiny) picture is made.
    assert session.get(f"{url}sdapi/v1/samplers", timeout=30).status_code == 200
    small = {"width": 64, "height": 64, "steps": 1, "override_settings": {"sd_model_checkpoint": TINY}}
    made = session.post(f"{url}sdapi/v1/txt2img", json=small, timeout=120)
    assert made.status_code == 200 and made.json()["images"]
    return seen


def test_schemathesis_quick_every_operation_no_5xx(app):
    seen = run_all(app, 6)
    assert {"POST /sdapi/v1/txt2img", "POST /sdapi/v1/img2img", "GET /sdapi/v1/options"} <= set(seen)


@pytest.mark.slow
def test_schemathesis_long_every_operation_no_5xx(app):
    seen = run_all(app, 60)
    generated = seen["POST /sdapi/v1/txt2img"]
    assert generated[200] and sum(n for code, n in generated.items() if code in (400, 422))  # both kinds
