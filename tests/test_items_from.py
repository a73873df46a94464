"""Items read from a CSV or JSONL file (``items_from``): the same rules as inline items, and every
problem located by the file and its line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchestrator.providers.item_schema as schema_module
from orchestrator.config import Manifest, ManifestError, Problem, load_manifest
from orchestrator.images import ImageInfo, read_image_info
from orchestrator.providers.base import ImageSource, Kind
from tests.test_images import png_bytes

HEADER = "version: 1\nname: t\nprovider: {base_url: simulator}\n"
#: The model of the rows (and inline items) that name none; it makes every kind but omni_video.
MODEL = "kling-v3"
CAT = png_bytes(512, 384)


def write_manifest(
    directory: Path,
    items_from: str,
    *,
    items: str = "",
    defaults: str = "",
    extra: str = "",
) -> Path:
    """A manifest with the given items_from value (one line, or an indented block after it).

    Kling needs a model on every item: defaults that name none get ``MODEL``."""
    text = HEADER + extra
    if defaults and "model" not in defaults:
        defaults = f"{{model: {MODEL}, {defaults[1:]}"
    if defaults:
        text += f"defaults: {defaults}\n"
    if items:
        text += f"items:\n{items}"
    text += f"items_from: {items_from}\n"
    if not defaults and "defaults:" not in extra:
        text += f"defaults: {{model: {MODEL}}}\n"  # last: no line moves
    path = directory / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(directory: Path, items_from: str = "prompts.csv", **kwargs: str) -> Manifest:
    return load_manifest(write_manifest(directory, items_from, **kwargs))


def problems(directory: Path, items_from: str = "prompts.csv", **kwargs: str) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load(directory, items_from, **kwargs)
    return caught.value.problems


def one_problem(directory: Path, items_from: str = "prompts.csv", **kwargs: str) -> Problem:
    found = problems(directory, items_from, **kwargs)
    assert len(found) == 1, "\n".join(p.format("m.yaml") for p in found)
    return found[0]


def csv_file(directory: Path, text: str, name: str = "prompts.csv") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def jsonl_file(directory: Path, rows: list[object] | str, name: str = "prompts.jsonl") -> Path:
    text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --- CSV: what loads ------------------------------------------------------------------------------


def test_csv_rows_follow_the_inline_items(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "id,prompt\nfox,A fox\nowl,An owl\n")
    manifest = load(tmp_path, items="  - id: intro\n    prompt: Opening shot\n")
    assert [item.id for item in manifest.items] == ["intro", "fox", "owl"]
    intro, fox, owl = manifest.items
    assert (intro.source, intro.line) == (None, 5)
    assert (fox.source, fox.line, owl.line) == (source, 2, 3)
    assert manifest.items_from == source
    assert dict(fox.request.fields) == {
        "model": "kling-v3",
        "prompt": "A fox",
        "mode": "std",
        "duration": 5,
        "aspect_ratio": "16:9",
    }


def test_items_may_be_absent_or_empty_with_items_from(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt\nfox,A fox\n")
    assert [i.id for i in load(tmp_path).items] == ["fox"]
    assert [i.id for i in load(tmp_path, items="  []\n").items] == ["fox"]


def test_defaults_apply_and_an_empty_cell_leaves_the_field_out(tmp_path: Path) -> None:
    csv_file(
        tmp_path,
        "id,kind,prompt,mode,duration,model\n"
        "a,,p,,,\n"
        "b,,p,std,10,kling-v3\n"
        "c,image,p,,,kling-v2-1\n",
    )
    manifest = load(tmp_path, defaults="{mode: pro, model: kling-v2-5-turbo, negative_prompt: x}")
    a, b, c = (dict(item.request.fields) for item in manifest.items)
    assert (a["mode"], a["model"], a["duration"], a["negative_prompt"]) == (
        "pro",
        "kling-v2-5-turbo",
        5,
        "x",
    )
    assert (b["mode"], b["model"], b["duration"]) == ("std", "kling-v3", 10)
    assert manifest.items[2].request.kind is Kind.IMAGE
    assert c == {
        "model": "kling-v2-1",
        "prompt": "p",
        "negative_prompt": "x",
        "n": 1,
        "aspect_ratio": "16:9",
    }


def test_numbers_are_read_from_their_text(tmp_path: Path) -> None:
    csv_file(
        tmp_path,
        "id,kind,prompt,duration,cfg_scale,n,image_fidelity,human_fidelity,model\n"
        "v,,p,10,0.25,,,,\n"
        "w,,p, 5.0 ,.5,,,,\n"
        "i,image,p,,,4,1,0,kling-v2-1\n",
    )
    v, w, i = (dict(item.request.fields) for item in load(tmp_path).items)
    assert (v["duration"], v["cfg_scale"]) == (10, 0.25)
    assert isinstance(v["duration"], int)
    assert (w["duration"], w["cfg_scale"]) == (5, 0.5)
    assert (i["n"], i["image_fidelity"], i["human_fidelity"]) == (4, 1, 0)
    assert load(tmp_path).items[2].request.expected_assets == 4


@pytest.mark.parametrize(
    ("field", "cell", "value"),
    [
        ("duration", "5.5", 5.5),
        ("duration", "1e400", float("inf")),
        ("cfg_scale", "NaN", float("nan")),
        ("cfg_scale", "Infinity", float("inf")),
        ("cfg_scale", "-inf", float("-inf")),
        ("cfg_scale", "2", 2),
        ("duration", "true", True),
    ],
)
def test_csv_and_json_lines_say_the_same_of_the_same_number(
    tmp_path: Path, field: str, cell: str, value: object
) -> None:
    # Was: a NaN in a CSV was "must be a number (got 'NaN')", in JSON Lines "must be a
    # finite number (got nan)".
    csv_file(tmp_path, f"id,prompt,{field}\na,p,{cell}\n")
    from_csv = one_problem(tmp_path).message
    jsonl_file(tmp_path, [{"id": "a", "prompt": "p", field: value}])
    from_jsonl = one_problem(tmp_path, "prompts.jsonl").message
    expected = from_csv.replace("'true'", "true")  # a CSV cell that is no number stays text
    assert from_jsonl == expected


def test_a_quoted_number_in_json_lines_says_to_drop_the_quotes(tmp_path: Path) -> None:
    # A CSV cell is text and is read as a number; in JSON a quoted number is text.
    jsonl_file(tmp_path, [{"id": "a", "prompt": "p", "duration": "5", "cfg_scale": " 0.5"}])
    messages = sorted(p.message for p in problems(tmp_path, "prompts.jsonl"))
    assert messages == [
        "must be a number (got ' 0.5'); write it without quotes (0.5)",
        "must be a whole number (got '5'); write it without quotes (5)",
    ]


@pytest.mark.parametrize(
    ("header", "row", "field", "message"),
    [
        ("duration", "five", "duration", "must be a whole number (got 'five')"),
        ("duration", "16", "duration", "must be 3 to 15 seconds for kling-v3 (got 16)"),
        ("duration", "5.5", "duration", "must be a whole number (got 5.5)"),
        ("duration", "0x10", "duration", "must be a whole number (got '0x10')"),
        ("cfg_scale", "high", "cfg_scale", "must be a number (got 'high')"),
        ("cfg_scale", "nan", "cfg_scale", "must be a finite number (got nan)"),
        ("cfg_scale", "1e999", "cfg_scale", "must be a finite number"),
        ("cfg_scale", "1.5", "cfg_scale", "must be at most 1 (got 1.5)"),
        ("mode", "turbo", "mode", "must be one of std, pro, 4k (got 'turbo')"),
        ("aspect_ratio", "4:3", "aspect_ratio",
         "must be 16:9, 9:16 or 1:1 for kling-v3 (got '4:3')"),
        ("prompt", "   ", "prompt", "must not be blank"),
        ("kind", "video", "kind",
         "must be one of text2video, image2video, omni_video, image (got 'video')"),
        ("n", "2", "n", "'n' is not a field of kind text2video (it belongs to image)"),
        ("model", "kling-v2-5", "model", "(did you mean 'kling-v2-5-turbo'?)"),
    ],
)
def test_a_bad_cell_names_the_file_line_item_and_field(
    tmp_path: Path, header: str, row: str, field: str, message: str
) -> None:
    prompt = "p" if header != "prompt" else row
    extra = f",{row}" if header != "prompt" else ""
    columns = f"id,prompt,{header}" if header != "prompt" else "id,prompt"
    csv_file(
        tmp_path, f"{columns}\nfine,p{',' if header != 'prompt' else ''}\nbad,{prompt}{extra}\n"
    )
    problem = one_problem(tmp_path)
    assert message in problem.message
    assert (problem.source, problem.line, problem.item_id, problem.field) == (
        str(tmp_path / "prompts.csv"),
        3,
        "bad",
        field,
    )


def test_the_formatted_problem_starts_with_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "batch").mkdir()
    csv_file(tmp_path / "batch", "id,prompt,model,duration\nok,p,,\ncat-3,p,kling-v2-5-turbo,7\n")
    write_manifest(tmp_path / "batch", "prompts.csv")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as caught:
        load_manifest(Path("batch/m.yaml"))
    assert str(caught.value) == (
        "batch/prompts.csv:3: item 'cat-3', field 'duration': "
        "must be 5 or 10 seconds for kling-v2-5-turbo (got 7)"
    )


def test_utf8_bom_blank_lines_and_crlf_are_tolerated(tmp_path: Path) -> None:
    data = "\ufeffid,prompt\r\n\r\nfox,A fox\r\n,\r\n\r\nowl,An owl\r\n"
    (tmp_path / "prompts.csv").write_bytes(data.encode("utf-8"))
    fox, owl = load(tmp_path).items
    assert (fox.id, fox.line, owl.id, owl.line) == ("fox", 3, "owl", 6)
    assert owl.request.fields["prompt"] == "An owl"


def test_quoted_values_may_hold_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    csv_file(
        tmp_path,
        'id,prompt\nfox,"A fox, running"\nowl,"An owl\nat night, ""hooting"""\nbad,p\n',
    )
    # The row after a two-line value is located on its own line.
    text = (tmp_path / "prompts.csv").read_text()
    csv_file(tmp_path, text.replace("bad,p", "bad,"))
    problem = one_problem(tmp_path)
    assert (problem.item_id, problem.field, problem.line) == ("bad", "prompt", 5)
    csv_file(tmp_path, text)
    fox, owl, _ = load(tmp_path).items
    assert fox.request.fields["prompt"] == "A fox, running"
    assert owl.request.fields["prompt"] == 'An owl\nat night, "hooting"'


