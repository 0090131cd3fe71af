"""Variation seeds and seed resize (A1111's "Extra" seed row): a picture's start noise as A1111 makes it.

Picture i of a batch starts from ``slerp(subseed_strength, noise(seed_i), noise(subseed_i))``; with a "resize seed
from" size, that noise is made at the from-size and pasted centred into the seed's noise at the run's size, so a seed
keeps its composition at a new size (A1111's ``create_random_tensors``). Every draw is the one the pipeline makes for
a plain run: one CPU generator per picture, the pipeline's dtype, the same shape; the seed's own draws come from the
generators the pipeline then goes on with (its ancestral noise is the plain run's). So strength 0 is the plain run's
picture and strength 1 the picture of seed = subseed, on deterministic samplers.

The noise reaches a pipeline that starts from noise as its ``latents`` (FLUX's packed). Image-to-image pipelines
(img2img, inpaint, ControlNet with an init image, every family) draw theirs once, with ``randn_tensor`` in
``prepare_latents``, and use that tensor for every noising of the picture (``add_noise``, inpaint's re-noising of
the kept latents each step, the flow schedulers' ``scale_noise``): ``picture_draws`` makes that one draw give the
variation noise, as A1111 noises the init latents with it. Their generators first sample the VAE latents, so the
variation's draws are made at the same place in the seed's and the subseed's streams (``draws_made``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from backend.schema.requests import GenerationRequest
from backend.schema.seeds import batch_seeds

FROM_NOISE = ("txt2img", "controlnet")  # the tasks whose pipelines take prepared start noise (``latents``)
FROM_PICTURE = ("img2img", "inpaint", "controlnet")  # those whose pipelines' own draw ``picture_draws`` replaces
MAX_DRAWS = 8  # picture-sized draws looked through for the start noise's place in a generator's stream


def resizes(request: GenerationRequest) -> bool:
    return request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0


def active(request: GenerationRequest) -> bool:
    """Whether the request's start noise differs from the plain seed's (A1111 skips the blend at strength 0)."""
    return request.subseed_strength > 0 or resizes(request)


def refusal(request: GenerationRequest) -> tuple[str, str] | None:
    """(field, message) when the request asks for variation noise its pipeline cannot take, else None."""
    if not active(request):
        return None
    if request.task in FROM_NOISE + FROM_PICTURE:
        return None
    name = "subseed_strength" if request.subseed_strength > 0 else "seed_resize_from_w"
    return name, (
        f"variation seeds and seed resize act on the start noise of txt2img, img2img, inpaint and ControlNet runs, "
        f"not on {request.task} runs: set the variation strength and seed resize to 0"
    )


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two noises (one picture's, channels × h × w), its quirks kept."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def latent_shape(pipe: Any, packed: bool, width: int, height: int) -> tuple[int, int, int]:
    """(channels, rows, columns) of one picture's noise as the pipeline draws it (FLUX's before packing)."""
    model = getattr(pipe, "unet", None) or pipe.transformer
    factor = pipe.vae_scale_factor
    if packed:  # 2×2 patches per token: even sides
        return model.config.in_channels // 4, 2 * (height // (factor * 2)), 2 * (width // (factor * 2))
    return model.config.in_channels, height // factor, width // factor


def draw_dtype(pipe: Any) -> torch.dtype:
    """The dtype the pipeline draws its noise in (its prompt embeddings', i.e. its text encoders')."""
    for name in ("text_encoder_2", "text_encoder", "unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module.dtype
    return torch.float32


def _draw(generator: torch.Generator, shape: tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
    # As diffusers' randn_tensor draws picture i of a batch with a generator list: (1, …) on the CPU.
    return randn_tensor((1, *shape), generator=generator, device=torch.device("cpu"), dtype=dtype)[0]


def _paste(noise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``noise`` pasted centred into ``target`` (cropped centred where it is larger), as A1111 does."""
    dx = (target.shape[2] - noise.shape[2]) // 2
    dy = (target.shape[1] - noise.shape[1]) // 2
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    dx, dy = max(-dx, 0), max(-dy, 0)
    out = target.clone()
    out[:, ty : ty + h, tx : tx + w] = noise[:, dy : dy + h, dx : dx + w]
    return out


def _replay(seed: int, draws: int, shape: tuple, last: tuple, dtype: torch.dtype) -> torch.Tensor:
    """Draw number ``draws`` (at size ``last``) of a fresh generator of ``seed`` whose earlier draws were ``shape``."""
    generator = torch.Generator("cpu").manual_seed(seed)
    for _ in range(draws - 1):
        _draw(generator, shape, dtype)
    return _draw(generator, last, dtype)


