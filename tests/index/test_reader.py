import pytest

from index.reader import read_folder, read_manifest_items, read_source


def test_folder_is_read_recursively_by_extension(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["x.png", "a/y.JPG", "a/b/z.webp", "a/notes.txt", "a/b/.hidden.gif"]:
        (tmp_path / name).write_bytes(b"")
    items = list(read_folder(tmp_path))
    assert [it.metadata["path"] for it in items] == ["a/b/.hidden.gif", "a/b/z.webp", "a/y.JPG", "x.png"]
    assert all(it.path.is_absolute() for it in items)


def test_manifest_columns_become_metadata(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "m.csv").write_text("file,name,category\nimgs/a.png,dog face,animals\n")
    (item,) = read_manifest_items(tmp_path / "m.csv")
    assert item.path == (tmp_path / "imgs" / "a.png").resolve()
    assert item.metadata == {"file": "imgs/a.png", "name": "dog face", "category": "animals"}


def test_read_source_picks_by_kind(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"file": "a.png"}\n')
    assert len(list(read_source(tmp_path / "m.jsonl"))) == 1
    with pytest.raises(FileNotFoundError):
        read_source(tmp_path / "missing")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="a folder, a .jsonl/.csv manifest or .tar shards"):
        read_source(tmp_path / "x.bin")


def test_manifest_row_without_path(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"name": "x"}\n')
    with pytest.raises(ValueError, match="row 1 has no 'file'"):
        list(read_manifest_items(tmp_path / "m.jsonl"))
