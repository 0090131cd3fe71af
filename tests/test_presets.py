"""Styles (A1111 styles.csv), generation presets, user presets that survive a restart."""

from __future__ import annotations

import json

import pytest

from backend.generation.engine import Engine
from backend.library.presets import (
    MAX_OWN_PRESETS,
    PresetStore,
    Style,
    apply_styles,
    merge_prompt,
    own_presets,
    read_styles_csv,
)
from backend.schema.errors import ValidationError
from backend.settings import Settings

A1111_CSV = """name,prompt,negative_prompt
"Cinematic, moody","cinematic still of {prompt}, ""anamorphic"", grain","cartoon, drawing"
Multi line,"first line
second line",
Suffix only,"highly detailed, sharp",
,"no name here",
"""


def test_a1111_styles_csv_with_quotes_commas_newlines(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(A1111_CSV, encoding="utf-8")
    styles, problems = read_styles_csv(path)
    by_name = {s.name: s for s in styles}
    assert list(by_name) == ["Cinematic, moody", "Multi line", "Suffix only"]
    assert by_name["Cinematic, moody"].prompt == 'cinematic still of {prompt}, "anamorphic", grain'
    assert by_name["Cinematic, moody"].negative_prompt == "cartoon, drawing"
    assert by_name["Multi line"].prompt == "first line\nsecond line"
    assert by_name["Suffix only"].negative_prompt == ""
    assert len(problems) == 1 and "styles.csv: line 6: style without a name" in problems[0]


def test_missing_columns(tmp_path):
    only_prompt = tmp_path / "a.csv"
    only_prompt.write_text("name,prompt\nShort,{prompt} in the rain\n")
    styles, problems = read_styles_csv(only_prompt)
    assert styles == [Style("Short", "{prompt} in the rain", "", str(only_prompt))] and problems == []
    no_name = tmp_path / "b.csv"
    no_name.write_text("title,prompt\nx,y\n")
    styles, problems = read_styles_csv(no_name)
    assert styles == [] and "b.csv: line 1: a styles file needs a 'name' column" in problems[0]


def test_template_and_several_styles():
    assert merge_prompt("photo of {prompt}, 35mm", "a cat") == "photo of a cat, 35mm"
    assert merge_prompt("highly detailed", "a cat") == "a cat, highly detailed"
    assert merge_prompt("highly detailed", "") == "highly detailed"
    photo = Style("photo", "photo of {prompt}", "drawing")
    detail = Style("detail", "sharp focus", "blurry")
    assert apply_styles("a cat", "", [photo, detail]) == ("photo of a cat, sharp focus", "drawing, blurry")


def test_shipped_styles_and_presets():
    store = PresetStore.load(Settings().presets_dir, Settings().user_dir)
    assert store.problems == []
    assert len(store.styles) >= 12
    for name in ("Photographic", "Cinematic", "Anime", "Watercolor", "Line art", "Isometric"):
        assert "{prompt}" in store.styles[name].prompt
    assert store.presets["SD-Turbo · 1 step"].values["steps"] == 1
    assert store.presets["SDXL · 1024²"].values["width"] == 1024


def test_dropped_in_styles_csv_is_seen(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "styles.csv").write_text(A1111_CSV)
    (presets / "mine.csv").write_text('name,prompt,negative_prompt\nNeon,"{prompt}, neon",dull\n')
    store = PresetStore.load(presets, tmp_path / "user")
    assert {"Cinematic, moody", "Neon"} <= set(store.styles)


def test_styles_land_in_the_request_and_infotext(settings, tiny_request):
    engine = Engine(settings)
    result = engine.run(tiny_request.replace(styles=("Photographic", "Quality boost"), negative_prompt="green"))
    assert result.request.prompt.startswith("cinematic photo of a red circle on a blue background, 35mm")
    assert result.request.prompt.endswith("masterpiece, best quality, highly detailed, sharp focus")
    assert result.request.negative_prompt.startswith("green, drawing, painting")
    assert result.infotext.startswith(result.request.prompt + "\nNegative prompt: green, drawing")
    styled = engine.run(tiny_request.replace(styles=("Anime",))).images[0]
    plain = engine.run(tiny_request).images[0]
    assert styled.tobytes() != plain.tobytes()
    with pytest.raises(ValidationError, match="unknown style"):
        engine.run(tiny_request.replace(styles=("Nope",)))


def test_own_presets_survive_restart_per_login_and_never_overwrite_the_servers(tmp_path):
    presets = Settings().presets_dir
    store = PresetStore.load(presets, tmp_path / "user")
    entries, saved = store.add_own([], "My look", {"steps": 33, "sampler": "DDIM", "prompt": "not a preset field"})
    store.write_owner("ann", entries)
    again = PresetStore.load(presets, tmp_path / "user")  # a restart
    assert own_presets(again.read_owner("ann"))["My look"].values == {"steps": 33, "sampler": "DDIM"}
    assert again.read_owner("bob") == [] and "My look" not in again.presets  # nobody else's, not the server's
    entries, _ = again.add_own(again.read_owner("ann"), "My look", {"steps": 12})
    assert [e["values"] for e in entries] == [{"steps": 12}]  # the same name replaces
    with pytest.raises(ValueError, match="one of this server's presets"):
        again.add_own([], "Quality", {"steps": 1})
    assert json.loads((presets / "generation.json").read_text())["presets"][-1]["name"] == "Quality"
    # Any login gets a file of its own inside the user folder.
    for login in ("../../etc/passwd", "ann/../bob", "Ann"):
        path = store.owner_file(login)
        assert path.parent == tmp_path / "user" / "presets" and path != store.owner_file("ann")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("  ", "give the preset a name"),
        ("x" * 61, "at most 60 characters"),
        ("<img src=x onerror=alert(1)>", "may not contain"),
        ("tab\there", "may not contain"),
        ('quote"d', "may not contain"),
    ],
)
def test_preset_names_are_bounded_and_plain(tmp_path, name, message):
    store = PresetStore.load(Settings().presets_dir, tmp_path / "user")
    with pytest.raises(ValueError, match=message):
        store.add_own([], name, {"steps": 1})


