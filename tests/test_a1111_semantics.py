"""A1111 API semantics beyond the fields: variation seeds through both APIs, ``send_images``, ``styles``,
``override_settings_restore_afterwards``, ``sd_vae`` and ``/progress`` during a run (the shared engine's app)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
from gradio_client import Client
from PIL import Image

from backend.schema.requests import Txt2ImgRequest

from .apphost import serve
from .conftest import TINY, endpoint_args, pixels
from .test_grid import make_vae

pytestmark = pytest.mark.api
BODY = dict(prompt="a red circle", seed=31, steps=2, cfg_scale=5.0, width=64, height=64, sampler_name="Euler",
            scheduler="automatic", override_settings={"sd_model_checkpoint": TINY})
VARIATION = dict(subseed=8, subseed_strength=0.5, seed_resize_from_w=48, seed_resize_from_h=32)


@pytest.fixture(scope="module")
def app(shared_engine):
    with serve(shared_engine, api=True) as url:
        yield shared_engine, url, serve.api_state


def post(url: str, route: str = "txt2img", **body) -> requests.Response:
    return requests.post(f"{url}sdapi/v1/{route}", json={**BODY, **body}, timeout=300)


def decoded(response: requests.Response) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in response.json()["images"]]


def options(url: str) -> dict:
    return requests.get(f"{url}sdapi/v1/options", timeout=30).json()


def test_variation_seed_gives_the_tabs_pixels_through_both_apis(app):
    engine, url, _ = app
    tab = engine.run(Txt2ImgRequest(prompt="a red circle", seed=31, steps=2, guidance_scale=5.0, width=64, height=64,
                                    sampler="Euler", schedule="Automatic", model=TINY, **VARIATION))
    a1111 = post(url, **VARIATION)
    assert a1111.status_code == 200, a1111.text
    info = json.loads(a1111.json()["info"])
    assert (info["subseed"], info["all_subseeds"], info["subseed_strength"]) == (8, [8], 0.5)
    assert info["infotexts"] == tab.infotexts
    assert np.array_equal(pixels(decoded(a1111)[0]), pixels(tab.images[0]))
    client = Client(url, verbose=False)
    gallery, text, _ = client.predict(**endpoint_args(seed=31, steps=2, sampler="Euler", batch_size=1, **VARIATION),
                                      api_name="/txt2img")
    assert text == tab.infotext
    with Image.open(gallery[0]["image"]) as image:
        assert np.array_equal(pixels(image), pixels(tab.images[0]))


def test_send_images_false_and_styles(app):
    engine, url, _ = app
    styled = post(url, styles=["Photographic"], send_images=False, n_iter=2, subseed=8, subseed_strength=0.3)
    assert styled.status_code == 200 and styled.json()["images"] == []
    info = json.loads(styled.json()["info"])
    assert (info["all_seeds"], info["all_subseeds"]) == ([31, 32], [8, 9])  # n_iter advances both, as in A1111
    expected = engine.apply_styles(Txt2ImgRequest(prompt="a red circle", styles=("Photographic",)))
    assert info["prompt"] == expected.prompt != "a red circle" and info["styles"] == ["Photographic"]
    assert info["negative_prompt"] == expected.negative_prompt and info["infotexts"][0].startswith(expected.prompt)
    unknown = post(url, styles=["No such style"])
    assert unknown.status_code == 422 and unknown.json()["errors"].startswith("styles:")


def test_override_settings_restore_afterwards_and_sd_vae(app, tmp_path, monkeypatch):
    engine, url, state = app
    make_vae(tmp_path / "other-vae.safetensors")
    monkeypatch.setitem(engine.registry.vaes, "other-vae", tmp_path / "other-vae.safetensors")
    overrides = {"sd_model_checkpoint": TINY, "CLIP_stop_at_last_layers": 2, "sd_vae": "other-vae.safetensors"}
    try:
        own = post(url, steps=1)
        other = post(url, steps=1, override_settings=overrides)
        assert other.status_code == 200, other.text
        assert options(url)["CLIP_stop_at_last_layers"] == 1 and options(url)["sd_vae"] == "Automatic"  # restored
        direct = engine.run(Txt2ImgRequest(prompt="a red circle", seed=31, steps=1, guidance_scale=5.0, width=64,
                                           height=64, sampler="Euler", schedule="Automatic", model=TINY, clip_skip=2,
                                           vae="other-vae"))
        assert np.array_equal(pixels(decoded(other)[0]), pixels(direct.images[0]))
        assert not np.array_equal(pixels(decoded(other)[0]), pixels(decoded(own)[0]))
        assert "VAE: other-vae" in json.loads(other.json()["info"])["infotexts"][0]
        # Not restored: the options keep the request's values, and later requests run with them.
        kept = post(url, steps=1, override_settings=overrides, override_settings_restore_afterwards=False)
        assert kept.status_code == 200
        assert options(url)["CLIP_stop_at_last_layers"] == 2 and options(url)["sd_vae"] == "other-vae"
        later = post(url, steps=1, override_settings={"sd_model_checkpoint": TINY})
        assert np.array_equal(pixels(decoded(later)[0]), pixels(direct.images[0]))
        bad = post(url, steps=1, override_settings={"sd_vae": "missing.safetensors"})
        assert bad.status_code == 422 and bad.json()["errors"].startswith("override_settings.sd_vae:")
        assert requests.post(f"{url}sdapi/v1/options", json={"sd_vae": "nope"}, timeout=30).status_code == 422
        requests.post(f"{url}sdapi/v1/options", json={"sd_vae": "None"}, timeout=30).raise_for_status()
        assert options(url)["sd_vae"] == "Automatic"
    finally:
        state.clip_skip, state.vae = 1, ""


def test_progress_during_a_run(app):
    engine, url, _ = app
    box: dict = {}
    body = {**BODY, "steps": 60, "n_iter": 2, "force_task_id": "semantics"}
    thread = threading.Thread(target=lambda: box.update(response=requests.post(f"{url}sdapi/v1/txt2img", json=body)))
    thread.start()
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive():
        progress = requests.get(f"{url}sdapi/v1/progress", params={"id_task": "semantics"}, timeout=30).json()
        if progress["state"]["sampling_step"] >= 2:
            seen.append(progress)
            if len(seen) == 2:
                break
        time.sleep(0.05)
    requests.post(f"{url}sdapi/v1/interrupt", json={"id_task": "semantics"}, timeout=30)
    thread.join(120)
    assert len(seen) == 2, "no progress within 120 s"
    first, later = seen
    state = first["state"]
    assert state["job_count"] == 2 and state["sampling_steps"] == 60 and 2 <= state["sampling_step"] <= 60
    # Progress is over the whole job: the iterations done, and the current one's steps.
    assert 0 < first["progress"] < 1
    assert first["progress"] == pytest.approx((state["job_no"] + state["sampling_step"] / 60) / 2, abs=0.05)
    assert first["eta_relative"] > 0 and later["progress"] >= first["progress"]
    assert box["response"].status_code == 200
    idle = requests.get(f"{url}sdapi/v1/progress", timeout=30).json()
    assert idle["state"]["job_count"] == 0 and idle["progress"] == 0