def test_structured_fields_are_json_in_their_cell(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(CAT)
    csv_file(
        tmp_path,
        "id,kind,prompt,image,camera_control,dynamic_masks\n"
        'cam,,p,,"{""type"": ""simple"", ""config"": {""zoom"": 2}}",\n'
        'brush,image2video,,cat.png,,"[{""mask"": ""cat.png"", ""trajectories"": '
        '[{""x"": 1, ""y"": 2}, {""x"": 3, ""y"": 4}]}]"\n',
    )
    cam, brush = load(tmp_path).items
    assert cam.request.fields["camera_control"]["config"]["zoom"] == 2
    assert brush.request.fields["dynamic_masks"][0]["mask"] == ImageSource(
        path=tmp_path / "cat.png"
    )
    csv_file(tmp_path, 'id,prompt,camera_control\ncam,p,"{type: simple}"\n')
    problem = one_problem(tmp_path)
    assert (problem.item_id, problem.field, problem.line) == ("cam", "camera_control", 2)
    assert "is not valid JSON" in problem.message and "written as JSON" in problem.message


# --- CSV: the header ------------------------------------------------------------------------------


def test_an_unknown_column_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,promt\nfox,A fox\n")
    found = problems(tmp_path)
    assert found[0] == Problem(
        "unknown column 'promt' (did you mean 'prompt'?)",
        line=1,
        source=str(tmp_path / "prompts.csv"),
    )
    # The rows are still checked, without that column.
    assert [(p.item_id, p.field, p.line) for p in found[1:]] == [("fox", "prompt", 2)]


def test_unknown_columns_can_be_mapped_or_ignored(tmp_path: Path) -> None:
    csv_file(tmp_path, "name,description,notes\nfox,A fox,hero shot\n")
    (problem,) = [p for p in problems(tmp_path) if "notes" in p.message]
    assert "items_from.ignore_columns" in problem.message
    block = (
        "\n  path: prompts.csv\n  columns: {id: name, prompt: description}\n"
        "  ignore_columns: [notes]"
    )
    (fox,) = load(tmp_path, block).items
    assert (fox.id, fox.request.fields["prompt"]) == ("fox", "A fox")


def test_a_mapped_field_is_named_with_its_column(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,description\nfox,\n")
    problem = one_problem(tmp_path, "{path: prompts.csv, columns: {prompt: description}}")
    assert problem.field == "prompt (column 'description')"
    assert problem.message == "is required for kind text2video"


def test_mapping_errors_are_located_in_the_manifest(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt,description\nfox,a,b\n")
    block = "\n  path: prompts.csv\n  columns:\n    prompt: descripton\n"
    problem = one_problem(tmp_path, block)
    assert (problem.source, problem.field, problem.line) == (
        None,
        "items_from.columns.prompt",
        7,
    )
    assert problem.message == (
        "column 'descripton' is not in the header of 'prompts.csv' (did you mean 'description'?)"
    )
    # A column named like the field it no longer feeds is refused, not silently dropped.
    found = problems(tmp_path, "{path: prompts.csv, columns: {prompt: description}}")
    assert [p.message for p in found] == [
        "column 'prompt' is not read: items_from.columns reads prompt from column "
        "'description' (list 'prompt' under items_from.ignore_columns to leave it out)"
    ]


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("", "the file is empty: it needs a header row naming the columns", 1),
        ("\n\n", "the file is empty", 1),
        ("prompt\nA fox\n", "no 'id' column: every item needs a unique, stable id", 1),
        (
            "id,prompt,id\nfox,a,b\n",
            "column 'id' is named twice in the header (columns 1 and 3)",
            1,
        ),
        ("id,,prompt\nfox,,a\n", "column 2 has no name in the header row", 1),
        ("id;prompt\nfox;A fox\n", "the header reads as one column: save the file with commas", 1),
    ],
)
def test_header_problems(tmp_path: Path, text: str, message: str, line: int) -> None:
    csv_file(tmp_path, text)
    found = problems(tmp_path)
    assert any(message in p.message and p.line == line for p in found), found
    assert all(p.source == str(tmp_path / "prompts.csv") for p in found)


def test_a_row_with_more_values_than_columns(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt\nfox,A fox, running\nowl,An owl\n")
    problem = one_problem(tmp_path)
    assert (problem.item_id, problem.line) == ("fox", 2)
    assert problem.message.startswith("has 3 values but the header names 2 columns")
    # Trailing empty values (spreadsheet exports) are fine; a short row leaves fields out.
    csv_file(tmp_path, "id,prompt\nowl,An owl,,\nemu\n")
    problem = one_problem(tmp_path)
    assert (problem.item_id, problem.field, problem.line) == ("emu", "prompt", 3)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "prompts.csv").write_bytes(b"id,prompt\nfox,caf\xe9\n")
    assert one_problem(tmp_path) == Problem(
        "the file is not UTF-8 text: save it as UTF-8",
        line=2,
        source=str(tmp_path / "prompts.csv"),
    )


# --- ids across the manifest and the file --------------------------------------------------------


def test_a_duplicate_id_names_both_places(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt\nfox,a\nowl,b\nFox,c\nowl,d\n")
    found = problems(tmp_path, items="  - id: fox\n    prompt: inline\n")
    assert [(p.item_id, p.line, p.message) for p in found] == [
        ("fox", 2, "duplicate id: 'fox' is already used on line 5 of m.yaml"),
        ("Fox", 4, "duplicate id: 'Fox' differs from 'fox' on line 5 of m.yaml only in letter "
                   "case, and ids name directories on case-insensitive file systems"),
        ("owl", 5, "duplicate id: 'owl' is already used on line 3"),
    ]  # fmt: skip
    assert all(p.field == "id" and p.source == str(tmp_path / "prompts.csv") for p in found)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("", "is required: every item needs a unique, stable id"),
        ("a/b", "1-128 characters of letters, digits"),
        ("..", "not only dots"),
    ],
)
def test_bad_ids_in_a_row(tmp_path: Path, cell: str, message: str) -> None:
    csv_file(tmp_path, f"id,prompt\n{cell},p\n")
    problem = one_problem(tmp_path)
    assert (problem.item_id, problem.field, problem.line) == (None, "id", 2)
    assert message in problem.message


