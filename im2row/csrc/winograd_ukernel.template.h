/* Winograd tile transforms of F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, 2016), over the
 * contiguous channels of each pixel, a vector of channels at a time. Included by each ISA
 * file after gemm_ukernel.template.h, with its vector macros (T, V, VN, V_LOAD, V_LOAD_N,
 * V_STORE, V_STORE_N, V_BCAST, V_ZERO, V_MAX) and V_ADD, V_SUB, V_MUL defined; needs
 * WINO_IN_NAME, WINO_OUT_NAME and WINO_W_NAME, and undefines them and V_ADD, V_SUB, V_MUL.
 *
 * With alpha = m + 2 (m the output tile), a tile d of alpha x alpha input pixels goes to
 * V = B^T d B, the GEMMs give M = U (.) V summed over channels (U = G g G^T, the weights,
 * winograd.c), and the m x m outputs are A^T M A. Evaluation points (the rows of B^T):
 *   F(2x2, 3x3): 0, 1, -1, infinity
 *     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]      A^T = [1 1 1 0; 0 1 -1 -1]
 *   F(4x4, 3x3): 0, 1, -1, 2, -2, infinity
 *     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
 *            0 4 0 -5 0 1]
 *     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * Each 2-D transform is a 1-D transform of the rows into a small buffer in L1, then of its
 * columns. */

/* A vector of n <= VN channels at p (masked past n). */
#define WINO_LOAD(p, n) ((n) == VN ? V_LOAD(p) : V_LOAD_N(p, n))
#define WINO_STORE(p, v, n)                                                                  \
    do {                                                                                     \
        if ((n) == VN)                                                                       \
            V_STORE(p, v);                                                                   \
        else                                                                                 \
            V_STORE_N(p, v, n);                                                              \
    } while (0)

/* 1-D input transforms: e[k] = (B^T d)[k], d and e arrays of V. */
#define WINO_BT4(d, e, c2, c4, c5)                                                           \
    do {                                                                                     \
        V s13 = V_ADD(d[1], d[2]), t13 = V_SUB(d[1], d[2]);                                  \
        V p4 = V_ADD(d[4], d[3]), q4 = V_SUB(d[4], d[3]), r4 = V_SUB(d[4], d[2]);            \
        V u = V_MUL(c2, V_SUB(d[3], d[1]));                                                  \
        e[0] = V_ADD(V_SUB(V_MUL(c4, d[0]), V_MUL(c5, d[2])), d[4]);                         \
        e[1] = V_SUB(p4, V_MUL(c4, s13));                                                    \
        e[2] = V_ADD(q4, V_MUL(c4, t13));                                                    \
        e[3] = V_ADD(r4, u);                                                                 \
        e[4] = V_SUB(r4, u);                                                                 \
        e[5] = V_ADD(V_SUB(V_MUL(c4, d[1]), V_MUL(c5, d[3])), d[5]);                         \
    } while (0)

#define WINO_BT2(d, e)                                                                       \
    do {                                                                                     \
        e[0] = V_SUB(d[0], d[2]);                                                            \
        e[1] = V_ADD(d[1], d[2]);                                                            \
        e[2] = V_SUB(d[2], d[1]);                                                            \
        e[3] = V_SUB(d[1], d[3]);                                                            \
    } while (0)

/* 1-D output transforms: o[r] = (A^T s)[r]. */
#define WINO_AT4(s, o, c2, c4, c8)                                                           \
    do {                                                                                     \
        V a12 = V_ADD(s[1], s[2]), b12 = V_SUB(s[1], s[2]);                                  \
        V a34 = V_ADD(s[3], s[4]), b34 = V_SUB(s[3], s[4]);                                  \
        o[0] = V_ADD(V_ADD(s[0], a12), a34);                                                 \
        o[1] = V_ADD(b12, V_MUL(c2, b34));                                                   \
        o[2] = V_ADD(a12, V_MUL(c4, a34));                                                   \
        o[3] = V_ADD(V_ADD(b12, V_MUL(c8, b34)), s[5]);                                      \
    } while (0)

#define WINO_AT2(s, o)                                                                       \
    do {                                                                                     \
        o[0] = V_ADD(V_ADD(s[0], s[1]), s[2]);                                               \
        o[1] = V_SUB(V_SUB(s[1], s[2]), s[3]);                                               \
    } while (0)

