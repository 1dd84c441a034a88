"""NPZ reader and writer: round trips, timing options and malformed archives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ceuskit.cine import Panel
from ceuskit.errors import InputError
from ceuskit.io.arrays import read_npz, write_npz
from ceuskit.io.frames import rgb_to_grey

T, H, W = 12, 32, 48


def frames_u8(n: int = T, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W), dtype=np.uint8)


def times(n: int = T) -> np.ndarray:
    steps = np.where(np.arange(n - 1) % 2 == 0, 0.05, 0.1)
    return 3.0 + np.concatenate([[0.0], np.cumsum(steps)])


def refuse(path: Path, *words: str) -> None:
    with pytest.raises(InputError) as excinfo:
        read_npz(path)
    message = str(excinfo.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


# --------------------------------------------------------------------------- round trips


def test_round_trip_with_regions_and_spacing(tmp_path):
    frames = frames_u8()
    regions = [
        Panel(0, 0, 24, 32, spacing_mm=(0.1, 0.12), kind="bmode"),
        Panel(24, 0, 48, 32, kind="contrast"),
        (4, 6, 20, 30),
    ]
    path = write_npz(tmp_path / "cine.npz", frames, times(), regions=regions,
                     spacing_mm=(0.2, 0.25))

    cine = read_npz(path)

    np.testing.assert_array_equal(cine.frames, frames)
    # 8-bit grey stays uint8 (a quarter of float32's memory, table linearisation).
    assert cine.frames.dtype == np.uint8
    assert not cine.frames.flags.writeable
    np.testing.assert_allclose(cine.times_s, times() - 3.0, atol=1e-12)
    assert cine.spacing_mm == (0.2, 0.25)
    assert cine.regions == (
        Panel(0, 0, 24, 32, spacing_mm=(0.1, 0.12), kind="bmode", source="file"),
        Panel(24, 0, 48, 32, spacing_mm=None, kind="contrast", source="file"),
        Panel(4, 6, 20, 30, spacing_mm=None, kind="unknown", source="file"),
    )
    assert cine.chroma is None
    assert cine.warnings == ()
    assert cine.meta["format"] == "npz"
    assert cine.meta["source_name"] == "cine.npz"
    assert cine.meta["timing_source"] == "file"
    assert (cine.meta["n_frames"], cine.meta["height"], cine.meta["width"]) == (T, H, W)


def test_float_frames_kept(tmp_path):
    frames = frames_u8() * 0.75 + 0.125
    cine = read_npz(write_npz(tmp_path / "f.npz", frames, times()))
    assert cine.frames.dtype == np.float32
    np.testing.assert_array_equal(cine.frames, frames.astype(np.float32))


def test_rgb_frames_give_grey_and_chroma(tmp_path):
    rgb = np.repeat(frames_u8()[..., None], 3, axis=-1)
    rgb[5, 10:20, 10:20] = (0, 0, 255)
    cine = read_npz(write_npz(tmp_path / "rgb.npz", rgb, times()))
    grey, chroma = rgb_to_grey(rgb)
    np.testing.assert_array_equal(cine.frames, grey)
    assert cine.chroma is not None
    np.testing.assert_array_equal(cine.chroma, chroma.max(axis=0))
    assert cine.chroma[15, 15] == 255 and cine.chroma[0, 0] == 0
    assert cine.meta["colour"] is True


def test_name_used_as_given(tmp_path):
    # numpy.savez would append ".npz" to a plain path.
    path = write_npz(tmp_path / "cine.data", frames_u8(), times())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cine.data"]
    assert read_npz(path).n_frames == T


def test_overwrite_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "cine.npz"
    write_npz(path, frames_u8(), times())
    write_npz(path, frames_u8(4), times(4))
    assert read_npz(path).n_frames == 4
    assert [p.name for p in tmp_path.iterdir()] == ["cine.npz"]


# --------------------------------------------------------------------------- timing


def test_times_from_fps_when_archive_has_none(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8(), None)
    cine = read_npz(path, fps=20)
    np.testing.assert_allclose(cine.times_s, np.arange(T) / 20)
    assert cine.meta["timing_source"] == "fps"
    assert [w.code for w in cine.warnings] == ["timing-from-fps"]


def test_missing_times_without_fps(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8(), None)
    refuse(path, "times_s", "--fps")


def test_fps_ignored_when_archive_has_times(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8(), times())
    cine = read_npz(path, fps=20)
    np.testing.assert_allclose(cine.times_s, times() - 3.0)
    assert [w.code for w in cine.warnings] == ["fps-ignored"]


def test_bad_fps(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8(), None)
    with pytest.raises(InputError, match="--fps"):
        read_npz(path, fps=-1)


def test_normalised_frames_warned(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8() / 255.0, times())
    assert [w.code for w in read_npz(path).warnings] == ["display-range-suspect"]


# --------------------------------------------------------------------------- bad archives


def save(path: Path, **arrays) -> Path:
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_missing_frames(tmp_path):
    refuse(save(tmp_path / "a.npz", times_s=times()), "no 'frames'", "times_s")


def test_object_arrays_refused(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros(3), np.zeros(4)
    refuse(save(tmp_path / "a.npz", frames=frames_u8(), times_s=ragged), "pickled")


def test_times_length_mismatch(tmp_path):
    refuse(save(tmp_path / "a.npz", frames=frames_u8(), times_s=times()[:-1]), "times_s",
           f"{T} frames")


def test_non_increasing_times(tmp_path):
    t = times()
    t[4] = t[3]
    # The writer stores what it is given; the reader refuses it.
    refuse(write_npz(tmp_path / "a.npz", frames_u8(), t), "not strictly increasing")


def test_single_frame(tmp_path):
    refuse(save(tmp_path / "a.npz", frames=frames_u8(1), times_s=[0.0]), "single frame")


@pytest.mark.parametrize(
    ("frames", "words"),
    [(np.zeros((T, H), np.uint8), ("shape",)),
     (np.zeros((T, H, W, 4), np.uint8), ("shape",)),
     (np.zeros((T, H, W), bool), ("dtype",)),
     (np.zeros((T, H, W, 3), np.float32), ("RGB", "uint8")),
     (np.full((T, H, W), 300.0), ("outside the display range",)),
     (np.full((T, H, W), np.nan), ("NaN",))],
)
def test_bad_frames(tmp_path, frames, words):
    refuse(save(tmp_path / "a.npz", frames=frames, times_s=times()), *words)


def test_corrupt_zip(tmp_path):
    path = write_npz(tmp_path / "cine.npz", frames_u8(), times())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refuse(path, "damaged or truncated")


@pytest.mark.parametrize("layout", ["first", "last", "compressed", "fortran"])
def test_memory_mapped_frames_equal_loaded_frames(tmp_path, layout):
    # Uncompressed uint8 frames are memory-mapped from the archive (no copy);
    # every other layout is read; both give the same cine.
    frames = frames_u8()
    path = tmp_path / "cine.npz"
    arrays = {"times_s": times(), "frames": np.asfortranarray(frames) if layout == "fortran" else frames}
    order = ["frames", "times_s"] if layout == "first" else ["times_s", "frames"]
    with path.open("wb") as fh:
        (np.savez_compressed if layout == "compressed" else np.savez)(fh, **{k: arrays[k] for k in order})
    cine = read_npz(path)
    np.testing.assert_array_equal(cine.frames, frames)
    assert cine.frames.dtype == np.uint8 and not cine.frames.flags.writeable
    mapped = isinstance(cine.frames.base, np.memmap) or isinstance(getattr(cine.frames.base, "base", None),
                                                                      np.memmap)
    assert mapped == (layout in ("first", "last"))


def test_flipped_byte_in_mapped_frames_is_refused(tmp_path):
    # The mapped member's CRC-32 is checked like a read would: a damaged
    # archive is an error, never silently different pixels.
    path = save(tmp_path / "cine.npz", frames=frames_u8(), times_s=times())
    assert read_npz(path).frames.shape == (T, H, W)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x93NUMPY") + 200  # inside the frames' pixel bytes
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    refuse(path, "damaged or truncated")


def test_text_file_named_npz(tmp_path):
    path = tmp_path / "cine.npz"
    path.write_text("frames, times\n1, 2\n")
    refuse(path, "not an .npz archive")


def test_npy_file_named_npz(tmp_path):
    path = tmp_path / "cine.npz"
    with path.open("wb") as fh:
        np.save(fh, frames_u8())
    refuse(path, "single NumPy array")


@pytest.mark.parametrize(
    ("extra", "words"),
    [({"spacing_mm": np.array([0.1, -0.1])}, ("spacing_mm",)),
     ({"spacing_mm": np.array([0.1, 0.1, 0.1])}, ("spacing_mm",)),
     ({"regions": np.array([[0, 0, 100, 10]])}, ("region 0", "outside")),
     ({"regions": np.array([[5, 0, 5, 10]])}, ("region 0", "empty")),
     ({"regions": np.array([0, 0, 10, 10])}, ("regions", "(N, 4)")),
     ({"regions": np.array([[0.5, 0, 10, 10]])}, ("whole pixel",)),
     ({"regions": np.array([[0, 0, 10, 10]]), "region_spacing_mm": np.ones((2, 2))},
      ("region_spacing_mm",)),
     ({"regions": np.array([[0, 0, 10, 10]]), "region_kinds": np.array(["colour"])},
      ("region_kinds",))],
)
def test_bad_geometry(tmp_path, extra, words):
    refuse(save(tmp_path / "a.npz", frames=frames_u8(), times_s=times(), **extra), *words)


def test_region_spacing_nan_means_unknown(tmp_path):
    path = save(tmp_path / "a.npz", frames=frames_u8(), times_s=times(),
                regions=np.array([[0, 0, 10, 10], [10, 0, 20, 10]]),
                region_spacing_mm=np.array([[np.nan, np.nan], [0.3, 0.3]]))
    regions = read_npz(path).regions
    assert [r.spacing_mm for r in regions] == [None, (0.3, 0.3)]


def test_writer_refuses_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_npz(tmp_path / "a.npz", np.zeros((T, H)), times())
    with pytest.raises(ValueError, match="times_s"):
        write_npz(tmp_path / "a.npz", frames_u8(), times()[:-1])
    with pytest.raises(ValueError, match="outside"):
        write_npz(tmp_path / "a.npz", frames_u8(), times(), regions=[(0, 0, W + 1, H)])
    assert list(tmp_path.iterdir()) == []


def _forged_npz(path, shape=(100000, 10000, 1000)):
    """An archive whose frames.npy header claims `shape` (10^12 bytes) over 64 bytes of data."""
    import io
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2, 2), np.uint8))
    header["shape"] = shape
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(b"\0" * 64)
    times = io.BytesIO()
    np.save(times, np.arange(3.0))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("frames.npy", buf.getvalue())
        z.writestr("times_s.npy", times.getvalue())
    return path


def test_a_header_claiming_more_than_the_member_holds_is_refused_before_allocation(tmp_path):
    path = _forged_npz(tmp_path / "forged.npz")
    with pytest.raises(InputError, match="claims 1000000000000 bytes") as exc:
        read_npz(path)
    assert "\n" not in str(exc.value) and "forged.npz" in str(exc.value)