# --- JSONL ----------------------------------------------------------------------------------------


def test_jsonl_rows_keep_their_json_types(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "prompt": "p", "duration": 10, "cfg_scale": 0.5},
        {"id": "b", "kind": "image", "prompt": "q", "n": 3, "model": "kling-v2-1"},
        {"id": "c", "prompt": "r", "camera_control": {"type": "simple", "config": {"pan": 1}}},
    ]
    source = jsonl_file(tmp_path, rows)
    a, b, c = load(tmp_path, "prompts.jsonl").items
    assert (a.request.fields["duration"], a.request.fields["cfg_scale"]) == (10, 0.5)
    assert (b.request.kind, b.request.expected_assets) == (Kind.IMAGE, 3)
    assert c.request.fields["camera_control"]["config"]["pan"] == 1
    assert (a.source, a.line, c.line) == (source, 1, 3)


def test_jsonl_blank_lines_and_ndjson(tmp_path: Path) -> None:
    jsonl_file(
        tmp_path, '\n{"id": "a", "prompt": "p"}\n   \n\n{"id": "b", "prompt": "q"}', "x.ndjson"
    )
    a, b = load(tmp_path, "x.ndjson").items
    assert (a.line, b.line) == (2, 5)


def test_jsonl_null_opts_out_of_a_default(tmp_path: Path) -> None:
    jsonl_file(tmp_path, [{"id": "a", "prompt": "p", "negative_prompt": None}])
    (a,) = load(tmp_path, "prompts.jsonl", defaults="{negative_prompt: blurry}").items
    assert "negative_prompt" not in a.request.fields


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"id": "a", "prompt": "p", "duration": "5"}', "duration",
         "must be a whole number (got '5')"),
        ('{"id": "a", "prompt": "p", "duraton": 5}', "duraton",
         "unknown key 'duraton' (did you mean 'duration'?)"),
        ('{"id": "a", "prompt": "p", "mode": null}', "mode", "has no value"),
        ('{"id": "a", "prompt": "p",}', None, "is not valid JSON: Expecting property name"),
        ('{"id": "a", "prompt": "p", "prompt": "q"}', None,
         "duplicate key 'prompt': JSON would silently keep only the last one"),
        ('["a", "p"]', None, "must be a JSON object with at least an id and a prompt (got a list)"),
        ("[" * 5000 + "]" * 5000, None, "is not valid JSON: nested too deeply"),
    ],
)  # fmt: skip
def test_a_bad_jsonl_line_is_located(
    tmp_path: Path, line: str, field: str | None, message: str
) -> None:
    jsonl_file(tmp_path, '{"id": "ok", "prompt": "p"}\n' + line + "\n")
    problem = one_problem(tmp_path, "prompts.jsonl")
    assert message in problem.message
    assert (problem.source, problem.line, problem.field) == (
        str(tmp_path / "prompts.jsonl"),
        2,
        field,
    )


