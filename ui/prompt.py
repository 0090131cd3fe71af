"""The prompt section every tab starts with: presets, prompt, negative prompt, the LoRA picker and styles."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backend.schema.errors import ValidationError
from backend.schema.requests import GenerationRequest

from .controls import words
from .inputs import FieldDropdown
from .networks import build_network_picker
from .presets_ui import PresetRow, build_preset_row
from .studio import Studio


@dataclass
class PromptSection:
    """Presets, prompt, negative prompt and styles: built first on every tab, so the prompt is what one sees first."""

    presets: PresetRow
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    styles: gr.Dropdown

    def fields(self) -> dict[str, gr.components.Component]:
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "styles": self.styles}


def build_prompt_section(studio: Studio, prefix: str) -> PromptSection:
    presets = build_preset_row(studio.engine.presets, prefix)
    return PromptSection(presets, *build_prompt_block(studio, prefix))


def build_prompt_block(studio: Studio, prefix: str) -> tuple[gr.Textbox, gr.Textbox, gr.Dropdown]:
    """Prompt, negative prompt, the LoRA/embedding picker, styles, and the final prompts the styles give (shown
    before generating)."""
    # value="": the API then has a default for them too, so a client may send only the fields it cares about.
    prompt = gr.Textbox("", lines=3, placeholder="a lighthouse at dusk", elem_id=f"{prefix}-prompt", **words("prompt"))
    prompt_tokens = gr.Markdown("0/75", elem_id=f"{prefix}-prompt-tokens")
    negative = gr.Textbox(
        "", lines=2, placeholder="blurry, lowres", elem_id=f"{prefix}-negative", **words("negative_prompt")
    )
    negative_tokens = gr.Markdown("0/75", elem_id=f"{prefix}-negative-tokens")
    for box, counter in ((prompt, prompt_tokens), (negative, negative_tokens)):
        # Tokens per 75-token chunk, as A1111 shows them; weights and brackets do not count.
        box.change(studio.engine.token_label, box, counter, queue=False, api_visibility="private")
    build_network_picker(studio.engine, prefix, prompt)
    styles = FieldDropdown(
        list(studio.engine.presets.styles), value=[], multiselect=True, elem_id=f"{prefix}-styles", **words("styles")
    )
    final = gr.Textbox(
        label="Prompt that will run", lines=2, interactive=False, visible=False, elem_id=f"{prefix}-final-prompt"
    )

    def preview(text: str, neg: str, chosen: list[str]):
        if not chosen:
            return gr.Textbox(value="", visible=False)
        try:
            merged = studio.engine.apply_styles(GenerationRequest(prompt=text, negative_prompt=neg, styles=chosen))
        except ValidationError as err:
            return gr.Textbox(value=str(err), visible=True)
        shown = merged.prompt + (f"\nNegative prompt: {merged.negative_prompt}" if merged.negative_prompt else "")
        return gr.Textbox(value=shown, visible=True)

    gr.on(
        [prompt.change, negative.change, styles.change],
        preview,
        [prompt, negative, styles],
        final,
        queue=False,
        api_visibility="private",
    )
    return prompt, negative, styles
