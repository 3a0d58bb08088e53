/* The element-wise half of one time step of the fused backend (rnnkit/fused.py), for float and double, and the
 * compiled loops that run a whole sequence of steps, products included.
 *
 * Each kernel is one pass over a (B, H) step: every gate of a row is read once, its activations and the values the
 * next kernel needs are written once, so a step costs one call instead of five to ten PyTorch operators, each of
 * which would read and write the whole step again. A step's matrix product runs either in PyTorch (oneDNN or MKL,
 * one call per step from Python) or, in the seq_* loops below, through MKL's gemm on each thread's own rows.
 *
 * Layout: every pointer is a contiguous row-major (B, k*H) block, gates in torch.nn's row order
 * (LSTM: i, f, g, o; GRU: r, z, n). keep is NULL when every row runs, else keep[b] == 0 for a row whose sequence has
 * ended: its state is carried over unchanged and its gate gradients are zero. A backward kernel's dout (the gradient
 * of the layer's output at its own step) may be NULL; it is added to dh, the part of the state's gradient that came
 * through the next step's product, so hbar = dh + dout is the whole gradient reaching the state. Built by
 * rnnkit/_kernels.py with -fopenmp-simd (glibc's libmvec gives the vector tanh) and, where PyTorch runs on OpenMP,
 * with -fopenmp against PyTorch's own libgomp, so the rows of a step split over the threads PyTorch uses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

__attribute__((simd("notinbranch"))) double tanh(double);

/* sigmoid(x) = (1 + tanh(x/2)) / 2: tanh costs the same at every argument, while libmvec's exp takes a scalar
 * special-case path where it overflows or underflows (|x| > 87 in float), which made a step of saturated LSTM gates ten
 * times slower (a clamp before exp does not help: the compiler moves it after the call).
 * In float, tanh is Eigen's rational approximation (odd degree-13 over even degree-6 polynomial in x, the argument
 * clamped to +-7.905, where it reaches 1): 0.31 against libmvec's 0.46 ns per element on a Zen 4 EPYC, 10% slower
 * on a Xeon (1.1 against 1.0 us for 4,096 floats); absolute error below 2.8e-7 (libmvec's: 1e-7), which
 * tests/test_kernels.py holds it to. Every gate of a forward step goes through it. Doubles keep libmvec's tanh. */
static inline float tanh_float(float x) {
    const float c = 7.90531110763549805f;
    x = x > c ? c : x < -c ? -c : x;
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
}
static inline float sigmoid_float(float x) { return 0.5f + 0.5f * tanh_float(0.5f * x); }
static inline double sigmoid_double(double x) { return 0.5 + 0.5 * tanh(0.5 * x); }
static inline double tanh_double(double x) { return tanh(x); }

#ifdef _OPENMP
#include <omp.h>
static inline int64_t thread_index(void) { return omp_get_thread_num(); }
static inline int64_t max_threads(void) { return omp_get_max_threads(); }
#else
static inline int64_t thread_index(void) { return 0; }
static inline int64_t max_threads(void) { return 1; }
#endif
/* A backward kernel's bias gradient: each thread adds the gate gradients of its rows to its own row of db (NULL: not
 * wanted), a (threads, BIAS_STRIDE(width)) block the caller zeroes and sums over threads at the end. The gradients are
 * in registers when they are written, so the sum costs no second pass over (T, B, width) values; rows are padded to
 * 64 bytes so that no two threads write one cache line. */
#define BIAS_STRIDE(w) (((w) + 15) & ~(int64_t)15)
#define BIAS_ROW(T, db, w) ((db) ? (db) + thread_index() * BIAS_STRIDE(w) : (T *)0)

/* Every kernel works on the rows b0 <= b < b1 of its step: one call per step splits the rows over the threads
 * (py_* below), a whole-sequence loop gives each thread its own rows for every step (seq_* below). */
#define ROWS for (int64_t b = b0; b < b1; b++)
#define SIMD _Pragma("omp simd")
/* A backward kernel's loop over the columns of row b, with du = dout's element (row b, column j); dout's rows are su
 * and its columns sj elements apart (sj = 0 for the broadcast gradient of out.sum()). One loop per layout, so each
 * vectorises. */
