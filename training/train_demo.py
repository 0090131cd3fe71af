"""Train SD Studio's demo model: a tiny Stable Diffusion 1.x that really draws, from scratch.

The world is ``training/data.py``'s synthetic captioned pictures (a flat shape of one palette colour
on a background of another). Everything has the SD 1.x structure, so the result loads through the
ordinary ``StableDiffusionPipeline.from_pretrained`` path:

* ``AutoencoderKL`` with 4 down blocks (8x: 64x64 pictures -> 8x8x4 latents), ``scaling_factor``
  measured from the latents' std;
* ``CLIPTextModel`` (trained jointly with the UNet) + the project's ``backend.models.tiny`` CLIPTokenizer;
* ``UNet2DConditionModel`` with cross-attention, epsilon prediction, scaled-linear DDPM betas;
* variants: a 9-channel inpainting UNet (extra input channels zero-initialised, random masks) and a
  canny ``ControlNetModel.from_unet``.

Stages, run in order by ``--stage all`` (the default) or one at a time:

``vae``         train the autoencoder (L1 + MSE + tiny KL) on freshly generated pictures
``latents``     encode a fixed picture set once (posterior mean/std cached under ``--cache-dir``)
``unet``        UNet + text encoder on the cached latents, caption dropout 10%, min-SNR weighting,
                EMA; exports the pipeline to ``--out`` at every checkpoint
``inpaint``     9-channel inpainting UNet from the base UNet -> ``<out>/unet_inpaint``
``controlnet``  canny ControlNet from the base UNet -> ``<out>/controlnet_canny``
``eval``        run ``training/evaluate.py`` on ``--out`` and write the figures into the model card

Every stage is seeded and resumable: rerunning the same command continues from the last checkpoint
in ``--checkpoint-dir`` (saved every ``--save-every`` minutes; a finished stage leaves a small final
file and is skipped). Checkpoints hold only the current stage's weights, EMA and optimizer state.

Usage (from the repository root)::

    python training/train_demo.py --quick                      # smoke test, a few minutes
    python training/train_demo.py --quick --out models/demo    # ... writing the app's model folder
    OMP_NUM_THREADS=2 nice -n 10 python training/train_demo.py --threads 2   # the full run, ~3 h on 2 cores

Uses the GPU when one is present (``--device`` to override).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Schedules. "full" is sized for about two hours on ONE CPU thread (measured ~0.3 s per VAE step
# at batch 16 and ~0.5 s per UNet step at batch 64); "quick" is a smoke test.

SCHEDULES = {
    "full": dict(
        vae_steps=3000,
        vae_batch=16,
        vae_lr=1e-3,
        n_latents=30000,
        decoder_steps=1500,
        decoder_lr=3e-4,
        unet_steps=4000,
        unet_batch=64,
        unet_lr=1e-3,
        refine_steps=4000,
        refine_lr=5e-4,
        refine_fragments=0.2,
        warmup=300,
        ema=0.999,
        inpaint_steps=1000,
        inpaint_batch=48,
        inpaint_lr=5e-4,
        controlnet_steps=2000,
        controlnet_batch=48,
        controlnet_lr=1e-3,
        eval_prompts=64,
    ),
    "quick": dict(
        vae_steps=60,
        vae_batch=8,
        vae_lr=1e-3,
        n_latents=512,
        decoder_steps=10,
        decoder_lr=3e-4,
        unet_steps=80,
        unet_batch=16,
        unet_lr=1e-3,
        refine_steps=20,
        refine_lr=5e-4,
        refine_fragments=0.2,
        warmup=10,
        ema=0.99,
        inpaint_steps=15,
        inpaint_batch=8,
        inpaint_lr=5e-4,
        controlnet_steps=15,
        controlnet_batch=8,
        controlnet_lr=5e-4,
        eval_prompts=8,
    ),
}
CAPTION_DROPOUT = 0.1
# Half the ControlNet's captions are empty, as the ControlNet paper trains: with full captions the text
# already fixes colours, shape and side, and v2's first ControlNet learned to add nothing (edge IoU 0.09
# with it vs 0.11 without; training/README.md).
CONTROLNET_CAPTION_DROPOUT = 0.5
MIN_SNR_GAMMA = 5.0
MISMATCH_P, MISMATCH_T = 0.5, 400  # caption swapping at low noise (see mismatch_low_noise_captions)
LATENT_SIZE = data.RESOLUTION // 8
STORE_DTYPE = torch.float16  # shipped UNet/VAE/variant weights (keeps the whole folder under 20 MB)


# ---------------------------------------------------------------------------------------------
# Model definitions


def build_tokenizer():
    from backend.models.tiny import build_tokenizer as _build

    return _build()


def new_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        # 4 groups, not 16: with 16 the first block's GroupNorm normalises each channel alone (instance norm),
        # the known cause of blob ("droplet") artifacts; measured: at 600 steps 16 groups gave 12.9 dB PSNR and a
        # speck in every round trip, 4 groups 22.8 dB and 29% (training/README.md).
        norm_num_groups=4,
        sample_size=data.RESOLUTION,
    )


def new_text_encoder(tokenizer):
    from backend.models.tiny import build_text_encoder

    return build_text_encoder(tokenizer, width=64)


def new_unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(64, 96),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def train_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )


def pipeline_scheduler():
    """SD 1.x's scheduler config (the same one ``backend.models.tiny`` ships)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def n_params(*modules) -> float:
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e6


