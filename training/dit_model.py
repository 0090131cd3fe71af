"""The demo DiT's parts: a FLUX.1-dev-structured pipeline (``FluxTransformer2DModel`` with guidance embedding, CLIP +
T5 text encoders, the UNet demo's VAE, flow-matching Euler) sized to train from scratch on a CPU.

Reused from ``models/demo``: the VAE (64² pictures -> 8×8×4 latents; FLUX packs 2×2 latent patches, so 16 image tokens
of 16 channels) and the CLIP text encoder + tokenizer (frozen; FLUX reads only its pooled vector). New: the transformer
and a tiny T5 encoder (the real T5 tokenizer from ``backend/configs/t5``, T5's 32,128-entry vocabulary, width 64),
trained jointly.

The T5 sequence. FluxPipeline pads every prompt to 512 T5 tokens and passes no attention mask, so the transformer always
sees about 500 ``<pad>`` tokens. Training on 512 text tokens costs ~30× the 16 image tokens, so training runs an exact
compressed equivalent instead:

* FLUX gives every text token the position (0, 0, 0): RoPE leaves them alone, and the transformer treats identical
  text tokens identically. N identical keys in a softmax are one key with ``log N`` added to its logit.
* The T5 is built so that the pads far from the caption and from the end are identical: relative-position buckets
  saturate at a distance of 4 (8 buckets, max distance 8) and the two "far" buckets (left and right) are tied equal,
  so a deep pad sees the same thing wherever it is. With 2 layers, pads >= 8 positions from both ends are identical.
* So training feeds ``T5_FRONT`` leading tokens (caption <= 18 tokens + >= 8 pads), one deep pad standing for the
  ``DEEP`` identical ones, and ``T5_BACK`` trailing pads: to the T5 with its relative-position bias recomputed for the
  true positions (the deep group's column a log-sum-exp over its members), to the transformer with ``log DEEP`` added
  to that token's attention logit. ``check_compression`` measures that this equals the full 512-token computation.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
T5_TOKENIZER = ROOT / "backend" / "configs" / "t5"

T5_LENGTH = 512  # FluxPipeline's default max_sequence_length (the app passes none)
T5_FRONT = 26  # the longest caption is 18 T5 tokens with </s>; + 8 pads that still see it
T5_BACK = 8  # the last pads see the end of the sequence
DEEP = T5_LENGTH - T5_FRONT - T5_BACK  # identical pads, stood for by one token
T5_BUCKETS, T5_MAX_DISTANCE = 8, 8
FAR_BUCKETS = (T5_BUCKETS // 2 - 1, T5_BUCKETS - 1)  # distance >= 4 to the left (and self side), to the right
T5_WIDTH = 64
LATENT_CHANNELS = 4  # the demo VAE's
SHIFT_FACTOR = 0.0


def positions() -> torch.Tensor:
    """The true positions of the compressed sequence's tokens: front, one deep pad (the middle one), back."""
    front = list(range(T5_FRONT))
    back = list(range(T5_LENGTH - T5_BACK, T5_LENGTH))
    return torch.tensor(front + [T5_FRONT + DEEP // 2] + back)


COMPRESSED = T5_FRONT + 1 + T5_BACK
DEEP_INDEX = T5_FRONT  # the deep pad's index in the compressed sequence


def t5_tokenizer():
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(T5_TOKENIZER))


def clip_parts():
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(DEMO / "tokenizer"))
    enc = CLIPTextModel.from_pretrained(str(DEMO / "text_encoder"), dtype=torch.float32)
    return tok, enc.eval().requires_grad_(False)


def demo_vae():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(DEMO / "vae"), torch_dtype=torch.float32)
    vae.register_to_config(shift_factor=SHIFT_FACTOR)
    return vae.eval().requires_grad_(False)


def new_t5(vocab_size: int = 32128):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,  # T5's (the tokenizer's 32,100 + padding to a multiple of 128)
        d_model=T5_WIDTH,
        d_kv=16,
        d_ff=2 * T5_WIDTH,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=T5_BUCKETS,
        relative_attention_max_distance=T5_MAX_DISTANCE,
        dropout_rate=0.0,  # dropout would make the identical pads differ
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    t5 = T5EncoderModel(config)
    tie_far_buckets(t5)
    return t5


def rel_bias(t5) -> torch.nn.Embedding:
    return t5.encoder.block[0].layer[0].SelfAttention.relative_attention_bias


@torch.no_grad()
def tie_far_buckets(t5) -> None:
    """Keep the far-left and far-right relative-position biases equal (after every optimizer step)."""
    w = rel_bias(t5).weight
    mean = w[list(FAR_BUCKETS)].mean(0)
    w[FAR_BUCKETS[0]] = mean
    w[FAR_BUCKETS[1]] = mean


def new_transformer(width: int = 192, double: int = 2, single: int = 4, pooled_dim: int = 64):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # 2×2 packed latent patches
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=32,
        num_attention_heads=width // 32,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=pooled_dim,
        guidance_embeds=True,
        axes_dims_rope=[8, 12, 12],  # sums to the head dim; text ids are all 0, image ids (0, row, col)
    )


