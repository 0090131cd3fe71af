"""Every single-file layout of the tiny FLUX and SD3 (all-in-one, transformer-only, GGUF Q8_0, fp8) through img2img
and inpaint, not only txt2img: each gives the folder model's picture within its layout's rounding, inpaint keeps the
unmasked pixels exactly; and the A1111 API's ``override_settings.sd_model_checkpoint`` picks such a file.

Two layouts run by default (one per family, one of them GGUF); the others are the same code paths and run with
``-m slow``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from backend.generation.engine import Engine
from backend.models import tiny_dit
from backend.schema.requests import Img2ImgRequest, InpaintRequest
from backend.settings import Settings

from .conftest import pixels
from .dit_files import save_all_in_one, save_gguf, save_parts, save_transformer
from .ldm_layout import save_config_folder

FLUX = "Tiny FLUX (offline test model)"
SD3 = "Tiny SD3 (offline test model)"
# (mean, max) |Δ| in 0-255 levels against the folder model, as tests/test_dit_files.py measures them for txt2img.
EXACT, Q8_0, FP8_CLOSE = (0.01, 1), (0.5, 4), (3.0, 24)
LAYOUTS = [
    ("flux-dev-Q8_0", FLUX, Q8_0),
    ("sd3-aio", SD3, EXACT),
    pytest.param("flux-aio", FLUX, EXACT, marks=pytest.mark.slow),
    pytest.param("flux-dev", FLUX, EXACT, marks=pytest.mark.slow),
    pytest.param("flux-dev-fp8", FLUX, FP8_CLOSE, marks=pytest.mark.slow),
    pytest.param("sd3-medium", SD3, EXACT, marks=pytest.mark.slow),
    pytest.param("sd3-medium-Q8_0", SD3, Q8_0, marks=pytest.mark.slow),
    pytest.param("sd3-medium-fp8", SD3, FP8_CLOSE, marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def engine(cache_dir, tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("dit-layouts")
    ckpt, unet, te, vae = (root / n for n in ("checkpoints", "unet", "te", "vae"))
    tiny = {kind: DiffusionPipeline.from_pretrained(tiny_dit.ensure(cache_dir / f"tiny-{kind}", kind))
            for kind in ("flux", "sd3")}
    for kind, pipe in tiny.items():
        save_config_folder(pipe, root / "configs" / kind)
        save_all_in_one(pipe, kind, ckpt / f"{kind}-aio.safetensors")
    flux, sd3 = tiny["flux"], tiny["sd3"]
    save_transformer(flux, "flux", unet / "flux-dev.safetensors")
    save_transformer(flux, "flux", unet / "flux-dev-fp8.safetensors", torch.float8_e4m3fn)
    save_gguf(flux, "flux", unet / "flux-dev-Q8_0.gguf")
    save_transformer(sd3, "sd3", unet / "sd3-medium.safetensors")
    save_transformer(sd3, "sd3", unet / "sd3-medium-fp8.safetensors", torch.float8_e4m3fn)
    save_gguf(sd3, "sd3", unet / "sd3-medium-Q8_0.gguf")
    save_parts(flux, "flux", te, vae, "ae")
    save_parts(sd3, "sd3", te / "sd3", vae, "sd3_vae")
    for name in ("clip_l", "clip_g", "t5xxl_fp16"):  # the tiny SD3's encoders are other sizes than the FLUX ones
        if (te / "sd3" / f"{name}.safetensors").exists():
            (te / "sd3" / f"{name}.safetensors").rename(te / f"sd3_{name}.safetensors")
    settings = Settings(
        offline=True, checkpoints_dir=str(ckpt), unet_dir=str(unet), text_encoder_dir=str(te), vae_dir=str(vae),
        checkpoint_configs=root / "configs", output_dir=tmp_path_factory.mktemp("dit-layouts-out"),
        cache_dir=cache_dir, save_outputs=False, max_models=3,
    )
    return Engine(settings)


def requests(model: str, image: Image.Image) -> dict[str, Img2ImgRequest]:
    common = dict(prompt="a red circle on a blue background", seed=7, steps=3, sampler="Euler", schedule="Automatic",
                  model=model, guidance_scale=4.5 if "sd3" in model.lower() else 1.0, image=image, width=0, height=0)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (32, 16, 64, 48))
    return {"img2img": Img2ImgRequest(**common, strength=0.7),
            "inpaint": InpaintRequest(**common, strength=0.9, mask=mask, mask_blur=0)}


@pytest.fixture(scope="module")
def references(engine, test_image) -> dict[str, dict[str, np.ndarray]]:
    return {model: {tab: pixels(engine.run(request).images[0]) for tab, request in requests(model, test_image).items()}
            for model in (FLUX, SD3)}  # fmt: skip


@pytest.mark.parametrize(("model", "folder_model", "tolerance"), LAYOUTS)
def test_each_layout_runs_img2img_and_inpaint_like_the_folder_model(engine, references, test_image, model,
                                                                     folder_model, tolerance):
    for tab, request in requests(model, test_image).items():
        picture, reference = pixels(engine.run(request).images[0]), references[folder_model][tab]
        difference, largest = np.abs(picture - reference).mean(), np.abs(picture - reference).max()
        print(f"{model} {tab}: mean |Δ| {difference:.3f}, max {largest} (0-255 levels)")
        assert picture.shape == (64, 96, 3)  # the input picture's size
        assert difference <= tolerance[0] and largest <= tolerance[1], (tab, difference, largest)
        if tab == "inpaint":
            inside, source = np.asarray(request.mask) > 0, pixels(test_image)
            assert np.array_equal(picture[~inside], source[~inside])  # unmasked pixels kept exactly
            assert not np.array_equal(picture[inside], source[inside])


@pytest.mark.api
def test_the_a1111_api_picks_a_single_file_by_sd_model_checkpoint(engine, test_image):
    import webuiapi

    from .apphost import serve

    with serve(engine, api=True) as url:
        api = webuiapi.WebUIApi(baseurl=f"{url}sdapi/v1")
        body = dict(images=[test_image], prompt="a red circle on a blue background", seed=7, steps=3, cfg_scale=1.0,
                    width=96, height=64, sampler_name="Euler", scheduler="automatic", denoising_strength=0.7)
        from_file = api.img2img(**body, override_settings={"sd_model_checkpoint": "flux-dev-Q8_0"})
        from_folder = api.img2img(**body, override_settings={"sd_model_checkpoint": FLUX})
    assert from_file.info["sd_model_name"] == "flux-dev-Q8_0" and from_folder.info["sd_model_name"] == FLUX
    assert "Model: flux-dev-Q8_0" in from_file.info["infotexts"][0]
    difference = np.abs(pixels(from_file.image) - pixels(from_folder.image))
    assert difference.mean() <= Q8_0[0] and difference.max() <= Q8_0[1]
    assert Path(engine.registry.get("flux-dev-Q8_0").source).suffix == ".gguf"