# ---------------------------------------------------------------------------------------------
# Helpers


class Ctx:
    def __init__(self, args):
        self.args = args
        self.cfg = dict(SCHEDULES["quick" if args.quick else "full"])
        for key in list(self.cfg):
            override = getattr(args, key, None)
            if override is not None:
                self.cfg[key] = override
        self.seed = args.seed
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.ckpt = Path(args.checkpoint_dir)
        self.cache = Path(args.cache_dir)
        self.out = Path(args.out)
        self.logs = Path(args.log_dir)
        for d in (self.ckpt, self.cache, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.tokenizer = build_tokenizer()
        self.save_every = args.save_every * 60.0
        self.log_file = self.logs / ("quick.jsonl" if args.quick else "train.jsonl")

    def log(self, **record):
        record["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def gen(self, stage: str, step: int) -> torch.Generator:
        """A generator fixed by (seed, stage, step): resuming replays exactly the same batches."""
        salt = {"vae": 1, "unet": 2, "inpaint": 3, "controlnet": 4, "decoder": 5, "refine": 6}[stage]
        return torch.Generator().manual_seed((self.seed * 1_000_003 + salt * 10_000_019 + step) % (2**63))

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids


def progress(total: int, initial: int, desc: str):
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        mininterval=1.0 if interactive else 60.0,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def save_atomic(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def compact_optimizer_state(state: dict) -> dict:
    """Optimizer state with its moment tensors in bfloat16 (halves the checkpoint size)."""
    out = {"param_groups": state["param_groups"], "state": {}}
    for k, v in state["state"].items():
        out["state"][k] = {n: (t.to(torch.bfloat16) if torch.is_tensor(t) and t.ndim > 0 else t) for n, t in v.items()}
    return out


def restore_optimizer_state(opt, state: dict):
    for v in state["state"].values():
        for n, t in list(v.items()):
            if torch.is_tensor(t) and t.dtype == torch.bfloat16:
                v[n] = t.float()
    opt.load_state_dict(state)


def lr_at(step: int, base: float, warmup: int, total: int | None = None, final: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if total is None:
        return base
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * p)))


class EMA:
    def __init__(self, params, decay: float):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    def state_dict(self):
        return [t.clone() for t in self.shadow]

    def load_state_dict(self, tensors):
        for s, t in zip(self.shadow, tensors, strict=True):
            s.copy_(t)

    @torch.no_grad()
    def copy_to(self, params):
        for p, s in zip(params, self.shadow, strict=True):
            p.copy_(s)


def pictures(seed: int, indices) -> np.ndarray:
    return np.stack([data.sample(seed, int(i))[0] for i in indices])


# ---------------------------------------------------------------------------------------------
# Stage: VAE


def vae_final(ctx) -> Path:
    return ctx.ckpt / "vae_final.safetensors"


def load_vae(ctx):
    from safetensors.torch import load_file

    vae = new_vae()
    state = load_file(vae_final(ctx))
    sf = float(state.pop("__scaling_factor__").item()) if "__scaling_factor__" in state else None
    vae.load_state_dict(state)
    if sf is not None:
        vae.register_to_config(scaling_factor=sf)
    return vae.to(ctx.device).eval()


def stage_vae(ctx):
    if vae_final(ctx).exists():
        print("[vae] done already:", vae_final(ctx))
        return
    cfg, dev = ctx.cfg, ctx.device
    torch.manual_seed(ctx.seed)
    vae = new_vae().to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["vae_lr"], weight_decay=0.0)
    ck = ctx.ckpt / "vae.pt"
    step = 0
    if ck.exists():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        vae.load_state_dict(state["model"])
        restore_optimizer_state(opt, state["opt"])
        step = state["step"]
        print(f"[vae] resumed at step {step}")
    print(f"[vae] {n_params(vae):.3f}M params, {cfg['vae_steps']} steps x batch {cfg['vae_batch']} on {dev}")
    total, last_save = cfg["vae_steps"], time.time()
    bar = progress(total, step, "vae")
    ema_loss = None
    while step < total:
        g = ctx.gen("vae", step)
        start = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        pics, _, _ = data.batch(ctx.seed + 1000, start, cfg["vae_batch"])  # fresh pictures every step
        x = data.to_tensor(pics).to(dev)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg["vae_lr"], 100, total)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(dev)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-7 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.4f}", refresh=False)
        if time.time() - last_save > ctx.save_every or step == total:
            save_atomic({"model": vae.state_dict(), "opt": compact_optimizer_state(opt.state_dict()), "step": step}, ck)
            last_save = time.time()
            ctx.log(stage="vae", step=step, loss=ema_loss)
    bar.close()
    # PSNR on held-out pictures, then the final weights (scaling factor measured in stage latents).
    vae.eval()
    with torch.no_grad():
        pics, _, _ = data.batch(ctx.seed + 7, 0, 64)
        x = data.to_tensor(pics).to(dev)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = F.mse_loss((rec + 1) / 2, (x + 1) / 2).item()
    psnr = 10 * math.log10(1 / max(mse, 1e-10))
    print(f"[vae] held-out PSNR {psnr:.2f} dB")
    ctx.log(stage="vae", step=step, psnr=psnr)
    from safetensors.torch import save_file

    save_file({k: v.contiguous().cpu() for k, v in vae.state_dict().items()}, str(vae_final(ctx)))
    (ctx.ckpt / "vae_metrics.json").write_text(json.dumps({"psnr_db": psnr, "steps": step, "params_m": n_params(vae)}))
    ck.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Stage: latent cache


