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
a probe of ones) and shared by every probe. For 128-d rows, 16 rows are done per call
(:data:`dot16_u8s8`) and their 16 accumulators summed by a tree of lane shuffles: one horizontal
sum per row cost five times its two ``vpdpbusd`` (1M rows, 100 probes, this machine: 1.0 ms per
probe one row at a time, 0.65 ms sixteen at a time; the int16 scan 1.9 ms).

The integer dot is exact, so each row's value is the one the int16 kernels compute for the same
int8-quantised probe (``rows_below`` with that probe is the exact second pass), and the bounds
stay proven: only the probe's quantisation error is larger. So that this does not widen the
candidate set, the kept rows' bounds are recomputed with the probe at int16
(``Selection.tighten``); the rows left out are excluded in the int8 scan's own terms.
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

from faceseal.matching._compiled import empty_heaps, keep_best, share

cgutils: Any = _cgutils  # numba's code-generation helpers (untyped)

#: Bytes one ``vpdpbusd`` takes from each operand; the dimension must be a multiple of it.
CHUNK = 64
#: Rows per block (16 KiB of 128-d codes, kept in L1 while every probe of a group uses them).
BLOCK = 128


I64 = ir.IntType(64)
BYTES64 = ir.VectorType(ir.IntType(8), CHUNK)
LANES = ir.VectorType(ir.IntType(32), 16)
#: Rows one call of :data:`dot16_u8s8` takes.
ROWS16 = 16


def _row_pointers(context: Any, builder: Any, sig: Any, args: Any) -> tuple[Any, Any]:
    """Pointers to ``unsigned[u_row, 0]`` and ``signed[s_row, 0]`` (the first four arguments of
    both intrinsics)."""
    u_arr, u_index, s_arr, s_index = args[:4]
    u_view = context.make_array(sig.args[0])(context, builder, u_arr)
    s_view = context.make_array(sig.args[2])(context, builder, s_arr)
    zero = ir.Constant(I64, 0)
    return (cgutils.get_item_pointer(context, builder, sig.args[0], u_view, [u_index, zero]),
            cgutils.get_item_pointer(context, builder, sig.args[2], s_view, [s_index, zero]))


def _load64(builder: Any, pointer: Any, offset: int | Any) -> Any:
    """The 64 bytes at ``pointer + offset`` (any alignment; ``offset`` a byte count or an IR
    value)."""
    at = ir.Constant(I64, offset) if isinstance(offset, int) else offset
    return builder.load(builder.bitcast(builder.gep(pointer, [at]), BYTES64.as_pointer()),
                        align=1)


def _invariant(builder: Any, load: Any) -> Any:
    # The unsigned operand (a probe, or the row of ones) is never written while a kernel runs:
    # saying so lets the compiler keep it in registers across the rows instead of reloading it
    # after every store of a result.
    load.set_metadata("invariant.load", builder.module.add_metadata([]))
    return load


def _vpdpbusd(builder: Any) -> Any:
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(LANES, [LANES, BYTES64, BYTES64]),
        "llvm.x86.avx512.vpdpbusd.512")


def _dot_typer(unrolled: int | None) -> Callable[..., Any]:
    """The typer of an intrinsic ``dot(unsigned, u_row, signed, s_row)``: ``sum_j unsigned[u_row,
    j] * signed[s_row, j]`` (uint8 x int8, exact in int32) over two C-contiguous 2-D arrays of
    the same width, a multiple of 64. ``unrolled``: the width's chunks of 64 when it is known
    (the loop unrolled: 20% faster at 128-d, measured), else a loop over the width."""

    def typer(typingctx: Any, unsigned: Any, u_row: Any, signed: Any, s_row: Any) -> Any:
        del typingctx
        return types.int32(unsigned, u_row, signed, s_row), codegen

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        u_ptr, s_ptr = _row_pointers(context, builder, sig, args)
        vnni = _vpdpbusd(builder)
        total = cgutils.alloca_once_value(builder, ir.Constant(LANES, [0] * 16))

        def step(offset: int | Any) -> None:
            a = _invariant(builder, _load64(builder, u_ptr, offset))
            b = _load64(builder, s_ptr, offset)
            builder.store(builder.call(vnni, [builder.load(total), a, b]), total)

        if unrolled is not None:
            for k in range(unrolled):
                step(CHUNK * k)
        else:
            u_view = context.make_array(sig.args[0])(context, builder, args[0])
            width = builder.extract_value(u_view.shape, 1)
            with cgutils.for_range(builder, builder.udiv(width, ir.Constant(I64, CHUNK))) as loop:
                step(builder.mul(loop.index, ir.Constant(I64, CHUNK)))
        reduce = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [LANES]),
            "llvm.vector.reduce.add.v16i32")
        return builder.call(reduce, [builder.load(total)])

    return typer


