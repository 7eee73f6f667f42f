#!/usr/bin/env python3
"""Checks the phase logic of quantize_activation_cuda.cu's cooperative kernel on the CPU.

Emulates QuantizeActivationFusedKernel block by block: unit ownership (32 columns x 64 rows,
column-tile major, contiguous per block), the column flags, the row maxima over the values below
the threshold, the per-tile outlier counts and each block's running prefix over them, the kept
outlier list, the gathered values (0 where a row's value is below the threshold), q, and the
counts written by the last block. Blocks run one after another within a
phase; phases are separated as grid.sync() separates them. The result must equal the CPU
reference semantics (kernels/quantize_activation.h: outliers per value, so a row's results
depend on that row alone), with outliers past the cap quantized with the row scale. This checks the indexing, not the hardware (races are excluded by construction:
within a phase, blocks write disjoint data, identical values or atomic maxima). Run by hand or
by ctest (label kernels); needs numpy. Exit status 0 when exact.
"""
import math
import random
import sys

import numpy as np

TILE, CHUNK = 32, 64


def q8(x, scale):
    """round_half_away(x * scale) clamped to [-127, 127], in fp32 (NaN -> -127 as on the GPU)."""
    r = float(np.float32(x) * np.float32(scale))
    if math.isnan(r):
        return -127
    r = math.copysign(math.floor(abs(r) + 0.5), r)
    return int(min(max(r, -127.0), 127.0))


def is_outlier(v, t):
    return not abs(v) < t  # NaN and Inf included


def reference(x, t, cap):
    """The CPU semantics, with the GPU's cap: q of an outlier past the cap is clipped."""
    m, k = x.shape
    cols = [j for j in range(k) if any(is_outlier(v, t) for v in x[:, j])]
    kept = cols[:cap]
    absmax = np.zeros(m, np.float32)
    for i in range(m):
        vals = [abs(v) for v in x[i] if not is_outlier(v, t)]
        absmax[i] = max(vals) if vals else 0.0
    q = np.zeros((m, k), np.int64)
    for i in range(m):
        for j in range(k):
            if (j in kept and is_outlier(x[i, j], t)) or not absmax[i] > 0:
                continue
            q[i, j] = q8(x[i, j], np.float32(127) / absmax[i])
    outliers = {(i, c): x[i, kept[c]] if is_outlier(x[i, kept[c]], t) else 0.0
                for i in range(m) for c in range(len(kept))}
    return kept, len(cols), absmax, q, outliers


def emulate(x, t, cap, grid):
    m, k = x.shape
    num_tiles = (k + TILE - 1) // TILE
    row_chunks = (m + CHUNK - 1) // CHUNK
    num_units = num_tiles * row_chunks
    grid = min(grid, num_units)
    whole_columns = row_chunks == 1
    absmax = np.zeros(m, np.float32)
    col_flags = np.zeros(k, np.int64) if not whole_columns else np.full(k, 7)  # 7: never written
    tile_counts = np.full(num_tiles, -999)
    q = np.full((m, k), 1000)  # poison
    outlier_cols = np.full(cap, -1)
    outliers = {}

    def units(b):
        return range(num_units * b // grid, num_units * (b + 1) // grid)

    def unit(u):
        tile, chunk = u // row_chunks, u % row_chunks
        return tile, chunk, chunk * CHUNK, min(m, chunk * CHUNK + CHUNK)

    def columns(tile):
        return [tile * TILE + tx for tx in range(TILE)]

    def tile_count(tile, chunk, flags):
        if chunk == 0:
            tile_counts[tile] = sum(flags)

    for b in range(grid):  # phase 1: flags and row maxima (UnitScan), tile counts if final
        for u in units(b):
            tile, chunk, rb, re = unit(u)
            flags = [c < k and any(is_outlier(v, t) for v in x[rb:re, c]) for c in columns(tile)]
            for i in range(rb, re):
                v = max([abs(x[i, c]) if c < k and abs(x[i, c]) < t else 0.0
                         for c in columns(tile)])
                if v > 0:
                    absmax[i] = max(absmax[i], v)
            if whole_columns:
                for c, f in zip(columns(tile), flags):
                    if c < k:
                        col_flags[c] = int(f)
                tile_count(tile, chunk, flags)
            else:
                for c, f in zip(columns(tile), flags):
                    if f:
                        col_flags[c] = 1
    if not whole_columns:  # grid.sync, then the tile counts from the final flags
        for b in range(grid):
            for u in units(b):
                tile, chunk, rb, re = unit(u)
                tile_count(tile, chunk, [c < k and col_flags[c] != 0 for c in columns(tile)])
    counts = None
    for b in range(grid):  # grid.sync, then phase 2
        us = units(b)
        tile_now = us[0] // row_chunks
        base = int(sum(tile_counts[:tile_now]))
        for u in us:
            tile, chunk, rb, re = unit(u)
            while tile_now < tile:
                base += int(tile_counts[tile_now])
                tile_now += 1
            flags = [c < k and col_flags[c] != 0 for c in columns(tile)]
            for tx, c in enumerate(columns(tile)):
                slot = base + sum(flags[:tx])
                kept = flags[tx] and slot < cap
                if chunk == 0 and kept:
                    outlier_cols[slot] = c
                if c < k:
                    for i in range(rb, re):
                        outlier = kept and is_outlier(x[i, c], t)
                        if kept:
                            outliers[(i, slot)] = x[i, c] if outlier else 0.0
                        a = absmax[i]
                        q[i, c] = 0 if outlier or not a > 0 else q8(x[i, c], np.float32(127) / a)
        if b == grid - 1:
            total = base + int(tile_counts[tile_now])
            counts = (min(total, cap), total)
    return outlier_cols, counts, absmax, q, outliers


def same_value(a, b):
    return (np.isnan(a) and b is not None and np.isnan(b)) or a == b


def main():
    random.seed(1)
    np.random.seed(1)
    ok = True
    # (m, k, cap, grid): whole columns and split row chunks, caps, many units per block.
    for m, k, cap, grid in [(1, 37, 256, 792), (3, 100, 256, 5), (70, 130, 256, 7),
                            (130, 300, 8, 11), (200, 97, 3, 792), (65, 64, 256, 3)]:
        x = np.clip(np.random.randn(m, k), -3.9, 3.9).astype(np.float16).astype(np.float32)
        for c in random.sample(range(k), min(k, 15)):
            for _ in range(2):
                x[random.randrange(m), c] = random.choice([-1, 1]) * random.uniform(8, 40)
        x[random.randrange(m), random.randrange(k)] = np.nan
        kept, found, absmax, q, outl = reference(x, 6.0, cap)
        got_cols, counts, got_absmax, got_q, got_outl = emulate(x, 6.0, cap, grid)
        good = (list(got_cols[:counts[0]]) == kept and counts == (min(found, cap), found)
                and np.array_equal(absmax, got_absmax)
                and np.array_equal(q, got_q)
                and not np.any(got_q == 1000)
                and all(same_value(outl[key], got_outl.get(key)) for key in outl))
        print(f"m={m} k={k} cap={cap} grid={grid}: {'exact' if good else 'MISMATCH'}"
              f" (kept {counts[0]} of {counts[1]})")
        ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