def latents_path(ctx) -> Path:
    return ctx.cache / f"latents_{ctx.cfg['n_latents']}_seed{ctx.seed}.pt"


def vae_fingerprint(state: dict) -> str:
    """Identifies the VAE weights a latent cache was encoded with."""
    import hashlib

    h = hashlib.sha1()
    for key in ("encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight"):
        h.update(state[key].detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def load_cache(ctx) -> dict:
    from safetensors.torch import load_file

    cache = torch.load(latents_path(ctx), map_location="cpu", weights_only=False)
    if cache.get("vae") != vae_fingerprint(load_file(vae_final(ctx))):
        raise RuntimeError(f"{latents_path(ctx)} was encoded with another VAE: delete it and rerun")
    return cache


def stage_latents(ctx):
    from safetensors.torch import load_file, save_file

    path = latents_path(ctx)
    if path.exists():
        state = load_file(vae_final(ctx))
        cache = torch.load(path, map_location="cpu", weights_only=False)
        if "__scaling_factor__" in state and cache.get("vae") == vae_fingerprint(state):
            print("[latents] cached:", path)
            return
        print("[latents] cache is stale (another VAE): encoding again")

    vae = load_vae(ctx)
    n, bs = ctx.cfg["n_latents"], 256
    means, stds, captions = [], [], []
    with torch.no_grad():
        for start in tqdm(range(0, n, bs), desc="latents", mininterval=10, file=sys.stderr):
            pics, caps, _ = data.batch(ctx.seed, start, min(bs, n - start))
            post = vae.encode(data.to_tensor(pics).to(ctx.device)).latent_dist
            means.append(post.mean.cpu())
            stds.append(post.std.cpu())
            captions += caps
    mean, std = torch.cat(means), torch.cat(stds)
    sample = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(ctx.seed))
    scaling = 1.0 / sample.std().item()
    print(
        f"[latents] {n} latents {tuple(mean.shape[1:])}, std {sample.std().item():.4f} -> scaling_factor {scaling:.5f}"
    )
    # Store the scaling factor with the final VAE weights so every later stage sees the same one.
    state = load_file(vae_final(ctx))
    state["__scaling_factor__"] = torch.tensor(scaling)
    save_file(state, str(vae_final(ctx)))
    ids = ctx.tokenize(captions)
    save_atomic(
        {
            "mean": mean.half(),
            "std": std.half(),
            "ids": ids.to(torch.int32),
            "scaling_factor": scaling,
            "vae": vae_fingerprint(state),
        },
        path,
    )


# ---------------------------------------------------------------------------------------------
# Stage: decoder fine-tune (the encoder frozen, so the latent cache and the UNet stay valid)


def vae_round_trip(vae, seed: int, n: int = 128) -> dict:
    """PSNR and the share of pictures with an off-palette speck (``data.specks``) after encode → decode."""
    import numpy as np

    samples = [data.sample(seed, i) for i in range(n)]
    pictures = np.stack([pic for pic, _, _ in samples])
    with torch.no_grad():
        x = data.to_tensor(pictures).to(next(vae.parameters()).device)
        decoded = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    trips = ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    mse = float(((trips.astype(np.float64) - pictures) ** 2).mean())
    specks = [data.specks(t, sc.colour, sc.background) > 0 for t, (_, _, sc) in zip(trips, samples, strict=True)]
    return {"psnr_db": 10 * math.log10(255**2 / max(mse, 1e-9)), "with_speck": float(np.mean(specks))}


