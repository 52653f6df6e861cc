// Fused element-wise GRU gate kernels for cygru's CuPy backend (cygru/_cupy.py).
//
// Compiled at run time by cupy.RawModule (NVRTC, no headers are included) and looked up by
// the extern "C" names at the bottom of this file; tests/test_cuda_compile.py also compiles
// this file with nvcc so that a syntax error is caught on machines without a GPU.
//
// The GEMMs (input projection, h @ W_hh^T, the backward products) run in cuBLAS; these
// kernels do everything element-wise in between.  Gate order is r, z, n (PyTorch's).
//
// Conventions shared by every kernel
// ----------------------------------
//   B, H      batch size and hidden size.
//   sorted row s   the batch is sorted once by sequence length, descending; perm[s] is the
//             original batch index of sorted row s.  State, gh and cache buffers are in
//             sorted order; gi / dgi rows and the output / d_output rows are in the
//             original order and are addressed through perm.  perm may be null: the
//             identity (no lengths, or lengths already sorted).
//   bt        number of active sorted rows at this time step (rows s < bt are active; a
//             sequence b is active at step t iff t < L_b, and the sort makes them a prefix).
//   gi        (B, 3H) input projection x_t @ W_ih^T of time t (no bias), original order.
//   gh        (bt, 3H) state projection h_sorted[:bt] @ W_hh^T of this step (no bias).
//   bias      (3H,) folded biases [b_ir + b_hr, b_iz + b_hz, b_in]; bhn (H,) is b_hn.
//   out       pointer to out[t, 0, d*H] of the output; row b of it is at out + b*out_stride
//             (out_stride = D*H time-major, T*D*H batch-first): the output is written in place.
//   cache     c_* are (B, H) slices (sorted rows) of the training cache at time t, or null
//             pointers for inference.  Inactive rows get zeros there, so that the backward
//             pass can run its weight-gradient GEMMs over every row at once.
//
// Each thread handles one (s, j) element, s in [0, B), j in [0, H), in a grid-stride loop;
// the element it reads from in/out buffers is the one it writes, and no two pointer
// arguments alias, so there are no races.  Accurate expf / tanhf (exp / tanh for double):
// do not compile with --use_fast_math.

#define CYGRU_KERNEL extern "C" __global__

#define CYGRU_GRID_LOOP(i, n)                                                         \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);    \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float cy_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double cy_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float cy_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double cy_tanh(double x) { return tanh(x); }


// ---------------------------------------------------------------------------------------------
// forward, reset_after=True (PyTorch): one pass per step after the GEMM gh = h @ W_hh^T
// ---------------------------------------------------------------------------------------------
// r = sigmoid(gi_r + gh_r + b_r);  z = sigmoid(gi_z + gh_z + b_z)
// ghn = gh_n + b_hn;  n = tanh(gi_n + b_in + r * ghn);  h' = (1 - z) * n + z * h
// Active rows: h[s] = h' (in place) and out[perm[s]] = h'.  Inactive rows: h[s] is kept
// (not yet started, or finished), out[perm[s]] = 0.
template <typename T>
__device__ __forceinline__ void fwd_ra(
    long long B, long long H, long long bt,
    const T* __restrict__ gi,            // IN  (B, 3H) original order
    const T* __restrict__ gh,            // IN  (bt, 3H) sorted
    const T* __restrict__ bias,          // IN  (3H,) folded
    const T* __restrict__ bhn,           // IN  (H,)
    T* __restrict__ h,                   // IN/OUT (B, H) sorted state
    T* __restrict__ out,                 // OUT row perm[s] at out + perm[s]*out_stride
    long long out_stride,
    const long long* __restrict__ perm,  // IN  (B,) or null
    T* __restrict__ c_r, T* __restrict__ c_z, T* __restrict__ c_n,   // OUT cache or null
    T* __restrict__ c_ghn, T* __restrict__ c_hp)
{
    const long long H3 = 3 * H;
    const bool cache = (c_r != nullptr);
    CYGRU_GRID_LOOP(i, B * H) {
        const long long s = i / H;
        const long long j = i - s * H;
        const long long b = (perm != nullptr) ? perm[s] : s;
        T* o = out + b * out_stride + j;
        if (s < bt) {
            const T* gir = gi + b * H3;
            const T* ghr = gh + s * H3;
            const T hp = h[i];
            const T r = cy_sigmoid(gir[j] + ghr[j] + bias[j]);
            const T z = cy_sigmoid(gir[H + j] + ghr[H + j] + bias[H + j]);
            const T ghn = ghr[2 * H + j] + bhn[j];
            const T n = cy_tanh(gir[2 * H + j] + bias[2 * H + j] + r * ghn);
            const T hn = (T(1) - z) * n + z * hp;
            h[i] = hn;
            *o = hn;
            if (cache) {
                c_r[i] = r; c_z[i] = z; c_n[i] = n; c_ghn[i] = ghn; c_hp[i] = hp;
            }
        } else {
            *o = T(0);
            if (cache) {
                c_r[i] = T(0); c_z[i] = T(0); c_n[i] = T(0); c_ghn[i] = T(0); c_hp[i] = T(0);
            }
        }
    }
}


