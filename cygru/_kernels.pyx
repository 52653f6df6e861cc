# cython: language_level=3
"""Implementation of the kernels declared (and documented) in _kernels.pxd."""
from libc.math cimport exp, tanh
from libc.string cimport memset, memcpy
from cython cimport floating
import numpy as np
from cygru._blas cimport gemm_or_gemv


cdef extern from "cygru_cpu.h" nogil:
    int cygru_cpu_level()
    int cygru_cpu_best_level()
    int cygru_forced_level


cdef extern from "cygru_fastmath.h" nogil:
    void cygru_sigmoid_inplace_f(float* a, Py_ssize_t n)
    void cygru_tanh_inplace_f(float* a, Py_ssize_t n)
    void cygru_activation_at_level(int level, int tanh_, float* a, Py_ssize_t n)


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


cdef extern from "cygru_gemm.h" nogil:
    Py_ssize_t cygru_packed_size(Py_ssize_t N, Py_ssize_t K)
    void cygru_pack_f(int N, int K, const float* W, Py_ssize_t sn, Py_ssize_t sk, float* P)
    void cygru_pack_d(int N, int K, const double* W, Py_ssize_t sn, Py_ssize_t sk, double* P)
    void cygru_gemm_packed_f(int M, int K, const float* A, int lda, const float* P,
                             int p0, int p1, int N, float* C, int ldc, int accumulate)
    void cygru_gemm_packed_d(int M, int K, const double* A, int lda, const double* P,
                             int p0, int p1, int N, double* C, int ldc, int accumulate)
    ctypedef void (*cygru_kernel_fn_f)(int M, int K, const float* A, int lda, const float* P,
                                       int p0, int p1, int N, float* C, int ldc,
                                       int accumulate) noexcept nogil
    ctypedef void (*cygru_kernel_fn_d)(int M, int K, const double* A, int lda,
                                       const double* P, int p0, int p1, int N, double* C,
                                       int ldc, int accumulate) noexcept nogil
    cygru_kernel_fn_f cygru_kernel_at_level_f(int level)
    cygru_kernel_fn_d cygru_kernel_at_level_d(int level)


cdef extern from "cygru_dot.h" nogil:
    void cygru_dot_f(int M, int N, int K, const float* A, int lda, const float* W, int ldw,
                     float* C, int ldc, int accumulate)
    void cygru_dot_d(int M, int N, int K, const double* A, int lda, const double* W,
                     int ldw, double* C, int ldc, int accumulate)
    ctypedef void (*cygru_dot_fn_f)(int M, int N, int K, const float* A, int lda,
                                    const float* W, int ldw, float* C, int ldc,
                                    int accumulate) noexcept nogil
    ctypedef void (*cygru_dot_fn_d)(int M, int N, int K, const double* A, int lda,
                                    const double* W, int ldw, double* C, int ldc,
                                    int accumulate) noexcept nogil
    cygru_dot_fn_f cygru_dot_at_level_f(int level)
    cygru_dot_fn_d cygru_dot_at_level_d(int level)


cdef extern from "cygru_wgrad.h" nogil:
    Py_ssize_t cygru_wgrad_scratch_size()
    ctypedef void (*cygru_wgrad_fn_f)(int ng, const int* rows0, int U, int N, int K,
                                      const float* A, Py_ssize_t sak, Py_ssize_t sam,
                                      const float* B, Py_ssize_t ldb, float* C,
                                      Py_ssize_t ldc, float* bias, float* scratch) noexcept nogil
    ctypedef void (*cygru_wgrad_fn_d)(int ng, const int* rows0, int U, int N, int K,
                                      const double* A, Py_ssize_t sak, Py_ssize_t sam,
                                      const double* B, Py_ssize_t ldb, double* C,
                                      Py_ssize_t ldc, double* bias,
                                      double* scratch) noexcept nogil
    void cygru_wgrad_f(int ng, const int* rows0, int U, int N, int K, const float* A,
                       Py_ssize_t sak, Py_ssize_t sam, const float* B, Py_ssize_t ldb,
                       float* C, Py_ssize_t ldc, float* bias, float* scratch)
    void cygru_wgrad_d(int ng, const int* rows0, int U, int N, int K, const double* A,
                       Py_ssize_t sak, Py_ssize_t sam, const double* B, Py_ssize_t ldb,
                       double* C, Py_ssize_t ldc, double* bias, double* scratch)
    cygru_wgrad_fn_f cygru_wgrad_at_level_f(int level)
    cygru_wgrad_fn_d cygru_wgrad_at_level_d(int level)


cdef extern from "cygru_quant.h" nogil:
    ctypedef signed char int8_t
    ctypedef unsigned short uint16_t
    size_t cygru_q8_block_size(int N, int K)
    size_t cygru_q8_scratch_size(int K)
    void cygru_q8_quantize_rows(int M, int K, const float* A, Py_ssize_t lda, int8_t* q,
                                Py_ssize_t ldq, float* scale)
    void cygru_q8_pack(int N, int K, const int8_t* q, Py_ssize_t ldq, const float* scale,
                       void* block)
    size_t cygru_bf16_block_size(int N, int K)
    size_t cygru_bf16_scratch_size(int K)
    void cygru_bf16_from_f32_n(Py_ssize_t n, const float* a, uint16_t* out)
    void cygru_bf16_pack(int N, int K, const uint16_t* wb, Py_ssize_t ldw, void* block)
    ctypedef void (*cygru_q_fn)(int M, int K, const float* A, Py_ssize_t lda,
                                const void* block, int Nb, int n0, int N, float* C,
                                Py_ssize_t ldc, void* scratch) noexcept nogil
    cygru_q_fn cygru_q8_at_level(int level)
    cygru_q_fn cygru_bf16_at_level(int level)
    ctypedef void (*cygru_qg_fn)(int G, size_t bstride, Py_ssize_t cstride, int M, int K,
                                 const float* A, Py_ssize_t lda, const void* block, int Nb,
                                 int n0, int N, float* C, Py_ssize_t ldc,
                                 void* scratch) noexcept nogil
    cygru_qg_fn cygru_q8_gates_at_level(int level)
    cygru_qg_fn cygru_bf16_gates_at_level(int level)
    void cygru_q8_gemm_gates(int G, size_t bstride, Py_ssize_t cstride, int M, int K,
                             const float* A, Py_ssize_t lda, const void* block, int Nb, int n0,
                             int N, float* C, Py_ssize_t ldc, void* scratch)
    void cygru_bf16_gemm_gates(int G, size_t bstride, Py_ssize_t cstride, int M, int K,
                               const float* A, Py_ssize_t lda, const void* block, int Nb,
                               int n0, int N, float* C, Py_ssize_t ldc, void* scratch)
    int cygru_q8_best_level()
    int cygru_bf16_best_level()
    int cygru_bf16_native_ok()
    int cygru_bf16_native_fast()
    int cygru_q8_max_level()
    int cygru_bf16_max_level()
    int cygru_q8_level()
    int cygru_bf16_level()
    int cygru_quant_forced
    void cygru_q8_gemm(int M, int K, const float* A, Py_ssize_t lda, const void* block,
                       int Nb, int n0, int N, float* C, Py_ssize_t ldc, void* scratch)
    void cygru_bf16_gemm(int M, int K, const float* A, Py_ssize_t lda, const void* block,
                         int Nb, int n0, int N, float* C, Py_ssize_t ldc, void* scratch)


cdef inline void _dot(int M, int N, int K, const floating* A, int lda, const floating* W,
                      int ldw, floating* C, int ldc, bint accumulate) noexcept nogil:
    """C (=|+=) A @ W^T from row-major W (cygru_dot.h: fixed arithmetic per element)."""
    if floating is float:
        cygru_dot_f(M, N, K, A, lda, W, ldw, C, ldc, 1 if accumulate else 0)
    else:
        cygru_dot_d(M, N, K, A, lda, W, ldw, C, ldc, 1 if accumulate else 0)


