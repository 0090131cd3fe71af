"""Styles (A1111 ``styles.csv`` format) and generation presets (named bundles of request values).

Shipped data lives in ``presets/`` (every ``*.csv`` there is a styles file, so a user's own ``styles.csv``
dropped in works as is). ``<user_dir>/presets.json`` holds the server owner's presets, offered to everyone. Presets
a user saves from the page are that user's alone: kept under their login (``<user_dir>/presets/``) or, without a
login, in their browser's storage.
A malformed file is reported with its path and line and skipped; loading never raises.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.library.outputs import write_atomic
from backend.schema.catalog import preset_fields
from backend.schema.requests import GenerationRequest

PLACEHOLDER = "{prompt}"
MAX_PRESET_NAME = 60
MAX_OWN_PRESETS = 50
_MARKUP = set("<>&\"'`")
# Request fields a preset may set (not prompt, seed, or images: those are the user's own).
PRESET_FIELDS = preset_fields()


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""
    source: str = ""


@dataclass(frozen=True)
class GenerationPreset:
    name: str
    values: dict[str, Any]
    source: str = ""
    user: bool = False


def merge_prompt(template: str, prompt: str) -> str:
    """A1111's rule: a template with ``{prompt}`` wraps the prompt; otherwise it is appended."""
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), template.strip()) if part)


def apply_styles(prompt: str, negative: str, styles: list[Style]) -> tuple[str, str]:
    for style in styles:
        prompt = merge_prompt(style.prompt, prompt)
        negative = merge_prompt(style.negative_prompt, negative)
    return prompt, negative


def read_styles_csv(path: Path) -> tuple[list[Style], list[str]]:
    """Styles from one CSV (columns name, prompt, negative_prompt; quotes, commas, newlines allowed)."""
    styles: list[Style] = []
    problems: list[str] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            if not reader.fieldnames or "name" not in reader.fieldnames:
                return [], [f"{path}: line 1: a styles file needs a 'name' column (name,prompt,negative_prompt)"]
            for row in reader:
                name = (row.get("name") or "").strip()
                if not name:
                    problems.append(f"{path}: line {reader.line_num}: style without a name, skipped")
                    continue
                styles.append(Style(name, row.get("prompt") or "", row.get("negative_prompt") or "", source=str(path)))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problems.append(f"{path}: {err}")
    return styles, problems


def read_presets_json(path: Path, user: bool = False) -> tuple[list[GenerationPreset], list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], []
    except json.JSONDecodeError as err:
        return [], [f"{path}: line {err.lineno}: {err.msg}"]
    except (OSError, UnicodeDecodeError) as err:
        return [], [f"{path}: {err}"]
    presets: list[GenerationPreset] = []
    problems: list[str] = []
    for index, entry in enumerate(data.get("presets", []) if isinstance(data, dict) else []):
        if not isinstance(entry, dict) or not entry.get("name") or not isinstance(entry.get("values"), dict):
            problems.append(f"{path}: presets[{index}]: needs a 'name' and a 'values' object, skipped")
            continue
        unknown = sorted(set(entry["values"]) - set(PRESET_FIELDS))
        if unknown:
            problems.append(f"{path}: presets[{index}] ({entry['name']}): unknown fields {unknown}, ignored")
        values = {k: v for k, v in entry["values"].items() if k in PRESET_FIELDS}
        presets.append(GenerationPreset(entry["name"], values, str(path), user))
    return presets, problems


def write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")
    write_atomic(path, lambda f: f.write(text), ".json.tmp")