#define OVER_DOUT(T, ...) if (!u) { SIMD for (int64_t j = 0; j < H; j++) { const T du = (T)0; __VA_ARGS__ } }        \
    else if (sj == 1) { SIMD for (int64_t j = 0; j < H; j++) { const T du = u[j]; __VA_ARGS__ } }                    \
    else if (sj == 0) { const T u0 = u[0]; SIMD for (int64_t j = 0; j < H; j++) { const T du = u0; __VA_ARGS__ } }   \
    else { SIMD for (int64_t j = 0; j < H; j++) { const T du = u[j * sj]; __VA_ARGS__ } }

/* the thread's bias-gradient row (bias, NULL when not wanted) += the w gate gradients e of the row just written */
#define ADD_BIAS(e, w) if (bias) { SIMD for (int64_t j = 0; j < (w); j++) bias[j] += (e)[j]; }

/* add (when not NULL) = 0 in a running row, hbar = dh + dout where the row has ended: the next product adds to it */
#define CARRY(dh_row) if (a) { if (run) { SIMD for (int64_t j = 0; j < H; j++) a[j] = 0; }                            \
                                else { OVER_DOUT(__typeof__(*a), a[j] = dh_row[j] + du;) } }

/* one column j of an LSTM step from its four pre-activations (the rows' pointers as in lstm_fwd); the gates are
 * kept for backward only where SAVE is true (a literal, so each loop compiles without the test) */
#define LSTM_FWD(T, SAVE, pi, pf, pg, po)                                                                            \
    T i = sigmoid_##T(pi), f = sigmoid_##T(pf), g = tanh_##T(pg), o = sigmoid_##T(po);                              \
    if (SAVE) { q[j] = i; q[H + j] = f; q[2 * H + j] = g; q[3 * H + j] = o; }                                        \
    T cn = f * cq[j] + i * g;                                                                                        \
    T hn = o * tanh_##T(cn);                                                                                         \
    cr[j] = run ? cn : cq[j];                                                                                        \
    hr[j] = run ? hn : hq[j];

/* one column j of a GRU step (the rows' pointers as in gru_fwd); (r, z, hW_n + b_hn) and n are kept for backward
 * only where SAVE is true (a literal) */
#define GRU_FWD(T, SAVE)                                                                                             \
    T r = sigmoid_##T(q[j] + p[j]), z = sigmoid_##T(q[H + j] + p[H + j]), hn = p[2 * H + j] + bn[j];                 \
    T n = tanh_##T(q[2 * H + j] + r * hn);                                                                           \
    if (SAVE) { q[j] = r; q[H + j] = z; q[2 * H + j] = hn; nr[j] = n; }                                              \
    hr[j] = run ? n + z * (hq[j] - n) : hq[j];