def draws_made(seed: int, generator: torch.Generator, shape: tuple, dtype: torch.dtype) -> int:
    """How many ``shape`` draws ``generator`` (seeded ``seed``) has made: its last was the start noise (before it, an
    image-to-image pipeline samples the VAE latents, the same size). 1 when the stream does not match."""
    if generator.device.type != "cpu":
        return 1
    target, replay = generator.get_state(), torch.Generator("cpu").manual_seed(seed)
    for count in range(1, MAX_DRAWS + 1):
        _draw(replay, shape, dtype)
        if torch.equal(replay.get_state(), target):
            return count
    return 1


def _blend(
    request: GenerationRequest, own: torch.Tensor, seed: int, subseed: int, draws: int, from_shape: tuple
) -> torch.Tensor:
    """The variation noise of a picture whose seed's own start noise is ``own``, draw number ``draws``."""
    shape, dtype = tuple(own.shape), own.dtype
    noise = own if from_shape == shape else _replay(seed, draws, shape, from_shape, dtype)
    if request.subseed_strength > 0:
        other = _replay(subseed, draws, shape, from_shape, dtype)
        noise = slerp(request.subseed_strength, noise.float(), other.float()).to(dtype)
    return noise if from_shape == shape else _paste(noise, own)


def picture_noise(
    request: GenerationRequest, generator: torch.Generator, seed: int, subseed: int, shape: tuple, from_shape: tuple,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One picture's start noise (channels × h × w). ``generator``: the picture's seed generator, which the pipeline
    goes on using; the from-size and variation draws use generators of their own."""
    own = _draw(generator, shape, dtype)  # first, as in a plain run: the generator then goes on as there
    return _blend(request, own, seed, subseed, 1, from_shape)


def _from_shape(pipe: Any, request: GenerationRequest, packed: bool, shape: tuple) -> tuple:
    if not resizes(request):
        return shape
    return latent_shape(pipe, packed, request.seed_resize_from_w, request.seed_resize_from_h)


@contextmanager
def picture_draws(pipe: Any, request: GenerationRequest, packed: bool = False) -> Iterator[None]:
    """For one call of an image-to-image pipeline: its start-noise draw (``randn_tensor`` in its module, with its
    per-picture generators) gives the variation noise; the generators advance as in a plain run."""
    module = sys.modules[type(pipe).__module__]
    original = getattr(module, "randn_tensor", None)
    if original is None:  # not a diffusers pipeline that draws so: nothing to replace
        yield
        return

    def varied(shape: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        drawn = original(shape, *args, **kwargs)
        gens = kwargs.get("generator", args[0] if args else None)
        if not isinstance(gens, list) or drawn.dim() != 4 or len(gens) != drawn.shape[0]:
            return drawn
        own_noise = drawn.cpu()
        from_shape = _from_shape(pipe, request, packed, tuple(own_noise.shape[1:]))
        seeds, subseeds = batch_seeds(request.seed, len(gens)), batch_seeds(request.subseed, len(gens))
        pictures = [
            _blend(request, own, seed, sub, draws_made(seed, gen, tuple(own.shape), own.dtype), from_shape)
            for own, gen, seed, sub in zip(own_noise, gens, seeds, subseeds, strict=True)
        ]
        return torch.stack(pictures).to(drawn.device)

    module.randn_tensor = varied
    try:
        yield
    finally:
        module.randn_tensor = original


def start_noise(
    pipe: Any, request: GenerationRequest, generators: list[torch.Generator], packed: bool = False
) -> torch.Tensor:
    """The batch's start noise, drawn from the pipeline's ``generators`` (one per picture) as its ``latents``."""
    shape = latent_shape(pipe, packed, request.width, request.height)
    from_shape = _from_shape(pipe, request, packed, shape)
    dtype = draw_dtype(pipe)
    seeds, subseeds = batch_seeds(request.seed, len(generators)), batch_seeds(request.subseed, len(generators))
    latents = torch.stack(
        [
            picture_noise(request, gen, seed, subseed, shape, from_shape, dtype)
            for gen, seed, subseed in zip(generators, seeds, subseeds, strict=True)
        ]
    )
    if packed:
        return pipe._pack_latents(latents, latents.shape[0], *shape)
    return latents
