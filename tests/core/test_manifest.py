import pytest

from core.manifest import ManifestError, read_manifest, resolve


def test_jsonl_and_csv_give_the_same_rows(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"file": "a.png", "name": "dog face"}\n\n{"file": "b.png", "name": "cat"}\n')
    (tmp_path / "m.csv").write_text("file,name\na.png,dog face\nb.png,cat\n")
    assert read_manifest(tmp_path / "m.jsonl") == read_manifest(tmp_path / "m.csv")


def test_paths_are_relative_to_the_manifest(tmp_path):
    assert resolve(tmp_path / "sub" / "m.jsonl", "x/a.png") == (tmp_path / "sub" / "x" / "a.png").resolve()
    assert resolve(tmp_path / "m.jsonl", "/abs/a.png").as_posix() == "/abs/a.png"


def test_missing_column_names_the_row(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"file": "a.png", "name": "x"}\n{"file": "b.png"}\n')
    with pytest.raises(ManifestError, match="row 2 lacks name"):
        read_manifest(tmp_path / "m.jsonl", required=("file", "name"))


def test_bad_json_names_the_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"file": "a.png"}\n{oops\n')
    with pytest.raises(ManifestError, match="m.jsonl:2"):
        read_manifest(tmp_path / "m.jsonl")


def test_unknown_format(tmp_path):
    (tmp_path / "m.txt").write_text("a.png\n")
    with pytest.raises(ManifestError, match=".jsonl or .csv"):
        read_manifest(tmp_path / "m.txt")
