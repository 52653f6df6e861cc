# cython: language_level=3
"""Row-major GEMM/GEMV over SciPy's BLAS: the only place cygru calls BLAS.

Every cygru buffer is row-major (C order). BLAS is column-major, and a row-major
matrix M (m x n, leading dimension ld) is, read column-major, its transpose
M^T (n x m, same ld). So the row-major product C = op(A) @ op(B) is computed as
the column-major product C^T = op(B)^T @ op(A)^T: swap the operands and the sizes
m <-> n, keep each operand's own transpose flag. That swap is written here, once.
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

# The integer type of SciPy's BLAS interface (scipy.linalg.cython_blas declares its
# sizes as C int, also in SciPy builds over an ILP64 BLAS, which its wrappers convert).
# Every size and leading dimension handed to BLAS has this type; cygru.functional
# refuses problems whose sizes do not fit it before anything reaches a kernel.
ctypedef int blas_int


cdef inline void gemm(bint trans_a, bint trans_b, blas_int m, blas_int n, blas_int k,
                      floating alpha, const floating* a, blas_int lda,
                      const floating* b, blas_int ldb,
                      floating beta, floating* c, blas_int ldc) noexcept nogil:
    """Row-major C (m x n) = alpha * op(A) (m x k) @ op(B) (k x n) + beta * C."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        # op(A) @ op(B) is empty: C = beta * C (BLAS does this too, but be explicit
        # so that beta == 0 clears uninitialised memory instead of scaling it).
        scale(m, n, beta, c, ldc)
        return
    # Column-major view: C^T (n x m) = op(B)^T (n x k) @ op(A)^T (k x m).
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


# OpenBLAS runs a matrix-vector product above GEMV_SERIAL multiply-adds on its thread
# pool, whose wake-up costs more than a product this size (gemm_or_gemv).
cdef enum:
    GEMV_SERIAL = 9216


cdef inline void gemv_rows(blas_int n, blas_int k, floating alpha, const floating* w,
                           blas_int ldw, const floating* x, floating beta,
                           floating* y) noexcept nogil:
    """y (n) = alpha * W (n x k, row-major) @ x (k) + beta * y.

    Row-major W is column-major W^T (k x n), so W @ x is gemv('T') on it.
    """
    cdef char t = b'T'
    cdef blas_int one = 1
    if n <= 0:
        return
    if k <= 0:
        scale(1, n, beta, y, n)
        return
    if floating is float:
        sgemv(&t, &k, &n, &alpha, <float*>w, &ldw, <float*>x, &one, &beta, y, &one)
    else:
        dgemv(&t, &k, &n, &alpha, <double*>w, &ldw, <double*>x, &one, &beta, y, &one)


cdef inline void gemm_or_gemv(blas_int m, blas_int n, blas_int k, const floating* a,
                              blas_int lda, const floating* w, blas_int ldw, floating beta,
                              floating* c, blas_int ldc) noexcept nogil:
    """Row-major C (m x n) = A (m x k) @ W^T + beta * C, with W (n x k).

    At m == 1 and small n*k it is a matrix-vector product (gemv skips GEMM's packing
    of W); larger single rows use GEMM, which BLAS keeps on the calling thread.
    """
    if m == 1 and <Py_ssize_t>n * k <= GEMV_SERIAL:
        gemv_rows(n, k, <floating>1, w, ldw, a, beta, c)
    else:
        # above GEMV_SERIAL, OpenBLAS runs gemv on its thread pool, whose wake-up costs
        # more than a product this size; its small-matrix GEMM path stays on this thread
        gemm(False, True, m, n, k, <floating>1, a, lda, w, ldw, beta, c, ldc)


cdef inline void scale(int m, int n, floating beta, floating* c, int ldc) noexcept nogil:
    """C (m x n, row-major) *= beta, with beta == 0 meaning 'set to 0' (NaN-safe)."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            if beta == 0:
                c[i * ldc + j] = 0
            else:
                c[i * ldc + j] *= beta