#define DEFINE_KERNELS(T)                                                                                            \
/* RNN forward: h = act(pre + x), x (the step's input projection) left out when NULL; x may be h itself */          \
static void rnn_fwd_##T(int64_t b0, int64_t b1, int64_t H,                                                           \
                        int32_t relu, const T *pre, const T *x, T *h, const T *hp, const uint8_t *keep) {            \
    ROWS {                                                                                                           \
        const T *p = pre + b * H, *q = hp + b * H, *xr = x ? x + b * H : 0;                                          \
        T *o = h + b * H;                                                                                            \
        if (keep && !keep[b]) { SIMD for (int64_t j = 0; j < H; j++) o[j] = q[j]; }                                  \
        else if (xr) {                                                                                               \
            if (relu) { SIMD for (int64_t j = 0; j < H; j++) { T v = p[j] + xr[j]; o[j] = v < 0 ? (T)0 : v; } }      \
            else { SIMD for (int64_t j = 0; j < H; j++) o[j] = tanh_##T(p[j] + xr[j]); }                             \
        }                                                                                                            \
        else if (relu) { SIMD for (int64_t j = 0; j < H; j++) o[j] = p[j] < 0 ? (T)0 : p[j]; }                       \
        else { SIMD for (int64_t j = 0; j < H; j++) o[j] = tanh_##T(p[j]); }                                         \
    }                                                                                                                \
}                                                                                                                    \
/* RNN backward: d = hbar f'(pre) from h, hbar = dh + dout;  add (may be NULL when every row runs) = 0, or hbar      \
 * where the row has ended: the next product adds into it */                                                         \
static void rnn_bwd_##T(int64_t b0, int64_t b1, int64_t H,                                                           \
                        int32_t relu, const T *h, const T *dh, T *d, const T *dout,                                  \
                        int64_t su, int64_t sj, T *add, const uint8_t *keep, T *db) {                                \
    T *bias = BIAS_ROW(T, db, H);                                                                                    \
    ROWS {                                                                                                           \
        const T *s = h + b * H, *g = dh + b * H, *u = dout ? dout + b * su : 0;                                      \
        T *e = d + b * H, *a = add ? add + b * H : 0;                                                                \
        int run = !keep || keep[b];                                                                                  \
        OVER_DOUT(T,                                                                                                 \
            T slope = relu ? (T)(s[j] > 0) : (T)1 - s[j] * s[j], hbar = g[j] + du;                                   \
            e[j] = run ? hbar * slope : (T)0;                                                                        \
        )                                                                                                            \
        ADD_BIAS(e, H)                                                                                               \
        CARRY(g)                                                                                                     \
    }                                                                                                                \
}                                                                                                                    \
/* LSTM forward: with pre-activations pre + x (x, the step's input projection, left out when NULL; it may be        \
 * gates itself): gates = (sig i, sig f, tanh g, sig o), kept for backward unless gates is NULL (inference);         \
 * c = f c_prev + i g;  h = o tanh(c) */                                                                             \
static void lstm_fwd_##T(int64_t b0, int64_t b1, int64_t H,                                                          \
                         const T *pre, const T *x, T *gates, const T *cp, T *c, const T *hp, T *h,                   \
                         const uint8_t *keep) {                                                                      \
    ROWS {                                                                                                           \
        const T *p = pre + b * 4 * H, *cq = cp + b * H, *hq = hp + b * H, *xr = x ? x + b * 4 * H : 0;               \
        T *q = gates ? gates + b * 4 * H : 0, *cr = c + b * H, *hr = h + b * H;                                      \
        int run = !keep || keep[b];                                                                                  \
        if (xr && q) { SIMD for (int64_t j = 0; j < H; j++) { LSTM_FWD(T, 1, p[j] + xr[j], p[H + j] + xr[H + j],     \
                                                                       p[2 * H + j] + xr[2 * H + j],                 \
                                                                       p[3 * H + j] + xr[3 * H + j]) } }             \
        else if (xr) { SIMD for (int64_t j = 0; j < H; j++) { LSTM_FWD(T, 0, p[j] + xr[j], p[H + j] + xr[H + j],     \
                                                                       p[2 * H + j] + xr[2 * H + j],                 \
                                                                       p[3 * H + j] + xr[3 * H + j]) } }             \
        else if (q) { SIMD for (int64_t j = 0; j < H; j++) { LSTM_FWD(T, 1, p[j], p[H + j], p[2 * H + j],            \
                                                                      p[3 * H + j]) } }                              \
        else { SIMD for (int64_t j = 0; j < H; j++) { LSTM_FWD(T, 0, p[j], p[H + j], p[2 * H + j], p[3 * H + j]) } } \
    }                                                                                                                \
}                                                                                                                    \
/* LSTM backward, dgates = the gradients of the pre-activations of gates (i, f, g, o):                               \
 * cbar += hbar o (1 - tanh^2 c);  d_o = hbar tanh(c) o(1-o);  d_i = cbar g i(1-i);  d_f = cbar c_prev f(1-f);       \
 * d_g = cbar i (1-g^2);  cbar_prev = cbar f (carried unchanged where the row has ended);  hbar = dh + dout and      \
 * add as for the RNN */                                                                                             \
static void lstm_bwd_##T(int64_t b0, int64_t b1, int64_t H,                                                          \
                         const T *gates, T *dgates, const T *cp, const T *c, const T *dh, T *dc,                     \
                         const T *dout, int64_t su, int64_t sj, T *add, const uint8_t *keep, T *db) {                \
    T *bias = BIAS_ROW(T, db, 4 * H);                                                                                \
    ROWS {                                                                                                           \
        const T *cq = cp + b * H, *cr = c + b * H, *g_ = dh + b * H, *u = dout ? dout + b * su : 0;                  \
        const T *q = gates + b * 4 * H;                                                                              \
        T *e = dgates + b * 4 * H, *dcr = dc + b * H, *a = add ? add + b * H : 0;                                    \
        int run = !keep || keep[b];                                                                                  \
        OVER_DOUT(T,                                                                                                 \
            T i = q[j], f = q[H + j], g = q[2 * H + j], o = q[3 * H + j], hbar = g_[j] + du;                         \
            T tc = tanh_##T(cr[j]);                                                                                  \
            T cbar = dcr[j] + hbar * o * ((T)1 - tc * tc);                                                           \
            e[j] = run ? cbar * g * (i - i * i) : (T)0;                                                              \
            e[H + j] = run ? cbar * cq[j] * (f - f * f) : (T)0;                                                      \
            e[2 * H + j] = run ? cbar * i * ((T)1 - g * g) : (T)0;                                                   \
            e[3 * H + j] = run ? hbar * tc * (o - o * o) : (T)0;                                                     \
            dcr[j] = run ? cbar * f : dcr[j];                                                                        \
        )                                                                                                            \
        ADD_BIAS(e, 4 * H)                                                                                           \
        CARRY(g_)                                                                                                    \
    }                                                                                                                \
}                                                                                                                    \
/* GRU (reset after the product) forward. hW = h_prev W_hh^T (the step's product), bn = b_hn, X = the step's input   \
 * projections plus the additive biases (x_r + b_ir + b_hr, x_z + b_iz + b_hz, x_n + b_in), overwritten by           \
 * (r, z, hW_n + b_hn) for backward, with n in n_out; where n_out is NULL (inference) neither is written:            \
 * r = sig(X_r + hW_r);  z = sig(X_z + hW_z);  n = tanh(X_n + r (hW_n + b_hn));  h = n + z (h_prev - n) */           \
