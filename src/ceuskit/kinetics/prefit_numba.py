"""Compiled (numba) screening and starting values for :func:`ceuskit.kinetics.fit.fit_curves`.

Around the compiled Levenberg-Marquardt core (:mod:`ceuskit.kinetics.fit_numba`)
`fit_curves` screens every curve (`enhancement_test`), computes a starting
point (`_bolus_start`, the bolus models' `initial_guess`) and a box
(`bounds`) and, after the fit, the quality of fit.  In NumPy these are
vectorised over curves: medians by sorting, moving averages by cumulative
sums over the whole batch, many full-size temporaries.  Here the same steps
run one curve at a time in compiled loops spread over threads, with medians
by selection and scratch buffers that stay in cache.

Same numbers, not just close ones
---------------------------------
The starting point decides which of several nearby optima an ill-conditioned
fit reaches (a 1-ulp change moves some gamma-variate and LDRW fits by far more
than 1e-9), so these loops reproduce the NumPy reference *exactly*:

- only IEEE operations (``+ - * /``, ``sqrt``, comparisons) in the same order
  as NumPy evaluates them; no ``fastmath``.  Every ``exp``, ``log`` and
  ``log10`` stays in the per-curve NumPy code shared by both paths
  (`fit._enhancement_decision`, `models._bolus_start_from`, the models'
  ``_guess_from_start`` and ``_box``), because NumPy's SIMD versions and the
  C library's differ in the last bit;
- sums in NumPy's order: ``np.sum`` over the last axis adds a C-ordered row
  pairwise (blocks of 8 partial sums, halving above 128 elements:
  `_pairwise_sum`) but an F-ordered one sequentially, and one sum of
  `_bolus_samples` meets an F-ordered array when the time axis is shared by
  two or more curves (`_sequential_sum` there);
- medians by selection (`_kth`): order statistics do not depend on the
  algorithm that finds them;
- cumulative sums, arg-max and first-crossing searches as NumPy defines them.

Rows that could overflow on the way (samples beyond `MAX_ABS_SAMPLE`, times
beyond `MAX_ABS_TIME` or not finite) would meet inf and NaN, whose handling in
NumPy's reductions is not worth reproducing: the wrappers hand them to the
NumPy reference.  tests/kinetics/test_prefit_numba.py holds both paths equal.

The kernels are cached on disk (``cache=True``) like the LM core's; the first
call in a fresh environment compiles them (~7 s), later processes load them
(~0.3 s).  All tasks share one parallel loop (`_parallel_blocks`), which hands
blocks of `_BLOCK` curves to threads; every kernel argument is C-ordered and
writeable (`_kernel_array`), so that each function has a single signature.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.kinetics.fit import (
    _MAD_TO_SIGMA,
    BASELINE_FRACTION,
    BASELINE_MIN_S,
    BASELINE_MIN_SAMPLES,
    ENHANCEMENT_Z,
    _enhancement_stats,
    _EnhancementStats,
)
from ceuskit.kinetics.models import (
    _ARRIVAL_K,
    ARRIVAL_FRACTION,
    _bolus_samples,
    _bolus_start_from,
    _BolusStart,
    _StartSamples,
)

if TYPE_CHECKING:
    from ceuskit.kinetics.models import FloatArray

try:  # numba is a declared dependency, but the NumPy path must work without it
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

#: Rows with a sample beyond this magnitude (a.u.) go to the NumPy reference:
#: sums of squares of up to 1e6 such samples stay far from overflow.
MAX_ABS_SAMPLE = 1e100
#: Rows with a time beyond this magnitude (s), or a non-finite time, go to the
#: NumPy reference.
MAX_ABS_TIME = 1e50
# Curves per block of a parallel loop: blocks are handed to threads one at a
# time (numba's dynamic scheduling), which keeps both cores busy when one is
# shared with another process, and each block allocates its scratch once.
_BLOCK = 16
_SQRT2 = math.sqrt(2.0)
_N_START = 16  # outputs of the start per curve (see _prefit_block)
_N_SCREEN = 4  # float outputs of _screen_row


if HAVE_NUMBA:
    # ------------------------------------------------------------------
    # NumPy's summation orders
    # ------------------------------------------------------------------
    @njit(cache=True, error_model="numpy")
    def _block_sum(a, lo, n):
        """NumPy's pairwise_sum leaf for ``a[lo:lo + n]``, ``n <= 128``: eight running sums."""
        if n < 8:
            res = 0.0
            for i in range(lo, lo + n):
                res += a[i]
            return res
        r0 = a[lo]
        r1 = a[lo + 1]
        r2 = a[lo + 2]
        r3 = a[lo + 3]
        r4 = a[lo + 4]
        r5 = a[lo + 5]
        r6 = a[lo + 6]
        r7 = a[lo + 7]
        i = 8
        stop = n - n % 8
        while i < stop:
            j = lo + i
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res

    @njit(cache=True, error_model="numpy")
    def _pairwise_sum(a, n, stack, lefts):
        """``np.sum`` of a C-ordered row ``a[:n]``: the identity 0 plus NumPy's pairwise sum.

        NumPy's pairwise_sum is recursive: a leaf (`_block_sum`) up to 128
        elements, else the sum of both halves, split at a multiple of 8.  The
        recursion is unrolled here with an explicit stack (numba's disk cache
        cannot link self-recursive functions): ``stack[d] = (start, length,
        state)`` of the node at depth ``d`` (state 0: new, 1: left half
        pending, 2: right half pending) and ``lefts[d]`` its left half's sum.
        Scratch: ``stack`` int64 (64, 3), ``lefts`` float64 (64,), enough for
        any ``n`` below 2**60.
        """
        if n <= 128:
            return 0.0 + _block_sum(a, 0, n)
        d = 0
        stack[0, 0] = 0
        stack[0, 1] = n
        stack[0, 2] = 0
        while True:
            size = stack[d, 1]
            if size > 128:  # descend into the left half
                half = size // 2
                half -= half % 8
                stack[d, 2] = 1
                stack[d + 1, 0] = stack[d, 0]
                stack[d + 1, 1] = half
                stack[d + 1, 2] = 0
                d += 1
                continue
            val = _block_sum(a, stack[d, 0], size)
            while True:  # hand the finished sum up
                d -= 1
                if stack[d, 2] == 1:  # it was the left half: go right
                    lefts[d] = val
                    stack[d, 2] = 2
                    half = stack[d, 1] // 2
                    half -= half % 8
                    stack[d + 1, 0] = stack[d, 0] + half
                    stack[d + 1, 1] = stack[d, 1] - half
                    stack[d + 1, 2] = 0
                    d += 1
                    break
                val = lefts[d] + val
                if d == 0:
                    return 0.0 + val

    @njit(cache=True, error_model="numpy")
    def _sequential_sum(a, n):
        """``np.sum`` over the last axis of an F-ordered array: one element after the other."""
        res = 0.0
        for i in range(n):
            res += a[i]
        return res

    # ------------------------------------------------------------------
    # order statistics
    # ------------------------------------------------------------------
    @njit(cache=True, error_model="numpy")
    def _kth(src, n, k, b1, b2):
        """The ``k``-th smallest of ``src[:n]`` (finite values; ``src`` is not modified).

        Quickselect with a median-of-three pivot and three-way partitions
        out of place, ping-ponging between the scratch buffers ``b1`` and
        ``b2`` (length >= n): every element is written to both ends of the
        target range and only the end it belongs to advances, so there is no
        data-dependent branch (noisy data makes every comparison a coin flip
        for a branch predictor) and no store-to-load dependency.  Elements
        equal to the pivot are not stored at all (the gap they leave is the
        pivot's run), so ties cannot stall it; beyond 64 rounds the rest is
        sorted by insertion.
        """
        a = src
        dst = b1
        to_b1 = True
        lo = 0
        hi = n - 1
        rounds = 0
        while hi - lo > 16:
            rounds += 1
            if rounds > 64:  # pragma: no cover - a safety net, not seen in practice
                break  # (insertion sort below: quadratic, but never quicksort's worst case)
            mid = (lo + hi) >> 1
            x0 = a[lo]
            x1 = a[mid]
            x2 = a[hi]
            if x1 < x0:
                x0, x1 = x1, x0
            if x2 < x1:
                x1 = max(x0, x2)
            pivot = x1
            left = lo
            right = hi
            for i in range(lo, hi + 1):
                x = a[i]
                dst[left] = x
                dst[right] = x
                left += x < pivot
                right -= x > pivot
            if k < left:
                hi = left - 1
            elif k > right:
                lo = right + 1
            else:
                return pivot
            a = dst
            dst = b2 if to_b1 else b1
            to_b1 = not to_b1
        for i in range(lo, hi + 1):  # insertion sort of the last few, in dst
            x = a[i]
            j = i - 1
            while j >= lo and dst[j] > x:
                dst[j + 1] = dst[j]
                j -= 1
            dst[j + 1] = x
        return dst[k]

    @njit(cache=True, error_model="numpy")
    def _median(src, n, b1, b2):
        """Median of ``src[:n]`` as `masked_median` and ``np.median`` give it (NaN for n = 0).

        Both average the order statistics ``(n - 1) // 2`` and ``n // 2``
        (``0.5 * (lo + hi)`` and ``(lo + hi) / 2`` are the same number).
        """
        if n == 0:
            return np.nan
        k = n // 2
        upper = _kth(src, n, k, b1, b2)
        lower = upper
        if n % 2 == 0:
            # The next smaller order statistic: the largest value below
            # `upper` if k of them are below it, else `upper` itself.
            below = 0
            largest = -np.inf
            for i in range(n):
                x = src[i]
                if x < upper:
                    below += 1
                    largest = max(largest, x)
            if below == k:
                lower = largest
        return 0.5 * (lower + upper)

    # ------------------------------------------------------------------
    # per-curve steps
    # ------------------------------------------------------------------
    @njit(cache=True, error_model="numpy")
    def _moving_average(y, k, c, s):
        """`models.moving_average` of one row into ``s`` (``c``: scratch of N + 1)."""
        n = y.shape[0]
        if k <= 1:
            for i in range(n):
                s[i] = y[i]
            return
        c[0] = 0.0
        for i in range(n):  # np.cumsum: strictly sequential
            c[i + 1] = c[i] + y[i]
        left = k // 2
        right = k - 1 - k // 2 + 1
        # Full windows (hi - lo = k) in a loop of their own, without the
        # clamps, which the compiler vectorises; truncated ones at the ends.
        first = min(left, n)
        stop = max(first, min(n, n - right + 1))
        for i in range(first):
            hi = min(i + right, n)
            s[i] = c[hi] / hi
        for i in range(first, stop):
            s[i] = (c[i + right] - c[i - left]) / k
        for i in range(stop, n):
            lo = min(max(i - left, 0), n)
            s[i] = (c[n] - c[lo]) / (n - lo)

    @njit(cache=True, error_model="numpy")
    def _row_ok(tt, y):
        """Whether a row may take the compiled path (see `MAX_ABS_SAMPLE`, `MAX_ABS_TIME`)."""
        for i in range(y.shape[0]):
            if not abs(y[i]) <= MAX_ABS_SAMPLE:
                return False
        for i in range(tt.shape[0]):
            if not abs(tt[i]) <= MAX_ABS_TIME:
                return False
        return True

    @njit(cache=True, error_model="numpy")
    def _screen_row(tt, y, k, n_win0, s, buf, b1, b2, stack, lefts):
        """`fit._enhancement_stats` of one filled row whose moving average over ``k`` is ``s``.

        Returns (peak, n_b, base_sum, sig_diff, mad_b).
        """
        n = y.shape[0]
        peak = s[0]
        for i in range(1, n):
            peak = max(peak, s[i])

        # Baseline window: at least n_win0 samples and BASELINE_MIN_S seconds.
        limit = tt[0] + BASELINE_MIN_S
        n_time = 0
        for i in range(n):
            n_time += tt[i] <= limit
        n_win = min(max(n_win0, n_time), n)
        med_win = _median(y, n_win, b1, b2)

        # Noise from the MAD of the first differences.
        for i in range(n - 1):
            buf[i] = y[i + 1] - y[i]
        d_med = _median(buf, n - 1, b1, b2)
        for i in range(n - 1):
            buf[i] = abs(buf[i] - d_med)
        sig_diff = _MAD_TO_SIGMA * _median(buf, n - 1, b1, b2) / _SQRT2

        # Cut the window before a significant rise inside it.
        half = 0.5 * (med_win + peak)
        z_win = (peak - med_win) / (sig_diff * math.sqrt(1.0 / k + 1.0 / n_win))
        i_cross = n
        if z_win > ENHANCEMENT_Z:
            for i in range(n_win):
                if s[i] >= half:
                    i_cross = i
                    break
        n_b = max(min(n_win, i_cross - k // 2), min(BASELINE_MIN_SAMPLES, n))

        for i in range(n):
            buf[i] = y[i] if i < n_b else 0.0
        base_sum = _pairwise_sum(buf, n, stack, lefts)
        # Same samples as the window (no early cut): same median.
        b_med = med_win if n_b == n_win else _median(y, n_b, b1, b2)
        for i in range(n_b):
            buf[i] = abs(y[i] - b_med)
        mad_b = _median(buf, n_b, b1, b2)
        return peak, n_b, base_sum, sig_diff, mad_b

    @njit(cache=True, error_model="numpy")
    def _cross(s, tt, i0, i1, level):
        """Time where the smoothed curve crosses ``level`` between samples i0 and i1 (`_bolus_samples`)."""
        s0 = s[i0]
        s1 = s[i1]
        w = (level - s0) / (s1 - s0) if s1 != s0 else 0.5
        w = min(max(w, 0.0), 1.0)
        return tt[i0] + w * (tt[i1] - tt[i0])

    @njit(cache=True, error_model="numpy")
    def _above_dt(tt, s, base, ad):
        """``max(s - base, 0) * np.gradient(tt)`` (`_bolus_samples`) into ``ad``."""
        n = s.shape[0]
        above = s[0] - base
        ad[0] = (above if above > 0.0 else 0.0) * (tt[1] - tt[0])
        for i in range(1, n - 1):
            above = s[i] - base
            ad[i] = (above if above > 0.0 else 0.0) * ((tt[i + 1] - tt[i - 1]) / 2.0)
        above = s[n - 1] - base
        ad[n - 1] = (above if above > 0.0 else 0.0) * (tt[n - 1] - tt[n - 2])

    @njit(cache=True, error_model="numpy")
    def _moments_row(tt, ad, t0, w, wt, stack, lefts):
        """`models._bolus_moments` of one row: area after ``t0`` and its first moment about ``t0``."""
        n = ad.shape[0]
        for j in range(n):
            wj = ad[j] if tt[j] > t0 else 0.0
            w[j] = wj
            wt[j] = wj * (tt[j] - t0)
        return _pairwise_sum(w, n, stack, lefts), _pairwise_sum(wt, n, stack, lefts)

    @njit(cache=True, error_model="numpy")
    def _start_row(tt, y, k, s, b1, b2, ad, stack, lefts, sequential, out):
        """`models._bolus_samples` of one row whose moving average over ``k`` is ``s``, plus its data box.

        ``out[:11]`` = (s_pk, t_pk, t_arr, base, area, t_half_in,
        t_half_out, t_first, t_last, y_lo, y_hi); ``ad`` receives
        ``above * dt``.
        """
        n = y.shape[0]
        i_pk = 0
        for i in range(1, n):
            if s[i] > s[i_pk]:
                i_pk = i
        s_pk = s[i_pk]
        t_pk = tt[i_pk]
        s_min = s[0]
        for i in range(1, i_pk + 1):
            s_min = min(s_min, s[i])
        level = 0.5 * (s_min + s_pk)
        i_half = 0
        for i in range(i_pk + 1):
            if s[i] >= level:
                i_half = i
                break
        n_early = min(max(i_half - k // 2, 0), n)
        b0 = s_min
        if n_early >= 2:
            b0 = _median(y, n_early, b1, b2)
        thr = b0 + ARRIVAL_FRACTION * (s_pk - b0)
        i_arr = 0
        for i in range(i_pk + 1):
            if s[i] >= thr:
                i_arr = i
                break
        i_prev = max(i_arr - 1, 0)
        s0 = s[i_prev]
        s1 = s[i_arr]
        frac = (thr - s0) / (s1 - s0) if s1 > s0 else 1.0
        frac = min(max(frac, 0.0), 1.0)
        t_arr = tt[i_prev] + frac * (tt[i_arr] - tt[i_prev])

        n_pre = min(max(i_arr - k // 2, 0), n)
        base = b0
        if n_pre >= 2:
            base = _median(y, n_pre, b1, b2)
        base = min(base, s_pk)

        _above_dt(tt, s, base, ad)
        area = _sequential_sum(ad, n) if sequential else _pairwise_sum(ad, n, stack, lefts)

        level = 0.5 * (base + s_pk)
        i_lo_in = 0
        for i in range(i_pk + 1):
            if s[i] < level:
                i_lo_in = i
        t_half_in = _cross(s, tt, i_lo_in, min(i_lo_in + 1, n - 1), level)
        t_half_out = np.nan
        for i in range(i_pk + 1, n):
            if s[i] < level:
                t_half_out = _cross(s, tt, max(i - 1, 0), i, level)
                break

        t_first = tt[0]
        t_last = tt[0]
        y_lo = y[0]
        y_hi = y[0]
        for i in range(1, n):
            t_first = min(t_first, tt[i])
            t_last = max(t_last, tt[i])
            y_lo = min(y_lo, y[i])
            y_hi = max(y_hi, y[i])
        out[0] = s_pk
        out[1] = t_pk
        out[2] = t_arr
        out[3] = base
        out[4] = area
        out[5] = t_half_in
        out[6] = t_half_out
        out[7] = t_first
        out[8] = t_last
        out[9] = y_lo
        out[10] = y_hi

    @njit(cache=True, error_model="numpy")
    def _unit_fit_stats(y, buf, stack, lefts):
        """Mean and sum of squares about it of a row, as `fit_curves` sums them with unit weights."""
        n = y.shape[0]
        y_mean = _pairwise_sum(y, n, stack, lefts) / n
        for j in range(n):
            e = y[j] - y_mean
            buf[j] = e * e
        return y_mean, _pairwise_sum(buf, n, stack, lefts)

    @njit(cache=True, error_model="numpy")
    def _prefit_block(
        lo, hi, t2, y, rows, k_screen, n_win0, k_start, sequential, q1, screen_out, screen_nb, start_out, ok
    ):
        """Screening and/or start of the rows at positions ``lo:hi`` of ``rows`` (one pass per curve).

        ``t2`` is (1, N) (shared) or indexed like ``y``.  Screening
        (`_screen_row`) runs when ``k_screen > 0``, into ``screen_out[i]``
        (peak, baseline sum, sigma_diff, baseline MAD) and ``screen_nb[i]``;
        the start when ``start_out`` has rows: `_start_row`, the first moment
        pass of `_bolus_start_from` (its t0 with the constant ``q1`` of
        sigma = 0.5) and `_unit_fit_stats`, into ``start_out[i]`` = (11
        values of `_start_row`, t0, area, first moment, mean, sum of
        squares).  ``ok[i]`` False: row left to the NumPy reference (see
        `MAX_ABS_SAMPLE`).  One set of scratch buffers serves the block.
        """
        n = y.shape[1]
        shared = t2.shape[0] == 1
        do_screen = k_screen > 0
        do_start = start_out.shape[0] > 0
        s = np.empty(n)
        c = np.empty(n + 1)
        buf = np.empty(n)
        b1 = np.empty(n)
        b2 = np.empty(n)
        ad = np.empty(n)
        w = np.empty(n)
        wt = np.empty(n)
        stack = np.empty((64, 3), dtype=np.int64)
        lefts = np.empty(64)
        for i in range(lo, hi):
            r = rows[i]
            tt = t2[0] if shared else t2[r]
            yr = y[r]
            ok[i] = _row_ok(tt, yr)
            if not ok[i]:
                continue
            if do_screen:
                _moving_average(yr, k_screen, c, s)
                peak, nb, base_sum, sig_diff, mad_b = _screen_row(
                    tt, yr, k_screen, n_win0, s, buf, b1, b2, stack, lefts
                )
                screen_out[i, 0] = peak
                screen_out[i, 1] = base_sum
                screen_out[i, 2] = sig_diff
                screen_out[i, 3] = mad_b
                screen_nb[i] = nb
            if do_start:
                k = k_start[i]
                if not (do_screen and k == k_screen):
                    _moving_average(yr, k, c, s)
                out = start_out[i]
                _start_row(tt, yr, k, s, b1, b2, ad, stack, lefts, sequential[i], out)
                t0 = min((out[2] - q1 * out[1]) / (1.0 - q1), out[2])
                area, first = _moments_row(tt, ad, t0, w, wt, stack, lefts)
                y_mean, sst = _unit_fit_stats(yr, buf, stack, lefts)
                out[11] = t0
                out[12] = area
                out[13] = first
                out[14] = y_mean
                out[15] = sst

    @njit(cache=True, error_model="numpy")
    def _moments_block(lo, hi, t2, y, rows, k_start, base, t0, ok, out):
        """`models._bolus_moments` after ``t0`` of rows ``lo:hi`` with ``ok``; ``above * dt`` recomputed."""
        n = y.shape[1]
        shared = t2.shape[0] == 1
        s = np.empty(n)
        c = np.empty(n + 1)
        ad = np.empty(n)
        w = np.empty(n)
        wt = np.empty(n)
        stack = np.empty((64, 3), dtype=np.int64)
        lefts = np.empty(64)
        for i in range(lo, hi):
            if not ok[i]:
                continue
            r = rows[i]
            tt = t2[0] if shared else t2[r]
            _moving_average(y[r], k_start[i], c, s)
            _above_dt(tt, s, base[i], ad)
            area, first = _moments_row(tt, ad, t0[i], w, wt, stack, lefts)
            out[i, 0] = area
            out[i, 1] = first

    @njit(cache=True, error_model="numpy")
    def _fit_stats_block(lo, hi, t2, y, w2, rows, out):
        """Per row at ``lo:hi``: sum w, weighted mean, weighted sum of squares about it, last time with w > 0.

        The sums of `fit_curves`'s quality of fit, in its order (pairwise over
        C-ordered rows); ``w2`` is (1, N) (shared weights) or indexed like
        ``y``.
        """
        n = y.shape[1]
        shared_t = t2.shape[0] == 1
        shared_w = w2.shape[0] == 1
        buf = np.empty(n)
        stack = np.empty((64, 3), dtype=np.int64)
        lefts = np.empty(64)
        for i in range(lo, hi):
            r = rows[i]
            tt = t2[0] if shared_t else t2[r]
            wr = w2[0] if shared_w else w2[r]
            yr = y[r]
            w_sum = _pairwise_sum(wr, n, stack, lefts)
            for j in range(n):
                buf[j] = wr[j] * yr[j]
            y_mean = _pairwise_sum(buf, n, stack, lefts) / w_sum
            t_last = -np.inf
            for j in range(n):
                e = yr[j] - y_mean
                buf[j] = wr[j] * (e * e)
                if wr[j] > 0.0:
                    t_last = max(t_last, tt[j])
            out[i, 0] = w_sum
            out[i, 1] = y_mean
            out[i, 2] = _pairwise_sum(buf, n, stack, lefts)
            out[i, 3] = t_last

    # One parallel loop for every task: it only hands blocks of curves to the
    # per-block functions above.  Each parallel loop costs numba ~2 s to
    # compile, whatever its body, so there is one (and unused arguments are
    # empty arrays of fixed types, which keeps it at one signature).
    @njit(cache=True, parallel=True, error_model="numpy")
    def _parallel_blocks(
        task, m, t2, y, w2, rows, k_screen, n_win0, k_start, sequential, q1, base, t0, ok, out_a, out_b, out_n
    ):
        """Run task ``task`` on positions ``0:m`` in blocks of `_BLOCK`, blocks in parallel.

        - 0 (`_prefit_block`): screening into ``out_a`` (R, 4) and
          ``out_n``, start into ``out_b`` (R, 16), flags into ``ok``;
        - 1 (`_moments_block`): moments after ``t0`` into ``out_a`` (R, 2);
        - 2 (`_fit_stats_block`): quality-of-fit sums into ``out_a`` (R, 4).
        """
        for b in prange((m + _BLOCK - 1) // _BLOCK):
            lo = b * _BLOCK
            hi = min(m, lo + _BLOCK)
            if task == 0:
                _prefit_block(
                    lo, hi, t2, y, rows, k_screen, n_win0, k_start, sequential, q1, out_a, out_n, out_b, ok
                )
            elif task == 1:
                _moments_block(lo, hi, t2, y, rows, k_start, base, t0, ok, out_a)
            else:
                _fit_stats_block(lo, hi, t2, y, w2, rows, out_a)


def _require(required: bool) -> bool:
    if not HAVE_NUMBA and required:
        raise ValueError("backend='numba' needs numba, which is not installed")
    return HAVE_NUMBA


_NO_FLOATS = np.empty(0)
_NO_ROWS = np.empty((0, 0))


def _run_blocks(
    task: int,
    t2: FloatArray,
    y: FloatArray,
    rows: NDArray[np.int64],
    out_a: FloatArray,
    *,
    w2: FloatArray = _NO_ROWS,
    k_screen: int = 0,
    n_win0: int = 0,
    k_start: NDArray[np.int64] | None = None,
    sequential: NDArray[np.bool_] | None = None,
    q1: float = 0.0,
    base: FloatArray = _NO_FLOATS,
    t0: FloatArray = _NO_FLOATS,
    ok: NDArray[np.bool_] | None = None,
    out_b: FloatArray = _NO_ROWS,
    out_n: NDArray[np.int64] | None = None,
) -> None:
    """Run `_parallel_blocks` task ``task`` with dynamic scheduling (threads take one block at a time)."""
    no_int = np.empty(0, dtype=np.int64)
    no_bool = np.empty(0, dtype=np.bool_)
    with numba.parallel_chunksize(1):
        _parallel_blocks(
            task, rows.size, _kernel_array(t2), _kernel_array(y), _kernel_array(w2),
            _kernel_array(rows, np.int64), int(k_screen), int(n_win0),
            no_int if k_start is None else k_start,
            no_bool if sequential is None else sequential,
            float(q1), _kernel_array(base), _kernel_array(t0),
            no_bool if ok is None else ok,
            out_a, out_b, no_int if out_n is None else out_n,
        )


def _kernel_array(a: NDArray[Any], dtype: type = np.float64) -> NDArray[Any]:
    """``a`` as the kernels take it: C-ordered and writeable.

    A read-only array is a different type to numba: passing one would
    compile (and cache) a second copy of every kernel, so the rare read-only
    input is copied instead.
    """
    out: NDArray[Any] = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable else out.copy()


def time_rows(tt: FloatArray) -> tuple[FloatArray, bool]:
    """Times ``tt (..., N)`` as a C-ordered ``(1, N)`` row when shared by all curves, else ``(M, N)``."""
    n = tt.shape[-1]
    if tt.ndim == 1 or all(stride == 0 for stride in tt.strides[:-1]):
        return np.ascontiguousarray(tt.reshape(-1, n)[:1]), True
    return np.ascontiguousarray(tt.reshape(-1, n)), False


def _rows_of(t2: FloatArray, rows: NDArray[np.intp]) -> FloatArray:
    """The time rows of ``rows`` (broadcast when shared)."""
    return np.broadcast_to(t2[0], (rows.size, t2.shape[1])) if t2.shape[0] == 1 else t2[rows]


def screen_stats(
    tt: FloatArray, yf: FloatArray, k: int, *, required: bool = False
) -> _EnhancementStats | None:
    """Compiled `fit._enhancement_stats`, or None where the NumPy reference must run instead.

    Parameters
    ----------
    tt : array, shape (..., N)
        Times (s), broadcast to ``yf``'s shape.
    yf : array, shape (..., N)
        Filled (finite) curves (a.u.).
    k : int
        Smoothing window (samples).
    required : bool
        Raise ValueError instead of returning None when numba is missing.

    Returns
    -------
    _EnhancementStats or None
        None without numba, for fewer than 2 samples, or when ``yf`` is not
        C-ordered (NumPy would then sum in another order).
    """
    if not _require(required):
        return None
    n = yf.shape[-1]
    if n < 2 or yf.size == 0 or not yf.flags.c_contiguous:
        return None
    y2 = yf.reshape(-1, n)
    t2, _ = time_rows(tt)
    stats, _ = prefit_rows(t2, y2, np.arange(y2.shape[0]), k_screen=k)
    assert stats is not None
    batch = yf.shape[:-1]
    return _EnhancementStats(
        peak=stats.peak.reshape(batch),
        n_baseline=stats.n_baseline.reshape(batch),
        baseline_sum=stats.baseline_sum.reshape(batch),
        sigma_diff=stats.sigma_diff.reshape(batch),
        mad_baseline=stats.mad_baseline.reshape(batch),
    )


class RowStarts:
    """The per-sample part of `_bolus_start` for some rows of a batch, from `prefit_rows`.

    Holds per row: `_StartSamples`, the data box, the first moment pass of
    `_bolus_start_from` and the unit-weight quality-of-fit sums; `start`
    finishes `_bolus_start` (the second moment pass runs compiled too).
    """

    def __init__(
        self,
        t2: FloatArray,
        y: FloatArray,
        rows: NDArray[np.intp],
        k: NDArray[np.int64],
        sequential: NDArray[np.bool_],
        out: FloatArray,
        ok: NDArray[np.bool_],
    ) -> None:
        self.t2, self.y, self.rows, self.k = t2, y, rows, k
        self.sequential, self.out, self.ok = sequential, out, ok
        # Rows left to the NumPy reference keep what its moment passes need.
        self._reference: dict[int, tuple[FloatArray, FloatArray]] = {}
        bad = np.flatnonzero(~ok)
        for kk in np.unique(k[bad]):
            pos = bad[k[bad] == kk]
            self._redo(pos, int(kk))

    def _redo(self, pos: NDArray[np.intp], k: int) -> None:
        """The NumPy reference for positions ``pos`` (all with window ``k``)."""
        sel = self.rows[pos]
        tt = _rows_of(self.t2, sel)
        ys = self.y[sel]
        ref, above, dt = _bolus_samples(tt, ys, k)
        ad = above * dt
        out = self.out
        out[pos, :7] = np.stack(ref, axis=-1)
        for j, i in enumerate(pos):
            # The area as it is summed in the whole batch, not in this subset.
            out[i, 4] = _sum_in_order(ad[j], bool(self.sequential[i]))
            self._reference[int(i)] = (np.ascontiguousarray(tt[j]), ad[j])
        with np.errstate(all="ignore"):
            out[pos, 7] = np.nanmin(tt, axis=-1)
            out[pos, 8] = np.nanmax(tt, axis=-1)
            out[pos, 9] = np.nanmin(np.where(np.isfinite(ys), ys, np.nan), axis=-1)
            out[pos, 10] = np.nanmax(np.where(np.isfinite(ys), ys, np.nan), axis=-1)
            ones = np.ones_like(ys)
            w_sum = np.sum(ones, axis=-1)
            y_mean = np.sum(ones * ys, axis=-1) / w_sum
            out[pos, 14] = y_mean
            out[pos, 15] = np.sum(ones * (ys - y_mean[:, None]) ** 2, axis=-1)
        out[pos, 11:14] = np.nan  # first moment pass: done in NumPy by `start`

    def take(self, index: NDArray[np.intp]) -> RowStarts:
        """The rows at positions ``index``."""
        new = object.__new__(RowStarts)
        new.t2, new.y = self.t2, self.y
        new.rows, new.k = self.rows[index], self.k[index]
        new.sequential, new.out, new.ok = self.sequential[index], self.out[index], self.ok[index]
        pos = np.full(self.rows.size, -1)
        pos[index] = np.arange(np.size(new.rows))
        new._reference = {int(pos[i]): v for i, v in self._reference.items() if pos[i] >= 0}
        return new

    def set_pairwise(self, pos: NDArray[np.intp]) -> None:
        """Sum the area of positions ``pos`` pairwise: their batch is a single curve (C- and F-ordered)."""
        self.sequential[pos] = False
        for kk in np.unique(self.k[pos]):
            redo = pos[self.k[pos] == kk]
            first = self.out[redo, 11:14].copy()
            self._redo(redo, int(kk))
            # The kernel's first moment pass does not depend on the area.
            ok = self.ok[redo]
            self.out[redo[ok], 11:14] = first[ok]
            for i in redo[ok]:
                del self._reference[int(i)]

    @property
    def box(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """First and last time (s), lowest and highest sample (a.u.) per row: the ``_box`` arguments."""
        return self.out[:, 7], self.out[:, 8], self.out[:, 9], self.out[:, 10]

    @property
    def unit_fit_stats(self) -> tuple[FloatArray, FloatArray]:
        """Mean and sum of squares about it per row, summed as `fit_curves` does with unit weights."""
        return self.out[:, 14], self.out[:, 15]

    def _moments_reference(self, t0: FloatArray, area: FloatArray, first: FloatArray) -> None:
        for i, (tt, ad) in self._reference.items():
            w = np.where(tt > t0[i], ad, 0.0)
            area[i] = np.sum(w)
            first[i] = np.sum(w * (tt - t0[i]))

    def start(self, step: float | FloatArray, span: float | FloatArray) -> _BolusStart:
        """`models._bolus_start` of the rows, finished by the shared per-curve code."""
        out, ok = self.out, self.ok
        pending_first = [True]

        def moments(t0: FloatArray) -> tuple[FloatArray, FloatArray]:
            if pending_first[0]:
                pending_first[0] = False
                if np.array_equal(t0[ok], out[ok, 11]):  # the pass the kernel has done
                    area, first = out[:, 12].copy(), out[:, 13].copy()
                    self._moments_reference(t0, area, first)
                    return area, first
            res = np.full((self.rows.size, 2), np.nan)
            _run_blocks(
                1, self.t2, self.y, self.rows, res, k_start=self.k, base=out[:, 3], t0=t0, ok=ok
            )
            area, first = res[:, 0], res[:, 1]
            self._moments_reference(t0, area, first)
            return area, first

        samples = _StartSamples(*(out[:, j] for j in range(7)))
        return _bolus_start_from(samples, self.t2, np.asarray(span, dtype=np.float64), step, moments)


def _first_q() -> float:
    """The first pass's q of `_bolus_start_from` (sigma = 0.5 for every curve), as NumPy computes it."""
    return float(np.minimum(np.exp(-_ARRIVAL_K * np.full(1, 0.5)), 0.6)[0])


def prefit_rows(
    t2: FloatArray,
    y: FloatArray,
    rows: NDArray[np.intp],
    *,
    k_screen: int = 0,
    k_start: NDArray[np.int64] | None = None,
    sequential: NDArray[np.bool_] | None = None,
) -> tuple[_EnhancementStats | None, RowStarts | None]:
    """Screening and/or the start's per-sample part for rows ``rows`` of filled curves, in one pass.

    Parameters
    ----------
    t2 : array, shape (1, N) or (M, N)
        Shared or per-curve times (s).
    y : array, shape (M, N)
        Filled (finite) curves (a.u.), C-ordered, ``N >= 2``.
    rows : int array, shape (R,)
    k_screen : int
        Smoothing window of `enhancement_test` (samples); 0: no screening.
    k_start : int array, shape (R,), optional
        Smoothing window of `_bolus_start` per row (that of the row's batch);
        None: no start.
    sequential : bool array, shape (R,), optional
        Whether NumPy sums the row's area sequentially (F-ordered array: a
        shared time axis and a batch of two or more curves) or pairwise.

    Returns
    -------
    stats : _EnhancementStats or None
        `fit._enhancement_stats` of the rows (with ``k_screen``).
    starts : RowStarts or None
    """
    m = rows.size
    n = y.shape[1]
    t2, y, rows = _kernel_array(t2), _kernel_array(y), _kernel_array(rows, np.int64)
    screen_out = np.empty((m if k_screen > 0 else 0, _N_SCREEN))
    screen_nb = np.zeros(m, dtype=np.int64)
    if k_start is None:
        k_rows = np.zeros(0, dtype=np.int64)
        seq = np.zeros(0, dtype=np.bool_)
        start_out = np.empty((0, _N_START))
    else:
        k_rows = np.ascontiguousarray(k_start, dtype=np.int64)
        seq = np.zeros(m, dtype=np.bool_)
        if sequential is not None:
            seq = np.ascontiguousarray(sequential, dtype=np.bool_)
        start_out = np.empty((m, _N_START))
    ok = np.zeros(m, dtype=np.bool_)
    n_win0 = max(math.ceil(BASELINE_FRACTION * n), BASELINE_MIN_SAMPLES)
    _run_blocks(
        0, t2, y, rows, screen_out, k_screen=k_screen, n_win0=n_win0, k_start=k_rows, sequential=seq,
        q1=_first_q(), ok=ok, out_b=start_out, out_n=screen_nb,
    )
    stats = None
    if k_screen > 0:
        stats = _EnhancementStats(
            peak=screen_out[:, 0],
            n_baseline=screen_nb,
            baseline_sum=screen_out[:, 1],
            sigma_diff=screen_out[:, 2],
            mad_baseline=screen_out[:, 3],
        )
        bad = np.flatnonzero(~ok)
        if bad.size:
            ref = _enhancement_stats(_rows_of(t2, rows[bad]), y[rows[bad]], k_screen)
            for got, want in zip(stats, ref, strict=True):
                got[bad] = want
    starts = None
    if k_start is not None:
        starts = RowStarts(t2, y, rows, k_rows, seq, start_out, ok)
    return stats, starts


def _sum_in_order(row: FloatArray, sequential: bool) -> float:
    """``np.sum`` of one row as NumPy orders it in a C-ordered (pairwise) or F-ordered (sequential) array."""
    row = _kernel_array(row)
    if sequential:
        return float(_sequential_sum(row, row.size))
    return float(_pairwise_sum(row, row.size, np.empty((64, 3), dtype=np.int64), np.empty(64)))


def fit_stats(
    t2: FloatArray, y: FloatArray, w2: FloatArray, rows: NDArray[np.intp]
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Sum of weights, weighted mean, weighted sum of squares about it and last weighted time per row.

    ``y`` (M, N) with invalid samples set to 0, ``w2`` (1, N) (shared) or
    (M, N) weights that are 0 exactly on invalid samples, ``t2`` (1, N) or
    (M, N) times; returns four arrays of shape (R,), summed as `fit_curves`
    sums them.
    """
    out = np.empty((rows.size, 4))
    _run_blocks(2, t2, y, rows, out, w2=w2)
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3]