def test_jsonl_keys_are_mapped_like_columns(tmp_path: Path) -> None:
    jsonl_file(tmp_path, [{"name": "a", "text": "p", "owner": "me"}])
    block = "{path: prompts.jsonl, columns: {id: name, prompt: text}, ignore_columns: [owner]}"
    (a,) = load(tmp_path, block).items
    assert (a.id, a.request.fields["prompt"]) == ("a", "p")
    jsonl_file(tmp_path, [{"name": "a", "text": "p", "prompt": "q"}])
    problem = one_problem(tmp_path, block)
    assert (problem.field, problem.item_id, problem.line) == (None, "a", 1)
    assert problem.message.startswith(
        "key 'prompt' is not read: items_from.columns reads prompt from 'text'"
    )


# --- paths ----------------------------------------------------------------------------------------


def test_image_paths_are_relative_to_the_items_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "cat.png").write_bytes(CAT)
    (tmp_path / "tail.png").write_bytes(CAT)
    csv_file(data, "id,kind,image\nrow,image2video,img/cat.png\n")
    (row,) = load(tmp_path, "data/prompts.csv", defaults="{image_tail: tail.png}").items
    assert row.request.fields["image"] == ImageSource(path=data / "img" / "cat.png")
    # What a row inherits from the manifest's defaults stays relative to the manifest.
    assert row.request.fields["image_tail"] == ImageSource(path=tmp_path / "tail.png")
    csv_file(data, "id,kind,image\nrow,image2video,cat.png\n")
    problem = one_problem(tmp_path, "data/prompts.csv")
    assert (problem.field, problem.line) == ("image", 2)
    assert "file not found" in problem.message


