"""A LoRA means something: one trained here teaches the shipped demo model a colour word it never saw.

"purple" is a single token of the demo model's tokenizer that no training caption used. A rank-4 LoRA on the text
encoder and the UNet's attention, trained in this test for a few hundred steps on pictures of magenta shapes
captioned "purple", and saved in Kohya's key format (what A1111 and Civitai files use), must make
``<lora:purple:1>`` turn "a purple circle" magenta through the app's own loading code, and leaving the tag out must
give back the base model's pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.schema.requests import Txt2ImgRequest
from backend.settings import PROJECT_ROOT, Settings
from training import data

pytestmark = pytest.mark.slow
DEMO = "Demo shapes (offline)"
DEMO_DIR = PROJECT_ROOT / "models" / "demo"
NEW_WORD, MEANING = "purple", "magenta"
SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("blue", "black", "yellow", "white", "green", "cyan")


def count_taught(draw: Callable[[str, int], Image.Image]) -> tuple[int, int]:
    """(with the LoRA, without) how many of 8 pictures of ``NEW_WORD`` ``draw`` paints ``MEANING``; each time also
    checks that dropping the tag from the prompt gives the base model's pixels back exactly (the LoRA disabled)."""
    taught = base = 0
    for k in range(8):
        prompt, seed = f"a {NEW_WORD} {SHAPES[k % 4]} on a {BACKGROUNDS[k % 6]} background", 100 + k
        plain = draw(prompt, seed)
        with_lora = draw(f"{prompt} <lora:{NEW_WORD}:1>", seed)
        base += data.classify_picture(plain)["colour"] == MEANING
        taught += data.classify_picture(with_lora)["colour"] == MEANING
        assert np.array_equal(np.asarray(draw(prompt, seed)), np.asarray(plain))
    return taught, base


def train_colour_lora(path: Path, steps: int = 300, batch: int = 16, seed: int = 0) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(DEMO_DIR, subfolder="tokenizer")
    assert tokenizer.tokenize(NEW_WORD) == [f"{NEW_WORD}</w>"]  # one token the model has never been trained on
    vae = AutoencoderKL.from_pretrained(DEMO_DIR, subfolder="vae").float()
    unet = UNet2DConditionModel.from_pretrained(DEMO_DIR, subfolder="unet").float()
    encoder = CLIPTextModel.from_pretrained(DEMO_DIR, subfolder="text_encoder").float()
    noise_schedule = DDPMScheduler.from_pretrained(DEMO_DIR, subfolder="scheduler")
    for module in (vae, unet, encoder):
        module.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))

    # Magenta shapes captioned "purple"; every third picture keeps a plain caption so the other colours stay put.
    rng = np.random.default_rng(seed)
    pictures, captions = [], []
    for i in range(256):
        scene = data.sample_scene(rng, colour=None if i % 3 == 2 else MEANING, p_position_word=0.0)
        pictures.append(data.render(scene))
        captions.append(scene.caption.replace(f" {MEANING} ", f" {NEW_WORD} ", 1))
    with torch.no_grad():
        latents = vae.encode(data.to_tensor(np.stack(pictures))).latent_dist.mean * vae.config.scaling_factor
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    params = [p for m in (unet, encoder) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    for _ in range(steps):
        pick = torch.randint(0, len(captions), (batch,))
        noise = torch.randn_like(latents[pick])
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (batch,))
        noisy = noise_schedule.add_noise(latents[pick], noise, t)
        loss = F.mse_loss(unet(noisy, t, encoder(ids[pick])[0]).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    state.update({f"text_encoder.text_model.{k}": v for k, v in get_peft_model_state_dict(encoder).items()})
    kohya = convert_state_dict_to_kohya(state)
    save_file({k.replace("lora_te1_", "lora_te_"): v.contiguous() for k, v in kohya.items()}, path)


def test_a_lora_trained_here_teaches_the_demo_model_a_colour_word(tmp_path):
    loras = tmp_path / "loras"
    loras.mkdir()
    train_colour_lora(loras / f"{NEW_WORD}.safetensors")
    engine = Engine(Settings(offline=True, output_dir=tmp_path / "out", save_outputs=False, lora_dirs=str(loras)))

    def draw(prompt: str, seed: int):
        request = Txt2ImgRequest(prompt=prompt, seed=seed, steps=16, guidance_scale=6.0, width=64, height=64)
        return engine.run(request.replace(model=DEMO, sampler="DPM++ 2M", schedule="Automatic")).images[0]

    taught, base = count_taught(draw)
    print(f"'{NEW_WORD}' drawn {MEANING}: {taught}/8 with the LoRA, {base}/8 without")
    assert taught >= 6 and taught - base >= 4, (taught, base)