cdef inline void _wgrad(int ng, const int* rows0, int U, int N, int K, const floating* A,
                        Py_ssize_t sak, Py_ssize_t sam, const floating* B, Py_ssize_t ldb,
                        floating* C, Py_ssize_t ldc, floating* bias,
                        void* scratch) noexcept nogil:
    """C[r, :] += sum_k A[k, r] B[k, :] for the rows r of the ng groups of U rows from
    rows0[g] (cygru_wgrad.h: one chain per element, in k order; bias: NULL or += the
    column sums of A)."""
    if floating is float:
        cygru_wgrad_f(ng, rows0, U, N, K, A, sak, sam, B, ldb, C, ldc, bias, <float*>scratch)
    else:
        cygru_wgrad_d(ng, rows0, U, N, K, A, sak, sam, B, ldb, C, ldc, bias, <double*>scratch)


cdef size_t wgrad_scratch_bytes(int itemsize) noexcept nogil:
    return <size_t>cygru_wgrad_scratch_size() * itemsize


cdef inline void _pack(int N, int K, const floating* W, Py_ssize_t sn, Py_ssize_t sk,
                       floating* P) noexcept nogil:
    if floating is float:
        cygru_pack_f(N, K, W, sn, sk, P)
    else:
        cygru_pack_d(N, K, W, sn, sk, P)


cdef inline void _gemm_packed(int M, int K, const floating* A, int lda, const floating* P,
                              int p0, int p1, int N, floating* C, int ldc,
                              bint accumulate) noexcept nogil:
    if floating is float:
        cygru_gemm_packed_f(M, K, A, lda, P, p0, p1, N, C, ldc, 1 if accumulate else 0)
    else:
        cygru_gemm_packed_d(M, K, A, lda, P, p0, p1, N, C, ldc, 1 if accumulate else 0)


# The row kernels below work in passes over contiguous rows (pre-activations, one
# activation call over the row, then the blend) so that every pass vectorises.

cdef extern from "cygru_gate_grads.h" nogil:
    void cygru_blend_cache_row_f(int U, const float* gh, const float* s_in, float* s_out,
                                 float* o, float* c_r, float* c_z, float* c_n, float* hprev)
    void cygru_blend_cache_row_d(int U, const double* gh, const double* s_in, double* s_out,
                                 double* o, double* c_r, double* c_z, double* c_n,
                                 double* hprev)


cdef inline void _blend(int U, const floating* gh, const floating* s_in, floating* s_out,
                        floating* o, floating* cache, floating* hprev, const floating* last,
                        int cs) noexcept nogil:
    """h' = (1 - z) * n + z * h for U units, gh = (r, z, n) activated (gate stride U).

    Reads h from s_in, writes h' to s_out and o (either may alias s_in). With a
    cache (gate stride cs), saves r, z, n, `last` (if given) and h_{t-1}.
    """
    cdef Py_ssize_t j
    cdef floating z, n, h_new
    if cache == NULL:
        for j in range(U):
            z = gh[U + j]
            n = gh[2 * U + j]
            h_new = (<floating>1 - z) * n + z * s_in[j]
            s_out[j] = h_new
            o[j] = h_new
    else:
        # training: s_out, o, the cache and hprev are separate buffers (cygru_gate_grads.h)
        if floating is float:
            cygru_blend_cache_row_f(U, gh, s_in, s_out, o, cache, cache + cs, cache + 2 * cs,
                                    hprev)
        else:
            cygru_blend_cache_row_d(U, gh, s_in, s_out, o, cache, cache + cs, cache + 2 * cs,
                                    hprev)
        if last != NULL:
            for j in range(U):
                cache[3 * cs + j] = last[j]


cdef inline void _rz_preact(int U, const floating* gi, int gs, const floating* b_ih,
                            floating* gh, const floating* b_hh) noexcept nogil:
    # gh[:2U] := σ(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z}); gi's gate stride is gs
    cdef Py_ssize_t j
    for j in range(U):
        gh[j] = gh[j] + gi[j] + b_ih[j] + b_hh[j]
    for j in range(U):
        gh[U + j] = gh[U + j] + gi[gs + j] + b_ih[U + j] + b_hh[U + j]
    _sigmoid_inplace(gh, 2 * U)


cdef inline void _gates_reset_after(
        int U, const floating* gi, int gs, const floating* b_ih, floating* gh,
        const floating* b_hh, const floating* s_in, floating* s_out, floating* o,
        floating* cache, floating* hprev, int cs) noexcept nogil:
    """U units of one row, reset_after=True. gh (= W_hh h, no bias) and the biases
    are laid out (r, z, n) with gate stride U, gi with gate stride gs; gh is
    overwritten."""
    cdef Py_ssize_t j
    cdef floating ghn
    _rz_preact(U, gi, gs, b_ih, gh, b_hh)
    # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    if cache == NULL:
        for j in range(U):
            gh[2 * U + j] = gi[2 * gs + j] + b_ih[2 * U + j] + gh[j] * (gh[2 * U + j] + b_hh[2 * U + j])
    else:
        for j in range(U):
            ghn = gh[2 * U + j] + b_hh[2 * U + j]
            cache[3 * cs + j] = ghn
            gh[2 * U + j] = gi[2 * gs + j] + b_ih[2 * U + j] + gh[j] * ghn
    _tanh_inplace(gh + 2 * U, U)
    _blend(U, gh, s_in, s_out, o, cache, hprev, NULL, cs)


cdef inline void _gates_rz(
        int U, const floating* gi, int gs, const floating* b_ih, floating* gh,
        const floating* b_hh, const floating* s_in, floating* rh) noexcept nogil:
    """U units of one row, reset_after=False, first pass: gh[:2U] := (r, z); rh := r * h."""
    cdef Py_ssize_t j
    _rz_preact(U, gi, gs, b_ih, gh, b_hh)
    for j in range(U):
        rh[j] = gh[j] * s_in[j]


cdef inline void _gates_n_before(
        int U, const floating* gi, int gs, const floating* b_ih, floating* gh,
        const floating* b_hh, const floating* rh, const floating* s_in, floating* s_out,
        floating* o, floating* cache, floating* hprev, int cs) noexcept nogil:
    """U units of one row, reset_after=False, second pass: gh = (r, z, W_hn (r*h))."""
    cdef Py_ssize_t j
    # n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
    for j in range(U):
        gh[2 * U + j] = gi[2 * gs + j] + b_ih[2 * U + j] + gh[2 * U + j] + b_hh[2 * U + j]
    _tanh_inplace(gh + 2 * U, U)
    _blend(U, gh, s_in, s_out, o, cache, hprev, rh, cs)


cdef Py_ssize_t gate_pack_size(int H, int K) noexcept nogil:
    """Elements of the packed (r, z, n) rows of a (3H x K) weight matrix: each gate's
    H x K rows packed whole (cygru_gemm.h's panels of 16 rows), gates back to back."""
    return 3 * cygru_packed_size(H, K)


cdef void pack_gate_panels(int H, int K, int u0, int u1, const floating* w,
                           floating* packed) noexcept nogil:
    """Pack rows g*H + [u0, u1) of W (3H x K) for g = r, z, n into their panels of the
    gate_pack_size layout (u0 a multiple of 16; u1 too, or H): the same bits whichever
    slices pack them, so a layout packed whole (prepare_gate_weights) serves any cut."""
    cdef int g
    cdef Py_ssize_t ps = cygru_packed_size(H, K)
    for g in range(3):
        _pack(u1 - u0, K, w + (<Py_ssize_t>g * H + u0) * K, K, 1,
              packed + g * ps + <Py_ssize_t>u0 * K)


cdef void pack_gate_weights(int H, int K, int itemsize, const void* w,
                            void* packed) noexcept nogil:
    if itemsize == sizeof(float):
        pack_gate_panels(H, K, 0, H, <const float*>w, <float*>packed)
    else:
        pack_gate_panels(H, K, 0, H, <const double*>w, <double*>packed)