def _dot16_typer(typingctx: Any, unsigned: Any, u_row: Any, signed: Any, s_row: Any,
                 out: Any, at: Any) -> Any:
    """``out[at + r] = sum_j unsigned[u_row, j] * signed[s_row + r, j]`` for r < 16 (128-d
    rows only). The 16 accumulators are summed together by a tree of lane shuffles (four levels,
    15 shuffle pairs for 16 rows) instead of one horizontal sum per row: that sum costs five
    times the two ``vpdpbusd`` of a 128-d row."""
    del typingctx
    signature = types.void(unsigned, u_row, signed, s_row, out, at)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        u_ptr, s_ptr = _row_pointers(context, builder, sig, args)
        o_view = context.make_array(sig.args[4])(context, builder, args[4])
        o_ptr = cgutils.get_item_pointer(context, builder, sig.args[4], o_view, [args[5]])
        vnni = _vpdpbusd(builder)
        probe = [_invariant(builder, _load64(builder, u_ptr, CHUNK * k)) for k in range(2)]
        sums = []
        for r in range(ROWS16):
            acc = ir.Constant(LANES, [0] * 16)
            for k in range(2):
                acc = builder.call(vnni, [acc, probe[k], _load64(builder, s_ptr,
                                                                 128 * r + CHUNK * k)])
            sums.append(acc)
        size = 16  # lanes of one row's partial sums in each vector
        while len(sums) > 1:
            half = size // 2
            groups = 16 // size
            low = [g * size + i for g in range(groups) for i in range(half)]
            high = [g * size + half + i for g in range(groups) for i in range(half)]
            paired = []
            for x, y in zip(sums[0::2], sums[1::2], strict=True):
                pick_low = ir.Constant(LANES, low + [16 + i for i in low])
                pick_high = ir.Constant(LANES, high + [16 + i for i in high])
                paired.append(builder.add(builder.shuffle_vector(x, y, pick_low),
                                          builder.shuffle_vector(x, y, pick_high)))
            sums = paired
            size = half
        builder.store(sums[0], builder.bitcast(o_ptr, LANES.as_pointer()), align=4)
        return context.get_dummy_value()

    return signature, codegen


dot16_u8s8: Any = intrinsic(_dot16_typer)
dot_u8s8_any: Any = intrinsic(_dot_typer(None))
dot_u8s8_128: Any = intrinsic(_dot_typer(2))


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def dot_u8s8(unsigned: Any, u_row: Any, signed: Any, s_row: Any) -> Any:
    # The unrolled form for 128-d (dlib's), the loop for other widths; the test is hoisted out
    # of the callers' loops by the compiler.
    if signed.shape[1] == 128:
        return dot_u8s8_128(unsigned, u_row, signed, s_row)
    return dot_u8s8_any(unsigned, u_row, signed, s_row)


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def block_dots(unsigned: Any, u_row: Any, codes: Any, start: Any, stop: Any, wide: Any,
               out: Any) -> None:
    # out[i - start] = unsigned[u_row] . codes[i] for the rows start..stop: 16 at a time where
    # the rows are 128-d, the rest one by one.
    whole = start + (stop - start) // ROWS16 * ROWS16 if wide else start
    for i in range(start, whole, ROWS16):
        dot16_u8s8(unsigned, u_row, codes, i, out, i - start)
    for i in range(whole, stop):
        out[i - start] = dot_u8s8(unsigned, u_row, codes, i)


@njit(nogil=True, cache=True, boundscheck=False)
def scan_probes_vnni(codes: Any, scale: Any, norms: Any, q_u8: Any, ones: Any, qscales: Any,
                     qnorms: Any, metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any,
                     p0: Any, p1: Any) -> None:
    # As _compiled.scan_probes, the integer dots by vpdpbusd: q_u8[p] = int8 probe + 128, ones a
    # (1, d) row of ones (uint8) for the row sums.
    wide = codes.shape[1] == 128  # the 16-row form is written for dlib's 128-d rows
    empty_heaps(heap_val, heap_idx, p0, p1)
    sums = np.empty(BLOCK, dtype=np.int32)
    dots = np.empty(BLOCK, dtype=np.int32)
    values = np.empty(BLOCK, dtype=np.float32)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        block_dots(ones, 0, codes, start, stop, wide, sums)
        for r in range(stop - start):
            sums[r] *= np.int32(128)
        for p in range(p0, p1):
            block_dots(q_u8, p, codes, start, stop, wide, dots)
            for r in range(stop - start):
                dots[r] -= sums[r]
            keep_best(dots, scale, norms, qscales[p], qnorms[p], metric_cos, start, stop, values,
                      heap_val, heap_idx, p)


@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def scan_batch_vnni(codes: Any, scale: Any, norms: Any, q_u8: Any, ones: Any, qscales: Any,
                    qnorms: Any, metric_cos: Any, n: Any, heap_val: Any, heap_idx: Any,
                    groups: Any) -> None:
    for g in prange(groups):
        p0, p1 = share(g, q_u8.shape[0], groups)
        scan_probes_vnni(codes, scale, norms, q_u8, ones, qscales, qnorms, metric_cos, n,
                         heap_val, heap_idx, p0, p1)


@njit(nogil=True, cache=True, boundscheck=False)
def dots_vnni(q_u8: Any, codes: Any, out: Any) -> None:
    # out[p, i] = the int8 probe p (as q_u8 - 128) times row i, through the scan's own
    # block_dots (16 rows at a time and one by one): for the self-check.
    n = codes.shape[0]
    raw = np.empty(n, dtype=np.int32)
    for p in range(q_u8.shape[0]):
        block_dots(q_u8, p, codes, 0, n, codes.shape[1] == 128, raw)
        for i in range(n):
            acc = np.int32(0)
            for j in range(codes.shape[1]):
                acc += np.int32(codes[i, j])
            out[p, i] = raw[i] - np.int32(128) * acc


def build() -> dict[str, Callable[..., Any]]:
    return {"scan_batch_vnni": scan_batch_vnni, "dots_vnni": dots_vnni}