def stage_decoder(ctx):
    """Train the decoder on fresh pictures' latents with a little noise added: the UNet's latents are never exactly
    the encoder's, and the v2 VAE's round trips still had off-palette specks in 6% of pictures (training/README.md).
    The encoder (and its latent space) does not change."""
    done = ctx.ckpt / "decoder_done.json"
    if done.exists():
        print("[decoder] done already:", done)
        return
    from safetensors.torch import save_file

    cfg, dev = ctx.cfg, ctx.device
    vae = load_vae(ctx)
    scaling = vae.config.scaling_factor
    before = vae_round_trip(vae, ctx.seed + 7)
    for module in (vae.encoder, vae.quant_conv):
        module.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["decoder_lr"], weight_decay=0.0)
    ck = ctx.ckpt / "decoder.pt"
    step = 0
    if ck.exists():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        vae.load_state_dict(state["model"])
        restore_optimizer_state(opt, state["opt"])
        step = state["step"]
        print(f"[decoder] resumed at step {step}")
    total, last_save, ema_loss = cfg["decoder_steps"], time.time(), None
    print(f"[decoder] {total} steps x batch {cfg['vae_batch']}; before: {before}")
    bar = progress(total, step, "decoder")
    vae.decoder.train()
    while step < total:
        g = ctx.gen("decoder", step)
        start = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        pics, _, _ = data.batch(ctx.seed + 2000, start, cfg["vae_batch"])
        x = data.to_tensor(pics).to(dev)
        with torch.no_grad():
            mean = vae.encode(x).latent_dist.mean
        # Noise up to 0.3 of the latents' std (in the UNet's scaled units), per picture.
        sigma = torch.rand(mean.shape[0], 1, 1, 1, generator=g).to(dev) * 0.3 / scaling
        z = mean + sigma * torch.randn(mean.shape, generator=g).to(dev)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg["decoder_lr"], 50, total)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.4f}", refresh=False)
        if time.time() - last_save > ctx.save_every or step == total:
            save_atomic({"model": vae.state_dict(), "opt": compact_optimizer_state(opt.state_dict()), "step": step}, ck)
            last_save = time.time()
            ctx.log(stage="decoder", step=step, loss=ema_loss)
    bar.close()
    vae.eval()
    after = vae_round_trip(vae, ctx.seed + 7)
    print(f"[decoder] after: {after}")
    state = {k: v.contiguous().cpu() for k, v in vae.state_dict().items()}
    state["__scaling_factor__"] = torch.tensor(scaling)
    save_file(state, str(vae_final(ctx)))
    done.write_text(json.dumps({"steps": step, "before": before, "after": after}))
    ctx.log(stage="decoder", step=step, before=before, after=after)
    ck.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Stage: UNet + text encoder


def unet_final(ctx) -> Path:
    """The first cycle's EMA weights."""
    return ctx.ckpt / "unet_final.pt"


def refined_final(ctx) -> Path:
    """The second (warm-restart) cycle's EMA weights."""
    return ctx.ckpt / "unet_refined.pt"


def base_final(ctx) -> Path:
    """The finished base: the refined weights when the schedule has a second cycle."""
    return refined_final(ctx) if ctx.cfg["refine_steps"] > 0 else unet_final(ctx)


def min_snr_weights(noise_sched, t: torch.Tensor) -> torch.Tensor:
    ac = noise_sched.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=MIN_SNR_GAMMA) / snr


def load_base(ctx, path: Path | None = None):
    """(unet, text_encoder) of the finished base stage, EMA weights."""
    state = torch.load(path or base_final(ctx), map_location="cpu", weights_only=False)
    unet, te = new_unet(), new_text_encoder(ctx.tokenizer)
    unet.load_state_dict(state["unet"])
    te.load_state_dict(state["text_encoder"])
    return unet.to(ctx.device), te.to(ctx.device)


def base_steps(ctx) -> int:
    """UNet steps behind the finished base, both cycles counted."""
    return int(torch.load(base_final(ctx), map_location="cpu", weights_only=False)["step"])


def latent_batch(ctx, cache, g, batch: int, dropout: float = 0.0):
    """A batch of cached latents and their caption ids; a ``dropout`` share of the captions made empty."""
    n = cache["mean"].shape[0]
    idx = torch.randint(0, n, (batch,), generator=g)
    mean, std = cache["mean"][idx].float(), cache["std"][idx].float()
    lat = (mean + std * torch.randn(mean.shape, generator=g)) * cache["scaling_factor"]
    ids = cache["ids"][idx].long()
    if dropout:
        drop = torch.rand(batch, generator=g) < dropout
        ids[drop] = ctx.empty_ids
    return idx, lat.to(ctx.device), ids.to(ctx.device)


