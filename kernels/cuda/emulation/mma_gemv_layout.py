#!/usr/bin/env python3
"""Checks the data movement of int8_gemv_mma.cu on the CPU.

Emulates one block of Int8GemvMmaKernel: the per-lane 16-byte loads of each 128-k step, the
operands each mma.sync.m16n8k32 (.s8) receives from them, the PTX fragment layout of that
instruction (A 16 x 32 row-major, B 32 x 8, D 16 x 8; g = lane / 4, t = lane % 4), the split
of the k steps over the block's warps, and where each accumulator is written. The result must
equal a direct integer GEMV: this checks the permutation of k the kernel relies on, not the
hardware. Run by hand or by ctest (label kernels); needs numpy. Exit status 0 when exact.
"""
import sys

import numpy as np

WARPS, ROWS, TILE, STEP = 4, 16, 8, 128


def lane_bytes(matrix, row, base, k):
    """The 32 bytes a lane loads: two 16-byte loads at base and base + 16, zero past k."""
    out = np.zeros(32, np.int64)
    for h in (0, 16):
        if base + h < k:
            out[h:h + 16] = matrix[row, base + h:base + h + 16]
    return out


def word(b, w):
    return b[4 * w:4 * w + 4]


def mma(d, a_regs, b_regs):
    """D += A B for the warp, with A and B assembled from the lanes' registers (PTX layout)."""
    a = np.zeros((16, 32), np.int64)
    b = np.zeros((32, 8), np.int64)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        a0, a1, a2, a3 = a_regs[lane]
        a[g, 4 * t:4 * t + 4], a[g + 8, 4 * t:4 * t + 4] = a0, a1
        a[g, 16 + 4 * t:20 + 4 * t], a[g + 8, 16 + 4 * t:20 + 4 * t] = a2, a3
        b0, b1 = b_regs[lane]
        b[4 * t:4 * t + 4, g], b[16 + 4 * t:20 + 4 * t, g] = b0, b1
    prod = a @ b
    for lane in range(32):
        g, t = lane // 4, lane % 4
        d[lane] += [prod[g, 2 * t], prod[g, 2 * t + 1], prod[g + 8, 2 * t], prod[g + 8, 2 * t + 1]]


def gemv(w, x):
    """y[i, r] as the kernel computes it, launch by launch (32 activation rows each)."""
    n, k = w.shape
    m = x.shape[0]
    y = np.full((m, n), -(1 << 40), np.int64)  # poison: every element must be written
    for m0 in range(0, m, 32):
        xc = x[m0:m0 + 32]
        mc = xc.shape[0]
        tiles = (mc + TILE - 1) // TILE
        for r0 in range(0, n, ROWS):  # one block
            acc = np.zeros((tiles, 32, 4), np.int64)
            for warp in range(WARPS):
                for k0 in range(warp * STEP, k, WARPS * STEP):
                    loads = {}
                    for lane in range(32):
                        g, t = lane // 4, lane % 4
                        base = k0 + 32 * t
                        wa = lane_bytes(w, min(r0 + g, n - 1), base, k)
                        wb = lane_bytes(w, min(r0 + g + 8, n - 1), base, k)
                        xs = [lane_bytes(xc, j * TILE + g, base, k) if j * TILE + g < mc
                              else np.zeros(32, np.int64) for j in range(tiles)]
                        loads[lane] = (wa, wb, xs)
                    for j in range(tiles):
                        for s in range(4):
                            a_regs = [(word(loads[l][0], 2 * s), word(loads[l][1], 2 * s),
                                       word(loads[l][0], 2 * s + 1), word(loads[l][1], 2 * s + 1))
                                      for l in range(32)]
                            b_regs = [(word(loads[l][2][j], 2 * s), word(loads[l][2][j], 2 * s + 1))
                                      for l in range(32)]
                            mma(acc[j], a_regs, b_regs)
            for j in range(tiles):
                for lane in range(32):
                    g, t = lane // 4, lane % 4
                    i = j * TILE + 2 * t
                    for r, ii, c in ((r0 + g, i, 0), (r0 + g, i + 1, 1),
                                     (r0 + g + 8, i, 2), (r0 + g + 8, i + 1, 3)):
                        if r < n and ii < mc:
                            y[m0 + ii, r] = acc[j, lane, c]
    return y


def main():
    rng = np.random.default_rng(3)
    ok = True
    # (n, m, k): partial row blocks, 1-4 activation tiles, k tails, more than one launch, more
    # k steps than warps.
    for n, m, k in [(16, 8, 128), (37, 32, 1040), (16, 3, 16), (20, 17, 272), (5, 45, 48),
                    (33, 25, 1168)]:
        w = rng.integers(-127, 128, (n, k))
        x = rng.integers(-127, 128, (m, k))
        same = np.array_equal(gemv(w, x), x @ w.T)
        print(f"n={n} m={m} k={k}: {'exact' if same else 'MISMATCH'}")
        ok &= same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
