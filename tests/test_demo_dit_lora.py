"""A FLUX LoRA means something: one trained here teaches the shipped demo DiT a colour word it never saw.

"purple" is one token of the T5 tokenizer (``▁purple``) and of the CLIP one that no training caption of the demo DiT
used. A rank-8 LoRA on the transformer's attention (image and text streams), trained in this test for 600 steps on
pictures of magenta shapes captioned "purple" with the model's own objective (rectified flow, the pipeline's shifted
σ), and saved in diffusers' FLUX LoRA format
(``transformer.<module>.lora_A.weight``), must make ``<lora:purple:1>`` turn "a purple circle" magenta through the
app's own loading code; leaving the tag out must give the base model's pixels. Measured: "purple" drawn magenta in 7
of 8 pictures with the LoRA, 0 of 8 without, other colours kept in 3 of 4. With two thirds of the training pictures
magenta instead of half: 4 of 8 after 300 steps; 8 of 8 after 600, but other colours kept in only 2 of 4.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from backend.generation.engine import Engine
from backend.schema.requests import Txt2ImgRequest
from backend.settings import PROJECT_ROOT, Settings
from tests.test_lora_semantic import MEANING, NEW_WORD, count_taught
from training import data
from training import dit_model as dm

pytestmark = pytest.mark.slow
DEMO_DIT = "Demo shapes DiT (offline)"
FOLDER = PROJECT_ROOT / "models" / "demo_dit"
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


def training_set(seed: int, count: int = 256):
    """Packed latents, compressed T5 states and CLIP pooled vectors of magenta shapes captioned "purple"; every other
    picture keeps its plain caption (any colour) so the other colour words stay put."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel

    rng = np.random.default_rng(seed)
    pictures, captions = [], []
    for i in range(count):
        scene = data.sample_scene(rng, colour=None if i % 2 else MEANING, p_position_word=0.0)
        pictures.append(data.render(scene))
        captions.append(scene.caption.replace(f" {MEANING} ", f" {NEW_WORD} ", 1))
    vae = AutoencoderKL.from_pretrained(FOLDER, subfolder="vae").float().eval()
    t5 = T5EncoderModel.from_pretrained(FOLDER, subfolder="text_encoder_2").float().eval()
    clip = CLIPTextModel.from_pretrained(FOLDER, subfolder="text_encoder").float().eval()
    clip_tok = CLIPTokenizer.from_pretrained(FOLDER, subfolder="tokenizer")
    assert dm.t5_tokenizer().tokenize(NEW_WORD) == [f"▁{NEW_WORD}"]  # one token the model was never trained on
    t5_ids = dm.t5_tokenizer()(captions, padding="max_length", max_length=dm.T5_LENGTH, return_tensors="pt").input_ids
    clip_ids = clip_tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        mean = vae.encode(data.to_tensor(np.stack(pictures))).latent_dist.mean
        latents = dm.pack((mean - vae.config.shift_factor) * vae.config.scaling_factor)
        text = dm.CompressedT5(t5)(t5_ids)  # what FluxPipeline's 512 tokens give, on 35 (training/dit_model.py)
        pooled = clip(clip_ids).pooler_output
    return latents, text, pooled


def train_colour_lora(path: Path, steps: int = 600, batch: int = 16, seed: int = 0) -> None:
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    latents, text, pooled = training_set(seed)
    transformer = FluxTransformer2DModel.from_pretrained(FOLDER, subfolder="transformer", torch_dtype=torch.float32)
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=TARGETS))
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    shift = math.exp(dm.mu())  # the pipeline's dynamic shift at 16 image tokens, as the demo DiT was trained
    for _ in range(steps):
        pick = torch.randint(0, len(latents), (batch,))
        x0, noise = latents[pick], torch.randn_like(latents[pick])
        u = torch.sigmoid(torch.randn(batch))
        sigma = shift * u / (1 + (shift - 1) * u)
        xt = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        velocity = transformer(
            hidden_states=xt,
            encoder_hidden_states=text[pick],
            pooled_projections=pooled[pick],
            timestep=sigma,
            guidance=torch.ones(batch),  # ground-truth velocity is the conditional one: Distilled CFG 1
            txt_ids=dm.text_ids(dm.COMPRESSED),
            img_ids=dm.image_ids(),
            joint_attention_kwargs={"attention_mask": dm.attention_bias(1)},
            return_dict=False,
        )[0]
        loss = F.mse_loss(velocity, noise - x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = {f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    save_file(state, path)


@pytest.fixture
def one_thread():
    """Two threads on a busy 2-core machine crawl; this model's tensors are too small to share out."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_lora_trained_here_teaches_the_demo_dit_a_colour_word(tmp_path, one_thread):
    loras = tmp_path / "loras"
    loras.mkdir()
    train_colour_lora(loras / f"{NEW_WORD}.safetensors")
    engine = Engine(Settings(offline=True, output_dir=tmp_path / "out", save_outputs=False, lora_dirs=str(loras)))

    def draw(prompt: str, seed: int):
        request = Txt2ImgRequest(prompt=prompt, seed=seed, steps=20, guidance_scale=1.0, width=64, height=64)
        return engine.run(request.replace(model=DEMO_DIT, sampler="Euler", schedule="Automatic")).images[0]

    taught, base = count_taught(draw)  # and the tag dropped: the base model's pixels exactly
    kept = sum(
        data.classify_picture(draw(f"a {colour} circle on a black background <lora:{NEW_WORD}:1>", 7))["colour"]
        == colour
        for colour in ("red", "green", "blue", "yellow")
    )
    print(f"'{NEW_WORD}' drawn {MEANING}: {taught}/8 with the LoRA, {base}/8 without; other colours kept {kept}/4")
    assert taught >= 6 and taught - base >= 4, (taught, base)
    assert kept >= 3, kept  # the LoRA taught one word, not "everything is magenta"
