"""``python -m bench.memory_table``: what fits per GPU size, computed by ``backend.models.devices.plan_memory``.

For each model (its weight files' sizes: a folder given on the command line, or the sizes its hub repository states,
``devices.STATED_SIZES``) and each card size, the plan SD Studio picks at bf16, and the one for a checkpoint whose
transformer and T5 are 8-bit. A card's free memory is taken as its size less the CUDA context (``devices.CONTEXT``).
"""

from __future__ import annotations

import sys

from backend.models.devices import CONTEXT, GIB, STATED_SIZES, plan_memory, quantized_parts, weight_sizes

CARDS = (8, 12, 16, 24, 48, 80)  # GB (GiB) of GPU memory
SHORT = {"whole model on the GPU": "full", "model CPU offload": "model offload", "sequential CPU offload": "sequential"}


def rows(models: dict[str, dict[str, int]]) -> list[str]:
    head = "| model | weights (GB) | largest part (GB) | " + " | ".join(f"{c} GB" for c in CARDS) + " |"
    lines = [head, "|" + " --- |" * (3 + len(CARDS))]
    for name, parts in models.items():
        for label, sizes in ((f"{name} bf16", parts), (f"{name} 8-bit", quantized_parts(parts))):
            plans = [SHORT[plan_memory(card * GIB - CONTEXT, sizes).mode] for card in CARDS]
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
