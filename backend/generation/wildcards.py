"""Dynamic prompts: ``{red|green|blue}``, ``{2$$a|b|c}`` and ``__name__`` wildcards, resolved per picture.

The ``dynamicprompts`` library (the A1111 extension's own) does the parsing and sampling. Random mode draws each
picture's prompt with a generator seeded by that picture's seed, so the same seed gives the same prompt; combinatorial
mode gives the batch's pictures every combination in turn. A prompt with no dynamic syntax is left exactly as it was
(A1111's ``[a:b:10]`` and ``(word:1.2)`` are not dynamic syntax). Wildcard files are ``<folder>/<name>.txt``, one
value a line; ``__folder/name__`` reads ``<folder>/folder/name.txt``.

Each picture's infotext has its resolved prompt as the prompt, and the template as the A1111 extension writes it
(``Template``, ``Negative Template``), so PNG info reproduces the picture and still shows where it came from.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dynamicprompts.generators import CombinatorialPromptGenerator, RandomPromptGenerator
from dynamicprompts.wildcards import WildcardManager
from pyparsing import ParseBaseException

from backend.schema.errors import ValidationError
from backend.schema.requests import GenerationRequest, GenerationResult
from backend.schema.seeds import batch_seeds

log = logging.getLogger(__name__)
WILDCARD = re.compile(r"__([^\s_][^\s]*?)__")  # __name__ or __folder/name__
TEMPLATE_KEYS = {"prompt": "Template", "negative_prompt": "Negative Template"}  # the extension's infotext keys


@dataclass(frozen=True)
class Resolved:
    """One picture's prompts, and the infotext keys that name their templates (empty when nothing was dynamic)."""

    prompt: str
    negative_prompt: str
    templates: dict[str, str]


def is_dynamic(text: str) -> bool:
    """Whether ``text`` has dynamic-prompt syntax: a variant group ``{…}`` or a ``__wildcard__``."""
    return "{" in text or bool(WILDCARD.search(text))


def resolve_prompts(
    prompt: str, negative_prompt: str, seeds: Sequence[int], combinatorial: bool, folder: Path
) -> list[Resolved]:
    """Each picture's prompts (one per seed). Raises ``ValidationError`` naming the prompt for bad syntax or a
    wildcard with no file."""
    templates = {
        TEMPLATE_KEYS[name]: text
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt))
        if is_dynamic(text)
    }
    manager = WildcardManager(folder)
    prompts = _expand("prompt", prompt, seeds, combinatorial, manager)
    negatives = _expand("negative_prompt", negative_prompt, seeds, combinatorial, manager)
    return [Resolved(p, n, templates) for p, n in zip(prompts, negatives, strict=True)]


def _expand(name: str, text: str, seeds: Sequence[int], combinatorial: bool, manager: WildcardManager) -> list[str]:
    if not is_dynamic(text):
        return [text] * len(seeds)
    _check_wildcards(name, text, manager)
    try:
        if combinatorial:
            found = CombinatorialPromptGenerator(manager).generate(text, max_prompts=len(seeds))
            return [found[i % len(found)] if found else "" for i in range(len(seeds))]
        return [RandomPromptGenerator(manager, seed=seed).generate(text, 1)[0] for seed in seeds]
    except ParseBaseException as err:
        where = f"at character {err.loc + 1}" if err.loc is not None else ""
        raise ValidationError(
            name, f"the dynamic-prompt syntax does not parse {where}: close every {{…}} group and separate its "
            "choices with | (a literal brace is written \\{)"
        ) from None


def _check_wildcards(name: str, text: str, manager: WildcardManager) -> None:
    """A wildcard with no file (or an empty one) is refused: the library would leave ``__name__`` in the prompt."""
    for wildcard in WILDCARD.findall(text):
        if "*" in wildcard:  # a glob: the library picks among the files it matches
            continue
        if not manager.get_values(wildcard).items:
            raise ValidationError(
                name,
                f"no wildcard file for __{wildcard}__: put {wildcard}.txt (one value a line) in the wildcards folder "
                f"({manager.path}, SDSTUDIO_WILDCARDS_DIR)",
            )


def split_batch(request: GenerationRequest, folder: Path) -> list[tuple[GenerationRequest, dict[str, str]]]:
    """The runs a request's batch needs, each with the infotext keys its pictures add: the request itself when its
    prompts have no dynamic syntax; else its pictures' resolved prompts, pictures next to each other with the same
    prompts in one run (their seeds stay consecutive, so each picture keeps the seed and noise it had in the batch).
    ``request.seed`` must be resolved already."""
    if not (is_dynamic(request.prompt) or is_dynamic(request.negative_prompt)):
        return [(request, {})]
    seeds = batch_seeds(request.seed, request.batch_size)
    resolved = resolve_prompts(
        request.prompt, request.negative_prompt, seeds, request.combinatorial_prompts, folder
    )
    runs: list[tuple[GenerationRequest, dict[str, str]]] = []
    for index, picture in enumerate(resolved):
        if index and picture == resolved[index - 1]:
            last, templates = runs[-1]
            runs[-1] = (last.replace(batch_size=last.batch_size + 1), templates)
            continue
        one = request.replace(prompt=picture.prompt, negative_prompt=picture.negative_prompt, seed=seeds[index])
        if hasattr(request, "subseed"):  # variation seeds advance with the seeds, as in one batch
            one = one.replace(subseed=batch_seeds(request.subseed, index + 1)[index])
        runs.append((one.replace(batch_size=1), picture.templates))
    return runs


def merge_results(results: list[GenerationResult], request: GenerationRequest, seconds: float) -> GenerationResult:
    """The runs of one split batch as one result, in batch order (``request``: the batch as asked, its templates)."""
    if len(results) == 1:
        return dataclasses.replace(results[0], seconds=seconds)
    merged = GenerationResult([], [], [], request, [], dict(results[0].extras), [], seconds)
    for result in results:
        merged.images += result.images
        merged.seeds += result.seeds
        merged.infotexts += result.infotexts
        merged.paths += result.paths
        merged.warnings += result.warnings
    return merged