static void gru_fwd_##T(int64_t b0, int64_t b1, int64_t H,                                                           \
                        const T *hW, const T *bn, T *X, T *n_out, const T *hp, T *h,                                 \
                        const uint8_t *keep) {                                                                       \
    ROWS {                                                                                                           \
        const T *p = hW + b * 3 * H, *hq = hp + b * H;                                                               \
        T *q = X + b * 3 * H, *nr = n_out ? n_out + b * H : 0, *hr = h + b * H;                                      \
        int run = !keep || keep[b];                                                                                  \
        if (nr) { SIMD for (int64_t j = 0; j < H; j++) { GRU_FWD(T, 1) } }                                           \
        else { SIMD for (int64_t j = 0; j < H; j++) { GRU_FWD(T, 0) } }                                              \
    }                                                                                                                \
}                                                                                                                    \
/* GRU (reset after) backward, from X = (r, z, hW_n + b_hn) and n: the gradients of the hidden side's pre-activations \
 * dP = (d_r, d_z, d_hn), in W_hh's row order, and d_n, the input side's n row (its r, z rows are d_r, d_z); row b of \
 * each is written at dP + b sp and dn + b sn, so they may go over X and n themselves (sp = 3H, sn = H) or into one  \
 * (B, 4H) block (sp = sn = 4H, dn = dP + 3H).                                                                       \
 * d_n = hbar (1-z)(1-n^2);  d_hn = d_n r;  d_r = d_n hW_n r(1-r);  d_z = hbar (h_prev - n) z(1-z);                  \
 * add = hbar z  (all of hbar where the row has ended), hbar = dh + dout */                                          \
static void gru_bwd_##T(int64_t b0, int64_t b1, int64_t H,                                                           \
                        const T *X, const T *n_, T *dP, int64_t sp, T *dn_, int64_t sn,                              \
                        const T *hp, const T *dh, const T *dout, int64_t su, int64_t sj, T *add,                     \
                        const uint8_t *keep, T *db) {                                                                \
    T *bias = BIAS_ROW(T, db, 4 * H);                                                                                \
    ROWS {                                                                                                           \
        const T *hq = hp + b * H, *g_ = dh + b * H, *u = dout ? dout + b * su : 0;                                   \
        const T *q = X + b * 3 * H, *nr = n_ + b * H;                                                                \
        T *e = dP + b * sp, *dnr = dn_ + b * sn, *a = add + b * H;                                                   \
        int run = !keep || keep[b];                                                                                  \
        OVER_DOUT(T,                                                                                                 \
            T r = q[j], z = q[H + j], hn = q[2 * H + j], n = nr[j], hbar = g_[j] + du;                               \
            T dn = hbar * ((T)1 - z) * ((T)1 - n * n);                                                               \
            e[j] = run ? dn * hn * (r - r * r) : (T)0;                                                               \
            e[H + j] = run ? hbar * (hq[j] - n) * (z - z * z) : (T)0;                                                \
            e[2 * H + j] = run ? dn * r : (T)0;                                                                      \
            dnr[j] = run ? dn : (T)0;                                                                                \
            a[j] = run ? hbar * z : hbar;                                                                            \
        )                                                                                                            \
        ADD_BIAS(e, 3 * H)                                                                                           \
        if (bias) { T *bn_ = bias + 3 * H; SIMD for (int64_t j = 0; j < H; j++) bn_[j] += dnr[j]; }                  \
    }                                                                                                                \
}                                                                                                                    \
/* GRU (reset before the product, Cho et al. 2014), forward in two halves around the second product:                 \
 * gates: RZ = sig(pre_rz), RH = r h_prev;   out: n = tanh(pre_n), h = n + z (h_prev - n) */                         \