// ---------------------------------------------------------------------------------------------
// forward, reset_after=False (Cho 2014): GEMM1 ghrz = h @ W_hh[:2H]^T, pass 1,
// GEMM2 ghn = (r*h) @ W_hn^T, pass 2
// ---------------------------------------------------------------------------------------------
// pass 1: r = sigmoid(gi_r + ghrz_r + b_r);  z = sigmoid(gi_z + ghrz_z + b_z);  rh = r * h
// ghrz (sorted, row stride 2H) is overwritten in place with [r, z] for pass 2.
// rh is the GEMM2 operand (a scratch buffer, or the training cache slice itself);
// inactive rows get rh = 0 (and zeros in the cache).
template <typename T>
__device__ __forceinline__ void fwd_nr1(
    long long B, long long H, long long bt,
    const T* __restrict__ gi,            // IN  (B, 3H) original order
    T* __restrict__ ghrz,                // IN (bt, 2H) pre-activations / OUT [r, z]
    const T* __restrict__ bias,          // IN  (3H,) folded
    const T* __restrict__ h,             // IN  (B, H) sorted state
    T* __restrict__ rh,                  // OUT (B, H) sorted r * h
    const long long* __restrict__ perm,  // IN  (B,) or null
    T* __restrict__ c_r, T* __restrict__ c_z)   // OUT cache or null
{
    const long long H2 = 2 * H;
    const bool cache = (c_r != nullptr);
    CYGRU_GRID_LOOP(i, B * H) {
        const long long s = i / H;
        const long long j = i - s * H;
        if (s < bt) {
            const long long b = (perm != nullptr) ? perm[s] : s;
            const T* gir = gi + b * (3 * H);
            T* g = ghrz + s * H2;
            const T r = cy_sigmoid(gir[j] + g[j] + bias[j]);
            const T z = cy_sigmoid(gir[H + j] + g[H + j] + bias[H + j]);
            g[j] = r;
            g[H + j] = z;
            rh[i] = r * h[i];
            if (cache) { c_r[i] = r; c_z[i] = z; }
        } else {
            rh[i] = T(0);
            if (cache) { c_r[i] = T(0); c_z[i] = T(0); }
        }
    }
}

// pass 2: n = tanh(gi_n + b_in + ghn + b_hn);  h' = (1 - z) * n + z * h
// Active rows: h[s] = h' (in place), out[perm[s]] = h'.  Inactive rows: out = 0, h kept.
template <typename T>
__device__ __forceinline__ void fwd_nr2(
    long long B, long long H, long long bt,
    const T* __restrict__ gi,            // IN  (B, 3H) original order
    const T* __restrict__ ghn,           // IN  (bt, H) sorted: rh @ W_hn^T
    const T* __restrict__ rz,            // IN  (bt, 2H) sorted [r, z] from pass 1
    const T* __restrict__ bias,          // IN  (3H,) folded
    const T* __restrict__ bhn,           // IN  (H,)
    T* __restrict__ h,                   // IN/OUT (B, H) sorted state
    T* __restrict__ out, long long out_stride,
    const long long* __restrict__ perm,  // IN  (B,) or null
    T* __restrict__ c_n, T* __restrict__ c_hp)   // OUT cache or null
{
    const bool cache = (c_n != nullptr);
    CYGRU_GRID_LOOP(i, B * H) {
        const long long s = i / H;
        const long long j = i - s * H;
        const long long b = (perm != nullptr) ? perm[s] : s;
        T* o = out + b * out_stride + j;
        if (s < bt) {
            const T hp = h[i];
            const T z = rz[s * (2 * H) + H + j];
            const T n = cy_tanh(gi[b * (3 * H) + 2 * H + j] + bias[2 * H + j] + ghn[i] + bhn[j]);
            const T hn = (T(1) - z) * n + z * hp;
            h[i] = hn;
            *o = hn;
            if (cache) { c_n[i] = n; c_hp[i] = hp; }
        } else {
            *o = T(0);
            if (cache) { c_n[i] = T(0); c_hp[i] = T(0); }
        }
    }
}


