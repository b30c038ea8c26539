"""nlg.utils: tables read back what they wrote, and files are replaced whole or not at all."""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from nlg.utils.io import atomic_save_figure  # noqa: E402
from nlg.utils.tables import csv_rows, csv_text, markdown_table, read_csv, write_csv  # noqa: E402


def test_a_written_table_reads_back_as_strings_in_column_order(tmp_path):
    rows = [{"key": "a,b", "value": 0.5, "note": 'say "hi"\nthen go'}, {"key": "c", "value": -3}]
    path = tmp_path / "t.csv"
    write_csv(path, rows)
    back = read_csv(path)
    assert back == [{"key": "a,b", "value": "0.5", "note": 'say "hi"\nthen go'}, {"key": "c", "value": "-3", "note": ""}]
    assert list(back[0]) == ["key", "value", "note"]
    assert csv_rows(csv_text(rows)) == back
    assert csv_rows("a,b\r\n") == []  # a header alone is an empty table


def test_markdown_table_has_a_header_rule_and_one_line_per_row():
    text = markdown_table(["x", "y"], [[1, "a|b"], [2, ""]])
    lines = text.split("\n")
    assert lines[0].startswith("| x | y") and set(lines[1].replace("|", "").strip()) <= {"-", ":", " "}
    assert len(lines) == 4


def _figure():
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    return fig


def test_a_figure_is_written_whole_in_the_format_of_its_suffix(tmp_path):
    fig = _figure()
    atomic_save_figure(fig, tmp_path / "plot.png", dpi=50)
    atomic_save_figure(fig, tmp_path / "plot.pdf")
    plt.close(fig)
    with Image.open(tmp_path / "plot.png") as image:
        assert image.format == "PNG" and image.size == (100, 50)  # 2 x 1 inches at 50 dpi
        assert np.asarray(image.convert("L")).min() < 128  # the line is drawn
    assert (tmp_path / "plot.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(os.listdir(tmp_path)) == ["plot.pdf", "plot.png"]  # no temporary file left


def test_a_failing_figure_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    fig = _figure()
    with pytest.raises((ValueError, AttributeError)):  # matplotlib fails mid-write on a bad bbox_inches
        atomic_save_figure(fig, path, dpi=50, bbox_inches="no-such-option")
    plt.close(fig)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["plot.png"]
    with pytest.raises(ValueError, match="path"):
        atomic_save_figure(fig, tmp_path / "plot")


def test_read_json_lines_skips_blank_lines_and_names_the_argument_and_line_of_a_bad_one(tmp_path):
    from nlg.utils.io import read_json_lines

    path = tmp_path / "rows.jsonl"
    path.write_bytes("\ufeff{\"a\": 1}\n\n   \n{\"b\": [2]}\n".encode("utf-8"))
    assert list(read_json_lines(path, "data_dir")) == [(1, {"a": 1}), (4, {"b": [2]})]
    for bad, why in (("{\"a\": 1}\n{oops\n", "is not JSON"), ("{\"a\": 1}\n[1, 2]\n", "is not a JSON object")):
        path.write_text(bad)
        with pytest.raises(ValueError, match=f"^data_dir: .*rows.jsonl line 2 {why}"):
            list(read_json_lines(path, "data_dir"))


def test_atomic_write_json_lines_round_trips_one_object_per_line_and_refuses_a_non_object(tmp_path):
    from nlg.utils.io import atomic_write_json_lines, read_json_lines

    path = tmp_path / "rows.jsonl"
    rows = [{"a": 1, "text": "café, \"quoted\"\nnewline"}, {}, {"b": [2, None]}]
    atomic_write_json_lines(path, iter(rows))
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and len(text.splitlines()) == 3  # an embedded newline is escaped, not a new row
    assert [json.loads(line) for line in text.splitlines()] == rows
    assert [row for _, row in read_json_lines(path, "path")] == rows
    with pytest.raises(TypeError, match=r"rows\[1\]"):
        atomic_write_json_lines(path, [{"c": 3}, ["not", "an", "object"]])
    assert path.read_text(encoding="utf-8") == text and os.listdir(tmp_path) == ["rows.jsonl"]