static void grurb_gates_##T(int64_t b0, int64_t b1, int64_t H,                                                       \
                            const T *pre, T *RZ, const T *hp, T *RH) {                                               \
    ROWS {                                                                                                           \
        const T *p = pre + b * 2 * H, *hq = hp + b * H;                                                              \
        T *q = RZ + b * 2 * H, *rh = RH + b * H;                                                                     \
        SIMD for (int64_t j = 0; j < H; j++) {                                                                       \
            T r = sigmoid_##T(p[j]);                                                                                 \
            q[j] = r; q[H + j] = sigmoid_##T(p[H + j]); rh[j] = r * hq[j];                                           \
        }                                                                                                            \
    }                                                                                                                \
}                                                                                                                    \
static void grurb_out_##T(int64_t b0, int64_t b1, int64_t H,                                                         \
                          const T *pre, T *N, const T *RZ, const T *hp, T *h,                                        \
                         const uint8_t *keep) {                                                                      \
    ROWS {                                                                                                           \
        const T *p = pre + b * H, *z = RZ + b * 2 * H + H, *hq = hp + b * H;                                         \
        T *nr = N + b * H, *hr = h + b * H;                                                                          \
        int run = !keep || keep[b];                                                                                  \
        SIMD for (int64_t j = 0; j < H; j++) {                                                                       \
            T n = tanh_##T(p[j]);                                                                                    \
            nr[j] = n;                                                                                               \
            hr[j] = run ? n + z[j] * (hq[j] - n) : hq[j];                                                            \
        }                                                                                                            \
    }                                                                                                                \
}                                                                                                                    \
/* GRU (reset before) backward, first half (before d_rh = d_n W_hn), from RZ = (r, z) and N = n: z's slot of dRZ     \
 * gets d_z, dN gets d_n,                                                                                            \
 * add = hbar z (all of hbar where the row has ended), hbar = dh + dout; r's slot is left for the second half */     \
static void grurb_bwd1_##T(int64_t b0, int64_t b1, int64_t H,                                                        \
                           const T *RZ, const T *N, T *dRZ, T *dN, const T *hp, const T *dh,                         \
                           const T *dout, int64_t su, int64_t sj, T *add, const uint8_t *keep) {                     \
    ROWS {                                                                                                           \
        const T *hq = hp + b * H, *g_ = dh + b * H, *u = dout ? dout + b * su : 0;                                   \
        const T *zq = RZ + b * 2 * H + H, *nr = N + b * H;                                                           \
        T *dz = dRZ + b * 2 * H + H, *dnr = dN + b * H, *a = add + b * H;                                            \
        int run = !keep || keep[b];                                                                                  \
        OVER_DOUT(T,                                                                                                 \
            T z = zq[j], n = nr[j], hbar = g_[j] + du;                                                               \
            dz[j] = run ? hbar * (hq[j] - n) * (z - z * z) : (T)0;                                                   \
            dnr[j] = run ? hbar * ((T)1 - z) * ((T)1 - n * n) : (T)0;                                                \
            a[j] = run ? hbar * z : hbar;                                                                            \
        )                                                                                                            \
    }                                                                                                                \
}                                                                                                                    \
/* second half, given drh = d_n W_hn (the gradient of r h_prev): r's slot of dRZ gets d_r = drh h_prev r(1-r),       \
 * add += drh r */                                                                                                   \
static void grurb_bwd2_##T(int64_t b0, int64_t b1, int64_t H,                                                        \
                           const T *RZ, T *dRZ, const T *hp, const T *drh, T *add,                                   \
                    const uint8_t *keep) {                                                                           \
    ROWS {                                                                                                           \
        const T *hq = hp + b * H, *d = drh + b * H;                                                                  \
        const T *rq = RZ + b * 2 * H;                                                                                \
        T *dr = dRZ + b * 2 * H, *a = add + b * H;                                                                   \
        int run = !keep || keep[b];                                                                                  \
        SIMD for (int64_t j = 0; j < H; j++) {                                                                       \
            T r = rq[j];                                                                                             \
            dr[j] = run ? d[j] * hq[j] * (r - r * r) : (T)0;                                                         \
            a[j] += run ? d[j] * r : (T)0;                                                                           \
        }                                                                                                            \
    }                                                                                                                \
}

