"""Single-file checkpoints from the checkpoint folders: scan, family detection, offline loading, every tab.

Tiny SD 1.x checkpoints are built here and saved in the original single-file layout (``ldm_layout``), with a tiny
config folder standing in for the shipped full-size ones, so the app goes through diffusers' real
``from_single_file`` path offline.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.library.infotext import parse_infotext
from backend.models import tiny
from backend.models.checkpoints import CheckpointError, config_dir, detect, scan
from backend.schema.requests import Txt2ImgRequest
from backend.settings import Settings

from .apphost import serve
from .conftest import TINY, endpoint_args
from .ldm_layout import build_sd2, build_sdxl, pipeline_to_ldm, save_config_folder, save_ldm_checkpoint, vae_to_ldm

CKPT, INPAINT_ONLY, SD2, SDXL = "tiny-ckpt", "lone-inpainting", "tiny-sd2-v", "tiny-sdxl"
ARGS = endpoint_args(model=CKPT)


def header_only(path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A safetensors file with these tensor names and shapes (tiny zero tensors where the shape allows)."""
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, str(path))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    folder, configs = root / "Stable-diffusion", root / "configs"
    base = tiny.build_pipeline(seed=5)
    save_ldm_checkpoint(base, folder / f"{CKPT}.safetensors")
    save_ldm_checkpoint(tiny.build_pipeline(seed=6, inpaint=True), folder / f"{CKPT}-inpainting.safetensors")
    save_ldm_checkpoint(tiny.build_pipeline(seed=7, inpaint=True), folder / f"{INPAINT_ONLY}.safetensors")
    save_config_folder(base, configs / "sd15")
    sd2 = build_sd2(seed=5)
    save_ldm_checkpoint(sd2, folder / f"{SD2}.safetensors")
    save_config_folder(sd2, configs / "sd2")
    sdxl = build_sdxl(seed=5)
    save_ldm_checkpoint(sdxl, folder / f"{SDXL}.safetensors")
    save_config_folder(sdxl, configs / "sdxl")
    # An SDXL-structured ControlNet for the tiny SDXL UNet (a local folder, as models.json may list one).
    ControlNetModel.from_unet(sdxl.unet, conditioning_embedding_out_channels=(16, 32)).save_pretrained(
        root / "controlnet-sdxl"
    )
    # Bad files: each is skipped with its own message.
    good = (folder / f"{CKPT}.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (folder / "notes.safetensors").write_text("these are my favourite prompts\n")
    header_only(folder / "style-lora.safetensors", {"lora_unet_down_blocks_0.lora_down.weight": (4, 8)})
    header_only(folder / "vae-only.safetensors", {"first_stage_model.decoder.conv_in.weight": (4, 4, 1, 1)})
    torch.save({"state_dict": {}}, folder / "old.ckpt")
    # A VAE file as A1111 ships them (original layout, no prefix), trained differently: here, another seed.
    other_vae = vae_to_ldm(tiny.build_components(seed=11)["vae"].state_dict(), dict(base.vae.config))
    (root / "vae").mkdir()
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in other_vae.items()},
              str(root / "vae" / "other-vae.safetensors"))
    header_only(root / "vae" / "not-a-vae.safetensors", {"lora_unet_x.lora_down.weight": (4, 8)})
    return root, folder, configs


@pytest.fixture(scope="module")
def engine(folders, tmp_path_factory, cache_dir):
    root, folder, configs = folders
    # The test models file: the tiny model, and SD 1.x ControlNets that fit the tiny architecture.
    data = json.loads(Settings().models_file.read_text())
    data["models"] = [m for m in data["models"] if m["name"] == TINY]
    data["families"]["sd15"]["controlnets"] = {"canny": "builtin:tiny-controlnet-canny"}
    data["families"]["sdxl"]["controlnets"] = {"canny": str(root / "controlnet-sdxl")}
    models_file = root / "models.json"
    models_file.write_text(json.dumps(data))
    settings = Settings(
        offline=True,
        default_model=TINY,
        models_file=models_file,
        checkpoints_dir=os.pathsep.join([str(folder), str(root / "missing")]),
        checkpoint_configs=configs,
        vae_dir=str(root / "vae"),
        output_dir=tmp_path_factory.mktemp("ckpt-out"),
        cache_dir=cache_dir,
    )
    return Engine(settings)


@pytest.fixture(scope="module")
def client(engine):
    with serve(engine) as url:
        yield Client(url, verbose=False)