def test_each_image_file_is_read_once_per_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cat.png").write_bytes(CAT)
    reads: list[Path] = []
    real = read_image_info

    def counting(path: Path) -> ImageInfo:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(schema_module, "read_image_info", counting)
    rows = "".join(f"i{n},image2video,cat.png\n" for n in range(300))
    csv_file(
        tmp_path,
        "id,kind,image\n" + rows + "bad,image2video,nope.png\nworse,image2video,nope.png\n",
    )
    found = problems(tmp_path)
    assert [p.item_id for p in found] == ["bad", "worse"]
    assert sorted(reads) == [tmp_path / "cat.png", tmp_path / "nope.png"]


# --- what items_from itself says ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("missing.csv", "items_from", "cannot read 'missing.csv'"),
        (".", "items_from", "cannot tell the format of '.'"),
        ("prompts.txt", "items_from", "end it in .csv, .jsonl or .ndjson"),
        ("~/prompts.csv", "items_from", "'~' is not expanded"),
        ("https://x.example/p.csv", "items_from", "must be a local file path"),
        ("5", "items_from", "must be the path of a CSV or JSONL file of items"),
        ("''", "items_from", "must be a file path (got '')"),
        ("", "items_from", "has no value"),
        ("{columns: {}}", "items_from.path", "is required"),
        ("{path: prompts.csv, fromat: csv}", "items_from.fromat", "(did you mean 'format'?)"),
        ("{path: prompts.csv, format: tsv}", "items_from.format", "must be one of csv, jsonl"),
        ("{path: prompts.txt}", "items_from.path", "or add 'format: csv' or 'format: jsonl'"),
        ('"a\\0.csv"', "items_from", "cannot read 'a\\x00.csv'"),
        ("{path: prompts.csv, columns: [a]}", "items_from.columns", "must map item fields"),
        ("{path: prompts.csv, columns: {promt: a}}", "items_from.columns.promt",
         "unknown item field 'promt' (did you mean 'prompt'?)"),
        ("{path: prompts.csv, columns: {prompt: 5}}", "items_from.columns.prompt",
         "must be a column name (got 5)"),
        ("{path: prompts.csv, columns: {prompt: a, negative_prompt: a}}",
         "items_from.columns.negative_prompt", "column 'a' is already read as prompt"),
        ("{path: prompts.csv, ignore_columns: notes}", "items_from.ignore_columns",
         "must be a list of column names"),
        ("{path: prompts.csv, columns: {prompt: a}, ignore_columns: [a]}",
         "items_from.ignore_columns[0]", "column 'a' is read as prompt"),
    ],
)  # fmt: skip
def test_items_from_problems_are_located_in_the_manifest(
    tmp_path: Path, value: str, field: str, message: str
) -> None:
    csv_file(tmp_path, "id,prompt\nfox,a\n")
    (tmp_path / "prompts.txt").write_text("id,prompt\nfox,a\n")
    problem = one_problem(tmp_path, value)
    assert message in problem.message
    assert (problem.source, problem.field, problem.line) == (None, field, 4)


