"""The batch scan on AVX-512 VNNI (imported only where the CPU has it, see
:func:`faceseal.matching.kernels.vnni_enabled`).

``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds them, four at a time, into
16 int32 lanes: three times the products per instruction of the int16 scan's ``vpmaddwd`` path,
which is what numba's vectoriser makes of a plain loop (it does not emit ``vpdpbusd`` from one,
checked). So the instruction is called by name through a numba intrinsic.

The codes are signed (int8) and stay as they are; the probe is quantised to int8 too
(``[-127, 127]``) and shifted into an unsigned byte, ``q + 128``. Then

    sum_j (q_j + 128) * c_j  =  sum_j q_j * c_j  +  128 * sum_j c_j

and the row sums ``sum_j c_j`` are computed once per block of rows (by the same instruction with
a probe of ones) and shared by every probe. The integer dot is exact, so each row's value is the
one the int16 kernels compute for the same int8-quantised probe (``rows_below`` with that probe
is the exact second pass), and the bounds stay proven: only the probe's quantisation error is
larger, which widens the candidate set a little, never narrows it.
"""
# ruff: noqa: PLR0917 - kernels take their arrays positionally, as numba needs

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic

from faceseal.matching._compiled import row_value, sift_down

cgutils: Any = _cgutils  # numba's code-generation helpers (untyped)

#: Bytes one ``vpdpbusd`` takes from each operand; the dimension must be a multiple of it.
CHUNK = 64
#: Rows per block (16 KiB of 128-d codes, kept in L1 while every probe of a group uses them).
BLOCK = 128


def _dot_typer(unrolled: int | None) -> Callable[..., Any]:
    """The typer of an intrinsic ``dot(unsigned, u_row, signed, s_row)``: ``sum_j unsigned[u_row,
    j] * signed[s_row, j]`` (uint8 x int8, exact in int32) over two C-contiguous 2-D arrays of
    the same width, a multiple of 64. ``unrolled``: the width's chunks of 64 when it is known
    (the loop unrolled: 20% faster at 128-d, measured), else a loop over the width."""

    def typer(typingctx: Any, unsigned: Any, u_row: Any, signed: Any, s_row: Any) -> Any:
        del typingctx
        return types.int32(unsigned, u_row, signed, s_row), codegen

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        u_arr, u_index, s_arr, s_index = args
        u_view = context.make_array(sig.args[0])(context, builder, u_arr)
        s_view = context.make_array(sig.args[2])(context, builder, s_arr)
        i64 = ir.IntType(64)
        zero = ir.Constant(i64, 0)
        u_ptr = cgutils.get_item_pointer(context, builder, sig.args[0], u_view, [u_index, zero])
        s_ptr = cgutils.get_item_pointer(context, builder, sig.args[2], s_view, [s_index, zero])
        bytes64 = ir.VectorType(ir.IntType(8), CHUNK)
        lanes = ir.VectorType(ir.IntType(32), 16)
        vnni = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(lanes, [lanes, bytes64, bytes64]),
            "llvm.x86.avx512.vpdpbusd.512")
        total = cgutils.alloca_once_value(builder, ir.Constant(lanes, [0] * 16))

        def step(offset: Any) -> None:
            a = builder.load(builder.bitcast(builder.gep(u_ptr, [offset]), bytes64.as_pointer()),
                             align=1)
            b = builder.load(builder.bitcast(builder.gep(s_ptr, [offset]), bytes64.as_pointer()),
                             align=1)
            builder.store(builder.call(vnni, [builder.load(total), a, b]), total)

        if unrolled is not None:
            for k in range(unrolled):
                step(ir.Constant(i64, CHUNK * k))
        else:
            width = builder.extract_value(u_view.shape, 1)
            with cgutils.for_range(builder, builder.udiv(width, ir.Constant(i64, CHUNK))) as loop:
                step(builder.mul(loop.index, ir.Constant(i64, CHUNK)))
        reduce = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [lanes]),
            "llvm.vector.reduce.add.v16i32")
        return builder.call(reduce, [builder.load(total)])

    return typer


dot_u8s8_any: Any = intrinsic(_dot_typer(None))
dot_u8s8_128: Any = intrinsic(_dot_typer(2))


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def dot_u8s8(unsigned: Any, u_row: Any, signed: Any, s_row: Any) -> Any:
    # The unrolled form for 128-d (dlib's), the loop for other widths; the test is hoisted out
    # of the callers' loops by the compiler.
    if signed.shape[1] == 128:
        return dot_u8s8_128(unsigned, u_row, signed, s_row)
    return dot_u8s8_any(unsigned, u_row, signed, s_row)


@njit(nogil=True, cache=True, boundscheck=False)
def scan_probes_vnni(codes: Any, scale: Any, norms: Any, q_u8: Any, ones: Any, qscales: Any,
                     qnorms: Any, metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any,
                     p0: Any, p1: Any) -> None:
    # As _compiled.scan_probes, the integer dots by vpdpbusd: q_u8[p] = int8 probe + 128, ones a
    # (1, d) row of ones (uint8) for the row sums.
    m = heap_val.shape[1]
    for p in range(p0, p1):
        for t in range(m):
            heap_val[p, t] = np.inf
            heap_idx[p, t] = -1
    sums = np.empty(BLOCK, dtype=np.int32)
    dots = np.empty(BLOCK, dtype=np.int32)
    values = np.empty(BLOCK, dtype=np.float32)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        for i in range(start, stop):
            sums[i - start] = np.int32(128) * dot_u8s8(ones, 0, codes, i)
        for p in range(p0, p1):
            for i in range(start, stop):
                dots[i - start] = dot_u8s8(q_u8, p, codes, i) - sums[i - start]
            qscale = qscales[p]
            qnorm = qnorms[p]
            low = np.float32(np.inf)
            for i in range(start, stop):
                value = row_value(dots[i - start], scale[i], qscale, qnorm, norms[i], metric_cos)
                values[i - start] = value
                low = min(low, value)
            root = heap_val[p, 0]
            if low >= root:
                continue
            for i in range(start, stop):
                if values[i - start] < root:
                    sift_down(heap_val, heap_idx, p, m, values[i - start], i)
                    root = heap_val[p, 0]


@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def scan_batch_vnni(codes: Any, scale: Any, norms: Any, q_u8: Any, ones: Any, qscales: Any,
                    qnorms: Any, metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any,
                    groups: Any) -> None:
    probes = q_u8.shape[0]
    for g in prange(groups):
        p0 = np.int64(g * (probes // groups) + min(g, probes % groups))
        p1 = p0 + probes // groups + (1 if g < probes % groups else 0)
        scan_probes_vnni(codes, scale, norms, q_u8, ones, qscales, qnorms, metric_cos, n,
                         heap_val, heap_idx, p0, p1)


@njit(nogil=True, cache=True, boundscheck=False)
def dots_vnni(q_u8: Any, codes: Any, out: Any) -> None:
    # out[p, i] = the int8 probe p (as q_u8 - 128) times row i: for the self-check.
    for p in range(q_u8.shape[0]):
        for i in range(codes.shape[0]):
            acc = np.int32(0)
            for j in range(codes.shape[1]):
                acc += np.int32(codes[i, j])
            out[p, i] = dot_u8s8(q_u8, p, codes, i) - np.int32(128) * acc


def build() -> dict[str, Callable[..., Any]]:
    return {"scan_batch_vnni": scan_batch_vnni, "dots_vnni": dots_vnni}