def test_one_person_keeps_a_bounded_number_and_stored_junk_is_ignored(tmp_path):
    store = PresetStore.load(Settings().presets_dir, tmp_path / "user")
    entries: list = []
    for i in range(MAX_OWN_PRESETS):
        entries, _ = store.add_own(entries, f"p{i}", {"steps": i + 1})
    with pytest.raises(ValueError, match=f"already keep {MAX_OWN_PRESETS} presets"):
        store.add_own(entries, "one more", {"steps": 1})
    entries, _ = store.add_own(entries, "p3", {"steps": 9})  # replacing one is fine
    assert own_presets(entries)["p3"].values == {"steps": 9}
    # A browser's storage is the browser's to change: malformed entries are left out.
    junk = [{"name": "<b>", "values": {}}, {"name": "ok", "values": {"steps": 2, "evil": 1}}, "x", {"name": 3}]
    assert {n: p.values for n, p in own_presets(junk).items()} == {"ok": {"steps": 2}}
    assert own_presets({"not": "a list"}) == {}


def test_malformed_preset_file_is_reported_and_app_starts(tmp_path, cache_dir):
    user = tmp_path / "user"
    user.mkdir()
    (user / "presets.json").write_text('{"presets": [\n  {"name": "ok", "values": {"steps": 3}},\n  oops\n]}')
    settings = Settings(offline=True, cache_dir=cache_dir, output_dir=tmp_path / "o", user_dir=user)
    engine = Engine(settings)
    assert any("presets.json: line 3" in p for p in engine.presets.problems)
    assert "Quality" in engine.presets.presets  # the shipped ones still load

    from ui.app import build_demo

    demo = build_demo(engine)
    notices = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "preset-problems"]
    assert notices and "presets.json: line 3" in notices[0]


def test_follow_image_size_is_not_saved(tmp_path):
    store = PresetStore.load(Settings().presets_dir, tmp_path / "user")
    _, saved = store.add_own([], "from img2img", {"width": 0, "height": 0, "steps": 9, "strength": 0.4})
    assert saved.values == {"steps": 9, "strength": 0.4}