def mismatch_low_noise_captions(ids: torch.Tensor, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Give some low-noise samples another sample's caption.

    In this world the caption pins the colours so reliably that, untreated, the model trusts it over
    a barely-noised picture: img2img at strength 0.2 with a new prompt then repaints everything, as
    classifier-free guidance amplifies the conflict. Swapping captions with probability falling from
    ``MISMATCH_P`` at t=0 to 0 at ``MISMATCH_T`` teaches it that at low noise the picture decides, so
    low strengths keep the input; txt2img is unaffected (its low-noise steps only refine a picture
    that already matches the prompt).
    """
    p = MISMATCH_P * torch.clamp((MISMATCH_T - t.float().cpu()) / MISMATCH_T, 0, 1)
    swap = torch.rand(ids.shape[0], generator=g) < p
    if swap.any():
        other = torch.randperm(ids.shape[0], generator=g).to(ids.device)
        ids = ids.clone()
        ids[swap.to(ids.device)] = ids[other][swap.to(ids.device)]
    return ids


def with_fragments(ctx, idx: torch.Tensor, ids: torch.Tensor, share: float, g: torch.Generator) -> torch.Tensor:
    """``ids`` with a ``share`` of its captions (not the emptied ones) replaced by fragments of their pictures."""
    pick = (torch.rand(len(idx), generator=g) < share).tolist()
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=g)))
    ids = ids.clone()
    for row, (i, chosen) in enumerate(zip(idx.tolist(), pick, strict=True)):
        if chosen and not torch.equal(ids[row].cpu(), ctx.empty_ids):
            ids[row] = ctx.tokenize([data.fragment(data.scene(ctx.seed, i), rng)])[0].to(ids.device)
    return ids


def stage_unet(ctx):
    """First cycle: UNet and text encoder from scratch."""
    if unet_final(ctx).exists():
        print("[unet] done already:", unet_final(ctx))
        return
    torch.manual_seed(ctx.seed + 1)
    unet, te = new_unet().to(ctx.device), new_text_encoder(ctx.tokenizer).to(ctx.device)
    cfg = ctx.cfg
    train_base(ctx, "unet", unet, te, cfg["unet_steps"], cfg["unet_lr"], cfg["warmup"], unet_final(ctx))


def stage_refine(ctx):
    """Second cycle (a warm restart): from the first cycle's EMA weights, a fresh optimizer and EMA and a
    second cosine cycle at a lower rate. Measured on v2: position words were still being learned when the
    first cycle's rate had decayed (the share on the named side rose 25% -> 50% -> 59% at steps 748, 2597
    and 4000), colours and shapes long done."""
    cfg = ctx.cfg
    if cfg["refine_steps"] <= 0:
        print("[refine] not in this schedule")
        return
    if refined_final(ctx).exists():
        print("[refine] done already:", refined_final(ctx))
        return
    unet, te = load_base(ctx, unet_final(ctx))
    first = int(torch.load(unet_final(ctx), map_location="cpu", weights_only=False)["step"])
    steps, lr, warmup = cfg["refine_steps"], cfg["refine_lr"], cfg["warmup"]
    train_base(ctx, "refine", unet, te, steps, lr, warmup, refined_final(ctx), first, cfg["refine_fragments"])


def train_base(
    ctx, stage, unet, te, total: int, lr: float, warmup: int, final: Path, offset: int = 0, fragments: float = 0.0
):
    """One cosine cycle of the base UNet + text encoder; resumable from ``<stage>.pt``. ``offset`` counts
    the steps of earlier cycles (for the log and the exported folder's step count); a ``fragments`` share of
    the captions is replaced by a short one still true of the picture (``data.fragment``)."""
    cfg, dev = ctx.cfg, ctx.device
    cache = load_cache(ctx)
    ctx.empty_ids = ctx.tokenize([""])[0]
    vae = load_vae(ctx)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema = EMA(params, cfg["ema"])
    ck = ctx.ckpt / f"{stage}.pt"
    step = 0
    if ck.exists():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        unet.load_state_dict(state["unet"])
        te.load_state_dict(state["text_encoder"])
        restore_optimizer_state(opt, state["opt"])
        ema.load_state_dict(state["ema"])
        step = state["step"]
        print(f"[{stage}] resumed at step {step}")
    noise_sched = train_scheduler()
    print(
        f"[{stage}] UNet {n_params(unet):.3f}M + text encoder {n_params(te):.3f}M params, "
        f"{total} steps x batch {cfg['unet_batch']} at lr {lr} on {dev}"
    )
    bar = progress(total, step, stage)
    last_save, ema_loss, t0, s0 = time.time(), None, time.time(), step
    while step < total:
        g = ctx.gen(stage, step)
        idx, lat, ids = latent_batch(ctx, cache, g, cfg["unet_batch"], CAPTION_DROPOUT)
        if fragments:
            ids = with_fragments(ctx, idx, ids, fragments, g)
        noise, t, noisy = diffuse(noise_sched, lat, g)
        ids = mismatch_low_noise_captions(ids, t, g)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, warmup, total, final=0.2)
        hidden = te(ids)[0]
        pred = unet(noisy, t, hidden).sample
        loss = snr_loss(noise_sched, pred, noise, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.99 * ema_loss + 0.01 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.4f}", refresh=False)
        if time.time() - last_save > ctx.save_every or step == total:
            save_atomic(
                {
                    "unet": unet.state_dict(),
                    "text_encoder": te.state_dict(),
                    "ema": ema.state_dict(),
                    "opt": compact_optimizer_state(opt.state_dict()),
                    "step": step,
                },
                ck,
            )
            last_save = time.time()
            ctx.log(stage=stage, step=offset + step, loss=ema_loss, it_s=(step - s0) / (time.time() - t0))
            export_base(ctx, vae, unet, te, ema, params, offset + step)
    bar.close()
    # Final: EMA weights only.
    ema.copy_to(params)
    save_atomic({"unet": unet.state_dict(), "text_encoder": te.state_dict(), "step": offset + step}, final)
    ck.unlink(missing_ok=True)


def export_base(ctx, vae, unet, te, ema, params, step):
    """Write the pipeline (EMA weights) to ``--out`` atomically, keeping any variant folders."""
    import copy

    unet_e, te_e = copy.deepcopy(unet).cpu(), copy.deepcopy(te).cpu()
    params_e = list(unet_e.parameters()) + list(te_e.parameters())
    ema.copy_to(params_e)
    write_pipeline(ctx, vae, unet_e, te_e, info={"unet_steps": step})


def write_pipeline(ctx, vae, unet, te, info: dict):
    import model_card
    from diffusers import StableDiffusionPipeline

    out = ctx.out
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    # VAE and UNet weights are stored in float16 (from_pretrained loads them back as float32 unless a
    # torch_dtype is given); the small text encoder stays float32, as transformers loads checkpoints
    # in their stored dtype.
    pipe = StableDiffusionPipeline(
        vae=copy_cpu(vae).to(STORE_DTYPE),
        text_encoder=te.cpu(),
        tokenizer=ctx.tokenizer,
        unet=copy_cpu(unet).to(STORE_DTYPE),
        scheduler=pipeline_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    old_info = {}
    if (out / "training.json").exists():
        old_info = json.loads((out / "training.json").read_text())
    merged = {**old_info, **training_info(ctx), **info}
    (tmp / "training.json").write_text(json.dumps(merged, indent=2))
    if out.exists():
        for extra in ("unet_inpaint", "controlnet_canny", "evaluation.json"):
            src = out / extra
            if src.is_dir():
                shutil.copytree(src, tmp / extra)
            elif src.exists():
                shutil.copy2(src, tmp / extra)
    model_card.write(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def copy_cpu(module):
    import copy

    return copy.deepcopy(module).cpu()


def training_info(ctx) -> dict:
    info = {
        "schedule": "quick" if ctx.args.quick else "full",
        "seed": ctx.seed,
        "config": ctx.cfg,
        "caption_dropout": CAPTION_DROPOUT,
        "controlnet_caption_dropout": CONTROLNET_CAPTION_DROPOUT,
        "min_snr_gamma": MIN_SNR_GAMMA,
        "low_noise_caption_swap": {"p_at_t0": MISMATCH_P, "until_t": MISMATCH_T},
        "device": str(ctx.device),
        "threads": torch.get_num_threads(),
    }
    vm = ctx.ckpt / "vae_metrics.json"
    if vm.exists():
        info["vae"] = json.loads(vm.read_text())
    dd = ctx.ckpt / "decoder_done.json"
    if dd.exists():
        info["decoder"] = json.loads(dd.read_text())
    return info


def stage_export(ctx):
    """Export the finished base stage (EMA weights) to ``--out``."""
    vae = load_vae(ctx)
    unet, te = load_base(ctx)
    write_pipeline(ctx, vae, unet, te, info={"unet_steps": base_steps(ctx), "unet_finished": True})
    print("[export] wrote", ctx.out)


# ---------------------------------------------------------------------------------------------
# Variants: 9-channel inpainting UNet and canny ControlNet


def random_masks(g, scenes, size: int) -> torch.Tensor:
    """Nx1xHxW masks (1 = repaint): rectangles, ellipses, the shape's own box, or everything."""
    n = len(scenes)
    masks = torch.zeros(n, 1, size, size)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i, scene in enumerate(scenes):
        kind = float(torch.rand(1, generator=g))
        if kind < 0.15:
            masks[i] = 1.0
            continue
        if kind < 0.55:  # a box around the shape, a little larger: "repaint the object"
            pad = float(torch.randint(2, 10, (1,), generator=g))
            h = scene.size / 2 + pad
            m = (xx >= scene.cx - h) & (xx < scene.cx + h) & (yy >= scene.cy - h) & (yy < scene.cy + h)
        else:
            w, h = (torch.randint(16, 48, (2,), generator=g)).tolist()
            x0, y0 = (
                int(torch.randint(0, size - w + 1, (1,), generator=g)),
                int(torch.randint(0, size - h + 1, (1,), generator=g)),
            )
            if kind < 0.8:
                m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
            else:
                cx, cy = x0 + w / 2, y0 + h / 2
                m = ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
        masks[i, 0] = m.float()
    return masks


def stage_inpaint(ctx):
    final = ctx.out / "unet_inpaint" / "diffusion_pytorch_model.safetensors"
    done = ctx.ckpt / "inpaint_done.json"
    if done.exists() and final.exists():
        print("[inpaint] done already")
        return
    cfg, dev = ctx.cfg, ctx.device
    cache = load_cache(ctx)
    ctx.empty_ids = ctx.tokenize([""])[0]
    vae = load_vae(ctx)
    base, te = load_base(ctx)
    te.requires_grad_(False)
    unet = new_unet(in_channels=9).to(dev)
    state = base.state_dict()
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], 5, *w.shape[2:], device=w.device)], 1)
    unet.load_state_dict(state)
    noise_sched = train_scheduler()
    sf = cache["scaling_factor"]
    steps, batch = cfg["inpaint_steps"], cfg["inpaint_batch"]
    print(f"[inpaint] 9-channel UNet {n_params(unet):.3f}M params, {steps} steps x batch {batch}")

    def loss_of(g: torch.Generator) -> torch.Tensor:
        idx, lat, ids = latent_batch(ctx, cache, g, cfg["inpaint_batch"], CAPTION_DROPOUT)
        scenes = [data.sample(ctx.seed, int(i))[2] for i in idx]
        x = data.to_tensor(np.stack([data.render(s) for s in scenes])).to(dev)
        mask = random_masks(g, scenes, data.RESOLUTION).to(dev)
        with torch.no_grad():
            masked = x * (mask < 0.5)
            post = vae.encode(masked).latent_dist
            masked_lat = (post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(dev)) * sf
            hidden = te(ids)[0]
        mask_lat = F.interpolate(mask, size=lat.shape[-2:])  # as StableDiffusionInpaintPipeline does
        noise, t, noisy = diffuse(noise_sched, lat, g)
        pred = unet(torch.cat([noisy, mask_lat, masked_lat], 1), t, hidden).sample
        return snr_loss(noise_sched, pred, noise, t)

    train_variant(ctx, "inpaint", unet, "unet", "unet_inpaint", loss_of)


