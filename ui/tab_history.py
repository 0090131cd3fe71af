"""The History tab: the caller's saved pictures, newest first, a page at a time; filters; details; Send; Delete.

The pictures come from the index (``backend/library/history.py``), never from a folder listing, so opening the tab
or turning a page reads only the page's files. Each caller sees their own pictures (``ui.studio.visible_owners``).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
from PIL import Image

from backend.generation.engine import Engine
from backend.library.history import PAGE_SIZE, Entry, History, Query

from .events import TOASTING
from .handle import TabHandle
from .send import NothingToSend, wire_send
from .studio import Studio, visible_owners
from .tab_pnginfo import SEND_TO

log = logging.getLogger("sd_studio.ui")
THUMBNAIL = 256  # the gallery's pictures are at most this many pixels a side; the details show the full one
ANY = ""


@dataclass
class HistoryTab:
    """What the app wires after every tab is built: the "Send to …" buttons and what they read."""

    history: History | None
    send_buttons: dict[str, gr.Button]
    inputs: list[gr.components.Component]

    def wire_sends(self, handles: dict[str, TabHandle], tabs: gr.Tabs) -> None:
        if self.history is None:
            return
        for target, button in self.send_buttons.items():
            wire_send(button, self.inputs, partial(load_picture, self.history), handles[target], tabs)


def open_history(engine: Engine) -> History | None:
    """The engine's output folder's index (one per engine, however many times the app is built), catching up with the
    folder in the background; None when the server saves no pictures."""
    if not engine.settings.save_outputs:
        return None
    writer = getattr(engine, "writer", None)  # a remote engine saves on its replicas: the scan finds those
    hooks = getattr(writer, "on_saved", [])
    for hook in hooks:
        if isinstance(getattr(hook, "__self__", None), History):
            return hook.__self__
    try:
        history = History(engine.settings.output_dir)
    except (OSError, sqlite3.Error) as err:  # an unwritable output folder: the pictures are not saved either
        log.warning("History unavailable: %s", err)
        return None
    hooks.append(history.add)
    history.scan_in_background()
    return history


def load_picture(history: History, ids: list[int] | None, selected: int | None) -> tuple[Image.Image, str]:
    """Send's loader: the selected picture of the page, read from its file, and its parameters."""
    entry = _selected(history, ids, selected)
    with Image.open(history.file(entry)) as image:
        image.load()
        return image.copy(), entry.infotext


def _selected(history: History, ids: list[int] | None, selected: int | None) -> Entry:
    if not ids:
        raise NothingToSend("There is no picture here: search, then click a picture first.")
    # ids come from this session's own search (server-side state), so they are the caller's pictures.
    entry = history.get(ids[min(selected or 0, len(ids) - 1)], None)
    if entry is None or not history.file(entry).exists():
        raise NothingToSend("That picture is gone (deleted or moved): press Refresh.")
    return entry


def thumbnail(history: History, entry: Entry) -> Image.Image | None:
    try:
        with Image.open(history.file(entry)) as image:
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            return image.convert("RGB")
    except OSError:
        return None  # gone since the last scan


def page_of(history: History, caller: gr.Request, query: Query, page: int) -> tuple[list, list[dict], str, list, int]:
    """(gallery, entries, summary, ids, page number) for one page of the caller's pictures."""
    found = history.search(visible_owners(caller), query, int(page or 1), PAGE_SIZE)
    gallery, entries, ids = [], [], []
    for entry in found.entries:
        picture = thumbnail(history, entry)
        if picture is None:
            continue
        gallery.append((picture, entry.prompt[:60]))
        entries.append({"id": entry.id, "day": entry.day, "model": entry.model, "infotext": entry.infotext})
        ids.append(entry.id)
    if found.total:
        summary = f"Page {found.page} of {found.pages} · {found.total} picture{'s' * (found.total != 1)}"
    else:
        summary = "No saved pictures match." if any((query.words, query.model, query.day)) else "No saved pictures."
    return gallery, entries, summary, ids, found.page


def details(history: History, ids: list[int], index: int) -> tuple[Image.Image | None, str]:
    """The full picture and its parameters, for the details column."""
    try:
        entry = _selected(history, ids, index)
        with Image.open(history.file(entry)) as image:
            image.load()
            return image.copy(), entry.infotext
    except (NothingToSend, OSError):
        return None, ""