cdef inline void _gate_gemm(int m, int K, const floating* a, int lda, int H, int u0, int U,
                            int g0, int g1, const floating* packed, floating* c,
                            int ldc) noexcept nogil:
    """c[:, (g-g0)*U : (g-g0+1)*U] = a @ W_g[u0:u0+U]^T for gates g0 <= g < g1, W packed
    in the gate_pack_size layout (u0 a multiple of 16)."""
    cdef int g
    cdef Py_ssize_t ps = cygru_packed_size(H, K)
    if U == H and H % 16 == 0:
        # the gates' panels are back to back, and so are their output columns: one
        # call keeps more panels in flight (one row is latency-bound)
        _gemm_packed(m, K, a, lda, packed + g0 * ps, 0, (g1 - g0) * H // 16, (g1 - g0) * H,
                     c, ldc, False)
        return
    for g in range(g0, g1):
        _gemm_packed(m, K, a, lda, packed + g * ps + <Py_ssize_t>u0 * K, 0, (U + 15) // 16,
                     U, c + (g - g0) * U, ldc, False)


cdef inline void _gate_dot(int m, int K, const floating* a, int lda, int H, int u0, int U,
                           int g0, int g1, const floating* w, floating* c, int ldc,
                           int cs) noexcept nogil:
    """c[:, (g-g0)*cs : (g-g0)*cs + U] = a @ W[g*H + u0 : g*H + u0 + U]^T for gates
    g0 <= g < g1, straight from the caller's row-major W (3H x K), no packing."""
    cdef int g
    if U == H and cs == H:
        # the gates' rows are back to back in W and in c: one call, more rows in flight
        _dot(m, (g1 - g0) * H, K, a, lda, w + <Py_ssize_t>g0 * H * K, K, c, ldc, False)
        return
    for g in range(g0, g1):
        _dot(m, U, K, a, lda, w + (<Py_ssize_t>g * H + u0) * K, K, c + (g - g0) * cs, ldc,
             False)


cdef size_t quant_block_size(int H, int K, int wformat) noexcept nogil:
    if wformat == 1:
        return cygru_q8_block_size(H, K)
    return cygru_bf16_block_size(H, K)


cdef size_t quant_scratch_size(int K, int wformat) noexcept nogil:
    cdef size_t n = cygru_q8_scratch_size(K) if wformat == 1 else cygru_bf16_scratch_size(K)
    return (n + 63) // 64 * 64


cdef inline void _gate_quant(const cygru_fwd_run* s, int m, int K, const float* a, int lda,
                             int H, int u0, int U, int g0, int g1, const void* w, float* c,
                             int ldc, int cs, void* scratch) noexcept nogil:
    """c[:, (g-g0)*cs : (g-g0)*cs + U] = a @ W_g[u0:u0+U]^T for gates g0 <= g < g1, W the
    three gate blocks of a reduced-precision weight (cygru_quant.h; u0 a multiple of 16)."""
    cdef size_t bs = quant_block_size(H, K, s.wformat)
    # the gates in one call: the rows of a are quantized (rounded) once for all of them
    if s.wformat == 1:
        cygru_q8_gemm_gates(g1 - g0, bs, cs, m, K, a, lda, <const char*>w + g0 * bs, H, u0, U,
                            c, ldc, scratch)
    else:
        cygru_bf16_gemm_gates(g1 - g0, bs, cs, m, K, a, lda, <const char*>w + g0 * bs, H, u0,
                              U, c, ldc, scratch)


cdef inline void _gate_product(const cygru_fwd_run* s, int m, int K, const floating* a,
                               int lda, int H, int u0, int U, int g0, int g1,
                               const floating* packed, const floating* w, floating* c,
                               int ldc, int cs, void* qscratch) noexcept nogil:
    """The forward's product for gates [g0, g1) of units [u0, u0+U): the reduced-precision
    product on the gate blocks `w` (s.wformat, float32 only; qscratch: the piece's), the
    dot kernel on the caller's W for small batches (s.use_dot), else the packed kernel on
    `packed` (whose output columns of a gate are U apart unless the gates are done one by
    one)."""
    cdef int g
    if floating is float:
        if s.wformat != 0:
            _gate_quant(s, m, K, a, lda, H, u0, U, g0, g1, w, c, ldc, cs, qscratch)
            return
    if s.use_dot:
        _gate_dot(m, K, a, lda, H, u0, U, g0, g1, w, c, ldc, cs)
    elif cs == U:
        _gate_gemm(m, K, a, lda, H, u0, U, g0, g1, packed, c, ldc)
    else:
        for g in range(g0, g1):
            _gate_gemm(m, K, a, lda, H, u0, U, g, g + 1, packed, c + (g - g0) * cs, ldc)


cdef inline void _keep_ended_rows(int t, int nb, int B, int H, int u0, int U,
                                  const Py_ssize_t* perm, const floating* cur, floating* nxt,
                                  floating* out, Py_ssize_t out_ts,
                                  Py_ssize_t out_bs) noexcept nogil:
    """Units [u0, u0+U) of the sorted rows nb..B-1 at step t: sequences that have ended
    (or not started) keep their state and output 0."""
    cdef int i
    for i in range(nb, B):
        memcpy(nxt + <Py_ssize_t>i * H + u0, cur + <Py_ssize_t>i * H + u0, U * sizeof(floating))
        memset(out + t * out_ts + perm[i] * out_bs + u0, 0, U * sizeof(floating))


cdef inline void _zero_ended_cache_rows(int t, int nb, int B, int H, int u0, int U,
                                        floating* cache, floating* hprev) noexcept nogil:
    """Units [u0, u0+U) of the cache rows nb..B-1 at step t (sequences that have ended or
    not started): zeros, which the backward's products sum over (they are not zeroed in
    advance: a full batch writes every row)."""
    cdef int i, g
    cdef Py_ssize_t row_c
    for i in range(nb, B):
        row_c = <Py_ssize_t>t * B + i
        for g in range(4):
            memset(cache + row_c * 4 * H + g * H + u0, 0, U * sizeof(floating))
        memset(hprev + row_c * H + u0, 0, U * sizeof(floating))


cdef inline void _zero_ended_grad_rows(int t, int nb, int B, int H, int u0, int U,
                                       const Py_ssize_t* perm, floating* dgi, int ldgi,
                                       floating* dgh_t) noexcept nogil:
    """Units [u0, u0+U) of every gate of step t's rows nb..B-1 in dgh_t (sorted) and dgi
    (batch order): zeros, so the weight-gradient products may sum over all T*B rows."""
    cdef int i, g
    for i in range(nb, B):
        for g in range(3):
            memset(dgh_t + <Py_ssize_t>i * 3 * H + g * H + u0, 0, U * sizeof(floating))
            memset(dgi + (<Py_ssize_t>t * B + perm[i]) * ldgi + g * H + u0, 0,
                   U * sizeof(floating))


cdef extern from "cygru_gate_grads.h" nogil:
    void cygru_gate_grad_row_f(int U, int reset_after, const float* r, const float* z,
                               const float* n, const float* ghn, const float* hp,
                               const float* dout, float* ds, float* gi_r, float* gi_z,
                               float* gi_n, float* gh_r, float* gh_z, float* gh_n)
    void cygru_gate_grad_row_d(int U, int reset_after, const double* r, const double* z,
                               const double* n, const double* ghn, const double* hp,
                               const double* dout, double* ds, double* gi_r, double* gi_z,
                               double* gi_n, double* gh_r, double* gh_z, double* gh_n)