DEFINE_KERNELS(float)
DEFINE_KERNELS(double)

/* ---- The matrix product of a step, for the whole-sequence loops: a thread's rows r0 <= b < r1 of
 * C (B, n) = beta C + A (B, k) op(W), with op(W) = W^T for W (n, k) (trans) or W for W (k, n), row-major, through the
 * BLAS PyTorch itself links (MKL's Fortran sgemm_/dgemm_, whose address rnnkit/_kernels.py looks up; called inside a
 * parallel region it runs on the calling thread). In the BLAS's column-major terms this is C^T = op(W)^T A^T. */
typedef void gemm_float_fn(const char *, const char *, const int *, const int *, const int *, const float *,
                           const float *, const int *, const float *, const int *, const float *, float *, const int *);
typedef void gemm_double_fn(const char *, const char *, const int *, const int *, const int *, const double *,
                            const double *, const int *, const double *, const int *, const double *, double *,
                            const int *);
/* C (+)= A op(W), or with a bias (not NULL, beta 0) C = bias + A op(W): each row of C first takes the bias */
struct gemm { void *fn; const void *w; int trans, n, k, ldw, lda, ldc, beta; const void *bias; };
#define DEFINE_GEMM(T)                                                                                               \
static inline void gemm_rows_##T(const struct gemm *g, int64_t r0, int64_t r1, const T *a, T *c) {                  \
    const int m = (int)(r1 - r0);                                                                                    \
    const T one = 1;                                                                                                 \
    T beta = (T)g->beta;                                                                                             \
    if (m <= 0) return;                                                                                              \
    if (g->bias) {                                                                                                   \
        const T *bias = (const T *)g->bias;                                                                          \
        for (int64_t r = r0; r < r1; r++) {                                                                          \
            T *row = c + r * g->ldc;                                                                                 \
            SIMD for (int j = 0; j < g->n; j++) row[j] = bias[j];                                                    \
        }                                                                                                            \
        beta = 1;                                                                                                    \
    }                                                                                                                \
    ((gemm_##T##_fn *)g->fn)(g->trans ? "T" : "N", "N", &g->n, &m, &g->k, &one, (const T *)g->w, &g->ldw,             \
                             a + r0 * g->lda, &g->lda, &beta, c + r0 * g->ldc, &g->ldc);                             \
}
DEFINE_GEMM(float)
DEFINE_GEMM(double)

/* ---- Python bindings: each kernel as a METH_FASTCALL function of int arguments (addresses, sizes; None = NULL).
 * ctypes would cost about a microsecond a call, as much as a kernel at B=64, H=128. */
static int read_ints(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, int64_t *v) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "expected %zd arguments, got %zd", want, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        v[i] = args[i] == Py_None ? 0 : PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}
#define GEMM_INTS 10  /* a product's arguments: fn, w, trans, n, k, ldw, lda, ldc, beta, bias */
static int read_gemm(const int64_t *v, struct gemm *g) {
    *g = (struct gemm){(void *)(intptr_t)v[0], (const void *)(intptr_t)v[1], (int)v[2], (int)v[3], (int)v[4],
                       (int)v[5], (int)v[6], (int)v[7], (int)v[8], (const void *)(intptr_t)v[9]};
    for (int i = 3; i < 9; i++)
        if (v[i] < 0 || v[i] > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "matrix size out of the BLAS's int range");
            return -1;
        }
    if (!g->fn || !g->w) {
        PyErr_SetString(PyExc_ValueError, "no BLAS function or weight");
        return -1;
    }
    return 0;
}
#define P(i) ((void *)(intptr_t)v[i])
/* this thread's rows of B: the same split in every step, so a thread only ever reads rows it wrote itself */
#ifdef _OPENMP
#define THREAD_ROWS(B) const int64_t r0 = (B) * omp_get_thread_num() / omp_get_num_threads(),                      \
    r1 = (B) * (omp_get_thread_num() + 1) / omp_get_num_threads();
#else
#define THREAD_ROWS(B) const int64_t r0 = 0, r1 = (B);
#endif
/* elements of a (B, H) step below which one thread is faster than waking the others (settable for measurements) */
static int64_t rnnkit_min_parallel = 4096;

