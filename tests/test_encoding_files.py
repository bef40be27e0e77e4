"""Ready-made encodings: validate_encoding, and .npy / .json encoding files."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from faceseal.encoders import (
    SUPPORTED_DTYPES,
    is_encoding_file,
    load_encodings_file,
    validate_encoding,
)
from faceseal.errors import InvalidEncoding, InvalidInput

SECRET = 123.4567  # planted in bad encodings: must never show up in an error message


def sample(dim: int = 128, dtype: str = "float64", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, dim).astype(dtype)


def planted(dim: int = 128, *, bad: float | None = None) -> np.ndarray:
    array = sample(dim)
    array[0] = SECRET
    if bad is not None:
        array[1] = bad
    return array


# --- validate_encoding ---------------------------------------------------------------------------


def test_supported_dtypes() -> None:
    assert SUPPORTED_DTYPES == ("float32", "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(dtype: str) -> None:
    original = sample(dtype=dtype)
    checked = validate_encoding(original, expected_dim=128)
    assert checked.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(checked, original)


@pytest.mark.parametrize(
    "value",
    [sample(8).tolist(), tuple(sample(8).tolist()), [1, 2, 3.5, 0], [np.float32(0.5)] * 4],
    ids=["list", "tuple", "ints-and-floats", "numpy-scalars"],
)
def test_sequences_become_float64(value: list[float]) -> None:
    checked = validate_encoding(value)
    assert checked.dtype == np.float64
    np.testing.assert_array_equal(checked, np.asarray(value, dtype=np.float64))


def test_result_is_an_independent_contiguous_native_copy() -> None:
    base = sample(256).astype(">f8")  # big-endian and, sliced, non-contiguous
    view = base[::2]
    checked = validate_encoding(view)
    assert checked.flags.c_contiguous
    assert checked.dtype == np.dtype("float64")
    assert checked.dtype.isnative
    np.testing.assert_array_equal(checked, view)
    base[0] = 9.0
    assert checked[0] != 9.0


@pytest.mark.parametrize(
    ("value", "expected_dim", "fragment"),
    [
        (planted(bad=float("nan")), None, "NaN or infinite"),
        (planted(bad=float("inf")), None, "NaN or infinite"),
        (planted(bad=float("-inf")), None, "NaN or infinite"),
        (planted().astype(np.float32) * np.float32("nan"), None, "NaN or infinite"),
        (planted(bad=1e300), None, "beyond"),
        (planted(bad=-1000.5), None, "beyond"),
        (planted(), 512, "expected 512, got 128"),
        (planted().reshape(2, 64), None, "1-D"),
        (planted().reshape(1, 128), 128, "1-D"),
        (np.array(SECRET), None, "1-D"),
        (np.float64(SECRET), None, "unsupported encoding type"),
        (np.array([], dtype=np.float64), None, "empty"),
        ([], None, "empty"),
        (np.array([SECRET]), None, "outside the supported range"),
        (np.full(4097, SECRET), None, "outside the supported range"),
        (np.array([1234, 5678, 9]), None, "int64"),
        (planted().astype(np.float16), None, "float16"),
        (planted().astype(np.complex128), None, "complex128"),
        (np.array([SECRET, None, 1.0], dtype=object), None, "object"),
        ([SECRET, "1.5", 2.0], None, "only numbers"),
        ([SECRET, True, 2.0], None, "only numbers"),
        ([[SECRET, 1.0], [2.0, 3.0]], None, "1-D"),
        ("1234.5678,1.0", None, "unsupported encoding type"),
        ({"encoding": [SECRET, 1.0]}, None, "unsupported encoding type"),
        (None, None, "unsupported encoding type"),
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "nan-float32",
        "huge",
        "just-beyond",
        "wrong-dim",
        "2-D",
        "row-vector",
        "0-D",
        "scalar",
        "empty-array",
        "empty-list",
        "dim-1",
        "dim-4097",
        "int",
        "float16",
        "complex",
        "object",
        "string-in-list",
        "bool-in-list",
        "nested-list",
        "str",
        "dict",
        "None",
    ],
)
def test_invalid_encodings(value: object, expected_dim: int | None, fragment: str) -> None:
    with pytest.raises(InvalidEncoding) as caught:
        validate_encoding(value, expected_dim=expected_dim)
    message = str(caught.value)
    assert fragment in message
    assert "1234" not in message
    assert "123.45" not in message
    assert "5678" not in message


# --- encoding files ------------------------------------------------------------------------------


def write_npy(path: Path, array: np.ndarray) -> Path:
    with path.open("wb") as fh:  # np.save(path) would append ".npy" to other suffixes
        np.save(fh, array, allow_pickle=array.dtype.hasobject)
    return path


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_npy_single(tmp_path: Path, dtype: str) -> None:
    original = sample(dtype=dtype)
    loaded = load_encodings_file(write_npy(tmp_path / "one.npy", original), expected_dim=128)
    assert len(loaded) == 1
    assert loaded[0].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded[0], original)


@pytest.mark.parametrize(
    "layout",
    ["C", "F", "big-endian"],
)
def test_npy_batch(tmp_path: Path, layout: str) -> None:
    batch = np.stack([sample(seed=i) for i in range(5)])
    stored = {"C": batch, "F": np.asfortranarray(batch), "big-endian": batch.astype(">f8")}
    loaded = load_encodings_file(write_npy(tmp_path / "batch.npy", stored[layout]))
    assert len(loaded) == 5
    for row, expected in zip(loaded, batch, strict=True):
        assert row.flags.c_contiguous
        assert row.dtype.isnative
        np.testing.assert_array_equal(row, expected)


def test_npy_batch_float32_preserved(tmp_path: Path) -> None:
    batch = np.stack([sample(dtype="float32", seed=i) for i in range(3)])
    loaded = load_encodings_file(write_npy(tmp_path / "b32.NPY", batch))
    assert [row.dtype for row in loaded] == [np.dtype("float32")] * 3


ONE = sample(4, seed=1).tolist()
TWO = sample(4, seed=2).tolist()


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (ONE, [ONE]),
        ([ONE, TWO], [ONE, TWO]),
        ({"encodings": [ONE, TWO]}, [ONE, TWO]),
        ({"encodings": ONE, "model": "dlib-resnet-v1"}, [ONE]),
        ([1, 0, 2, 3], [[1.0, 0.0, 2.0, 3.0]]),
    ],
    ids=["flat", "list-of-lists", "object", "object-flat-extra-key", "integers"],
)
def test_json_formats(tmp_path: Path, document: object, expected: list[list[float]]) -> None:
    loaded = load_encodings_file(write_json(tmp_path / "enc.json", document))
    assert [row.dtype for row in loaded] == [np.dtype("float64")] * len(expected)
    assert [row.tolist() for row in loaded] == expected


def _pickled_object_array(path: Path) -> None:
    write_npy(path, np.array([SECRET, None, 1.0], dtype=object))


def _write_bytes(data: bytes) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(data)


def _truncated_npy(path: Path) -> None:
    write_npy(path, planted())
    path.write_bytes(path.read_bytes()[:-8])


def _npz_renamed(path: Path) -> None:
    with path.open("wb") as fh:
        np.savez(fh, planted())


BAD_FILES: dict[str, tuple[str, Callable[[Path], object], type[Exception], str]] = {
    # case: (file name, how to write it, error, message fragment)
    "pickled-object-array": ("obj.npy", _pickled_object_array, InvalidInput, "pickle"),
    "random-bytes-npy": (
        "junk.npy",
        _write_bytes(b"\x93NUMPY\x01\x00garbage1234.5678"),
        InvalidInput,
        "not a valid .npy",
    ),
    "not-npy-at-all": (
        "text.npy",
        _write_bytes(b"1234.5678, 1.0\n"),
        InvalidInput,
        "not a valid .npy",
    ),
    "truncated-npy": ("short.npy", _truncated_npy, InvalidInput, "corrupt"),
    "npz-renamed": ("archive.npy", _npz_renamed, InvalidInput, "not a valid .npy"),
    "int-npy": (
        "ints.npy",
        lambda p: write_npy(p, np.arange(1234, 1300)),
        InvalidEncoding,
        "int64",
    ),
    "3-D-npy": (
        "cube.npy",
        lambda p: write_npy(p, planted().reshape(2, 4, 16)),
        InvalidEncoding,
        "3 dimensions",
    ),
    "empty-batch-npy": (
        "none.npy",
        lambda p: write_npy(p, np.zeros((0, 128))),
        InvalidInput,
        "no encodings",
    ),
    "nan-npy": (
        "nan.npy",
        lambda p: write_npy(p, planted(bad=float("nan"))),
        InvalidEncoding,
        "NaN",
    ),
    "empty-file": ("empty.json", _write_bytes(b""), InvalidInput, "empty"),
    "invalid-json": (
        "broken.json",
        _write_bytes(b"[1234.5678, 1.0"),
        InvalidInput,
        "not valid JSON",
    ),
    "not-utf8": ("latin.json", _write_bytes(b"[1234.5678, \xff]"), InvalidInput, "UTF-8"),
    "json-empty-list": ("nothing.json", lambda p: write_json(p, []), InvalidInput, "no encodings"),
    "json-string": (
        "str.json",
        lambda p: write_json(p, "1234.5678"),
        InvalidInput,
        "list of encodings",
    ),
    "json-object-without-key": (
        "obj.json",
        lambda p: write_json(p, {"x": [SECRET]}),
        InvalidInput,
        '"encodings"',
    ),
    "json-nan": ("nan.json", _write_bytes(b"[1234.5678, NaN, 1.0]"), InvalidEncoding, "NaN"),
    "json-mixed-dims": (
        "mixed.json",
        lambda p: write_json(p, [[SECRET, 1.0], [SECRET, 1, 2]]),
        InvalidEncoding,
        "encoding #1",
    ),
    "json-mixed-kinds": (
        "kinds.json",
        lambda p: write_json(p, [SECRET, [1.0, 2.0]]),
        InvalidEncoding,
        "1-D",
    ),
    "json-huge-int": (
        "big.json",
        _write_bytes(b"[1" + b"0" * 5000 + b", 1]"),
        InvalidInput,
        "not valid JSON",
    ),
    "wrong-suffix": (
        "enc.txt",
        lambda p: write_json(p, [SECRET, 1.0]),
        InvalidInput,
        "not an encodings file",
    ),
    "npz-suffix": ("enc.npz", _npz_renamed, InvalidInput, "not an encodings file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_refused(tmp_path: Path, case: str) -> None:
    name, write, error, fragment = BAD_FILES[case]
    path = tmp_path / name
    write(path)
    with pytest.raises(error) as caught:
        load_encodings_file(path)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(f"{name}: ")  # the file name, not its directory
    assert str(tmp_path) not in message
    assert "1234" not in message
    assert "123.45" not in message
    assert "5678" not in message


@pytest.mark.parametrize(
    ("filename", "document"),
    [("wrong.npy", planted(64)), ("wrong.json", planted(64).tolist())],
)
def test_expected_dim(tmp_path: Path, filename: str, document: np.ndarray | list[float]) -> None:
    path = tmp_path / filename
    if isinstance(document, np.ndarray):
        write_npy(path, document)
    else:
        write_json(path, document)
    assert load_encodings_file(path, expected_dim=64)[0].shape == (64,)
    with pytest.raises(InvalidEncoding, match="expected 128, got 64") as caught:
        load_encodings_file(path, expected_dim=128)
    assert "1234" not in str(caught.value)
    assert "123.45" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"^gone\.npy: no such file$"):
        load_encodings_file(tmp_path / "gone.npy")


@pytest.mark.parametrize("suffix", [".npy", ".json"])
def test_size_limit(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"enc{suffix}"
    if suffix == ".npy":
        write_npy(path, sample())
    else:
        write_json(path, sample().tolist())
    size = path.stat().st_size
    assert len(load_encodings_file(path, max_bytes=size)) == 1
    with pytest.raises(InvalidInput, match="larger than the limit"):
        load_encodings_file(path, max_bytes=size - 1)


@pytest.mark.parametrize("shape", [(2**40,), (2**34, 128)])
def test_npy_header_claiming_a_huge_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    # The header promises far more values than the file holds: refused without allocating them.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    path = tmp_path / "liar.npy"
    path.write_bytes(header.getvalue() + sample().tobytes())
    with pytest.raises(InvalidInput, match="corrupt"):
        load_encodings_file(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.npy", True),
        ("a.NPY", True),
        ("a.json", True),
        ("a.Json", True),
        ("a.npz", False),
        ("a.jpg", False),
        ("npy", False),
        ("a.json.bak", False),
    ],
)
def test_is_encoding_file(name: str, expected: bool) -> None:
    assert is_encoding_file(Path(name)) is expected
