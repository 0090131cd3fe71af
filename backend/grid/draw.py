"""The grid sheet: cells under their sampler headers, row labels on the left, each cell captioned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw, ImageFont


def draw_grid(
    images: list[Image.Image],
    x_labels: list[str],
    y_labels: list[str],
    x_title: str,
    y_title: str,
    captions: list[str],
) -> tuple[Image.Image, list[tuple[int, int]]]:
    """A white sheet: the X title over column headers, row headers on the left (the Y title above them), and
    each cell with its caption under it. Text scales with the cell size so it reads at a glance.

    Returns the sheet and each cell's top-left corner, row-major.
    """
    columns, rows = len(x_labels), len(y_labels)
    cell_w, cell_h = images[0].size
    size = max(14, min(cell_w, cell_h) // 16)
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    pad, line = size // 2, round(size * 1.3)
    words = [word for label in x_labels for word in label.split()]
    column_w = max([cell_w] + [int(measure(w, font=font)) + 2 * pad for w in words + captions])
    header = [_wrap(label, font, column_w - pad, measure) for label in x_labels]
    row_w = max(int(measure(text, font=font)) for text in [*y_labels, y_title]) + 2 * pad
    title_h = line + pad
    header_h = line * max(len(lines) for lines in header) + pad
    caption_h = line + pad
    top = pad + title_h + header_h
    sheet = Image.new("RGB", (row_w + columns * column_w + pad, top + rows * (cell_h + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)

    def centered(text: str, center_x: float, y: float, fill: str = "black") -> None:
        draw.text((center_x - measure(text, font=font) / 2, y), text, font=font, fill=fill)

    centered(x_title, row_w + columns * column_w / 2, pad)
    draw.text((pad, top - line - pad // 2), y_title, font=font, fill="black")
    for c, lines in enumerate(header):
        center = row_w + c * column_w + column_w / 2
        for n, text in enumerate(lines):
            centered(text, center, top - pad // 2 - (len(lines) - n) * line)
    draw.line([(pad, top - 2), (sheet.width - pad, top - 2)], fill="#bbbbbb", width=1)
    boxes = []
    for k, image in enumerate(images):
        row, column = divmod(k, columns)
        x = row_w + column * column_w + (column_w - cell_w) // 2
        y = top + row * (cell_h + caption_h)
        if column == 0:
            draw.text((pad, y + (cell_h - line) / 2), y_labels[row], font=font, fill="black")
        sheet.paste(image.convert("RGB"), (x, y))
        centered(captions[k], row_w + column * column_w + column_w / 2, y + cell_h + pad // 4, fill="#444444")
        boxes.append((x, y))
    return sheet, boxes


def _wrap(text: str, font: Any, width: float, measure: Callable[..., float]) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and measure(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]