@dataclass
class PresetStore:
    presets_dir: Path
    user_dir: Path
    styles: dict[str, Style] = field(default_factory=dict)
    presets: dict[str, GenerationPreset] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _save_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def user_file(self) -> Path:
        return Path(self.user_dir) / "presets.json"

    @classmethod
    def load(cls, presets_dir: Path, user_dir: Path) -> PresetStore:
        store = cls(Path(presets_dir), Path(user_dir))
        store.reload()
        return store

    def reload(self) -> None:
        # Built aside and swapped in at once: a generation reading the styles never sees them half loaded.
        styles: dict[str, Style] = {}
        presets: dict[str, GenerationPreset] = {}
        all_problems: list[str] = []
        for path in sorted(self.presets_dir.glob("*.csv")):
            found, problems = read_styles_csv(path)
            all_problems += problems
            styles.update((s.name, s) for s in found)  # later files win on a name clash
        for path, user in ((self.presets_dir / "generation.json", False), (self.user_file, True)):
            found_presets, problems = read_presets_json(path, user)
            all_problems += problems
            presets.update((p.name, p) for p in found_presets)
        self.styles, self.presets, self.problems = styles, presets, all_problems

    def style_list(self, names: list[str] | tuple[str, ...]) -> list[Style]:
        unknown = [n for n in names if n not in self.styles]
        if unknown:
            raise KeyError(f"unknown style(s) {unknown}; choose from: {', '.join(self.styles)}")
        return [self.styles[n] for n in names]

    def add_own(self, entries: Any, name: str, values: dict[str, Any]) -> tuple[list[dict[str, Any]], GenerationPreset]:
        """A user's presets with ``name`` added or replaced: (entries to store, the saved preset).

        Names of the server's presets (shipped, or the owner's shared file) are taken; one person keeps at most
        ``MAX_OWN_PRESETS``.
        """
        name = check_preset_name(name)
        if name in self.presets:
            raise ValueError(f"{name!r} is one of this server's presets; save under another name")
        own = own_presets(entries)
        own.pop(name, None)
        if len(own) >= MAX_OWN_PRESETS:
            raise ValueError(
                f"you already keep {MAX_OWN_PRESETS} presets, the most one person may; save over one of them "
                "(the same name replaces it)"
            )
        saved = GenerationPreset(name, preset_values(values), "own", True)
        return [{"name": p.name, "values": p.values} for p in (*own.values(), saved)], saved

    def owner_file(self, login: str) -> Path:
        """Where a logged-in user's presets are kept: a file per login, named so no login can reach another's."""
        slug = re.sub(r"[^A-Za-z0-9_-]", "_", login)[:32]
        digest = hashlib.sha256(login.encode("utf-8")).hexdigest()[:12]
        return Path(self.user_dir) / "presets" / f"{slug}-{digest}.json"

    def read_owner(self, login: str) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.owner_file(login).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return data.get("presets", []) if isinstance(data, dict) else []

    def write_owner(self, login: str, entries: list[dict[str, Any]]) -> None:
        path = self.owner_file(login)
        with self._save_lock:  # two pages of one login saving at once must not interleave
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {"presets": entries})


def check_preset_name(name: Any) -> str:
    """A preset name is shown in every menu of its owner's page: short, printable, nothing a page could read as
    markup."""
    text = str(name or "").strip()
    if not text:
        raise ValueError("give the preset a name")
    if len(text) > MAX_PRESET_NAME:
        raise ValueError(f"a preset name has at most {MAX_PRESET_NAME} characters, this one {len(text)}")
    if any(ch in _MARKUP or not ch.isprintable() for ch in text):
        raise ValueError("a preset name may not contain < > & \" ' ` or control characters")
    return text


def preset_values(values: dict[str, Any]) -> dict[str, Any]:
    # Width/height 0 mean "follow the input image" (img2img, inpaint): not a size to carry to other tabs.
    return {k: v for k, v in values.items() if k in PRESET_FIELDS and not (k in ("width", "height") and not v)}


def own_presets(entries: Any) -> dict[str, GenerationPreset]:
    """A user's own presets from what was stored for them (their file, or their browser's storage, which the
    browser can change: anything malformed is left out)."""
    found: dict[str, GenerationPreset] = {}
    for entry in entries[:MAX_OWN_PRESETS] if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
            continue
        try:
            name = check_preset_name(entry.get("name"))
        except ValueError:
            continue
        found[name] = GenerationPreset(name, preset_values(entry["values"]), "own", True)
    return found


def preset_applies_to(request_cls: type[GenerationRequest]) -> tuple[str, ...]:
    """The preset fields a task's request has (img2img has strength, txt2img has not)."""
    names = {f.name for f in fields(request_cls)}
    return tuple(f for f in PRESET_FIELDS if f in names)