def test_original_layout_round_trips_through_diffusers_conversion():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    pipe = tiny.build_pipeline(seed=5)
    ldm = pipeline_to_ldm(pipe)
    unet = convert_ldm_unet_checkpoint(ldm, dict(pipe.unet.config))
    assert unet.keys() == pipe.unet.state_dict().keys()
    assert all(torch.equal(unet[k], v) for k, v in pipe.unet.state_dict().items())
    vae = convert_ldm_vae_checkpoint(ldm, dict(pipe.vae.config))
    assert vae.keys() == pipe.vae.state_dict().keys()
    assert all(torch.equal(vae[k].reshape(v.shape), v) for k, v in pipe.vae.state_dict().items())


def test_scan_lists_checkpoints_with_family_and_pairs_inpainting(engine):
    names = engine.registry.names
    assert engine.registry.get(SD2).family == "sd2" and engine.registry.get(SD2).prediction_type == "v_prediction"
    assert engine.registry.get(SDXL).family == "sdxl" and "SDXL checkpoint" in engine.registry.get(SDXL).description
    assert TINY in names and CKPT in names and INPAINT_ONLY in names
    assert f"{CKPT}-inpainting" not in names  # paired: the base model's inpaint variant, not a model of its own
    spec = engine.registry.get(CKPT)
    assert spec.family == "sd15" and spec.kind == "single_file" and not spec.inpainting
    assert spec.inpaint and spec.inpaint.endswith(f"{CKPT}-inpainting.safetensors")
    assert "SD 1.x checkpoint" in spec.description
    lone = engine.registry.get(INPAINT_ONLY)
    assert lone.inpainting and lone.inpaint is None and "inpaint tab only" in lone.description


def test_bad_files_and_folders_are_reported_not_fatal(engine):
    problems = "\n".join(engine.registry.problems)
    assert "truncated.safetensors: the file is truncated" in problems
    assert "notes.safetensors: not a safetensors file" in problems
    assert "style-lora.safetensors: this is a LoRA, not a checkpoint" in problems
    assert "vae-only.safetensors: not a Stable Diffusion checkpoint" in problems
    assert "old.ckpt: refused, a pickle file (.ckpt) can run code" in problems and "SDSTUDIO_ALLOW_PICKLE=1" in problems
    assert "missing does not exist" in problems
    for bad in ("truncated", "notes", "style-lora", "vae-only", "old"):
        assert bad not in engine.registry.names


def test_empty_and_missing_folders_scan_to_nothing(tmp_path):
    assert scan([tmp_path]).checkpoints == [] and scan([tmp_path]).problems == []
    missing = scan([tmp_path / "nope"])
    assert missing.checkpoints == [] and "does not exist" in missing.problems[0]


