"""Assemble the Blocks app: one tab per file, shared controls, one GPU queue."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from backend.generation.engine import Engine
from backend.serving.logins import Logins
from backend.serving.space import duplicate_url, space_id

from . import (
    tab_controlnet,
    tab_extras,
    tab_grid,
    tab_history,
    tab_img2img,
    tab_inpaint,
    tab_pnginfo,
    tab_txt2img,
    tab_xyz,
)
from .common import ELEM_IDS
from .login_guard import LoginGuard
from .presets_ui import own_preset_storage
from .queue_share import QueueShare, queued_jobs
from .send import wire_gallery_sends, wire_send
from .session import CancelRegistry
from .studio import Studio

TITLE = "SD Studio"
TABS = {
    "txt2img": tab_txt2img,
    "img2img": tab_img2img,
    "inpaint": tab_inpaint,
    "controlnet": tab_controlnet,
    "sampler grid": tab_grid,
    "x/y/z plot": tab_xyz,
}


# Ctrl/Cmd+Enter in a prompt box generates on that box's tab; Tab from the negative prompt goes to Generate; Escape
# presses the visible tab's Stop.
SHORTCUTS_JS = """
() => {
  document.addEventListener("keydown", (event) => {
    const box = event.target.closest ? event.target.closest("[id$='-prompt'], [id$='-negative']") : null;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && box) {
      const button = document.getElementById(box.id.replace(/-(prompt|negative)$/, "-generate"));
      if (button) { event.preventDefault(); button.click(); }
    } else if (event.key === "Tab" && !event.shiftKey && box && box.id.endsWith("-negative")) {
      // Tab order: prompt, negative prompt, then Generate (it sits in the other column, after every setting).
      const button = document.getElementById(box.id.replace(/-negative$/, "-generate"));
      if (button) { event.preventDefault(); button.focus(); }
    } else if (event.key === "Escape") {
      const stop = [...document.querySelectorAll("button[id$='-stop']")].find((b) => b.offsetParent !== null);
      if (stop) stop.click();
    }
  });
  // "Seed used" is empty, not 0, until a run has set it: Gradio's number field shows 0 for no value, so a field
  // is blanked as it is mounted (a run only changes its value; it never mounts it again).
  const blank = (root) => root.querySelectorAll && root.querySelectorAll("[id$='-seed-used'] input").forEach(
    (input) => { if (input.value === "0") input.value = ""; });
  blank(document);
  // An error names its field first ("width: …"): outline that field on the visible tab and scroll it into view,
  // since it may be far below the fold (the message stays in the toast).
  const ids = __ELEM_IDS__;  // a field's element id where it is not its name with dashes (ui/common.py)
  const point = (node) => {
    if (!node.querySelectorAll) return;
    const toasts = node.matches && node.matches(".toast-body") ? [node] : node.querySelectorAll(".toast-body");
    toasts.forEach((toast) => {
      const found = /(?:^|\\n)\\s*([a-z][a-z0-9_]*): /.exec(toast.innerText);
      if (!found) return;
      const suffix = "-" + (ids[found[1]] || found[1].replace(/_/g, "-"));
      const field = [...document.querySelectorAll(`[id$='${suffix}']`)].find((el) => el.offsetParent !== null);
      if (!field) return;
      field.classList.add("field-error");
      field.scrollIntoView({ block: "center", behavior: "smooth" });
      setTimeout(() => field.classList.remove("field-error"), 6000);
    });
  };
  new MutationObserver((changes) => changes.forEach((c) => c.addedNodes.forEach((n) => { blank(n); point(n); })))
    .observe(document.body, { childList: true, subtree: true });
}
""".replace("__ELEM_IDS__", json.dumps(ELEM_IDS))
# Small pictures (the demo model's 64²) are scaled up with hard pixel edges, and no picture is cropped.
CSS = """
[id$='-gallery'] img, [id$='-map'] img, #inpaint-mask-used img, #grid-sheet img {
  image-rendering: pixelated;
  object-fit: contain !important;
}
/* Small buttons beside a field (Refresh, Random, Reuse, Apply) sit at the field's height, not the row's. */
.tool-button { align-self: flex-end; height: auto !important; max-height: 44px; margin-bottom: 6px; }
/* Dark mode: the image editor paints its empty canvas white; darken it until a picture is in it. */
.dark #inpaint-editor:has(.empty.wrap) .pixi-target canvas { filter: invert(0.86); }
/* The field an error names (see SHORTCUTS_JS). */
.field-error { outline: 3px solid var(--error-border-color, #ef4444); outline-offset: 2px; border-radius: 6px; }
/* Toasts at the bottom right, never over Generate/Stop at the top right. */
.toast-wrap { top: auto !important; bottom: var(--size-4); }
/* Phones stack the columns, which would put Generate below every setting: keep Generate/Stop in a bar at the
   bottom of the screen instead (and room under the page so the bar hides nothing). */
@media (max-width: 640px) {
  .run-buttons {
    position: fixed; bottom: 0; left: 0; right: 0; z-index: 40; margin: 0; padding: 8px;
    background: var(--background-fill-primary); box-shadow: 0 -2px 8px rgba(0, 0, 0, 0.15);
  }
  body { padding-bottom: 72px; }
  .toast-wrap { bottom: 80px; }
}
"""


def launch_options(engine: Engine, logins: Logins | None = None, lifespan: Callable | None = None) -> dict[str, Any]:
    """``launch`` arguments every server of the app uses (the CLI and the tests).

    No ``allowed_paths``: the output folder is the server owner's and is never served. Users get the copies Gradio
    caches for their own session. With ``logins``, Gradio's login page checks them, behind ``LoginGuard``'s brake.
    ``lifespan``: run by the server as it starts, before its first answer (the A1111 API mounts itself there).
    """
    options: dict[str, Any] = {"max_file_size": f"{engine.settings.max_upload_mb}mb", "js": SHORTCUTS_JS, "css": CSS}
    middleware = [Middleware(QueueShare, limit=engine.settings.jobs_per_client, jobs=queued_jobs)]
    if logins is not None:
        options["auth"] = logins.verify
        middleware.append(Middleware(LoginGuard, logins=logins))
    options["app_kwargs"] = {"middleware": middleware}
    if lifespan is not None:
        options["app_kwargs"]["lifespan"] = lifespan
    return options


def queued_events(demo: gr.Blocks) -> int:
    """Events waiting in the Gradio queue (the A1111 API's jobs count against the same bound)."""
    queue = getattr(demo, "_queue", None)  # Gradio has no public accessor for its queue's length
    return len(queue) if queue is not None else 0


def build_demo(engine: Engine) -> gr.Blocks:
    studio = Studio(engine=engine, cancels=CancelRegistry())
    age = engine.settings.cache_max_age
    # Uploads and served results are deleted from Gradio's cache after ``age`` (checked every quarter of it), so a
    # long-running demo does not fill its disk.
    with gr.Blocks(title=TITLE, delete_cache=(max(60, age // 4), age)) as demo:
        gr.Markdown(f"# {TITLE}")
        studio.preset_storage = own_preset_storage()
        if engine.startup_notice:
            gr.Markdown(f"**Note:** {engine.startup_notice}", elem_id="startup-notice")
        if space := space_id():
            # One Space serves everyone through one queue; a copy of it has its own.
            gr.Markdown(
                f"Busy? [Duplicate this Space]({duplicate_url(space)}) to get your own copy with its own queue "
                "(and your own GPU if you choose one).",
                elem_id="duplicate-space",
            )
        if engine.presets.problems:
            problems = "\n".join(f"- {p}" for p in engine.presets.problems)
            gr.Markdown(f"**Some preset files could not be read:**\n{problems}", elem_id="preset-problems")
        if engine.registry.problems:
            skipped = "\n".join(f"- {p}" for p in engine.registry.problems)
            gr.Markdown(f"**Some checkpoint files were skipped:**\n{skipped}", elem_id="checkpoint-problems")
        with gr.Tabs() as tabs:
            handles = {}
            for tab_id, module in TABS.items():
                with gr.Tab(tab_id, id=tab_id):
                    handles[tab_id] = module.build_tab(studio)
            with gr.Tab("Extras", id="extras"):
                tab_extras.build_tab(studio)
            with gr.Tab("PNG info", id="png info"):
                send_buttons, info_inputs = tab_pnginfo.build_tab(studio)
            with gr.Tab("History", id="history") as history_tab:
                history = tab_history.build_tab(studio, history_tab)
        gr.Markdown(engine.precision, elem_id="precision")
        wire_gallery_sends(handles, tabs)
        history.wire_sends(handles, tabs)
        for target, button in send_buttons.items():
            load = partial(tab_pnginfo.load_from_pnginfo, max_pixels=engine.settings.max_image_pixels)
            wire_send(button, info_inputs, load, handles[target], tabs)
    # One pipeline run per engine (one GPU; a Ray deployment has one per replica), FIFO; a bounded queue so a
    # crowd gets "queue full", not a stall.
    demo.queue(default_concurrency_limit=engine.concurrency, max_size=engine.settings.queue_size)
    demo.sd_studio_runs = studio.cancels  # ui/queue_share.py tells it which jobs joined the queue
    return demo