#define WINO_CAT_(a, b) a##_##b
#define WINO_CAT(a, b) WINO_CAT_(a, b)
#define WINO_INLINE static inline __attribute__((always_inline))

/* v[p*vstride + c] = (B^T d B)[p] for channels c < n, d's pixel (i, j) at px[i*alpha + j].
 * (tile is a constant in each call of the body: the loops unroll, the tile stays in
 * registers.) */
WINO_INLINE void WINO_CAT(WINO_IN_NAME, body)(const int tile, size_t n, const T *const *px,
                                              T *restrict v, size_t vstride)
{
    const T k2 = 2, k4 = 4, k5 = 5;
    const V c2 = V_BCAST(&k2), c4 = V_BCAST(&k4), c5 = V_BCAST(&k5);
    (void)c2;
    V t[36];   /* row-transformed tile: t[i*alpha + k] */
    const size_t a = (size_t)tile + 2;
    for (size_t c = 0; c < n; c += VN) {
        const size_t cn = n - c < (size_t)VN ? n - c : (size_t)VN;
        V d[6], e[6];
        for (size_t i = 0; i < a; i++) {
            for (size_t j = 0; j < a; j++)
                d[j] = WINO_LOAD(px[i * a + j] + c, cn);
            if (tile == 4)
                WINO_BT4(d, e, c2, c4, c5);
            else
                WINO_BT2(d, e);
            for (size_t k = 0; k < a; k++)
                t[i * a + k] = e[k];
        }
        for (size_t k = 0; k < a; k++) {
            for (size_t i = 0; i < a; i++)
                d[i] = t[i * a + k];
            if (tile == 4)
                WINO_BT4(d, e, c2, c4, c5);
            else
                WINO_BT2(d, e);
            for (size_t l = 0; l < a; l++) {   /* position (l, k) */
                WINO_STORE(v + (l * a + k) * vstride + c, e[l], cn);
            }
        }
    }
}

void WINO_IN_NAME(int tile, size_t n, const T *const *px, T *restrict v, size_t vstride)
{
    if (tile == 4)
        WINO_CAT(WINO_IN_NAME, body)(4, n, px, v, vstride);
    else
        WINO_CAT(WINO_IN_NAME, body)(2, n, px, v, vstride);
}

/* y pixel (i, j) of the tile at py[i*m + j], channels c < n: (A^T M A)[i][j] (+ bias[c]),
 * max(., 0) with relu (as the GEMM epilogue: V_MAX); M's position p at mm + p*mstride. */
WINO_INLINE void WINO_CAT(WINO_OUT_NAME, body)(const int tile, size_t n, const T *mm,
                                               size_t mstride, const T *bias, int relu,
                                               T *const *py)
{
    const T k2 = 2, k4 = 4, k8 = 8, zero = 0;
    const V c2 = V_BCAST(&k2), c4 = V_BCAST(&k4), c8 = V_BCAST(&k8), vz = V_BCAST(&zero);
    (void)c2; (void)c4; (void)c8;
    V t[24];   /* column-transformed: t[r*alpha + k], r < m */
    const size_t a = (size_t)tile + 2, m = (size_t)tile;
    for (size_t c = 0; c < n; c += VN) {
        const size_t cn = n - c < (size_t)VN ? n - c : (size_t)VN;
        V s[6], o[4];
        for (size_t k = 0; k < a; k++) {   /* A^T down column k of M */
            for (size_t i = 0; i < a; i++) {
                const T *src = mm + (i * a + k) * mstride + c;
                s[i] = WINO_LOAD(src, cn);
            }
            if (tile == 4)
                WINO_AT4(s, o, c2, c4, c8);
            else
                WINO_AT2(s, o);
            for (size_t r = 0; r < m; r++)
                t[r * a + k] = o[r];
        }
        V b = vz;
        if (bias)
            b = WINO_LOAD(bias + c, cn);
        for (size_t r = 0; r < m; r++) {   /* then along row r */
            for (size_t k = 0; k < a; k++)
                s[k] = t[r * a + k];
            if (tile == 4)
                WINO_AT4(s, o, c2, c4, c8);
            else
                WINO_AT2(s, o);
            for (size_t q = 0; q < m; q++) {
                V val = V_ADD(o[q], b);
                if (relu)
                    val = V_MAX(vz, val);
                WINO_STORE(py[r * m + q] + c, val, cn);
            }
        }
    }
}

