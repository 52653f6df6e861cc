# cython: language_level=3
"""Implementation of the kernels declared (and documented) in _kernels.pxd."""
from libc.math cimport exp, tanh
from libc.string cimport memset
from cython cimport floating
from cygru._blas cimport gemm, gemm_or_gemv


cdef extern from "cygru_fastmath.h" nogil:
    void cygru_sigmoid_inplace_f(float* a, Py_ssize_t n)
    void cygru_tanh_inplace_f(float* a, Py_ssize_t n)


cdef inline void _sigmoid_inplace(floating* a, Py_ssize_t n) noexcept nogil:
    # float32: the vectorised approximation (rel. error < 1e-6); float64: libm
    cdef Py_ssize_t i
    if floating is float:
        cygru_sigmoid_inplace_f(a, n)
    else:
        for i in range(n):
            a[i] = 1.0 / (1.0 + exp(-a[i]))


cdef inline void _tanh_inplace(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if floating is float:
        cygru_tanh_inplace_f(a, n)
    else:
        for i in range(n):
            a[i] = tanh(a[i])


# The row kernels below work in passes over contiguous rows (pre-activations, one
# activation call over the row, then the blend) so that every pass vectorises.

cdef inline void _blend(int H, const floating* gh, floating* s, floating* o,
                        floating* cache, floating* hprev, const floating* last) noexcept nogil:
    """h' = (1 - z) * n + z * h, with gh = (r, z, n) activated; s: h -> h', o := h'.

    With a cache, saves r, z, n (its 4th column, `last`, is written by the caller
    or copied from `last` when given) and h_{t-1}.
    """
    cdef Py_ssize_t j
    cdef floating z, n, h_old, h_new
    if cache == NULL:
        for j in range(H):
            z = gh[H + j]
            n = gh[2 * H + j]
            h_new = (1 - z) * n + z * s[j]
            s[j] = h_new
            o[j] = h_new
    else:
        for j in range(H):
            z = gh[H + j]
            n = gh[2 * H + j]
            h_old = s[j]
            h_new = (1 - z) * n + z * h_old
            s[j] = h_new
            o[j] = h_new
            cache[j] = gh[j]
            cache[H + j] = z
            cache[2 * H + j] = n
            hprev[j] = h_old
        if last != NULL:
            for j in range(H):
                cache[3 * H + j] = last[j]


cdef inline void _rz_preact(int H, const floating* gi, const floating* b_ih, floating* gh,
                            const floating* b_hh) noexcept nogil:
    # gh[:2H] := σ(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
    cdef Py_ssize_t j
    for j in range(2 * H):
        gh[j] = gh[j] + gi[j] + b_ih[j] + b_hh[j]
    _sigmoid_inplace(gh, 2 * H)


cdef inline void _gates_reset_after(
        int H, const floating* gi, const floating* b_ih, floating* gh,
        const floating* b_hh, floating* s, floating* o,
        floating* cache, floating* hprev) noexcept nogil:
    """One row, reset_after=True. gh = W_hh h (no bias), overwritten; s: h_{t-1} -> h_t."""
    cdef Py_ssize_t j
    cdef floating ghn
    _rz_preact(H, gi, b_ih, gh, b_hh)
    # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    if cache == NULL:
        for j in range(H):
            gh[2 * H + j] = gi[2 * H + j] + b_ih[2 * H + j] + gh[j] * (gh[2 * H + j] + b_hh[2 * H + j])
    else:
        for j in range(H):
            ghn = gh[2 * H + j] + b_hh[2 * H + j]
            cache[3 * H + j] = ghn
            gh[2 * H + j] = gi[2 * H + j] + b_ih[2 * H + j] + gh[j] * ghn
    _tanh_inplace(gh + 2 * H, H)
    _blend(H, gh, s, o, cache, hprev, NULL)


cdef inline void _gates_rz(
        int H, const floating* gi, const floating* b_ih, floating* gh,
        const floating* b_hh, const floating* s, floating* rh) noexcept nogil:
    """One row, reset_after=False, first pass: gh[:2H] := (r, z); rh := r * h."""
    cdef Py_ssize_t j
    _rz_preact(H, gi, b_ih, gh, b_hh)
    for j in range(H):
        rh[j] = gh[j] * s[j]


cdef inline void _gates_n_before(
        int H, const floating* gi, const floating* b_ih, floating* gh,
        const floating* b_hh, const floating* rh, floating* s, floating* o,
        floating* cache, floating* hprev) noexcept nogil:
    """One row, reset_after=False, second pass: gh = (r, z, W_hn (r*h)); s -> h_t."""
    cdef Py_ssize_t j
    # n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
    for j in range(H):
        gh[2 * H + j] = gi[2 * H + j] + b_ih[2 * H + j] + gh[2 * H + j] + b_hh[2 * H + j]
    _tanh_inplace(gh + 2 * H, H)
    _blend(H, gh, s, o, cache, hprev, rh)


cdef void gru_direction_forward(
    int T, int B, int I, int H,
    const floating* x,
    const floating* w_ih, const floating* w_hh,
    const floating* b_ih, const floating* b_hh,
    floating* out, Py_ssize_t out_ts, Py_ssize_t out_bs,
    floating* state,
    const Py_ssize_t* perm, const int* active,
    bint reverse, bint reset_after,
    int chunk,
    floating* gi_buf, floating* gh_buf, floating* rh_buf,
    floating* cache, floating* hprev,
) noexcept nogil:
    cdef int G = 3 * H
    cdef int step, t, nb, i
    cdef int lo = 0, hi = 0          # time steps [lo, hi) currently projected in gi_buf
    cdef Py_ssize_t b, row_c
    cdef floating* o
    cdef floating* c = NULL
    cdef floating* hp = NULL
    for step in range(T):
        t = T - 1 - step if reverse else step
        if t < lo or t >= hi:
            # Project the next `chunk` steps of input at once: gi = x @ W_ih^T.
            # Chunks follow the processing order, so scratch does not grow with T.
            if reverse:
                hi = t + 1
                lo = hi - chunk if hi > chunk else 0
            else:
                lo = t
                hi = t + chunk if t + chunk < T else T
            gemm(False, True, (hi - lo) * B, G, I, <floating>1, x + <Py_ssize_t>lo * B * I, I,
                 w_ih, I, <floating>0, gi_buf, G)
        nb = active[t]
        if nb > 0:
            if reset_after:
                # gh = h_{t-1} @ W_hh^T for the running rows (one GEMM, gemv at one row)
                gemm_or_gemv(nb, G, H, state, H, w_hh, H, <floating>0, gh_buf, G)
            else:
                # r, z need W_hr h, W_hz h first; n needs W_hn (r*h) after them
                gemm_or_gemv(nb, 2 * H, H, state, H, w_hh, H, <floating>0, gh_buf, G)
                for i in range(nb):
                    b = perm[i]
                    _gates_rz(H, gi_buf + ((t - lo) * <Py_ssize_t>B + b) * G, b_ih,
                              gh_buf + <Py_ssize_t>i * G, b_hh, state + <Py_ssize_t>i * H,
                              rh_buf + <Py_ssize_t>i * H)
                gemm_or_gemv(nb, H, H, rh_buf, H, w_hh + 2 * <Py_ssize_t>H * H, H,
                             <floating>0, gh_buf + 2 * H, G)
            for i in range(nb):
                b = perm[i]
                o = out + t * out_ts + b * out_bs
                if cache != NULL:
                    row_c = <Py_ssize_t>t * B + i
                    c = cache + row_c * 4 * H
                    hp = hprev + row_c * H
                if reset_after:
                    _gates_reset_after(H, gi_buf + ((t - lo) * <Py_ssize_t>B + b) * G, b_ih,
                                       gh_buf + <Py_ssize_t>i * G, b_hh,
                                       state + <Py_ssize_t>i * H, o, c, hp)
                else:
                    _gates_n_before(H, gi_buf + ((t - lo) * <Py_ssize_t>B + b) * G, b_ih,
                                    gh_buf + <Py_ssize_t>i * G, b_hh, rh_buf + <Py_ssize_t>i * H,
                                    state + <Py_ssize_t>i * H, o, c, hp)
        # sequences that have ended (or not started) output exact zeros at this step
        for i in range(nb, B):
            memset(out + t * out_ts + perm[i] * out_bs, 0, H * sizeof(floating))


cdef void gru_direction_backward(
    int T, int B, int I, int H,
    const floating* x,
    const floating* w_ih, const floating* w_hh,
    const floating* d_out, Py_ssize_t d_ts, Py_ssize_t d_bs,
    floating* dstate,
    const Py_ssize_t* perm, const int* active,
    bint reverse, bint reset_after,
    const floating* cache, const floating* hprev,
    floating* dgi, int ldgi,
    floating* dgh,
    floating* drh_buf,
    floating* gw_ih, floating* gw_hh,
    floating* gb_ih, floating* gb_hh,
) noexcept nogil:
    cdef int G = 3 * H
    cdef int step, t, nb, i
    cdef Py_ssize_t j, b, row_c
    cdef int TB = T * B
    cdef const floating* c
    cdef const floating* hp
    cdef const floating* do
    cdef floating* ds
    cdef floating* gi
    cdef floating* gh
    cdef floating* drh
    cdef floating dh, r, z, n, dz, dn, dan, dr, dar
    for step in range(T):
        # the reverse of the forward's processing order
        t = step if reverse else T - 1 - step
        nb = active[t]
        if nb == 0:
            continue
        for i in range(nb):
            b = perm[i]
            row_c = <Py_ssize_t>t * B + i
            c = cache + row_c * 4 * H
            hp = hprev + row_c * H
            ds = dstate + <Py_ssize_t>i * H
            gi = dgi + (<Py_ssize_t>t * B + b) * ldgi
            gh = dgh + row_c * G
            do = d_out + t * d_ts + b * d_bs if d_out != NULL else NULL
            for j in range(H):
                # dh: gradient reaching h_t (from the output and from step t+1)
                dh = ds[j] + do[j] if do != NULL else ds[j]
                r = c[j]
                z = c[H + j]
                n = c[2 * H + j]
                dz = dh * (hp[j] - n)          # h' = (1-z) n + z h
                dn = dh * (1 - z)
                ds[j] = dh * z                 # direct path to h_{t-1}
                dan = dn * (1 - n * n)         # through tanh
                gi[H + j] = dz * z * (1 - z)   # through σ
                gh[H + j] = gi[H + j]
                gi[2 * H + j] = dan
                if reset_after:
                    # a_n = gi_n + r * ghn: dr = dan * ghn, dgh_n = dan * r
                    dar = dan * c[3 * H + j] * r * (1 - r)
                    gi[j] = dar
                    gh[j] = dar
                    gh[2 * H + j] = dan * r
                else:
                    gh[2 * H + j] = dan        # a_n = gi_n + W_hn (r*h) + b_hn
        if reset_after:
            # dh_{t-1} += [dar, daz, dgh_n] @ W_hh
            gemm(False, False, nb, H, G, <floating>1, dgh + <Py_ssize_t>t * B * G, G,
                 w_hh, H, <floating>1, dstate, H)
        else:
            # d(r*h) = dan @ W_hn; then dr = d(r*h) * h and dh_{t-1} += d(r*h) * r
            gemm(False, False, nb, H, H, <floating>1, dgh + <Py_ssize_t>t * B * G + 2 * H, G,
                 w_hh + 2 * <Py_ssize_t>H * H, H, <floating>0, drh_buf, H)
            for i in range(nb):
                b = perm[i]
                row_c = <Py_ssize_t>t * B + i
                c = cache + row_c * 4 * H
                hp = hprev + row_c * H
                ds = dstate + <Py_ssize_t>i * H
                gi = dgi + (<Py_ssize_t>t * B + b) * ldgi
                gh = dgh + row_c * G
                drh = drh_buf + <Py_ssize_t>i * H
                for j in range(H):
                    r = c[j]
                    dr = drh[j] * hp[j]
                    ds[j] += drh[j] * r
                    dar = dr * r * (1 - r)
                    gi[j] = dar
                    gh[j] = dar
            # dh_{t-1} += [dar, daz] @ W_hh[:2H]
            gemm(False, False, nb, H, 2 * H, <floating>1, dgh + <Py_ssize_t>t * B * G, G,
                 w_hh, H, <floating>1, dstate, H)
    # Weight gradients, each one GEMM over all T*B rows (padded rows hold zeros):
    if reset_after:
        # dW_hh += dgh^T @ h_prev
        gemm(True, False, G, H, TB, <floating>1, dgh, G, hprev, H, <floating>1, gw_hh, H)
    else:
        # dW_h{r,z} += dgh_{r,z}^T @ h_prev;  dW_hn += dan^T @ (r*h_prev)
        gemm(True, False, 2 * H, H, TB, <floating>1, dgh, G, hprev, H, <floating>1, gw_hh, H)
        gemm(True, False, H, H, TB, <floating>1, dgh + 2 * H, G, cache + 3 * H, 4 * H,
             <floating>1, gw_hh + 2 * <Py_ssize_t>H * H, H)
    # dW_ih += dgi^T @ x
    gemm(True, False, G, I, TB, <floating>1, dgi, ldgi, x, I, <floating>1, gw_ih, I)
    if gb_ih != NULL:
        column_sums(TB, G, dgi, ldgi, gb_ih)
    if gb_hh != NULL:
        column_sums(TB, G, dgh, G, gb_hh)


cdef void column_sums(int rows, int cols, const floating* a, int lda,
                      floating* acc) noexcept nogil:
    # acc[j] += Σ_i a[i, j]
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(cols):
            acc[j] += a[i * lda + j]


cdef void gru_cell_forward(
    int B, int I, int H,
    const floating* x, const floating* h,
    const floating* w_ih, const floating* w_hh,
    const floating* b_ih, const floating* b_hh,
    bint reset_after,
    floating* h_out,
    floating* work,
) noexcept nogil:
    cdef int G = 3 * H
    cdef Py_ssize_t i, j
    cdef floating* gi = work
    cdef floating* gh = work + <Py_ssize_t>B * G
    cdef floating* rh = work + 2 * <Py_ssize_t>B * G
    # h_out starts as h and is updated in place by the same row kernels as the sequence loop
    for i in range(<Py_ssize_t>B * H):
        h_out[i] = h[i]
    # gi = x @ W_ih^T
    gemm_or_gemv(B, G, I, x, I, w_ih, I, <floating>0, gi, G)
    if reset_after:
        gemm_or_gemv(B, G, H, h, H, w_hh, H, <floating>0, gh, G)
        for i in range(B):
            _gates_reset_after(H, gi + i * G, b_ih, gh + i * G, b_hh, h_out + i * H,
                               h_out + i * H, NULL, NULL)
    else:
        gemm_or_gemv(B, 2 * H, H, h, H, w_hh, H, <floating>0, gh, G)
        for i in range(B):
            _gates_rz(H, gi + i * G, b_ih, gh + i * G, b_hh, h + i * H, rh + i * H)
        gemm_or_gemv(B, H, H, rh, H, w_hh + 2 * <Py_ssize_t>H * H, H, <floating>0, gh + 2 * H, G)
        for i in range(B):
            _gates_n_before(H, gi + i * G, b_ih, gh + i * G, b_hh, rh + i * H,
                            h_out + i * H, h_out + i * H, NULL, NULL)
