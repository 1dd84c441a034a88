"""`load_cine` dispatch by content and `sniff_format` refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ceuskit.errors import InputError
from ceuskit.io import load_cine, sniff_format
from ceuskit.io.arrays import write_npz
from ceuskit.io.video import write_video

T, H, W = 10, 32, 48


def frames_u8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (T, H, W), dtype=np.uint8)


def times() -> np.ndarray:
    return np.arange(T) * 0.1


def refused(path: Path, *words: str, **kwargs) -> None:
    with pytest.raises(InputError) as excinfo:
        load_cine(path, **kwargs)
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, message


def test_npz_goes_to_npz_reader(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8(), times())
    assert sniff_format(path) == "npz"
    cine = load_cine(path)
    assert cine.meta["format"] == "npz"
    np.testing.assert_array_equal(cine.frames, frames_u8())


def test_fps_reaches_the_reader(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8(), None)
    cine = load_cine(path, fps=5)
    np.testing.assert_allclose(cine.times_s, np.arange(T) / 5)


@pytest.mark.parametrize(("name", "codec"), [("cine.mp4", "libx264"), ("cine.mkv", "ffv1")])
def test_video_goes_to_video_reader(tmp_path, name, codec):
    path = write_video(tmp_path / name, frames_u8(), times(), codec=codec)
    assert sniff_format(path) == "video"
    cine = load_cine(path)
    assert cine.meta["format"] == "video"
    assert cine.n_frames == T


def test_renamed_mp4_still_opens_as_video(tmp_path):
    mp4 = write_video(tmp_path / "cine.mp4", frames_u8(), times())
    path = mp4.rename(tmp_path / "export.bin")
    assert sniff_format(path) == "video"
    cine = load_cine(path)
    assert cine.meta["format"] == "video" and cine.meta["codec"] == "h264"
    np.testing.assert_allclose(cine.times_s, times(), atol=1e-3)


def test_renamed_npz_is_still_read_as_arrays(tmp_path):
    npz = write_npz(tmp_path / "cine.npz", frames_u8(), times())
    path = npz.rename(tmp_path / "cine.bin")
    assert sniff_format(path) == "npz"
    assert load_cine(path).meta["format"] == "npz"


def test_other_zip_gets_a_hint(tmp_path):
    import zipfile

    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not arrays")
    refused(path, "ZIP", ".npz")


def test_dicom_recognised_by_magic_bytes(tmp_path):
    path = tmp_path / "IM0001"  # DICOM files often have no suffix
    path.write_bytes(bytes(128) + b"DICM" + bytes(64))
    assert sniff_format(path) == "dicom"


def test_dicom_suffix_without_preamble(tmp_path):
    path = tmp_path / "cine.dcm"
    path.write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100")
    assert sniff_format(path) == "dicom"


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "cine.avi"
    path.write_text("this is not a cine\n" * 10)
    refused(path, "is not a DICOM or video file")


def test_sniff_missing_file(tmp_path):
    path = tmp_path / "absent.mp4"
    with pytest.raises(InputError, match="no such file") as excinfo:
        sniff_format(path)
    assert str(path) in str(excinfo.value)
    refused(path, "no such file")


def test_sniff_directory(tmp_path):
    with pytest.raises(InputError, match="not a regular file") as excinfo:
        sniff_format(tmp_path)
    assert str(tmp_path) in str(excinfo.value)


def test_sniff_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(InputError, match="is empty") as excinfo:
        sniff_format(path)
    assert str(path) in str(excinfo.value)