/* py_NAME(B, H, args...): one step, its rows split over the threads */
#define WRAP(name, n, ...)                                                                                           \
    static PyObject *py_##name(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {                            \
        int64_t v[16];                                                                                               \
        (void)self;                                                                                                  \
        if (read_ints(args, nargs, n, v) < 0) return NULL;                                                           \
        Py_BEGIN_ALLOW_THREADS                                                                                       \
        const int64_t B = v[0], H = v[1];                                                                            \
        const int parallel = B * H >= rnnkit_min_parallel;                                                           \
        (void)parallel;                                                                                              \
        _Pragma("omp parallel if (parallel)") { THREAD_ROWS(B) name(r0, r1, H, __VA_ARGS__); }                       \
        Py_END_ALLOW_THREADS                                                                                         \
        Py_RETURN_NONE;                                                                                              \
    }
/* A run's arguments, step by step, without a table of steps: each argument of the one-step call (and the product's A
 * and C after them) is a column (kind, a, b, c, e) whose value at step s is c where s == e, else a (kind 0: the same
 * every step), a + s b (kind 1: a step buffer walked in time), or a for even s and b for odd s (kind 2: two buffers
 * used in turn). */
struct column { int64_t kind, a, b, c, e; };
static inline void step_args(const struct column *col, int64_t n, int64_t s, int64_t *v) {
    for (int64_t j = 0; j < n; j++) {
        const struct column *k = col + j;
        v[j] = s == k->e ? k->c : k->kind == 0 ? k->a : k->kind == 1 ? k->a + s * k->b : (s & 1) ? k->b : k->a;
    }
}
/* py_seq_NAME(columns, steps, product_first, gemm..., input gemm...): a whole run of steps in one call, the
 * arguments of step s those of py_NAME, then the addresses of its product's A and C, from the (n + 2) columns. Each
 * thread takes its rows of every step: the product of its rows (before the kernel in forward, after it in backward),
 * then the kernel on them. Rows never mix within a step, so the threads meet only at the end. A forward may also
 * name an input product (its fn not 0) with two more columns, x_t and the buffer it fills: the step's input
 * projection bias + x_t W_ih^T is then made for the thread's rows first, while they are in cache, instead of by one
 * GEMM over the whole sequence that the steps would read back from memory. */
#define SEQ(T, base, n, ...)                                                                                         \
    static PyObject *py_seq_##base##_##T(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {                  \
        int64_t a[3 + 2 * GEMM_INTS];                                                                                \
        struct gemm g, gx;                                                                                           \
        (void)self;                                                                                                  \
        if (read_ints(args, nargs, 3 + 2 * GEMM_INTS, a) < 0 || read_gemm(a + 3, &g) < 0) return NULL;             \
        const int inputs = a[3 + GEMM_INTS] != 0;                                                                    \
        if (inputs && read_gemm(a + 3 + GEMM_INTS, &gx) < 0) return NULL;                                          \
        const struct column *col = (const struct column *)(intptr_t)a[0];                                            \
        const int64_t steps = a[1], first = a[2], cols = n + 2 + 2 * inputs;                                        \
        if (steps <= 0) Py_RETURN_NONE;                                                                              \
        Py_BEGIN_ALLOW_THREADS                                                                                       \
        int64_t v0[n + 4];                                                                                           \
        step_args(col, cols, 0, v0);                                                                                 \
        const int64_t B = v0[0], H = v0[1];                                                                          \
        const int parallel = B > 1;                                                                                  \
        (void)parallel;                                                                                              \
        _Pragma("omp parallel if (parallel)") {                                                                      \
            THREAD_ROWS(B)                                                                                           \
            int64_t v[n + 4];                                                                                        \
            for (int64_t s = 0; s < steps; s++) {                                                                    \
                step_args(col, cols, s, v);                                                                          \
                if (inputs) gemm_rows_##T(&gx, r0, r1, (const T *)P(n + 2), (T *)P(n + 3));                         \
                if (first) gemm_rows_##T(&g, r0, r1, (const T *)P(n), (T *)P(n + 1));                               \
                base##_##T(r0, r1, H, __VA_ARGS__);                                                                  \
                if (!first) gemm_rows_##T(&g, r0, r1, (const T *)P(n), (T *)P(n + 1));                              \
            }                                                                                                        \
        }                                                                                                            \
        Py_END_ALLOW_THREADS                                                                                         \
        Py_RETURN_NONE;                                                                                              \
    }