void WINO_OUT_NAME(int tile, size_t n, const T *mm, size_t mstride, const T *bias, int relu,
                   T *const *py)
{
    if (tile == 4)
        WINO_CAT(WINO_OUT_NAME, body)(4, n, mm, mstride, bias, relu, py);
    else
        WINO_CAT(WINO_OUT_NAME, body)(2, n, mm, mstride, bias, relu, py);
}

/* 1-D weight transforms: h = G g for three taps g (G's rows as in winograd.c). */
#define WINO_G4(g, h, k4, k6, k12, k24, k_6)                                                  \
    do {                                                                                     \
        V s02 = V_ADD(g[0], g[2]);                                                           \
        V t = V_ADD(V_MUL(k24, g[0]), V_MUL(k6, g[2])), u = V_MUL(k12, g[1]);                \
        h[0] = V_MUL(k4, g[0]);                                                              \
        h[1] = V_MUL(k_6, V_ADD(s02, g[1]));                                                 \
        h[2] = V_MUL(k_6, V_SUB(s02, g[1]));                                                 \
        h[3] = V_ADD(t, u);                                                                  \
        h[4] = V_SUB(t, u);                                                                  \
        h[5] = g[2];                                                                         \
    } while (0)

#define WINO_G2(g, h, k2)                                                                    \
    do {                                                                                     \
        V s02 = V_ADD(g[0], g[2]);                                                           \
        h[0] = g[0];                                                                         \
        h[1] = V_MUL(k2, V_ADD(s02, g[1]));                                                  \
        h[2] = V_MUL(k2, V_SUB(s02, g[1]));                                                  \
        h[3] = g[2];                                                                         \
    } while (0)

/* u[p*ustride + o] = (G g G^T)[p] for output channels o < n, tap (r, s) of g at
 * taps[r*3 + s] (n contiguous values): the weight transform, in T. */
WINO_INLINE void WINO_CAT(WINO_W_NAME, body)(const int tile, size_t n, const T *const *taps,
                                             T *u, size_t ustride)
{
    const T f4 = (T)1 / 4, f6 = (T)1 / 6, f12 = (T)1 / 12, f24 = (T)1 / 24, f_6 = -(T)1 / 6;
    const T f2 = (T)1 / 2;
    const V k4 = V_BCAST(&f4), k6 = V_BCAST(&f6), k12 = V_BCAST(&f12), k24 = V_BCAST(&f24);
    const V k_6 = V_BCAST(&f_6), k2 = V_BCAST(&f2);
    (void)k4; (void)k6; (void)k12; (void)k24; (void)k_6; (void)k2;
    const size_t a = (size_t)tile + 2;
    for (size_t o = 0; o < n; o += VN) {
        const size_t on = n - o < (size_t)VN ? n - o : (size_t)VN;
        V g[3], h[6], col[6][3];   /* col[i][s] = (G g)[i][s] */
        for (size_t s = 0; s < 3; s++) {
            for (size_t r = 0; r < 3; r++)
                g[r] = WINO_LOAD(taps[r * 3 + s] + o, on);
            if (tile == 4)
                WINO_G4(g, h, k4, k6, k12, k24, k_6);
            else
                WINO_G2(g, h, k2);
            for (size_t i = 0; i < a; i++)
                col[i][s] = h[i];
        }
        for (size_t i = 0; i < a; i++) {
            if (tile == 4)
                WINO_G4(col[i], h, k4, k6, k12, k24, k_6);
            else
                WINO_G2(col[i], h, k2);
            for (size_t l = 0; l < a; l++) {
                WINO_STORE(u + (i * a + l) * ustride + o, h[l], on);
            }
        }
    }
}

void WINO_W_NAME(int tile, size_t n, const T *const *taps, T *u, size_t ustride)
{
    if (tile == 4)
        WINO_CAT(WINO_W_NAME, body)(4, n, taps, u, ustride);
    else
        WINO_CAT(WINO_W_NAME, body)(2, n, taps, u, ustride);
}

#undef WINO_LOAD
#undef WINO_STORE
#undef WINO_G4
#undef WINO_G2
#undef WINO_W_NAME
#undef WINO_CAT_
#undef WINO_CAT
#undef WINO_INLINE
#undef WINO_BT4
#undef WINO_BT2
#undef WINO_AT4
#undef WINO_AT2
#undef WINO_IN_NAME
#undef WINO_OUT_NAME
#undef V_ADD
#undef V_SUB
#undef V_MUL