cdef inline void _gate_grad_rows(int t, int nb, int B, int H, int u0, int u1,
                                 bint reset_after, const Py_ssize_t* perm,
                                 const floating* cache, const floating* hprev,
                                 const floating* d_out, Py_ssize_t d_ts, Py_ssize_t d_bs,
                                 floating* dstate, floating* dgi, int ldgi,
                                 floating* dgh_t) noexcept nogil:
    """Step t's gate gradients for units [u0, u1) of the running rows (the backward's
    first phase of a step): dgi and dgh_t of those units, and dstate := the direct path
    dh * z to h_{t-1} (cygru_gate_grads.h, one row at a time)."""
    cdef int i, G = 3 * H, U = u1 - u0
    cdef Py_ssize_t b, row_c
    cdef const floating* c
    cdef const floating* do
    cdef floating* gi
    cdef floating* gh
    for i in range(nb):
        b = perm[i]
        row_c = <Py_ssize_t>t * B + i
        c = cache + row_c * 4 * H + u0
        gi = dgi + (<Py_ssize_t>t * B + b) * ldgi + u0
        gh = dgh_t + <Py_ssize_t>i * G + u0
        do = d_out + t * d_ts + b * d_bs + u0 if d_out != NULL else NULL
        if floating is float:
            cygru_gate_grad_row_f(U, reset_after, c, c + H, c + 2 * H, c + 3 * H,
                                  hprev + row_c * H + u0, do, dstate + <Py_ssize_t>i * H + u0,
                                  gi, gi + H, gi + 2 * H, gh, gh + H, gh + 2 * H)
        else:
            cygru_gate_grad_row_d(U, reset_after, c, c + H, c + 2 * H, c + 3 * H,
                                  hprev + row_c * H + u0, do, dstate + <Py_ssize_t>i * H + u0,
                                  gi, gi + H, gi + 2 * H, gh, gh + H, gh + 2 * H)


cdef inline void _rh_grad_rows(int t, int nb, int B, int H, int u0, int u1,
                               const Py_ssize_t* perm, const floating* cache,
                               const floating* hprev, const floating* drh_buf,
                               floating* dstate, floating* dgi, int ldgi,
                               floating* dgh_t) noexcept nogil:
    """reset_after=False, units [u0, u1): from d(r*h) (drh_buf), dr = d(r*h) * h gives
    the r gradients, and dh_{t-1} += d(r*h) * r."""
    cdef int i, G = 3 * H
    cdef Py_ssize_t j, b, row_c
    cdef const floating* c
    cdef const floating* hp
    cdef const floating* drh
    cdef floating* ds
    cdef floating* gi
    cdef floating* gh
    cdef floating r, dr, dar
    for i in range(nb):
        b = perm[i]
        row_c = <Py_ssize_t>t * B + i
        c = cache + row_c * 4 * H
        hp = hprev + row_c * H
        ds = dstate + <Py_ssize_t>i * H
        gi = dgi + (<Py_ssize_t>t * B + b) * ldgi
        gh = dgh_t + <Py_ssize_t>i * G
        drh = drh_buf + <Py_ssize_t>i * H
        for j in range(u0, u1):
            r = c[j]
            dr = drh[j] * hp[j]
            ds[j] += drh[j] * r
            dar = dr * r * (<floating>1 - r)
            gi[j] = dar
            gh[j] = dar


# -- one direction's forward, in phases of pieces that any number of threads may share ---

cdef enum:
    _PHASE_GATES = 1     # step st: all gates (reset_after), or r, z and r*h; at st = 0 the
                         # piece first packs its rows of W_hh and W_ih and its biases
    _PHASE_N = 2         # step st, reset_after=False: the n gate and the new state


cdef inline void _chunk_of(const cygru_fwd_run* s, int st, int* lo, int* hi) noexcept nogil:
    """The steps [lo, hi) of the input-projection chunk that processing step st is in
    (chunks follow the processing order, `chunk` steps each)."""
    cdef int c = st // s.chunk
    if s.reverse:
        hi[0] = s.T - c * s.chunk
        lo[0] = hi[0] - s.chunk if hi[0] > s.chunk else 0
    else:
        lo[0] = c * s.chunk
        hi[0] = lo[0] + s.chunk if lo[0] + s.chunk < s.T else s.T


cdef inline void _forward_piece_t(cygru_fwd_run* s, int phase, int st, int p,
                                  floating* tag) noexcept nogil:
    """Piece p (units [bounds[p], bounds[p+1])) of one phase of the forward, for the
    element type of `tag` (NULL; it only selects the specialisation)."""
    cdef int T = s.T, B = s.B, I = s.In, H = s.H
    cdef int u0 = s.bounds[p], u1 = s.bounds[p + 1]
    cdef int U = u1 - u0, G = 3 * U
    cdef int t, nb, i, g, lo, hi
    cdef Py_ssize_t b, j, row_c
    cdef const floating* x = <const floating*>s.x
    cdef const floating* b_ih = <const floating*>s.b_ih
    cdef const floating* b_hh = <const floating*>s.b_hh
    cdef const floating* ph = <const floating*>s.pack_hh
    cdef const floating* pi = <const floating*>s.pack_ih
    cdef floating* bi = <floating*>s.bias + 6 * <Py_ssize_t>u0   # (r, z, n) of b_ih, then of b_hh
    cdef floating* bh = bi + G
    cdef floating* gh = <floating*>s.gh + 3 * <Py_ssize_t>B * u0  # (B, 3U) for this piece
    cdef floating* gi_buf = <floating*>s.gi_buf
    cdef floating* rh_buf = <floating*>s.rh_buf
    cdef floating* out = <floating*>s.out
    cdef floating* cur
    cdef floating* nxt
    cdef floating* o
    cdef floating* c = NULL
    cdef floating* hp = NULL
    cdef const floating* gi
    cdef void* qs = <char*>s.qscratch + p * s.qscratch_slot if s.wformat != 0 else NULL
    if phase == _PHASE_GATES and st == 0:
        # the piece's panels of the weights (unless prepared), packed by whoever does it
        # first (no phase of their own: only this piece reads them, after this phase)
        if not s.prepared and not s.use_dot and s.wformat == 0:
            pack_gate_panels(H, H, u0, u1, <const floating*>s.w_hh, <floating*>s.pack_hh)
            pack_gate_panels(H, I, u0, u1, <const floating*>s.w_ih, <floating*>s.pack_ih)
        for g in range(3):
            for j in range(U):
                bi[g * U + j] = b_ih[g * H + u0 + j]
                bh[g * U + j] = b_hh[g * H + u0 + j]
    t = T - 1 - st if s.reverse else st
    cur = <floating*>(s.state if st % 2 == 0 else s.state_alt)
    nxt = <floating*>(s.state_alt if st % 2 == 0 else s.state)
    nb = s.active[t]
    _chunk_of(s, st, &lo, &hi)
    if phase == _PHASE_GATES:
        if st % s.chunk == 0:
            # the first step of a chunk: project the chunk's input for this piece's gate
            # columns, gi = x @ W_ih^T (the previous chunk is no longer read by anyone:
            # its last phase is done)
            _gate_product(s, (hi - lo) * B, I, x + <Py_ssize_t>lo * B * I, I, H, u0, U, 0, 3,
                          pi, <const floating*>s.w_ih, gi_buf + u0, 3 * H, H, qs)
        if nb > 0:
            # gh = h_{t-1} @ W_hh^T for the running rows (r, z only for reset_after=False)
            _gate_product(s, nb, H, cur, H, H, u0, U, 0, 3 if s.reset_after else 2, ph,
                          <const floating*>s.w_hh, gh, G, U, qs)
        for i in range(nb):
            b = s.perm[i]
            gi = gi_buf + ((t - lo) * <Py_ssize_t>B + b) * 3 * H + u0
            if s.reset_after:
                o = out + t * s.out_ts + b * s.out_bs + u0
                if s.cache != NULL:
                    row_c = <Py_ssize_t>t * B + i
                    c = <floating*>s.cache + row_c * 4 * H + u0
                    hp = <floating*>s.hprev + row_c * H + u0
                _gates_reset_after(U, gi, H, bi, gh + <Py_ssize_t>i * G, bh,
                                   cur + <Py_ssize_t>i * H + u0, nxt + <Py_ssize_t>i * H + u0,
                                   o, c, hp, H)
            else:
                _gates_rz(U, gi, H, bi, gh + <Py_ssize_t>i * G, bh,
                          cur + <Py_ssize_t>i * H + u0, rh_buf + <Py_ssize_t>i * H + u0)
        if not s.reset_after:
            return
    else:
        # _PHASE_N: n = tanh(W_in x + b_in + W_hn (r*h) + b_hn), r*h complete for all units
        if nb > 0:
            _gate_product(s, nb, H, rh_buf, H, H, u0, U, 2, 3, ph, <const floating*>s.w_hh,
                          gh + 2 * U, G, U, qs)
        for i in range(nb):
            b = s.perm[i]
            gi = gi_buf + ((t - lo) * <Py_ssize_t>B + b) * 3 * H + u0
            o = out + t * s.out_ts + b * s.out_bs + u0
            if s.cache != NULL:
                row_c = <Py_ssize_t>t * B + i
                c = <floating*>s.cache + row_c * 4 * H + u0
                hp = <floating*>s.hprev + row_c * H + u0
            _gates_n_before(U, gi, H, bi, gh + <Py_ssize_t>i * G, bh,
                            rh_buf + <Py_ssize_t>i * H + u0, cur + <Py_ssize_t>i * H + u0,
                            nxt + <Py_ssize_t>i * H + u0, o, c, hp, H)
    _keep_ended_rows(t, nb, B, H, u0, U, s.perm, cur, nxt, out, s.out_ts, s.out_bs)
    if s.cache != NULL and nb < B:
        _zero_ended_cache_rows(t, nb, B, H, u0, U, <floating*>s.cache, <floating*>s.hprev)