class CompressedT5:
    """Runs the T5 on the compressed sequence with the relative-position bias of the true 512 positions."""

    def __init__(self, t5):
        from transformers.models.t5.modeling_t5 import T5Attention

        self.t5 = t5
        self.attn = t5.encoder.block[0].layer[0].SelfAttention
        q = positions()
        rel = torch.arange(T5_LENGTH)[None, :] - q[:, None]  # key - query, as T5 computes it
        self.buckets = T5Attention._relative_position_bucket(
            rel, bidirectional=True, num_buckets=T5_BUCKETS, max_distance=T5_MAX_DISTANCE
        )
        self.explicit = q.clone()
        self.explicit[DEEP_INDEX] = -1
        self.deep = torch.arange(T5_FRONT, T5_FRONT + DEEP)

    def bias(self, *_args, **_kwargs) -> torch.Tensor:
        values = self.attn.relative_attention_bias(self.buckets)  # (queries, 512 keys, heads)
        columns = [values[:, : T5_FRONT], torch.logsumexp(values[:, self.deep], 1, keepdim=True), values[:, -T5_BACK:]]
        return torch.cat(columns, 1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, queries, keys)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: (B, 512) or already compressed (B, COMPRESSED) token ids -> (B, COMPRESSED, width)."""
        if ids.shape[1] == T5_LENGTH:
            ids = ids[:, positions()]
        self.attn.compute_bias = self.bias  # this instance only; removed at once (the saved model is plain T5)
        try:
            return self.t5(ids).last_hidden_state
        finally:
            del self.attn.compute_bias


def attention_bias(batch: int = 1) -> torch.Tensor:
    """Additive logits for [text, image] keys: the deep pad counts ``DEEP`` times."""
    mask = torch.zeros(batch, 1, 1, COMPRESSED + 16)
    mask[..., DEEP_INDEX] = math.log(DEEP)
    return mask


def text_ids(n: int) -> torch.Tensor:
    return torch.zeros(n, 3)


def image_ids(size: int = 4) -> torch.Tensor:
    ids = torch.zeros(size, size, 3)
    ids[..., 1] += torch.arange(size)[:, None]
    ids[..., 2] += torch.arange(size)[None, :]
    return ids.reshape(size * size, 3)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, 8, 8) -> (B, 16 tokens, 16): FluxPipeline._pack_latents."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def predict(transformer, t5c: CompressedT5, x, sigma, guidance, pooled, t5_ids):
    """The velocity the pipeline's transformer call would give on the full 512-token sequence."""
    txt = t5c(t5_ids)
    return transformer(
        hidden_states=x,
        encoder_hidden_states=txt,
        pooled_projections=pooled,
        timestep=sigma,
        guidance=guidance,
        txt_ids=text_ids(txt.shape[1]),
        img_ids=image_ids(),
        joint_attention_kwargs={"attention_mask": attention_bias(1).to(x.dtype)},
        return_dict=False,
    )[0]


@torch.no_grad()
def check_compression(transformer, t5, t5_ids: torch.Tensor) -> float:
    """Largest |difference| between the compressed computation and the pipeline's full 512-token one."""
    b = t5_ids.shape[0]
    x, pooled = torch.randn(b, 16, 16), torch.randn(b, transformer.config.pooled_projection_dim)
    sigma, g = torch.rand(b), 1 + 4 * torch.rand(b)
    fast = predict(transformer, CompressedT5(t5), x, sigma, g, pooled, t5_ids)
    txt = t5(t5_ids).last_hidden_state
    full = transformer(
        hidden_states=x, encoder_hidden_states=txt, pooled_projections=pooled, timestep=sigma, guidance=g,
        txt_ids=text_ids(T5_LENGTH), img_ids=image_ids(), return_dict=False,
    )[0]
    return float((fast - full).abs().max())


def scheduler():
    """FLUX.1's scheduler config (shift 3, resolution-dependent shifting): at 16 tokens mu = 0.459."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def mu(tokens: int = 16) -> float:
    """The pipeline's ``calculate_shift`` for this many image tokens (the scheduler config above)."""
    m = (1.15 - 0.5) / (4096 - 256)
    return tokens * m + 0.5 - m * 256


def export(out: Path, transformer, t5, store_dtype=torch.float16) -> None:
    """Write a ``FluxPipeline.from_pretrained`` folder atomically (a sibling temp folder, then renamed)."""
    import copy

    from diffusers import FluxPipeline

    clip_tok, clip = clip_parts()
    tr = copy.deepcopy(transformer).to(store_dtype)
    pipe = FluxPipeline(
        transformer=tr, text_encoder=clip, text_encoder_2=t5, tokenizer=clip_tok, tokenizer_2=t5_tokenizer(),
        vae=demo_vae(), scheduler=scheduler(),
    )
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