// ---------------------------------------------------------------------------------------------
// backward, reset_after=True: one pass per step, then the GEMM dh[:bt] += dgh[:bt] @ W_hh
// ---------------------------------------------------------------------------------------------
// g = dh + d_out (total gradient reaching h_t);  dz = g * (h - n);  dn = g * (1 - z)
// dan = dn * (1 - n^2);  dar = dan * ghn * r * (1 - r);  daz = dz * z * (1 - z)
// dgi[perm[s]] = [dar, daz, dan];  dgh[s] = [dar, daz, dan * r];  dh[s] = g * z
// Inactive rows: dgi and dgh rows are 0, dh is carried unchanged, d_out is not read.
// dout may be null (no gradient reaching the output).
template <typename T>
__device__ __forceinline__ void bwd_ra(
    long long B, long long H, long long bt,
    const T* __restrict__ dout,          // IN  row perm[s] at dout + perm[s]*dout_stride, or null
    long long dout_stride,
    const long long* __restrict__ perm,  // IN  (B,) or null
    const T* __restrict__ c_r, const T* __restrict__ c_z, const T* __restrict__ c_n,
    const T* __restrict__ c_ghn, const T* __restrict__ c_hp,   // IN  cache at t, (B, H) sorted
    T* __restrict__ dh,                  // IN/OUT (B, H) sorted
    T* __restrict__ dgi,                 // OUT (B, 3H) original order
    T* __restrict__ dgh)                 // OUT (B, 3H) sorted
{
    const long long H3 = 3 * H;
    CYGRU_GRID_LOOP(i, B * H) {
        const long long s = i / H;
        const long long j = i - s * H;
        const long long b = (perm != nullptr) ? perm[s] : s;
        T* dgir = dgi + b * H3;
        T* dghr = dgh + s * H3;
        if (s < bt) {
            T g = dh[i];
            if (dout != nullptr) g += dout[b * dout_stride + j];
            const T r = c_r[i], z = c_z[i], n = c_n[i];
            const T dz = g * (c_hp[i] - n);
            const T dn = g * (T(1) - z);
            const T dan = dn * (T(1) - n * n);
            const T dar = dan * c_ghn[i] * r * (T(1) - r);
            const T daz = dz * z * (T(1) - z);
            dgir[j] = dar; dgir[H + j] = daz; dgir[2 * H + j] = dan;
            dghr[j] = dar; dghr[H + j] = daz; dghr[2 * H + j] = dan * r;
            dh[i] = g * z;
        } else {
            dgir[j] = T(0); dgir[H + j] = T(0); dgir[2 * H + j] = T(0);
            dghr[j] = T(0); dghr[H + j] = T(0); dghr[2 * H + j] = T(0);
        }
    }
}


// ---------------------------------------------------------------------------------------------
// backward, reset_after=False: pass 1, GEMM drh = dghn[:bt] @ W_hn, pass 2,
// GEMM dh[:bt] += dgh_rz[:bt] @ W_hh[:2H]
// ---------------------------------------------------------------------------------------------
// pass 1: g = dh + d_out;  dz = g * (h - n);  dn = g * (1 - z);  dan = dn * (1 - n^2)
// daz = dz * z * (1 - z);  dgi[perm[s]] = [., daz, dan];  dgh_rz[s] = [., daz];
// dghn[s] = dan;  dh[s] = g * z.   (The r parts are written by pass 2.)
// Inactive rows: every part of the dgi, dgh_rz and dghn rows is 0, dh carried unchanged.
template <typename T>
__device__ __forceinline__ void bwd_nr1(
    long long B, long long H, long long bt,
    const T* __restrict__ dout, long long dout_stride,   // IN  as bwd_ra, or null
    const long long* __restrict__ perm,  // IN  (B,) or null
    const T* __restrict__ c_z, const T* __restrict__ c_n,
    const T* __restrict__ c_hp,          // IN  cache at t, (B, H) sorted
    T* __restrict__ dh,                  // IN/OUT (B, H) sorted
    T* __restrict__ dgi,                 // OUT (B, 3H) original order
    T* __restrict__ dgh_rz,              // OUT (B, 2H) sorted
    T* __restrict__ dghn)                // OUT (B, H) sorted
{
    CYGRU_GRID_LOOP(i, B * H) {
        const long long s = i / H;
        const long long j = i - s * H;
        const long long b = (perm != nullptr) ? perm[s] : s;
        T* dgir = dgi + b * (3 * H);
        T* dgr = dgh_rz + s * (2 * H);
        if (s < bt) {
            T g = dh[i];
            if (dout != nullptr) g += dout[b * dout_stride + j];
            const T z = c_z[i], n = c_n[i];
            const T dz = g * (c_hp[i] - n);
            const T dn = g * (T(1) - z);
            const T dan = dn * (T(1) - n * n);
            const T daz = dz * z * (T(1) - z);
            dgir[H + j] = daz; dgir[2 * H + j] = dan;
            dgr[H + j] = daz;
            dghn[i] = dan;
            dh[i] = g * z;
        } else {
            dgir[j] = T(0); dgir[H + j] = T(0); dgir[2 * H + j] = T(0);
            dgr[j] = T(0); dgr[H + j] = T(0);
            dghn[i] = T(0);
        }
    }
}