def test_family_detection_from_tensor_names_and_shapes(tmp_path):
    v2_key = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    header_only(tmp_path / "sd21.safetensors", {v2_key: (8, 1024), conv_in: (8, 4, 3, 3)})
    found = detect(tmp_path / "sd21.safetensors")
    assert (found.family, found.prediction_type, found.label) == ("sd2", "v_prediction", "SD 2.x v")
    (tmp_path / "sd21.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")  # the eps config
    assert detect(tmp_path / "sd21.safetensors").prediction_type == "epsilon"
    (tmp_path / "sd21.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert detect(tmp_path / "sd21.safetensors").prediction_type == "v_prediction"
    xl = {
        "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (8,),
        "model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3),
    }
    header_only(tmp_path / "xl-inpainting.safetensors", xl)
    found = detect(tmp_path / "xl-inpainting.safetensors")
    assert (found.family, found.inpainting, found.label) == ("sdxl", True, "SDXL inpainting")
    flux_key = "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale"
    header_only(tmp_path / "flux.safetensors", {flux_key: (8,)})
    with pytest.raises(CheckpointError, match="does not run"):
        detect(tmp_path / "flux.safetensors")


def test_checkpoint_loads_its_own_weights_offline(engine):
    loaded = engine.cache.model(CKPT)
    source = tiny.build_pipeline(seed=5)
    assert torch.equal(loaded.base.unet.conv_in.weight, source.unet.conv_in.weight)
    assert torch.equal(loaded.base.vae.decoder.conv_out.weight, source.vae.decoder.conv_out.weight)
    token = loaded.base.text_encoder.get_input_embeddings().weight
    assert torch.equal(token, source.text_encoder.get_input_embeddings().weight)
    assert loaded.base.vae._sd_studio_nan_guard  # every loaded model's VAE decode is guarded (tests/test_nan_guard)


def _image_files(tmp_path, test_image):
    src = tmp_path / "in.png"
    test_image.crop((0, 0, 64, 64)).save(src)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)
    return src, mask_path


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("model", [CKPT, SD2, SDXL])
def test_every_tab_generates_with_a_checkpoint(engine, client, tmp_path, test_image, model):
    src, mask_path = _image_files(tmp_path, test_image)
    args = {**ARGS, "model": model}
    gallery, infotext, seed = client.predict(**args, api_name="/txt2img")
    assert seed == 5 and f"Model: {model}" in infotext
    direct = engine.run(Txt2ImgRequest(**{**args, "styles": ()})).images[0]
    assert np.array_equal(_pixels(gallery[0]["image"]), np.asarray(direct.convert("RGB"), dtype=np.int16))
    other, _, _ = client.predict(**{**args, "seed": 6}, api_name="/txt2img")
    assert np.abs(_pixels(other[0]["image"]) - _pixels(gallery[0]["image"])).mean() > 1

    gallery, infotext, _ = client.predict(
        **args, image=handle_file(str(src)), strength=0.6, resize_mode="Just resize", api_name="/img2img"
    )
    assert "Denoising strength: 0.6" in infotext and _pixels(gallery[0]["image"]).shape == (64, 64, 3)

    editor = {"background": handle_file(str(src)), "layers": [], "composite": None}
    gallery, infotext, _, _ = client.predict(
        **args, image=editor, mask=handle_file(str(mask_path)), strength=1.0, mask_blur=0,
        inpaint_area="Only masked", padding=8, api_name="/inpaint",
    )
    assert "Inpaint area: Only masked" in infotext
    out, before = _pixels(gallery[0]["image"]), _pixels(src)
    assert np.array_equal(out[:8], before[:8]) and not np.array_equal(out[20:44, 20:44], before[20:44, 20:44])

    if model != SD2:  # the SD 2.x family lists no ControlNets
        gallery, infotext, _, _, _ = client.predict(
            **args, image=handle_file(str(src)), control_type="canny", preprocessor="auto", conditioning_scale=1.0,
            guidance_start=0.0, guidance_end=1.0, api_name="/controlnet",
        )
        assert "Model: canny" in infotext and f"Model: {model}" in infotext

    grid_args = {k: v for k, v in args.items() if k not in ("sampler", "batch_size")}
    gallery, infotext, _, _, labels = client.predict(
        **grid_args, samplers=["Euler", "DDIM"], steps_list="2", cfg_list="", api_name="/sampler_grid"
    )
    assert len(gallery) == 2 and parse_infotext(infotext).params["Model"] == model
    family_pipeline = {CKPT: "StableDiffusion", SD2: "StableDiffusion", SDXL: "StableDiffusionXL"}[model]
    assert type(engine.cache.pipeline(model, "img2img")).__name__ == f"{family_pipeline}Img2ImgPipeline"


def test_inpaint_uses_the_paired_and_the_lone_inpainting_checkpoints(engine, client, tmp_path, test_image):
    src, mask_path = _image_files(tmp_path, test_image)
    editor = {"background": handle_file(str(src)), "layers": [], "composite": None}
    args = dict(strength=1.0, mask_blur=0, inpaint_area="Whole picture", padding=32, api_name="/inpaint")
    results = {}
    for model in (CKPT, INPAINT_ONLY):
        gallery, infotext, _, _ = client.predict(
            **{**ARGS, "model": model}, image=editor, mask=handle_file(str(mask_path)), **args
        )
        assert f"Model: {model}" in infotext
        results[model] = _pixels(gallery[0]["image"])
    # The paired model ran its 9-channel partner file's UNet (its own UNet has 4 channels).
    pipe = engine.cache.pipeline(CKPT, "inpaint")
    assert pipe.unet.config.in_channels == 9
    assert not np.array_equal(results[CKPT], results[INPAINT_ONLY])
    with pytest.raises(AppError, match=f"{INPAINT_ONLY} is an inpainting model: use it in the inpaint tab"):
        client.predict(**{**ARGS, "model": INPAINT_ONLY}, api_name="/txt2img")


def test_refresh_finds_new_files_and_keeps_serving(engine, client, folders):
    _, folder, _ = folders
    added = folder / "added-later.safetensors"
    save_ldm_checkpoint(tiny.build_pipeline(seed=9), added)
    try:
        with pytest.raises(AppError, match="added-later"):
            client.predict(**{**ARGS, "model": "added-later"}, api_name="/txt2img")
        update, vae_update, encoders_update = client.predict(CKPT, "other-vae", api_name="/refresh_models")
        assert update["value"] == CKPT and ["added-later", "added-later"] in update["choices"]
        assert vae_update["value"] == "other-vae" and ["Model's own", ""] in vae_update["choices"]
        assert encoders_update["choices"] == []  # no text-encoder files in these folders
        _, infotext, _ = client.predict(**{**ARGS, "model": "added-later"}, api_name="/txt2img")
        assert "Model: added-later" in infotext
    finally:
        added.unlink()
        engine.refresh_models()
    assert "added-later" not in engine.registry.names