#define BOTH(T, name, n, ...) WRAP(name##_##T, n, __VA_ARGS__) SEQ(T, name, n, __VA_ARGS__)
#define WRAP_ALL(T)                                                                                                  \
    BOTH(T, rnn_fwd, 8, (int32_t)v[2], P(3), P(4), P(5), P(6), P(7))                                                 \
    BOTH(T, rnn_bwd, 12, (int32_t)v[2], P(3), P(4), P(5), P(6), v[7], v[8], P(9), P(10), P(11))                      \
    BOTH(T, lstm_fwd, 10, P(2), P(3), P(4), P(5), P(6), P(7), P(8), P(9))                                            \
    BOTH(T, lstm_bwd, 14, P(2), P(3), P(4), P(5), P(6), P(7), P(8), v[9], v[10], P(11), P(12), P(13))                \
    BOTH(T, gru_fwd, 9, P(2), P(3), P(4), P(5), P(6), P(7), P(8))                                                    \
    BOTH(T, gru_bwd, 16, P(2), P(3), P(4), v[5], P(6), v[7], P(8), P(9), P(10), v[11], v[12], P(13), P(14), P(15))   \
    WRAP(grurb_gates_##T, 6, P(2), P(3), P(4), P(5))                                                                 \
    WRAP(grurb_out_##T, 8, P(2), P(3), P(4), P(5), P(6), P(7))                                                       \
    WRAP(grurb_bwd1_##T, 13, P(2), P(3), P(4), P(5), P(6), P(7), P(8), v[9], v[10], P(11), P(12))                    \
    WRAP(grurb_bwd2_##T, 8, P(2), P(3), P(4), P(5), P(6), P(7))                                                      \
    /* gemm_steps_T(steps, B, a, a_step, c, c_step, gemm...): the products alone, as the loops run them (the bench's \
     * floor and the measured choice of kernel); a_step and c_step in elements */                                    \
    static PyObject *py_gemm_steps_##T(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {                    \
        int64_t a[6 + GEMM_INTS];                                                                                    \
        struct gemm g;                                                                                               \
        (void)self;                                                                                                  \
        if (read_ints(args, nargs, 6 + GEMM_INTS, a) < 0 || read_gemm(a + 6, &g) < 0) return NULL;                   \
        const int64_t steps = a[0], B = a[1], as = a[3], cs = a[5];                                                  \
        const T *A = (const T *)(intptr_t)a[2];                                                                      \
        T *C = (T *)(intptr_t)a[4];                                                                                  \
        Py_BEGIN_ALLOW_THREADS                                                                                       \
        const int parallel = B > 1;                                                                                  \
        (void)parallel;                                                                                              \
        _Pragma("omp parallel if (parallel)") {                                                                      \
            THREAD_ROWS(B)                                                                                           \
            for (int64_t s = 0; s < steps; s++) gemm_rows_##T(&g, r0, r1, A + s * as, C + s * cs);                   \
        }                                                                                                            \
        Py_END_ALLOW_THREADS                                                                                         \
        Py_RETURN_NONE;                                                                                              \
    }
WRAP_ALL(float)
WRAP_ALL(double)

static PyObject *py_set_min_parallel(PyObject *self, PyObject *arg) {
    (void)self;
    int64_t v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    int64_t old = rnnkit_min_parallel;
    rnnkit_min_parallel = v;
    return PyLong_FromLongLong(old);
}

static PyObject *py_max_threads(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyLong_FromLongLong(max_threads());
}

#define ENTRY(name) {#name, (PyCFunction)(void (*)(void))py_##name, METH_FASTCALL, NULL}
#define ENTRIES(T) ENTRY(rnn_fwd_##T), ENTRY(rnn_bwd_##T), ENTRY(lstm_fwd_##T), ENTRY(lstm_bwd_##T),                 \
    ENTRY(gru_fwd_##T), ENTRY(gru_bwd_##T), ENTRY(grurb_gates_##T), ENTRY(grurb_out_##T), ENTRY(grurb_bwd1_##T),     \
    ENTRY(grurb_bwd2_##T), ENTRY(seq_rnn_fwd_##T), ENTRY(seq_rnn_bwd_##T), ENTRY(seq_lstm_fwd_##T),                  \
    ENTRY(seq_lstm_bwd_##T), ENTRY(seq_gru_fwd_##T), ENTRY(seq_gru_bwd_##T), ENTRY(gemm_steps_##T)
static PyMethodDef methods[] = {
    ENTRIES(float), ENTRIES(double),
    {"set_min_parallel", py_set_min_parallel, METH_O, "smallest B*H split over threads"},
    {"max_threads", py_max_threads, METH_NOARGS, "threads of this thread's next parallel region, at most"},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rnnkit_kernels", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__rnnkit_kernels(void) { return PyModule_Create(&module); }
