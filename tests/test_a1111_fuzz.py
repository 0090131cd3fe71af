"""Property-based fuzzing of the A1111 API: generated bodies for txt2img, img2img and options never get a 5xx.

Invalid values dominate (they cost nothing to refuse); the valid ones are tiny (64×64, 1-2 steps, tiny model).
"""

from __future__ import annotations

import base64
import io

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from backend.generation.engine import Engine
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY

pytestmark = pytest.mark.api


def _png(size: tuple[int, int], mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
# For sizes and counts: wrong types and far-out-of-range numbers only, so no fuzzed request is a costly valid one.
BAD_NUMBERS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=100_000, max_value=2**70),
    st.integers(max_value=-1, min_value=-(2**70)),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: abs(x) > 1e5 or x != int(x)),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)
PICTURES = st.sampled_from([_png((64, 64)), _png((40, 72)), _png((64, 64), "L"), "not base64!", "", "aGVsbG8="])


def field(valid: list, junk: st.SearchStrategy = JUNK) -> st.SearchStrategy:
    """Mostly junk or out-of-range values, sometimes one that works."""
    return st.one_of(st.sampled_from(valid), junk)


COMMON = {
    "prompt": st.one_of(st.text(max_size=40), JUNK),
    "negative_prompt": st.one_of(st.text(max_size=20), JUNK),
    "seed": field([-1, 0, 7, 2**32 - 1, 2**32]),
    "steps": field([1, 2, 0, -3, 151], BAD_NUMBERS),
    "cfg_scale": field([0, 7.5, 31, -1]),
    "width": field([64, 64, 0, 65, 8, 100000], BAD_NUMBERS),
    "height": field([64, 64, 72, -64], BAD_NUMBERS),
    "batch_size": field([1, 2, 0, 9], BAD_NUMBERS),
    "n_iter": field([1, 2, 0, 17], BAD_NUMBERS),
    "sampler_name": field(["Euler a", "DPM++ 2M Karras", "DPM++ SDE Karras", "LCM", "nope", None]),
    "scheduler": field(["automatic", "karras", "Karras", "sgm_uniform", "beta", "polyexponential", None]),
    "styles": field([[], ["no such style"], None]),
    "override_settings": st.one_of(
        st.fixed_dictionaries(
            {}, optional={"sd_model_checkpoint": field([TINY, "SD 9"]), "CLIP_stop_at_last_layers": field([1, 2])}
        ),
        JUNK,
    ),
    "enable_hr": field([False, True]),
    "send_images": field([True, False]),
    "alwayson_scripts": st.one_of(
        st.just({}),
        st.fixed_dictionaries(
            {
                "controlnet": st.fixed_dictionaries(
                    {
                        "args": st.lists(
                            st.fixed_dictionaries(
                                {"image": PICTURES, "module": field(["canny", "none", "openpose_full", "x"])},
                                optional={
                                    "model": field(["canny", "depth", "None", "x"]),
                                    "weight": field([0.5, 1.0, 3.0]),
                                    "guidance_start": field([0.0, 0.9]),
                                    "guidance_end": field([1.0, 0.5]),
                                    "processor_res": field([-1, 64, 8, 5000], BAD_NUMBERS),
                                    "threshold_a": field([100, -1, 300]),
                                    "threshold_b": field([200, 50]),
                                },
                            ),
                            max_size=2,
                        )
                    }
                )
            }
        ),
        JUNK,
    ),
    "unknown_field": JUNK,
}
IMG2IMG = {
    "init_images": st.one_of(st.lists(PICTURES, max_size=2), JUNK),
    "denoising_strength": field([0.5, 1.0, 0.01, 0, 1.5]),
    "resize_mode": field([0, 1, 2, 3, 4]),
    "mask": st.one_of(PICTURES, JUNK),
    "mask_blur": field([0, 4, 65]),
    "inpaint_full_res": field([True, False]),
    "inpaint_full_res_padding": field([0, 32, 300], BAD_NUMBERS),
    "inpainting_mask_invert": field([0, 1]),
}


def bodies(fields: dict) -> st.SearchStrategy:
    # Every field optional; the tiny model and small sizes most of the time so valid runs stay cheap.
    base = {"override_settings": {"sd_model_checkpoint": TINY}, "width": 64, "height": 64, "steps": 1}
    return st.one_of(
        st.fixed_dictionaries({}, optional=fields).map(lambda body: {**base, **body}),
        JUNK.filter(lambda body: not isinstance(body, dict)),  # not an object at all ({} is A1111's costly 512×512)
    )


REQUESTS = st.one_of(
    st.tuples(st.just("txt2img"), bodies(COMMON)),
    st.tuples(st.just("img2img"), bodies(COMMON | IMG2IMG)),
    st.tuples(
        st.just("options"),
        st.one_of(
            st.dictionaries(st.sampled_from(["sd_model_checkpoint", "CLIP_stop_at_last_layers", "x"]), JUNK),
            st.fixed_dictionaries({"sd_model_checkpoint": st.just(TINY)}),
            JUNK,
        ),
    ),  # fmt: skip
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("fuzz-out")
    # The tiny model is also the default, so bodies without a checkpoint stay cheap (no model swaps).
    settings_ = Settings(offline=True, output_dir=out, cache_dir=cache_dir, default_model=TINY)
    with serve(Engine(settings_), api=True) as url:
        yield url


def fuzz(base_url: str, examples: int) -> int:
    session = requests.Session()
    sent = []

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(REQUESTS)
    def check(case):
        route, body = case
        response = session.post(f"{base_url}sdapi/v1/{route}", json=body, timeout=60)
        sent.append(response.status_code)
        assert response.status_code < 500, (route, body, response.text[:500])
        if response.status_code == 422:
            assert set(response.json()) == {"error", "detail", "body", "errors"}

    check()
    # Alive after: the options answer and a picture is made.
    assert session.get(f"{base_url}sdapi/v1/options").status_code == 200
    small = {"width": 64, "height": 64, "steps": 1, "override_settings": {"sd_model_checkpoint": TINY}}
    made = session.post(f"{base_url}sdapi/v1/txt2img", json=small)
    assert made.status_code == 200 and made.json()["images"]
    assert 200 in sent and 422 in sent  # both kinds were exercised
    return len(sent)


def test_fuzz_quick(base_url):
    assert fuzz(base_url, 150) >= 150


@pytest.mark.slow
def test_fuzz_500_requests(base_url):
    assert fuzz(base_url, 600) >= 500
