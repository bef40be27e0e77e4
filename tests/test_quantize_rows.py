"""The gallery quantises rows with a compiled one-pass kernel or, without numba, with numpy:
both make the same codes and scales, and errors and norms that agree to a float32 step and
bound the true quantisation error from above."""

from __future__ import annotations

import numpy as np
import pytest

from faceseal.matching import kernels
from faceseal.matching.bounds import quantize_rows as quantize_rows_python


def rows(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((400, 128)) * 0.1
    x[0] = 0.0  # all zero: scale 1
    x[1, :] = 1e-300  # denormal-small
    x[2, 5] = 127.0  # one large value: the scale must not clip it
    x[3] = np.linspace(-1, 1, 128)
    x[4] = rng.integers(-127, 128, 128) * np.float64(np.float32(0.013))  # exact on the grid
    return x


def outputs(n: int) -> tuple[np.ndarray, ...]:
    return (np.empty((n, 128), np.int8), np.empty(n, np.float32), np.empty(n, np.float32),
            np.empty(n, np.float32))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_and_numpy_quantisation_agree_and_bound_the_error(seed: int) -> None:
    x = rows(seed)
    fast, slow = outputs(len(x)), outputs(len(x))
    kernels.quantize_rows(x, *fast)
    kernels.quantize_rows_numpy(x, *slow)
    assert np.array_equal(fast[0], slow[0])  # codes
    assert np.array_equal(fast[1], slow[1])  # scales
    for got, want in ((fast[2], slow[2]), (fast[3], slow[3])):  # norms, errors
        assert np.all(np.abs(got.astype(np.float64) - want) <= np.spacing(want) * 1.0001)
    codes, scale, norms, errors = fast
    rebuilt = codes.astype(np.float64) * scale.astype(np.float64)[:, None]
    true_error = np.sqrt(((rebuilt - x) ** 2).sum(axis=1))
    assert np.all(errors.astype(np.float64) >= true_error)
    assert np.allclose(norms, (rebuilt ** 2).sum(axis=1), rtol=1e-6, atol=1e-30)
    assert np.all(np.abs(codes.astype(np.int16)) <= 127)
    assert np.all(np.abs(x) <= 127.0 * scale.astype(np.float64)[:, None] + 1e-300)


def test_the_plain_loops_are_what_is_compiled() -> None:
    x = rows(4)[:20]
    plain, fast = outputs(len(x)), outputs(len(x))
    quantize_rows_python(x, *plain)
    kernels.quantize_rows(x, *fast)
    for a, b in zip(plain, fast, strict=True):
        assert np.array_equal(a, b)