cdef void _forward_piece(void* s_, int phase, int st, int p) noexcept nogil:
    cdef cygru_fwd_run* s = <cygru_fwd_run*>s_
    if s.itemsize == sizeof(float):
        _forward_piece_t(s, phase, st, p, <float*>NULL)
    else:
        _forward_piece_t(s, phase, st, p, <double*>NULL)


cdef long forward_phase_count(const cygru_fwd_run* s) noexcept nogil:
    return <long>s.T * (1 if s.reset_after else 2)


cdef void forward_phase_piece(void* s_, long k, int p) noexcept nogil:
    # phase k of the forward: per step the gates, then (reset_after False) the n pass
    cdef cygru_fwd_run* s = <cygru_fwd_run*>s_
    if s.reset_after:
        _forward_piece(s, _PHASE_GATES, <int>k, p)
    else:
        _forward_piece(s, _PHASE_GATES if k % 2 == 0 else _PHASE_N, <int>(k // 2), p)


cdef Py_ssize_t backward_pack_size(int U, int H) noexcept nogil:
    """Elements of pack_backward_slice's buffer."""
    return cygru_packed_size(U, 3 * H)


cdef void pack_backward_slice(int H, int u0, int u1, bint reset_after, const floating* w_hh,
                              floating* packed) noexcept nogil:
    # columns [u0, u1) of W_hh (3H x H): dh_{t-1}[:, u0:u1] = dgh @ W_hh[:, u0:u1]
    cdef int U = u1 - u0
    if reset_after:
        _pack(U, 3 * H, w_hh + u0, 1, H, packed)
    else:
        # W_hn's columns (for d(r*h) = dan @ W_hn), then W_h{r,z}'s
        _pack(U, H, w_hh + 2 * <Py_ssize_t>H * H + u0, 1, H, packed)
        _pack(U, 2 * H, w_hh + u0, 1, H, packed + cygru_packed_size(U, H))


cdef inline void _dh_product(int m, int K, const floating* a, int lda, const floating* packed,
                             int H, int u0, int u1, floating* c, bint accumulate) noexcept nogil:
    """c[:, u0:u1] (+)= a (m x K, row stride lda) @ w[:, u0:u1], w (K x H) packed by
    columns (pack_backward_slice)."""
    cdef int U = u1 - u0
    _gemm_packed(m, K, a, lda, packed, 0, (U + 15) // 16, U, c + u0, H, accumulate)


cdef enum:
    _BPHASE_GATES = 1    # step t: the gate gradients of the piece's units (at the first
                         # step that runs, the piece first packs its columns of W_hh)
    _BPHASE_DH = 2       # dL/dh_{t-1}[:, piece] += dgh_t @ W_hh[:, piece] (reset_after)
    _BPHASE_RH = 3       # reset_after=False: d(r*h), dr, and the direct r*h path
    _BPHASE_DH_RZ = 4    # reset_after=False: dL/dh_{t-1}[:, piece] += [dar, daz] @ W_h{r,z}


cdef inline void _weight_grad_rows(cygru_bwd_run* s, int p, int t_lo, int n_steps,
                                   floating* tag) noexcept nogil:
    """Piece p's rows of the weight gradients (gate rows g*H + [u0, u1) of dW_ih, dW_hh,
    db_ih, db_hh), summed over the rows of steps [t_lo, t_lo + n_steps) (ended rows hold
    zeros): the piece's own columns of dgi and dgh, which it has just written."""
    cdef int H = s.H, G = 3 * H, K = n_steps * s.B
    cdef int u0 = s.bounds[p], U = s.bounds[p + 1] - s.bounds[p]
    cdef int rows[3]
    cdef void* scratch = <char*>s.wg_scratch + p * s.wg_slot
    cdef Py_ssize_t r0 = <Py_ssize_t>t_lo * s.B
    cdef const floating* dgh = <const floating*>s.dgh   # the chunk's steps, from t_lo
    cdef const floating* hprev = <const floating*>s.hprev + r0 * H
    rows[0], rows[1], rows[2] = u0, H + u0, 2 * H + u0
    # dW_ih += dgi^T @ x;  db_ih += Σ dgi
    _wgrad(3, rows, U, s.In, K, <const floating*>s.dgi + r0 * s.ldgi, s.ldgi, 1,
           <const floating*>s.x + r0 * s.In, s.In, <floating*>s.gw_ih, s.In,
           <floating*>s.gb_ih, scratch)
    if s.reset_after:
        # dW_hh += dgh^T @ h_prev;  db_hh += Σ dgh
        _wgrad(3, rows, U, H, K, dgh, G, 1, hprev, H, <floating*>s.gw_hh, H,
               <floating*>s.gb_hh, scratch)
    else:
        # dW_h{r,z} += dgh_{r,z}^T @ h_prev;  dW_hn += dan^T @ (r*h_prev) (the cache's 4th
        # slot);  db_hh += Σ dgh
        _wgrad(2, rows, U, H, K, dgh, G, 1, hprev, H, <floating*>s.gw_hh, H,
               <floating*>s.gb_hh, scratch)
        _wgrad(1, rows + 2, U, H, K, dgh, G, 1,
               <const floating*>s.cache + r0 * 4 * H + 3 * H, 4 * H, <floating*>s.gw_hh, H,
               <floating*>s.gb_hh, scratch)


cdef inline int _chunk_t_lo(const cygru_bwd_run* s, int st) noexcept nogil:
    """The lowest time step of the weight-gradient chunk that processing step st is in
    (chunks: wg_chunk processing steps from first_st, the last one shorter)."""
    cdef int st0 = st - (st - s.first_st) % s.wg_chunk
    cdef int st1 = st0 + s.wg_chunk - 1
    if st1 > s.first_st + s.n_steps - 1:
        st1 = s.first_st + s.n_steps - 1
    return st0 if s.reverse else s.T - 1 - st1


cdef inline void _weight_grads_if_chunk_ends(cygru_bwd_run* s, int st, int p,
                                             floating* tag) noexcept nogil:
    """After processing step st's last phase: if it ends a chunk of wg_chunk steps (or the
    steps that run), piece p adds that chunk's rows to its weight gradients, while they
    are still in its cache. Every element of dW sums its rows chunk by chunk in
    processing order, in memory order within a chunk: a fixed order."""
    cdef int done = st - s.first_st + 1
    if done % s.wg_chunk != 0 and done != s.n_steps:
        return
    _weight_grad_rows(s, p, _chunk_t_lo(s, st), (done - 1) % s.wg_chunk + 1, tag)


cdef inline void _backward_piece_t(cygru_bwd_run* s, int phase, int st, int p,
                                   floating* tag) noexcept nogil:
    """Piece p (units [bounds[p], bounds[p+1])) of one phase of the backward."""
    cdef int B = s.B, H = s.H, G = 3 * H
    cdef int u0 = s.bounds[p], u1 = s.bounds[p + 1], U = u1 - u0
    cdef floating* packed = <floating*>s.pack + p * s.pack_slot
    cdef floating* dstate = <floating*>s.dstate
    cdef floating* dgi = <floating*>s.dgi
    cdef floating* drh_buf = <floating*>s.drh_buf
    cdef const floating* cache = <const floating*>s.cache
    cdef const floating* hprev = <const floating*>s.hprev
    cdef int t, nb
    cdef floating* dgh_t
    if phase == _BPHASE_GATES and st == s.first_st:
        pack_backward_slice(H, u0, u1, s.reset_after, <const floating*>s.w_hh, packed)
    t = st if s.reverse else s.T - 1 - st
    nb = s.active[t]
    dgh_t = <floating*>s.dgh + <Py_ssize_t>(t - _chunk_t_lo(s, st)) * B * G
    if phase == _BPHASE_GATES:
        if nb < B:
            _zero_ended_grad_rows(t, nb, B, H, u0, U, s.perm, dgi, s.ldgi, dgh_t)
        _gate_grad_rows(t, nb, B, H, u0, u1, s.reset_after, s.perm, cache, hprev,
                        <const floating*>s.d_out, s.d_ts, s.d_bs, dstate, dgi, s.ldgi, dgh_t)
    elif phase == _BPHASE_DH:
        # dh_{t-1}[:, piece] += [dar, daz, dgh_n] @ W_hh[:, piece]
        _dh_product(nb, G, dgh_t, G, packed, H, u0, u1, dstate, True)
        _weight_grads_if_chunk_ends(s, st, p, tag)
    elif phase == _BPHASE_RH:
        # d(r*h)[:, piece] = dan @ W_hn[:, piece]; dr = d(r*h) * h; dh_{t-1} += d(r*h) * r
        _dh_product(nb, H, dgh_t + 2 * H, G, packed, H, u0, u1, drh_buf, False)
        _rh_grad_rows(t, nb, B, H, u0, u1, s.perm, cache, hprev, drh_buf, dstate, dgi,
                      s.ldgi, dgh_t)
    else:
        # _BPHASE_DH_RZ: dh_{t-1}[:, piece] += [dar, daz] @ W_h{r,z}[:, piece]
        _dh_product(nb, 2 * H, dgh_t, G, packed + cygru_packed_size(U, H), H, u0, u1,
                    dstate, True)
        _weight_grads_if_chunk_ends(s, st, p, tag)


cdef void _backward_piece(void* s_, int phase, int st, int p) noexcept nogil:
    cdef cygru_bwd_run* s = <cygru_bwd_run*>s_
    if s.itemsize == sizeof(float):
        _backward_piece_t(s, phase, st, p, <float*>NULL)
    else:
        _backward_piece_t(s, phase, st, p, <double*>NULL)


cdef long backward_phase_count(const cygru_bwd_run* s) noexcept nogil:
    # the steps that run (active rows) are the processing steps [first_st, first_st + n):
    # active[t] does not grow with t
    cdef long n = 0
    cdef int t
    for t in range(s.T):
        if s.active[t] > 0:
            n += 1
    return n * (2 if s.reset_after else 3)


cdef void backward_phase_piece(void* s_, long k, int p) noexcept nogil:
    # phase k of the backward: per step that has active rows (from first_st, in processing
    # order) the gate gradients, then dL/dh_{t-1} (reset_after False: d(r*h), then r, z)
    cdef cygru_bwd_run* s = <cygru_bwd_run*>s_
    cdef int per = 2 if s.reset_after else 3
    cdef int st = s.first_st + <int>(k // per), j = <int>(k % per)
    if j == 0:
        _backward_piece(s, _BPHASE_GATES, st, p)
    elif s.reset_after:
        _backward_piece(s, _BPHASE_DH, st, p)
    elif j == 1:
        _backward_piece(s, _BPHASE_RH, st, p)
    else:
        _backward_piece(s, _BPHASE_DH_RZ, st, p)


cdef inline void _input_grad_rows(cygru_dx_run* s, int p, floating* tag) noexcept nogil:
    """Rows [r0, r1) of dx (piece p of n_pieces): dx = Σ_d dgi_d @ W_ih_d, one chain per
    element from 0 over direction 0's gate columns, then direction 1's."""
    cdef int r0 = <int>(<long>s.TB * p // s.n_pieces)
    cdef int r1 = <int>(<long>s.TB * (p + 1) // s.n_pieces)
    cdef int d, G = 3 * s.H
    cdef void* scratch = <char*>s.scratch + p * s.slot
    cdef floating* dx = <floating*>s.dx
    if r1 <= r0:
        return
    memset(dx + <Py_ssize_t>r0 * s.In, 0, <size_t>(r1 - r0) * s.In * sizeof(floating))
    for d in range(s.D):
        # A = dgi_d^T: element (k, r) = dgi[r, d*3H + k]
        _wgrad(1, &r0, r1 - r0, s.In, G, <const floating*>s.dgi + d * G, 1, s.ldgi,
               <const floating*>s.w_ih[d], s.In, dx, s.In, <floating*>NULL, scratch)


cdef void input_grad_piece(void* s_, long k, int p) noexcept nogil:
    cdef cygru_dx_run* s = <cygru_dx_run*>s_
    if s.itemsize == sizeof(float):
        _input_grad_rows(s, p, <float*>NULL)
    else:
        _input_grad_rows(s, p, <double*>NULL)


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
    # gi = x @ W_ih^T
    gemm_or_gemv(B, G, I, x, I, w_ih, I, <floating>0, gi, G)
    if reset_after:
        gemm_or_gemv(B, G, H, h, H, w_hh, H, <floating>0, gh, G)
        for i in range(B):
            _gates_reset_after(H, gi + i * G, H, b_ih, gh + i * G, b_hh, h + i * H,
                               h_out + i * H, h_out + i * H, NULL, NULL, H)
    else:
        gemm_or_gemv(B, 2 * H, H, h, H, w_hh, H, <floating>0, gh, G)
        for i in range(B):
            _gates_rz(H, gi + i * G, H, b_ih, gh + i * G, b_hh, h + i * H, rh + i * H)
        gemm_or_gemv(B, H, H, rh, H, w_hh + 2 * <Py_ssize_t>H * H, H, <floating>0, gh + 2 * H, G)
        for i in range(B):
            _gates_n_before(H, gi + i * G, H, b_ih, gh + i * G, b_hh, rh + i * H,
                            h + i * H, h_out + i * H, h_out + i * H, NULL, NULL, H)


# ---------------------------------------------------------------------------------------
# Test hooks: the compiled variants (AVX-512, AVX2+FMA, baseline) of the float32
# activations and of the packed kernel, each callable directly, so that tests check every
# variant this CPU can run, not only the one it picks.
# ---------------------------------------------------------------------------------------

VARIANT_NAMES = ("base", "avx2", "avx512")


def cpu_variant_level():
    """Index into VARIANT_NAMES of the best variant this CPU runs (the one cygru uses
    unless _force_variant_level says otherwise)."""
    return cygru_cpu_best_level()


def _force_variant_level(int level):
    """Make the float kernels of this process (the packed and dot products, the float32
    activations, the backward's products) run variant `level` (an index into
    VARIANT_NAMES; a level above what the CPU runs leaves the best one) or, with -1,
    the best one again; returns the level now in use. A hook for tests (every variant's
    path through the whole engine) and benchmarks; not thread-safe against calls that
    are running."""
    global cygru_forced_level
    if level < -1 or level >= len(VARIANT_NAMES):
        raise ValueError(f"_force_variant_level: level must be -1..{len(VARIANT_NAMES) - 1}, "
                         f"got {level}")
    cygru_forced_level = level
    return cygru_cpu_level()


def _variant_level_in_use():
    """The float kernels' variant level in use now (the best, or the forced one)."""
    return cygru_cpu_level()


cdef int _checked_level(int level) except -2:
    cdef int best = cygru_cpu_best_level()
    if level == -1:
        return best
    if level < 0 or level > best:
        raise ValueError(f"variant level {level} is not one this CPU runs (0..{best})")
    return level


def _activations_f32(float[::1] a, bint tanh_, int level=-1):
    """Apply the gate loops' float32 sigmoid (or tanh, if `tanh_`) to `a` in place, with
    the variant `level` (-1: the one this CPU uses).

    A test hook: tests/test_fastmath.py checks their accuracy against float64 math."""
    cdef int lv = _checked_level(level)
    if a.shape[0] == 0:
        return
    with nogil:
        cygru_activation_at_level(lv, tanh_, &a[0], a.shape[0])


def _packed_gemm(const floating[:, ::1] a, const floating[:, ::1] w, floating[:, ::1] c,
                 bint accumulate=False, int level=-1, bint columns=False):
    """c (=|+=) a @ w^T through cygru_pack_* and the packed kernel of variant `level`
    (-1: the one this CPU uses), float32 or float64. With `columns`, `w` is given
    transposed (K x N) and packed by columns, as the backward packs W_hh. A test hook
    for tests/test_blas.py."""
    cdef int lv = _checked_level(level)
    cdef int M = a.shape[0], K = a.shape[1]
    cdef int N = w.shape[1] if columns else w.shape[0]
    if (w.shape[0] if columns else w.shape[1]) != K or c.shape[0] != M or c.shape[1] != N:
        raise ValueError("shapes do not match: a (M, K), w (N, K) or (K, N), c (M, N)")
    if M == 0 or N == 0 or K == 0:
        raise ValueError("empty operands are not supported by this hook")
    packed = np.empty(cygru_packed_size(N, K), np.float32 if floating is float else np.float64)
    cdef floating[::1] p = packed
    with nogil:
        if columns:
            _pack(N, K, &w[0, 0], 1, N, &p[0])
        else:
            _pack(N, K, &w[0, 0], K, 1, &p[0])
        if floating is float:
            cygru_kernel_at_level_f(lv)(M, K, &a[0, 0], K, &p[0], 0, (N + 15) // 16, N,
                                        &c[0, 0], N, 1 if accumulate else 0)
        else:
            cygru_kernel_at_level_d(lv)(M, K, &a[0, 0], K, &p[0], 0, (N + 15) // 16, N,
                                        &c[0, 0], N, 1 if accumulate else 0)


def _dot_gemm(const floating[:, :] a, const floating[:, :] w, floating[:, :] c,
              bint accumulate=False, int level=-1):
    """c (=|+=) a @ w^T through the unpacked dot kernel (cygru_dot.h) of variant `level`
    (-1: the one this CPU uses), float32 or float64, straight from row-major `w` (N, K).
    Each operand may be a row-strided view (its rows contiguous): tests compute a block
    of rows and columns alone with it. A test hook for tests/test_blas.py."""
    cdef int lv = _checked_level(level)
    cdef int M = a.shape[0], K = a.shape[1], N = w.shape[0]
    if w.shape[1] != K or c.shape[0] != M or c.shape[1] != N:
        raise ValueError("_dot_gemm: shapes do not match: a (M, K), w (N, K), c (M, N)")
    if M == 0 or N == 0 or K == 0:
        raise ValueError("_dot_gemm: empty operands are not supported by this hook")
    if a.strides[1] != a.itemsize or w.strides[1] != w.itemsize or c.strides[1] != c.itemsize:
        raise ValueError("_dot_gemm: the rows of a, w and c must be contiguous")
    cdef int lda = a.strides[0] // a.itemsize
    cdef int ldw = w.strides[0] // w.itemsize
    cdef int ldc = c.strides[0] // c.itemsize
    with nogil:
        if floating is float:
            cygru_dot_at_level_f(lv)(M, N, K, &a[0, 0], lda, &w[0, 0], ldw, &c[0, 0], ldc,
                                     1 if accumulate else 0)
        else:
            cygru_dot_at_level_d(lv)(M, N, K, &a[0, 0], lda, &w[0, 0], ldw, &c[0, 0], ldc,
                                     1 if accumulate else 0)


def _wgrad_gemm(const floating[:, :] a, const floating[:, ::1] b, floating[:, ::1] c,
                floating[::1] bias=None, int level=-1, rows=None):
    """c[r, :] += a[:, r] @ b for the rows r of c (`rows`: a list of (start, count) groups
    of equal count; None: all rows), and bias[r] += the sum of a[:, r] if given, through
    the backward's product kernel (cygru_wgrad.h) of variant `level` (-1: the one in use).
    `a` (K, M) may be any 2-D strided view (dx reads its operand transposed). A test hook
    for tests/test_backward_kernels.py."""
    cdef int lv = _checked_level(level) if level != -1 else cygru_cpu_level()
    cdef int K = a.shape[0], M = a.shape[1], N = b.shape[1]
    cdef int starts[3]
    cdef int ng, U, g
    if b.shape[0] != K or c.shape[0] != M or c.shape[1] != N:
        raise ValueError("_wgrad_gemm: shapes do not match: a (K, M), b (K, N), c (M, N)")
    if bias is not None and bias.shape[0] != M:
        raise ValueError("_wgrad_gemm: bias must have M entries")
    if rows is None:
        rows = [(0, M)]
    ng = len(rows)
    if not 1 <= ng <= 3 or len({n for _, n in rows}) != 1:
        raise ValueError("_wgrad_gemm: rows: 1 to 3 (start, count) groups of one count")
    U = rows[0][1]
    for g in range(ng):
        starts[g] = rows[g][0]
        if not (0 <= starts[g] and starts[g] + U <= M):
            raise ValueError("_wgrad_gemm: a group of rows is out of range")
    if K == 0 or M == 0 or N == 0:
        raise ValueError("_wgrad_gemm: empty operands are not supported by this hook")
    scratch = np.empty(cygru_wgrad_scratch_size(), np.float32 if floating is float else np.float64)
    cdef floating[::1] sc = scratch
    cdef Py_ssize_t sak = a.strides[0] // a.itemsize, sam = a.strides[1] // a.itemsize
    cdef floating* bp = &bias[0] if bias is not None else NULL
    with nogil:
        if floating is float:
            cygru_wgrad_at_level_f(lv)(ng, starts, U, N, K, &a[0, 0], sak, sam, &b[0, 0], N,
                                       &c[0, 0], N, bp, &sc[0])
        else:
            cygru_wgrad_at_level_d(lv)(ng, starts, U, N, K, &a[0, 0], sak, sam, &b[0, 0], N,
                                       &c[0, 0], N, bp, &sc[0])


# ---------------------------------------------------------------------------------------
# Reduced-precision weights (cygru_quant.h): the conversions cygru.quantize uses, and test
# hooks that run each compiled variant of the products.
# ---------------------------------------------------------------------------------------

QUANT_VARIANT_NAMES = ("base", "avx2", "avx512", "native")


def quant_levels():
    """(int8, bf16): the best level (index into QUANT_VARIANT_NAMES) this CPU runs for
    each format's products (native: AVX512-VNNI, AVX512-BF16)."""
    return cygru_q8_best_level(), cygru_bf16_best_level()


def quant_max_levels():
    """(int8, bf16): the highest level this CPU runs with the definitions' bits (bf16's
    level 3 only where _bf16_native_check passed); quant_levels() gives the ones in use,
    which may be lower where a lower level is faster (the same bits either way)."""
    return cygru_q8_max_level(), cygru_bf16_max_level()


def _quant_levels_in_use():
    """(int8, bf16): the levels the engine's products run now (_force_quant_level's, where
    this CPU runs it, else quant_levels())."""
    return cygru_q8_level(), cygru_bf16_level()


def _bf16_native_check():
    """(ok, faster): ok is the result of cygru_quant.h's once-per-process check of the
    CPU's AVX512-BF16 product against the bf16 definition (1 passed: level 3 may run; 0
    failed: the exact emulation runs instead; -1 this CPU or compiler has no AVX512-BF16);
    faster says whether vdpbf16ps outran the emulation in the once-per-process timing
    that picks the level in use (1 yes, 0 no, -1 no level 3)."""
    return cygru_bf16_native_ok(), cygru_bf16_native_fast()


def _force_quant_level(int level):
    """Make every quantized product of this process use variant `level` (a fallback; a
    level above what the CPU runs leaves the best one) or, with -1, the best one again.
    Results do not change (every variant gives the same bits); only the speed does. A
    hook for tests and benchmarks."""
    global cygru_quant_forced
    if level < -1 or level > 3:
        raise ValueError(f"_force_quant_level: level must be -1..3, got {level}")
    cygru_quant_forced = level


def q8_quantize_rows(const float[:, ::1] a):
    """(q int8 (M, K), scale float32 (M,)): each row of `a` quantized by the int8 row rule
    of cygru_quant.h (scale = max|row| / 127, q = rint(row * 127 / max)); a row that is
    not finite gets scale NaN."""
    cdef int M = a.shape[0], K = a.shape[1]
    cdef Py_ssize_t K4 = (K + 3) // 4 * 4
    q4 = np.zeros((M, max(K4, 1)), np.int8)
    scale = np.zeros(M, np.float32)
    cdef signed char[:, ::1] qv = q4
    cdef float[::1] sv = scale
    if M and K:
        with nogil:
            cygru_q8_quantize_rows(M, K, &a[0, 0], K, <int8_t*>&qv[0, 0], qv.shape[1], &sv[0])
    return np.ascontiguousarray(q4[:, :K]), scale


def q8_pack_gates(const signed char[:, ::1] q, const float[::1] scale, int H):
    """The packed blocks of an int8 (G*H x K) weight and its row scales: one block per
    gate of H rows, back to back (cygru_quant.h's layout), as a uint8 array."""
    cdef int N = q.shape[0], K = q.shape[1], g
    if N % H or scale.shape[0] != N or K == 0 or H == 0:
        raise ValueError("q8_pack_gates: q (G*H, K) with K > 0 and scale (G*H,) expected")
    cdef size_t bs = cygru_q8_block_size(H, K)
    out = np.zeros((N // H) * bs, np.uint8)
    cdef unsigned char[::1] o = out
    with nogil:
        for g in range(N // H):
            cygru_q8_pack(H, K, <const int8_t*>&q[g * H, 0], K, &scale[g * H], &o[g * bs])
    return out


def bf16_from_f32(const float[::1] a):
    """float32 -> bfloat16 bits (uint16) by cygru_quant.h's rule (round half to even;
    magnitudes below 2**-50 become zero; NaN made quiet)."""
    out = np.empty(a.shape[0], np.uint16)
    cdef unsigned short[::1] o = out
    if a.shape[0]:
        with nogil:
            cygru_bf16_from_f32_n(a.shape[0], &a[0], <uint16_t*>&o[0])
    return out


def bf16_pack_gates(const unsigned short[:, ::1] wb, int H):
    """The packed blocks of a bf16 (G*H x K) weight (bits as uint16): one block per gate
    of H rows, back to back (cygru_quant.h's layout), as a uint8 array."""
    cdef int N = wb.shape[0], K = wb.shape[1], g
    if N % H or K == 0 or H == 0:
        raise ValueError("bf16_pack_gates: wb (G*H, K) with K > 0 expected")
    cdef size_t bs = cygru_bf16_block_size(H, K)
    out = np.zeros((N // H) * bs, np.uint8)
    cdef unsigned char[::1] o = out
    with nogil:
        for g in range(N // H):
            cygru_bf16_pack(H, K, <const uint16_t*>&wb[g * H, 0], K, &o[g * bs])
    return out


def _quant_gemm(str fmt, const float[:, :] a, const unsigned char[::1] block, int Nb, int n0,
                int N, int level=-1):
    """(M, N) float32 = a @ W[n0:n0+N]^T for W the (Nb x K) matrix of one packed block
    (q8_pack_gates / bf16_pack_gates with H = Nb), by variant `level` of the int8 or bf16
    product (-1: the one in use). `a` may be a row-strided view. A test hook."""
    cdef int M = a.shape[0], K = a.shape[1]
    cdef int best = cygru_q8_max_level() if fmt == "int8" else cygru_bf16_max_level()
    if fmt not in ("int8", "bf16"):
        raise ValueError(f"_quant_gemm: fmt must be 'int8' or 'bf16', got {fmt!r}")
    if level < -1 or level > best:
        raise ValueError(f"_quant_gemm: level {level} is not one this CPU runs (0..{best})")
    if M == 0 or K == 0 or N <= 0 or n0 % 16 or n0 + N > Nb:
        raise ValueError("_quant_gemm: bad sizes")
    if a.strides[1] != 4:
        raise ValueError("_quant_gemm: the rows of a must be contiguous")
    cdef size_t need = (cygru_q8_block_size(Nb, K) if fmt == "int8"
                        else cygru_bf16_block_size(Nb, K))
    if <size_t>block.shape[0] < need:
        raise ValueError("_quant_gemm: block too small for (Nb, K)")
    c = np.zeros((M, N), np.float32)
    cdef float[:, ::1] cv = c
    scratch = np.zeros(cygru_q8_scratch_size(K) if fmt == "int8" else cygru_bf16_scratch_size(K),
                       np.uint8)
    cdef unsigned char[::1] sc = scratch
    cdef Py_ssize_t lda = a.strides[0] // 4
    cdef cygru_q_fn fn
    if fmt == "int8":
        fn = cygru_q8_at_level(cygru_q8_level() if level == -1 else level)
    else:
        fn = cygru_bf16_at_level(cygru_bf16_level() if level == -1 else level)
    with nogil:
        fn(M, K, &a[0, 0], lda, &block[0], Nb, n0, N, &cv[0, 0], N, &sc[0])
    return c


def _quant_gemm_gates(str fmt, const float[:, :] a, const unsigned char[::1] blocks, int G,
                      int Nb, int n0, int N, int level=-1):
    """(M, G*N) float32: columns [g*N, (g+1)*N) = a @ W_g[n0:n0+N]^T for the G packed blocks
    of q8_pack_gates / bf16_pack_gates (H = Nb), by the gate-batched product of variant
    `level` (-1: the one in use), which prepares the rows of `a` once. A test hook."""
    cdef int M = a.shape[0], K = a.shape[1]
    cdef int top = cygru_q8_max_level() if fmt == "int8" else cygru_bf16_max_level()
    if fmt not in ("int8", "bf16"):
        raise ValueError(f"_quant_gemm_gates: fmt must be 'int8' or 'bf16', got {fmt!r}")
    if level < -1 or level > top:
        raise ValueError(f"_quant_gemm_gates: level {level} is not one this CPU runs (0..{top})")
    if M == 0 or K == 0 or G <= 0 or N <= 0 or n0 % 16 or n0 + N > Nb:
        raise ValueError("_quant_gemm_gates: bad sizes")
    if a.strides[1] != 4:
        raise ValueError("_quant_gemm_gates: the rows of a must be contiguous")
    cdef size_t bs = cygru_q8_block_size(Nb, K) if fmt == "int8" else cygru_bf16_block_size(Nb, K)
    if <size_t>blocks.shape[0] < G * bs:
        raise ValueError("_quant_gemm_gates: blocks too small for G blocks of (Nb, K)")
    c = np.zeros((M, G * N), np.float32)
    cdef float[:, ::1] cv = c
    scratch = np.zeros(cygru_q8_scratch_size(K) if fmt == "int8" else cygru_bf16_scratch_size(K),
                       np.uint8)
    cdef unsigned char[::1] sc = scratch
    cdef Py_ssize_t lda = a.strides[0] // 4
    cdef bint int8 = fmt == "int8"
    with nogil:
        if level == -1 and int8:
            cygru_q8_gemm_gates(G, bs, N, M, K, &a[0, 0], lda, &blocks[0], Nb, n0, N,
                                &cv[0, 0], G * N, &sc[0])
        elif level == -1:
            cygru_bf16_gemm_gates(G, bs, N, M, K, &a[0, 0], lda, &blocks[0], Nb, n0, N,
                                  &cv[0, 0], G * N, &sc[0])
        elif int8:
            cygru_q8_gates_at_level(level)(G, bs, N, M, K, &a[0, 0], lda, &blocks[0], Nb, n0, N,
                                           &cv[0, 0], G * N, &sc[0])
        else:
            cygru_bf16_gates_at_level(level)(G, bs, N, M, K, &a[0, 0], lda, &blocks[0], Nb, n0,
                                             N, &cv[0, 0], G * N, &sc[0])
    return c
