"""``python -m bench.memory_table``: what fits per GPU size, computed by ``backend.models.devices.plan_memory``.

For each model (its weight files' sizes: a folder or file given on the command line, or the sizes its hub repository
states, ``devices.STATED_SIZES``) and each card size, the plan SD Studio picks: at bf16 without torchao ("bf16"),
with torchao installed, where the plan may load the transformer in 8 bits ("bf16 + torchao": "8-bit + offload" is
an int8 transformer with model CPU offload), and for a checkpoint whose transformer and T5 are already 8-bit (a Q8
GGUF with an fp8 T5, "8-bit files"). A card's free memory is taken as its size less the CUDA context
(``devices.CONTEXT``). Sizes are the files' (or the stated) sizes, not measured GPU memory.
"""

from __future__ import annotations

import sys

from backend.models.devices import (
    CONTEXT,
    FULL,
    GIB,
    STATED_SIZES,
    MemoryPlan,
    plan_memory,
    quantized_parts,
    weight_sizes,
)
from backend.models.quantize import NO_TORCHAO

CARDS = (8, 12, 16, 24, 48, 80)  # GB (GiB) of GPU memory
SHORT = {"whole model on the GPU": "full", "model CPU offload": "model offload", "sequential CPU offload": "sequential"}


def cell(plan: MemoryPlan) -> str:
    short = SHORT[plan.mode]
    return ("8-bit + offload" if plan.mode != FULL else "8-bit full") if plan.quantized else short


def rows(models: dict[str, dict[str, int]]) -> list[str]:
    head = "| model | weights (GB) | largest part (GB) | " + " | ".join(f"{c} GB" for c in CARDS) + " |"
    lines = [head, "|" + " --- |" * (3 + len(CARDS))]
    for name, parts in models.items():
        variants = (
            (f"{name} bf16", parts, NO_TORCHAO),
            (f"{name} bf16 + torchao", parts, ""),
            (f"{name} 8-bit files", quantized_parts(parts), NO_TORCHAO),
        )
        for label, sizes, blocker in variants:
            if label.endswith("torchao") and "transformer" not in sizes:
                continue  # a UNet model: nothing to quantize, the same row as bf16
            plans = [cell(plan_memory(card * GIB - CONTEXT, sizes, blocker)) for card in CARDS]
            total, largest = sum(sizes.values()) / GIB, max(sizes.values()) / GIB
            lines.append(f"| {label} | {total:.1f} | {largest:.1f} | " + " | ".join(plans) + " |")
    return lines


def main(argv: list[str]) -> None:
    models = {source.split("/")[-1]: weight_sizes(source) for source in argv} if argv else {
        hub_id.split("/")[-1]: parts for hub_id, parts in STATED_SIZES.items()
    }
    print("\n".join(rows({name: parts for name, parts in models.items() if parts})))


if __name__ == "__main__":
    main(sys.argv[1:])