// pass 2 (active rows only): dr = drh * h;  dh[s] += drh * r;  dar = dr * r * (1 - r)
// dgi[perm[s]][r part] = dar;  dgh_rz[s][r part] = dar
template <typename T>
__device__ __forceinline__ void bwd_nr2(
    long long B, long long H, long long bt,
    const T* __restrict__ drh,           // IN  (bt, H) sorted: dghn @ W_hn
    const long long* __restrict__ perm,  // IN  (B,) or null
    const T* __restrict__ c_r, const T* __restrict__ c_hp,   // IN  cache at t, (B, H) sorted
    T* __restrict__ dh,                  // IN/OUT (B, H) sorted
    T* __restrict__ dgi,                 // OUT (B, 3H) original order (r part)
    T* __restrict__ dgh_rz)              // OUT (B, 2H) sorted (r part)
{
    CYGRU_GRID_LOOP(i, bt * H) {
        const long long s = i / H;
        const long long j = i - s * H;
        const T r = c_r[i];
        const T d = drh[i];
        const T dar = d * c_hp[i] * r * (T(1) - r);
        dh[i] += d * r;
        const long long b = (perm != nullptr) ? perm[s] : s;
        dgi[b * (3 * H) + j] = dar;
        dgh_rz[s * (2 * H) + j] = dar;
    }
    (void)B;
}


// ---------------------------------------------------------------------------------------------
// extern "C" entry points, float (_f32) and double (_f64)
// ---------------------------------------------------------------------------------------------

#define CYGRU_INSTANTIATE(SFX, T)                                                             \
CYGRU_KERNEL void gru_fwd_ra_##SFX(                                                           \
    long long B, long long H, long long bt, const T* gi, const T* gh, const T* bias,          \
    const T* bhn, T* h, T* out, long long out_stride, const long long* perm,                  \
    T* c_r, T* c_z, T* c_n, T* c_ghn, T* c_hp)                                                \
{                                                                                             \
    fwd_ra<T>(B, H, bt, gi, gh, bias, bhn, h, out, out_stride, perm,                          \
              c_r, c_z, c_n, c_ghn, c_hp);                                                    \
}                                                                                             \
CYGRU_KERNEL void gru_fwd_nr1_##SFX(                                                          \
    long long B, long long H, long long bt, const T* gi, T* ghrz, const T* bias,              \
    const T* h, T* rh, const long long* perm, T* c_r, T* c_z)                                 \
{                                                                                             \
    fwd_nr1<T>(B, H, bt, gi, ghrz, bias, h, rh, perm, c_r, c_z);                              \
}                                                                                             \
CYGRU_KERNEL void gru_fwd_nr2_##SFX(                                                          \
    long long B, long long H, long long bt, const T* gi, const T* ghn, const T* rz,           \
    const T* bias, const T* bhn, T* h, T* out, long long out_stride, const long long* perm,   \
    T* c_n, T* c_hp)                                                                          \
{                                                                                             \
    fwd_nr2<T>(B, H, bt, gi, ghn, rz, bias, bhn, h, out, out_stride, perm, c_n, c_hp);        \
}                                                                                             \
CYGRU_KERNEL void gru_bwd_ra_##SFX(                                                           \
    long long B, long long H, long long bt, const T* dout, long long dout_stride,             \
    const long long* perm, const T* c_r, const T* c_z, const T* c_n, const T* c_ghn,          \
    const T* c_hp, T* dh, T* dgi, T* dgh)                                                     \
{                                                                                             \
    bwd_ra<T>(B, H, bt, dout, dout_stride, perm, c_r, c_z, c_n, c_ghn, c_hp, dh, dgi, dgh);   \
}                                                                                             \
CYGRU_KERNEL void gru_bwd_nr1_##SFX(                                                          \
    long long B, long long H, long long bt, const T* dout, long long dout_stride,             \
    const long long* perm, const T* c_z, const T* c_n, const T* c_hp, T* dh, T* dgi,          \
    T* dgh_rz, T* dghn)                                                                       \
{                                                                                             \
    bwd_nr1<T>(B, H, bt, dout, dout_stride, perm, c_z, c_n, c_hp, dh, dgi, dgh_rz, dghn);     \
}                                                                                             \
CYGRU_KERNEL void gru_bwd_nr2_##SFX(                                                          \
    long long B, long long H, long long bt, const T* drh, const long long* perm,              \
    const T* c_r, const T* c_hp, T* dh, T* dgi, T* dgh_rz)                                    \
{                                                                                             \
    bwd_nr2<T>(B, H, bt, drh, perm, c_r, c_hp, dh, dgi, dgh_rz);                              \
}

CYGRU_INSTANTIATE(f32, float)
CYGRU_INSTANTIATE(f64, double)
