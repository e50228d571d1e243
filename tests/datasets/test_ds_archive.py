from __future__ import annotations

import re

import pytest
from ds_helpers import image_bytes, pack

from maskreid.datasets.archive import Archive, ArchiveError, LayoutError, normalise


def test_normalise_skips_os_litter_and_fixes_separators():
    assert normalise("A\\b/./c.jpg") == "A/b/c.jpg"
    assert normalise("./a/b.jpg") == "a/b.jpg"
    assert normalise("x/Thumbs.db") is None
    assert normalise("__MACOSX/VIPeR/cam_a/._000_45.bmp") is None
    assert normalise("a/../../etc/passwd") is None


FILES = {
    "wrap/VIPeR/cam_a/000_45.bmp": image_bytes(".bmp", seed=1),
    "wrap/VIPeR/cam_b/000_90.bmp": image_bytes(".bmp", seed=2),
    "wrap/VIPeR/cam_b/notes.txt": b"x",
    "wrap/VIPeR/Thumbs.db": b"x",
}


@pytest.mark.parametrize("form", ["zip", "tar.xz", "tar.gz", "dir"])
def test_members_relative_to_top_folder_in_every_form(tmp_path, form):
    src = pack(FILES, tmp_path / "viper", form)
    arc = Archive(src, ["cam_a", "cam_b"], "VIPeR")
    got = {m.path: m.data for m in arc.members()}
    assert got == {"cam_a/000_45.bmp": FILES["wrap/VIPeR/cam_a/000_45.bmp"],
                   "cam_b/000_90.bmp": FILES["wrap/VIPeR/cam_b/000_90.bmp"]}


def test_folder_passed_as_the_top_folder_itself(tmp_path):
    root = pack(FILES, tmp_path / "v", "dir")
    got = [m.path for m in Archive(root / "wrap" / "VIPeR", ["cam_a"]).members()]
    assert sorted(got) == ["cam_a/000_45.bmp", "cam_b/000_90.bmp"]


def test_wrong_archive_names_expected_layout(tmp_path):
    src = pack({"other/x.jpg": image_bytes()}, tmp_path / "o", "zip")
    with pytest.raises(LayoutError, match=r"o\.zip.*'VIPeR/'.*cam_a"):
        list(Archive(src, ["cam_a", "cam_b"], "VIPeR").members())


def test_two_copies_of_layout_is_an_error(tmp_path):
    files = {"a/VIPeR/cam_a/000_1.bmp": image_bytes(".bmp"), "b/VIPeR/cam_a/000_1.bmp": image_bytes(".bmp")}
    src = pack(files, tmp_path / "two", "zip")
    with pytest.raises(LayoutError, match="two copies"):
        list(Archive(src, ["cam_a"]).members())


@pytest.mark.parametrize("form", ["zip", "tar.xz"])
def test_truncated_archive_error_names_the_file(tmp_path, form):
    big = {f"VIPeR/cam_a/{i:03d}_0.bmp": image_bytes(".bmp", seed=i) for i in range(20)}
    src = pack(big, tmp_path / "viper", form)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=src.name):
        list(Archive(src, ["cam_a"]).members())


def test_truncated_zip_is_called_a_truncated_zip(tmp_path):
    """A zip cut short loses its table of contents (at the end of the file): it used to read as
    "not a zip, a tar(.gz/.xz/.bz2) or a folder"."""
    src = pack({f"VIPeR/cam_a/{i:03d}_0.bmp": image_bytes(".bmp", seed=i) for i in range(5)}, tmp_path / "viper", "zip")
    src.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(ArchiveError, match=re.escape(f"{src}: a truncated or damaged zip")) as e:
        Archive(src, ["cam_a"])
    assert "not a zip" not in str(e.value)
    other = tmp_path / "page.zip"
    other.write_bytes(b"<html>404</html>")  # not a zip at all: still said so
    with pytest.raises(ArchiveError, match="not a zip"):
        Archive(other, ["cam_a"])


def test_extract_one_member_from_zip_and_folder(tmp_path):
    files = {"cuhk03_release/cuhk-03.mat": b"payload", "cuhk03_release/README.md": b"r"}
    z = pack(files, tmp_path / "c", "zip")
    out = Archive(z, ["cuhk-03.mat"]).extract("cuhk-03.mat", tmp_path)
    assert out.read_bytes() == b"payload" and out.parent == tmp_path
    d = pack(files, tmp_path / "cdir", "dir")
    assert Archive(d, ["cuhk-03.mat"]).extract("cuhk-03.mat", tmp_path / "unused") == d / "cuhk03_release/cuhk-03.mat"