def build_tab(studio: Studio, opened: gr.Tab | None = None) -> HistoryTab:
    """The tab (``opened``: its ``gr.Tab``, whose opening shows the newest pictures); the app wires its "Send to …"
    buttons once every tab exists (``HistoryTab.wire_sends``)."""
    history = studio.history = open_history(studio.engine)
    if history is None:
        gr.Markdown(
            "This server does not save pictures (outputs are off, or its output folder cannot be written), "
            "so there is no history."
        )
        return HistoryTab(None, {}, [])
    c = _layout()
    query, model, day, page, gallery, entries, summary = (
        c[k] for k in ("query", "model", "day", "page", "gallery", "entries", "summary")
    )
    picture, infotext = c["picture"], c["infotext"]
    ids, selected = gr.State([]), gr.State(0)
    filters = [query, model, day, page]
    results = [gallery, entries, summary, ids, page]

    def show(words: str, model_name: str, day_name: str, number: float, request: gr.Request):
        return page_of(history, request, Query(words or "", model_name or "", day_name or ""), int(number or 1))

    def api_history(query: str = "", model: str = ANY, day: str = ANY, page: float = 1, request: gr.Request = None):
        """The caller's saved pictures matching prompt words, model and day (empty = any): one page, newest first."""
        return show(query, model, day, page, request)

    def rescan(words: str, model_name: str, day_name: str, number: float, request: gr.Request):
        history.scan()  # pictures other tools dropped in, files deleted outside the app
        return listed(words, model_name, day_name, number, request)

    def listed(words: str, model_name: str, day_name: str, number: float, request: gr.Request):
        """The filters' lists and the page, from the index alone (opening the tab reads no folder)."""
        owners = visible_owners(request)
        models = gr.Dropdown(choices=[ANY, *history.values("model", owners)])
        days = gr.Dropdown(choices=[ANY, *history.values("day", owners)])
        return models, days, *show(words, model_name, day_name, number, request)

    def newer(words: str, model_name: str, day_name: str, number: float, request: gr.Request):
        return show(words, model_name, day_name, max(1, int(number or 1) - 1), request)

    def older(words: str, model_name: str, day_name: str, number: float, request: gr.Request):
        return show(words, model_name, day_name, int(number or 1) + 1, request)

    def pick(ids_: list[int], evt: gr.SelectData):
        return evt.index, *details(history, ids_, evt.index)

    def remove(
        ids_: list[int], index: int, words: str, model_name: str, day_name: str, number: float, request: gr.Request
    ):
        try:
            entry = _selected(history, ids_, index)
            where = history.trash(entry.id, visible_owners(request))
        except (NothingToSend, KeyError):
            gr.Warning("Nothing deleted: select one of your pictures first.")
            return gr.skip(), gr.skip(), *show(words, model_name, day_name, number, request)
        gr.Info(f"Moved to the trash: {where.relative_to(history.root).as_posix()} (nothing is lost).")
        return None, "", *show(words, model_name, day_name, number, request)

    c["search"].click(api_history, filters, results, api_name="history", concurrency_limit=None)
    query.submit(show, filters, results, **TOASTING)
    for dropdown in (model, day):
        dropdown.input(show, filters, results, **TOASTING)
    c["refresh"].click(rescan, filters, [model, day, *results], **TOASTING)
    if opened is not None:
        opened.select(listed, filters, [model, day, *results], **TOASTING)
    c["previous"].click(newer, filters, results, **TOASTING)
    c["following"].click(older, filters, results, **TOASTING)
    gallery.select(pick, ids, [selected, picture, infotext], **TOASTING)
    gallery.change(lambda: 0, None, selected, queue=False, api_visibility="private")
    c["delete"].click(remove, [ids, selected, *filters], [picture, infotext, *results], **TOASTING)
    return HistoryTab(history, c["send"], [ids, selected])


def _layout() -> dict[str, Any]:
    """The tab's components by name: filters and paging above, the gallery left, the chosen picture right."""
    with gr.Row():
        query = gr.Textbox("", label="Prompt words", placeholder="e.g. red circle", scale=3, elem_id="history-query")
        model = gr.Dropdown([ANY], value=ANY, label="Model", allow_custom_value=True, elem_id="history-model")
        day = gr.Dropdown([ANY], value=ANY, label="Day", allow_custom_value=True, elem_id="history-day")
    with gr.Row():
        search = gr.Button("Search", variant="primary", elem_id="history-search")
        refresh = gr.Button("Refresh", elem_id="history-refresh")
        previous = gr.Button("◀ Newer", size="sm", elem_id="history-previous")
        page = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="history-page")
        following = gr.Button("Older ▶", size="sm", elem_id="history-next")
    summary = gr.Markdown(elem_id="history-summary")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Saved pictures",
                format="png",
                columns=6,
                height=520,
                interactive=False,
                elem_id="history-gallery",
            )
            entries = gr.JSON(label="This page's pictures", visible=False)
        with gr.Column(scale=2):
            picture = gr.Image(label="Picture", type="pil", interactive=False, elem_id="history-picture")
            infotext = gr.Textbox(label="Parameters", lines=5, interactive=False, elem_id="history-infotext")
            with gr.Row():
                buttons = {t: gr.Button(label, size="sm", elem_id=f"history-send-{t}") for t, label in SEND_TO.items()}
            delete = gr.Button("Delete (to the trash)", variant="stop", size="sm", elem_id="history-delete")
    return {
        "query": query,
        "model": model,
        "day": day,
        "search": search,
        "refresh": refresh,
        "previous": previous,
        "page": page,
        "following": following,
        "summary": summary,
        "gallery": gallery,
        "entries": entries,
        "picture": picture,
        "infotext": infotext,
        "send": buttons,
        "delete": delete,
    }