def diffuse(noise_sched, lat: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise, timesteps and noised latents for a training batch (drawn from ``g``)."""
    noise = torch.randn(lat.shape, generator=g).to(lat.device)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (lat.shape[0],), generator=g).to(lat.device)
    return noise, t, noise_sched.add_noise(lat, noise, t)


def snr_loss(noise_sched, pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Epsilon-prediction MSE with min-SNR-5 weighting."""
    per = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
    return (per * min_snr_weights(noise_sched, t)).mean()


def train_variant(ctx, stage: str, model, key: str, folder: str, loss_of) -> None:
    """The loop both variant stages run: AdamW and EMA on ``model``, resumable checkpoints (``model`` under
    ``key``), periodic export to ``folder``. ``loss_of(g)`` draws one batch from ``g`` and returns its loss."""
    cfg = ctx.cfg
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg[f"{stage}_lr"], weight_decay=0.01)
    ema = EMA(params, cfg["ema"])
    ck, done = ctx.ckpt / f"{stage}.pt", ctx.ckpt / f"{stage}_done.json"
    step = 0
    if ck.exists():
        st = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_state_dict(st[key])
        restore_optimizer_state(opt, st["opt"])
        ema.load_state_dict(st["ema"])
        step = st["step"]
        print(f"[{stage}] resumed at step {step}")
    total = cfg[f"{stage}_steps"]
    bar = progress(total, step, stage)
    last_save, ema_loss = time.time(), None
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg[f"{stage}_lr"], 50, total, final=0.2)
        loss = loss_of(ctx.gen(stage, step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.99 * ema_loss + 0.01 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.4f}", refresh=False)
        if time.time() - last_save > ctx.save_every or step == total:
            save_atomic(
                {
                    key: model.state_dict(),
                    "ema": ema.state_dict(),
                    "opt": compact_optimizer_state(opt.state_dict()),
                    "step": step,
                },
                ck,
            )
            last_save = time.time()
            ctx.log(stage=stage, step=step, loss=ema_loss)
            export_variant(ctx, model, ema, params, folder, {f"{stage}_steps": step})
    bar.close()
    done.write_text(json.dumps({"steps": step}))
    ck.unlink(missing_ok=True)


def export_variant(ctx, model, ema, params, folder: str, info: dict):
    import copy

    m = copy.deepcopy(model).cpu()
    ema.copy_to(list(m.parameters()))
    m = m.to(STORE_DTYPE)
    dest = ctx.out / folder
    tmp = ctx.out / (folder + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    m.save_pretrained(tmp, safe_serialization=True)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    ti = ctx.out / "training.json"
    merged = json.loads(ti.read_text()) if ti.exists() else {}
    merged.update(info)
    ti.write_text(json.dumps(merged, indent=2))
    import model_card

    model_card.write(ctx.out)


def control_images(scenes) -> torch.Tensor:
    """Canny maps as the ControlNet pipeline feeds them: Nx3xHxW floats in [0, 1]."""
    edges = np.stack([data.canny(data.render(s)) for s in scenes]).astype(np.float32) / 255.0
    return torch.from_numpy(edges)[:, None].repeat(1, 3, 1, 1)


def stage_controlnet(ctx):
    final = ctx.out / "controlnet_canny" / "diffusion_pytorch_model.safetensors"
    done = ctx.ckpt / "controlnet_done.json"
    if done.exists() and final.exists():
        print("[controlnet] done already")
        return
    from diffusers import ControlNetModel

    cfg, dev = ctx.cfg, ctx.device
    cache = load_cache(ctx)
    ctx.empty_ids = ctx.tokenize([""])[0]
    unet, te = load_base(ctx)
    unet.requires_grad_(False)
    te.requires_grad_(False)
    torch.manual_seed(ctx.seed + 3)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 64)).to(dev)
    noise_sched = train_scheduler()
    print(f"[controlnet] {n_params(cn):.3f}M params, {cfg['controlnet_steps']} steps x batch {cfg['controlnet_batch']}")

    def loss_of(g: torch.Generator) -> torch.Tensor:
        idx, lat, ids = latent_batch(ctx, cache, g, cfg["controlnet_batch"], CONTROLNET_CAPTION_DROPOUT)
        cond = control_images([data.sample(ctx.seed, int(i))[2] for i in idx]).to(dev)
        with torch.no_grad():
            hidden = te(ids)[0]
        noise, t, noisy = diffuse(noise_sched, lat, g)
        down, mid = cn(noisy, t, hidden, controlnet_cond=cond, return_dict=False)
        pred = unet(noisy, t, hidden, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        return snr_loss(noise_sched, pred, noise, t)

    train_variant(ctx, "controlnet", cn, "controlnet", "controlnet_canny", loss_of)


# ---------------------------------------------------------------------------------------------


def stage_eval_all(ctx):
    """All measurements (txt2img, img2img, both inpainting strategies, ControlNet) into the model card."""
    import evaluate
    import model_card

    results = {
        "txt2img": evaluate.evaluate_txt2img(
            str(ctx.out), n_prompts=ctx.cfg["eval_prompts"], seed=ctx.seed, device=str(ctx.device)
        )
    }
    evaluate.print_figures(results["txt2img"])
    cases = max(4, ctx.cfg["eval_prompts"] // 2)
    for name, fn in (
        ("img2img", evaluate.evaluate_img2img),
        ("inpaint", evaluate.evaluate_inpaint),
        ("controlnet", evaluate.evaluate_controlnet),
    ):
        results[name] = fn(str(ctx.out), cases, ctx.seed, str(ctx.device))
        print(name + ":", json.dumps(results[name]))
    evaluate.save_figures(ctx.out, results)
    ctx.log(stage="eval_all", **results)
    model_card.write(ctx.out)


def stage_eval(ctx):
    import evaluate
    import model_card

    figures = evaluate.evaluate_txt2img(
        str(ctx.out), n_prompts=ctx.cfg["eval_prompts"], seed=ctx.seed, device=str(ctx.device)
    )
    evaluate.print_figures(figures)
    evaluate.save_figures(ctx.out, {"txt2img": figures})
    ctx.log(stage="eval", **{k: v for k, v in figures.items() if not isinstance(v, dict)})
    model_card.write(ctx.out)


STAGES = {
    "vae": stage_vae,
    "latents": stage_latents,
    "decoder": stage_decoder,
    "unet": stage_unet,
    "refine": stage_refine,
    "export": stage_export,
    "inpaint": stage_inpaint,
    "controlnet": stage_controlnet,
    "eval": stage_eval,
    "eval_all": stage_eval_all,
}
ORDER = ["vae", "latents", "decoder", "unet", "refine", "export", "eval", "controlnet", "inpaint", "eval_all"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["all", *STAGES])
    p.add_argument("--quick", action="store_true", help="tiny schedule for smoke tests (minutes)")
    p.add_argument(
        "--out",
        default=None,
        help="model folder (default models/demo; with --quick or --checkpoint-dir: <checkpoint dir>/demo, so a "
        "smoke test or an experiment never overwrites the shipped weights)",
    )
    p.add_argument(
        "--checkpoint-dir", default=None, help="default: training/checkpoints (quick: training/checkpoints/quick)"
    )
    p.add_argument("--cache-dir", default=str(HERE / "cache"))
    p.add_argument("--log-dir", default=str(HERE / "logs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (the shipped run: 2)")
    p.add_argument("--save-every", type=float, default=4.0, help="minutes between checkpoints")
    for key in SCHEDULES["full"]:
        kind = float if isinstance(SCHEDULES["full"][key], float) else int
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, default=None)
    args = p.parse_args(argv)
    scratch = args.quick or args.checkpoint_dir is not None
    if args.checkpoint_dir is None:
        args.checkpoint_dir = str(HERE / "checkpoints" / ("quick" if args.quick else ""))
    if args.out is None:
        # Only the full run with the default checkpoints writes the app's model folder unless --out says so.
        args.out = str(Path(args.checkpoint_dir) / "demo") if scratch else str(ROOT / "models" / "demo")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Ctx(args)
    print(
        f"device {ctx.device}, threads {torch.get_num_threads()}, "
        f"schedule {'quick' if args.quick else 'full'}: {ctx.cfg}"
    )
    stages = ORDER if args.stage == "all" else [args.stage]
    for name in stages:
        t = time.time()
        STAGES[name](ctx)
        print(f"[{name}] {time.time() - t:.1f}s")


if __name__ == "__main__":
    main()
