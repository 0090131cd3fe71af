"""Train the demo DiT: a FLUX.1-dev-structured model (``training/dit_model.py``) on the demo's synthetic pictures.

Stages, run in order by ``--stage all`` (the default) or one at a time:

``latents``  encode a fixed picture set with the demo VAE once (posterior mean/std, T5 and CLIP token ids)
``base``     transformer + T5 from scratch: rectified flow (velocity ε − x0), σ logit-normal shifted as the
             pipeline shifts at 16 tokens, caption dropout 10%, the guidance value sampled per example, EMA
``distill``  guidance distillation (as FLUX.1 dev): a frozen copy of the base EMA is the teacher; the student
             learns ``v(∅) + g·(v(c) − v(∅))`` for the guidance g it is given, still 10% empty captions
``export``   the EMA weights as a ``FluxPipeline`` folder (also written at every checkpoint)
``eval``     ``training/evaluate_dit.py`` through the app's engine on the exported folder

Rerunning the same command continues from the last checkpoint (every ``--save-every`` minutes, atomic writes); a
finished stage leaves ``<stage>_final.pt`` and is skipped. Usage (from the repository root)::

    python training/train_dit_demo.py --quick              # smoke test; writes training/checkpoints/dit_quick/demo_dit
    OMP_NUM_THREADS=1 nice -n 15 python training/train_dit_demo.py --threads 1   # the full run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import dit_model as dm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402
from train_demo import EMA, compact_optimizer_state, lr_at, progress, restore_optimizer_state  # noqa: E402

SCHEDULES = {
    "full": dict(n_latents=30000, base_steps=6000, distill_steps=1200, batch=64, lr=1e-3, distill_lr=2e-4,
                 warmup=300, ema=0.999, width=128, double=2, single=4, eval_prompts=32),
    "quick": dict(n_latents=256, base_steps=40, distill_steps=10, batch=16, lr=1e-3, distill_lr=2e-4,
                  warmup=5, ema=0.9, width=128, double=2, single=4, eval_prompts=4),
}
CAPTION_DROPOUT = 0.1
GUIDANCE_RANGE = (1.0, 5.0)  # the app's default Distilled CFG is 3.5


class Ctx:
    def __init__(self, args):
        self.args = args
        self.cfg = dict(SCHEDULES["quick" if args.quick else "full"])
        for key in self.cfg:
            if getattr(args, key, None) is not None:
                self.cfg[key] = getattr(args, key)
        default_ckpt = ROOT / "training" / "checkpoints" / ("dit_quick" if args.quick else "dit")
        self.ckpt = Path(args.checkpoint_dir or default_ckpt)
        default_out = self.ckpt / "demo_dit" if args.quick else ROOT / "models" / "demo_dit"
        self.out = Path(args.out) if args.out else default_out
        self.logs = ROOT / "training" / "logs"
        for d in (self.ckpt, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.log_file = self.logs / ("dit_quick.jsonl" if args.quick else "dit.jsonl")
        self.save_every = args.save_every * 60.0
        self.seed = args.seed

    def log(self, **record):
        record["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def gen(self, stage: str, step: int) -> torch.Generator:
        """Fixed by (seed, stage, step): a resumed run replays the same batches."""
        salt = {"base": 11, "distill": 12}[stage]
        return torch.Generator().manual_seed((self.seed * 1_000_003 + salt * 10_000_019 + step) % (2**63))


def save_atomic(obj, path: Path):
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Stage: latent cache


def cache_path(ctx) -> Path:
    return ctx.ckpt / f"latents_{ctx.cfg['n_latents']}_seed{ctx.seed}.pt"


def stage_latents(ctx):
    if cache_path(ctx).exists():
        print("[latents] cached:", cache_path(ctx))
        return
    vae, t5_tok = dm.demo_vae(), dm.t5_tokenizer()
    clip_tok, _ = dm.clip_parts()
    n, bs = ctx.cfg["n_latents"], 256
    means, stds, captions = [], [], []
    with torch.no_grad():
        for start in tqdm(range(0, n, bs), desc="latents", mininterval=30, file=sys.stderr):
            pics, caps, _ = data.batch(ctx.seed, start, min(bs, n - start))
            post = vae.encode(data.to_tensor(pics)).latent_dist
            means.append(post.mean)
            stds.append(post.std)
            captions += caps
    t5_ids = t5_tok(captions, padding="max_length", max_length=dm.T5_LENGTH, truncation=True, return_tensors="pt")
    t5_ids = t5_ids.input_ids
    assert (t5_ids[:, dm.T5_FRONT - 8 :] == t5_tok.pad_token_id).all(), "a caption longer than T5_FRONT allows"
    clip_ids = clip_tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    save_atomic(
        {
            "mean": torch.cat(means).half(),
            "std": torch.cat(stds).half(),
            "t5": t5_ids[:, dm.positions()].to(torch.int32),
            "clip": clip_ids.to(torch.int32),
            "captions": captions,
            "scaling_factor": float(vae.config.scaling_factor),
        },
        cache_path(ctx),
    )
    print(f"[latents] {n} pictures encoded")


def empty_ids():
    """The empty caption's T5 (compressed) ids, CLIP ids and pooled vector: caption dropout and the unconditional
    prediction."""
    t5 = dm.t5_tokenizer()([""], padding="max_length", max_length=dm.T5_LENGTH, return_tensors="pt").input_ids
    clip_tok, clip = dm.clip_parts()
    clip_ids = clip_tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        pooled = clip(clip_ids).pooler_output
    return t5[:, dm.positions()], clip_ids, pooled


# ---------------------------------------------------------------------------------------------
# Training (base and distill share the loop)


class Batch:
    """One training batch drawn from the cache: noisy packed latents and their conditioning."""

    def __init__(self, cache, empty, g: torch.Generator, size: int, clip):
        idx = torch.randint(0, len(cache["captions"]), (size,), generator=g)
        mean, std = cache["mean"][idx].float(), cache["std"][idx].float()
        z = (mean + std * torch.randn(mean.shape, generator=g) - dm.SHIFT_FACTOR) * cache["scaling_factor"]
        self.x0 = dm.pack(z)
        self.noise = torch.randn(self.x0.shape, generator=g)
        # logit-normal σ, shifted as the pipeline's dynamic shifting does at 16 image tokens
        s = math.exp(dm.mu())
        u = torch.sigmoid(torch.randn(size, generator=g))
        self.sigma = s * u / (1 + (s - 1) * u)
        sig = self.sigma[:, None, None]
        self.xt = (1 - sig) * self.x0 + sig * self.noise
        self.dropped = torch.rand(size, generator=g) < CAPTION_DROPOUT
        t5_ids, clip_ids = cache["t5"][idx].long(), cache["clip"][idx].long()
        self.t5 = torch.where(self.dropped[:, None], empty[0], t5_ids)
        self.clip = torch.where(self.dropped[:, None], empty[1], clip_ids)
        lo, hi = GUIDANCE_RANGE
        self.guidance = lo + (hi - lo) * torch.rand(size, generator=g)
        with torch.no_grad():
            self.pooled = clip(self.clip).pooler_output
            self.empty_pooled = empty[2].expand(size, -1)


def teacher_target(teacher, b: Batch, empty) -> torch.Tensor:
    """Guided velocity of the frozen teacher: v(∅) + g·(v(c) − v(∅)); v(∅) where the caption was dropped."""
    tr, t5c = teacher
    n = b.xt.shape[0]
    ones = torch.ones(2 * n)
    with torch.no_grad():
        v = dm.predict(
            tr, t5c, torch.cat([b.xt, b.xt]), torch.cat([b.sigma, b.sigma]), ones,
            torch.cat([b.pooled, b.empty_pooled]), torch.cat([b.t5, empty[0].expand(n, -1)]),
        )
    vc, vu = v.chunk(2)
    g = torch.where(b.dropped, torch.zeros(n), b.guidance)[:, None, None]
    return vu + g * (vc - vu)


def final_path(ctx, stage: str) -> Path:
    return ctx.ckpt / f"{stage}_final.pt"


def new_models(ctx):
    torch.manual_seed(ctx.seed)
    cfg = ctx.cfg
    transformer = dm.new_transformer(cfg["width"], cfg["double"], cfg["single"])
    return transformer, dm.new_t5()


def load_final(ctx, stage: str):
    """The EMA weights a finished stage left: (transformer, t5)."""
    transformer, t5 = new_models(ctx)
    state = torch.load(final_path(ctx, stage), map_location="cpu", weights_only=False)
    transformer.load_state_dict(state["transformer"])
    t5.load_state_dict(state["t5"])
    return transformer, t5


def stage_train(ctx, stage: str):
    """``base`` (ground-truth velocity) or ``distill`` (the base EMA as teacher, guided velocity)."""
    if final_path(ctx, stage).exists():
        print(f"[{stage}] done already:", final_path(ctx, stage))
        return
    cfg = ctx.cfg
    total = cfg[f"{stage}_steps"]
    base_lr = cfg["lr"] if stage == "base" else cfg["distill_lr"]
    transformer, t5 = new_models(ctx) if stage == "base" else load_final(ctx, "base")
    teacher = None
    if stage == "distill":
        frozen = copy.deepcopy(transformer).eval().requires_grad_(False), copy.deepcopy(t5).eval().requires_grad_(False)
        teacher = (frozen[0], dm.CompressedT5(frozen[1]))
    params = list(transformer.parameters()) + list(t5.parameters())
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=0.0)
    ema = EMA(params, cfg["ema"])
    ck, step = ctx.ckpt / f"{stage}.pt", 0
    if ck.exists():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        transformer.load_state_dict(state["transformer"])
        t5.load_state_dict(state["t5"])
        restore_optimizer_state(opt, state["opt"])
        ema.load_state_dict(state["ema"])
        step = state["step"]
        print(f"[{stage}] resumed at step {step}")
    cache = torch.load(cache_path(ctx), map_location="cpu", weights_only=False)
    empty = empty_ids()
    _, clip = dm.clip_parts()
    t5c = dm.CompressedT5(t5)
    print(
        f"[{stage}] transformer {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M + T5 "
        f"{sum(p.numel() for p in t5.parameters()) / 1e6:.2f}M params, {total} steps x batch {cfg['batch']}"
    )
    bar, last_save, ema_loss, t0, s0 = progress(total, step, stage), time.time(), None, time.time(), step
    transformer.train()
    while step < total:
        b = Batch(cache, empty, ctx.gen(stage, step), cfg["batch"], clip)
        target = b.noise - b.x0 if teacher is None else teacher_target(teacher, b, empty)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, base_lr, cfg["warmup"] if stage == "base" else 50, total)
        v = dm.predict(transformer, t5c, b.xt, b.sigma, b.guidance, b.pooled, b.t5)
        loss = F.mse_loss(v, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dm.tie_far_buckets(t5)
        ema.update(step)
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.4f}", refresh=False)
        if time.time() - last_save > ctx.save_every or step == total:
            rate = (step - s0) / (time.time() - t0)
            save_checkpoint(ctx, stage, transformer, t5, opt, ema, step, ck)
            last_save = time.time()
            ctx.log(stage=stage, step=step, loss=ema_loss, it_per_s=rate, lr=opt.param_groups[0]["lr"])
    bar.close()
    with_ema(transformer, t5, ema)
    save_atomic({"transformer": transformer.state_dict(), "t5": t5.state_dict()}, final_path(ctx, stage))
    ck.unlink(missing_ok=True)


def with_ema(transformer, t5, ema):
    ema.copy_to(list(transformer.parameters()) + list(t5.parameters()))
    dm.tie_far_buckets(t5)


def save_checkpoint(ctx, stage, transformer, t5, opt, ema, step, ck):
    state = {
        "transformer": transformer.state_dict(),
        "t5": t5.state_dict(),
        "opt": compact_optimizer_state(opt.state_dict()),
        "ema": ema.state_dict(),
        "step": step,
    }
    save_atomic(state, ck)
    # export the EMA weights, so the folder can be evaluated at any time
    tr_e, t5_e = copy.deepcopy(transformer), copy.deepcopy(t5)
    with_ema(tr_e, t5_e, ema)
    write_export(ctx, tr_e, t5_e, {"stage": stage, "step": step})


def write_export(ctx, transformer, t5, info: dict):
    dm.export(ctx.out, transformer.eval(), t5.eval())
    info = {**info, "schedule": ctx.cfg, "exported": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    (ctx.out / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def stage_export(ctx):
    stage = "distill" if final_path(ctx, "distill").exists() else "base"
    transformer, t5 = load_final(ctx, stage)
    write_export(ctx, transformer, t5, {"stage": stage, "step": ctx.cfg[f"{stage}_steps"], "final": True})
    print("[export]", ctx.out)


def stage_eval(ctx):
    import evaluate_dit

    figures = evaluate_dit.evaluate(str(ctx.out), ctx.cfg["eval_prompts"])
    evaluate_dit.print_figures(figures)
    evaluate_dit.save(str(ctx.out), figures)  # merged: the card's other measures stay
    ctx.log(stage="eval", **{k: v for k, v in figures.items() if not isinstance(v, dict)})


STAGES = ("latents", "base", "distill", "export", "eval")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=("all", *STAGES))
    p.add_argument("--quick", action="store_true", help="smoke-test schedule, own checkpoint folder")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=float, default=4.0, help="minutes between checkpoints (and exports)")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--out", default=None, help="export folder (default models/demo_dit; --quick: in its checkpoints)")
    for key, value in SCHEDULES["full"].items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Ctx(args)
    print(f"[dit] schedule {ctx.cfg}; checkpoints {ctx.ckpt}; export {ctx.out}")
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        t0 = time.time()
        {"latents": stage_latents, "export": stage_export, "eval": stage_eval}.get(
            stage, lambda c, s=stage: stage_train(c, s)
        )(ctx)
        print(f"[{stage}] {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