def test_explicit_format_wins_over_the_name(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text('{"id": "a", "prompt": "p"}\n')
    (a,) = load(tmp_path, "{path: prompts.txt, format: jsonl}").items
    assert a.id == "a"


def test_a_batch_needs_at_least_one_item_somewhere(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt\n")
    problem = one_problem(tmp_path)
    assert problem.field == "items_from"
    assert problem.message == (
        "'prompts.csv' has no items, and the manifest lists none: a batch needs at least one"
    )


# --- defaults and many problems ------------------------------------------------------------------


def test_a_bad_default_says_which_row_it_broke(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt,model\nimg,p,\n")
    problem = one_problem(tmp_path, defaults="{duration: 16}")
    assert (problem.source, problem.line, problem.field, problem.item_id) == (
        None,
        4,
        "duration",
        "img",
    )
    assert problem.message == (
        f"must be 3 to 15 seconds for kling-v3 (got 16) (from defaults; the item is on "
        f"{tmp_path / 'prompts.csv'}:2)"
    )


def test_a_bad_default_over_many_rows_is_one_problem_naming_a_few(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt\n" + "".join(f"r{n},p\n" for n in range(25)))
    problem = one_problem(tmp_path, defaults="{duration: 16}")
    assert problem.field == "defaults.duration"
    assert problem.message.endswith(
        "(from defaults; affects items 'r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8', "
        "'r9', and 15 more)"
    )


def test_every_problem_at_once_manifest_first(tmp_path: Path) -> None:
    csv_file(tmp_path, "id,prompt,mode\na,p,turbo\nb,,std\n")
    found = problems(tmp_path, items="  - id: c\n    mode: fast\n", extra="limits: {rpm: 5}\n")
    assert [(p.source is None, p.line, p.item_id, p.field) for p in found] == [
        (True, 4, None, "limits.rpm"),
        (True, 6, "c", "prompt"),
        (True, 7, "c", "mode"),
        (False, 2, "a", "mode"),
        (False, 3, "b", "prompt"),
    ]
    lines = str(ManifestError(str(tmp_path / "m.yaml"), found)).splitlines()
    assert lines[3].startswith(f"{tmp_path / 'prompts.csv'}:2: item 'a', field 'mode': ")


def test_problem_format_with_and_without_a_source() -> None:
    assert (
        Problem("bad", "mode", "a", 3).format("m.yaml") == "m.yaml:3: item 'a', field 'mode': bad"
    )
    assert (
        Problem("bad", "mode", "a", 3, source="p.csv").format("m.yaml")
        == "p.csv:3: item 'a', field 'mode': bad"
    )
    assert Problem("empty", line=1, source="p.csv").format("m.yaml") == "p.csv:1: empty"


def test_a_generated_file_of_thousands_of_rows_loads(tmp_path: Path) -> None:
    # A smoke test for accidental quadratic work; the 100,000-row timing is measured by hand.
    rows = "".join(
        f"clip-{n},A prompt about item {n},{('std', 'pro')[n % 2]},\n" for n in range(3000)
    )
    csv_file(tmp_path, "id,prompt,mode,duration\n" + rows)
    manifest = load(tmp_path, defaults="{model: kling-v2-5-turbo}")
    assert len(manifest.items) == 3000
    assert manifest.items[-1].line == 3001
    modes = {id(item.request.fields["mode"]) for item in manifest.items}
    assert len(modes) == 2  # one shared string per choice, not one per row


def test_relative_display_path_follows_the_manifest_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_file(tmp_path, "id,prompt\nfox,\n")
    write_manifest(tmp_path, "prompts.csv")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as caught:
        load_manifest(Path("m.yaml"))
    (problem,) = caught.value.problems
    assert problem.source == "prompts.csv"
    assert os.path.basename(caught.value.source) == "m.yaml"


# --- nothing but ManifestError, whatever the file holds -------------------------------------------

_CELLS = st.one_of(
    st.sampled_from(
        ["id", "prompt", "kind", "duration", "mode", "n", "image", "camera_control", "a", "p",
         "image2video", "image", "10", "5.0", "-1", "1e999", "nan", "std", "cat.png", "{}",
         '{"type": "simple", "config": {"zoom": 1}}', "[1]", "", " ", "..", "ID", "a/b"]
    ),
    st.text(max_size=6),
)  # fmt: skip
_CSV_TEXT = st.lists(st.lists(_CELLS, max_size=6), max_size=6).map(
    lambda rows: "".join(
        ",".join(f'"{c}"' if ("," in c or '"' in c) and '"' not in c else c for c in row) + "\n"
        for row in rows
    )
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _CELLS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_CELLS, inner, max_size=4),
    max_leaves=10,
)
_JSONL_TEXT = st.lists(
    st.one_of(_JSON_VALUES.map(json.dumps), st.text(alphabet='{}[]":, ab1\n', max_size=20)),
    max_size=5,
).map("\n".join)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    csv_text=_CSV_TEXT,
    jsonl_text=_JSONL_TEXT,
    raw=st.binary(max_size=40),
    spec=st.sampled_from(
        [
            "p.csv",
            "p.jsonl",
            "raw.csv",
            "raw.jsonl",
            "{path: p.csv, columns: {prompt: a}, ignore_columns: [b]}",
            "{path: p.jsonl, columns: {id: a, prompt: p}}",
        ]
    ),
)
def test_any_items_file_gives_a_manifest_or_a_manifest_error(
    tmp_path: Path, csv_text: str, jsonl_text: str, raw: bytes, spec: str
) -> None:
    if not (tmp_path / "cat.png").exists():
        (tmp_path / "cat.png").write_bytes(CAT)
    csv_file(tmp_path, csv_text, "p.csv")
    jsonl_file(tmp_path, jsonl_text, "p.jsonl")
    (tmp_path / "raw.csv").write_bytes(raw)
    (tmp_path / "raw.jsonl").write_bytes(raw)
    try:
        manifest = load(tmp_path, spec, items="  - {id: inline, prompt: p}\n")
    except ManifestError as error:
        assert error.problems
        assert all(p.message for p in error.problems)
        str(error)
        return
    assert manifest.items[0].id == "inline"
    assert all(item.source == manifest.items_from for item in manifest.items[1:])


@pytest.mark.parametrize(("text", "sep"), [("id;prompt\nfox;A fox\n", "';'"),
                                           ("id\tprompt\nfox\tA fox\n", "tabs")])
def test_another_delimiter_is_the_one_problem_named(tmp_path: Path, text: str, sep: str) -> None:
    csv_file(tmp_path, text)
    problem = one_problem(tmp_path)  # not also "no 'id' column"
    assert f"it separates them with {sep}" in problem.message


def test_an_unquoted_comma_is_the_one_problem_of_its_row(tmp_path: Path) -> None:
    text = "id,prompt,model,mode\na,a cat, asleep,kling-v2-5-turbo,std\nb,ok,kling-v2-5-turbo,std\n"
    csv_file(tmp_path, text)
    problem = one_problem(tmp_path)  # not also a bad model and mode from shifted values
    assert (problem.item_id, problem.line) == ("a", 2)
    assert "has 5 values but the header names 4 columns" in problem.message