def test_truncated_header_is_refused(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        detect(path)


def test_shipped_sd15_config_folder_is_complete_offline(tmp_path):
    """The real SD 1.x config folder: tokenizer and component configs read with no network, the real sizes."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    folder = config_dir(Settings(cache_dir=tmp_path), "sd15")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder").hidden_size == 768
    with torch.device("meta"):  # the architecture without allocating its weights
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964


@pytest.mark.slow
def test_real_sd15_size_checkpoint_loads_and_generates_offline(tmp_path):
    """The real architecture's detection and loading path: a random-weight SD 1.5-size file, one 64x64 step."""
    import resource
    import subprocess
    import sys
    import time

    settings = Settings(
        offline=True, default_model=TINY, checkpoints_dir=str(tmp_path / "ckpt"), output_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
    )
    path = tmp_path / "ckpt" / "sd15-random.safetensors"
    # Built in a child process, so this process's peak RSS is the app's loading and generation only.
    build = (
        "import sys; from pathlib import Path; from tests.ldm_layout import save_random_sd15; "
        "from backend.models.checkpoints import config_dir; from backend.settings import Settings; "
        "save_random_sd15(config_dir(Settings(cache_dir=Path(sys.argv[1])), 'sd15'), Path(sys.argv[2]))"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", build, str(tmp_path / "cache"), str(path)], check=True, cwd=root)
    engine = Engine(settings)
    spec = engine.registry.get("sd15-random")
    assert spec.family == "sd15" and spec.kind == "single_file"
    start = time.perf_counter()
    loaded = engine.cache.model("sd15-random")
    load_s = time.perf_counter() - start
    assert sum(p.numel() for p in loaded.base.unet.parameters()) == 859_520_964
    request = Txt2ImgRequest(prompt="a red circle", seed=1, steps=1, width=64, height=64, model="sd15-random")
    start = time.perf_counter()
    image = engine.run(request).images[0]
    run_s = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nSD 1.5-size single file ({path.stat().st_size / 2**30:.2f} GiB float16): load {load_s:.1f} s, "
          f"one 64x64 step {run_s:.1f} s, peak RSS {peak_gib:.2f} GiB")
    assert image.size == (64, 64)


def test_pickle_checkpoint_only_with_the_owners_opt_in(tmp_path):
    torch.save({"state_dict": pipeline_to_ldm(tiny.build_pipeline(seed=5))}, tmp_path / "old.ckpt")
    refused = scan([tmp_path])
    assert refused.checkpoints == [] and "old.ckpt: refused" in refused.problems[0]
    allowed = scan([tmp_path], allow_pickle=True)
    assert [(c.name, c.family) for c in allowed.checkpoints] == [("old", "sd15")] and allowed.problems == []


def test_vae_choice_swaps_only_the_vae_and_round_trips_through_png_info(engine, client):
    assert list(engine.registry.vaes) == ["other-vae"]
    assert any("not-a-vae.safetensors: not a VAE" in p for p in engine.registry.problems)
    own, infotext, _ = client.predict(**ARGS, api_name="/txt2img")
    assert "VAE:" not in infotext
    unet = engine.cache.model(CKPT).base.unet
    swapped, infotext, _ = client.predict(**{**ARGS, "vae": "other-vae"}, api_name="/txt2img")
    assert "VAE: other-vae" in infotext
    assert parse_infotext(infotext).request_fields()["vae"] == "other-vae"  # what PNG info sends back to a tab
    assert engine.cache.model(CKPT).base.unet is unet  # the UNet was not reloaded
    assert np.abs(_pixels(swapped[0]["image"]) - _pixels(own[0]["image"])).mean() > 1
    again, _, _ = client.predict(**ARGS, api_name="/txt2img")  # back to the model's own: the same picture
    assert np.array_equal(_pixels(again[0]["image"]), _pixels(own[0]["image"]))
    with pytest.raises(AppError, match="unknown VAE 'nope'; choose the model's own or one of: other-vae"):
        client.predict(**{**ARGS, "vae": "nope"}, api_name="/txt2img")
