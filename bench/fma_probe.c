/* The machine's float32 FMA peak: loops of register-only fused multiply-adds.
 *
 * Each loop keeps its accumulators in registers (no loads or stores inside the loop) and has
 * more independent FMA chains than latency x ports (4-5 cycles x 2 FMA ports), so the FMA
 * units, not the dependency chains, limit it. bench/fma.py compiles this file with the system C
 * compiler (no -march: the target attributes enable each ISA per function) and calls a loop
 * only if the CPU supports its ISA.
 *
 * fma_<isa>(iterations) runs iterations x ACCUMULATORS FMAs of LANES floats and returns a sum
 * of the accumulators, so the compiler cannot drop the work. x = x * m + a with m just below 1
 * converges to a / (1 - m) = 1: no overflow, no denormals.
 */
#include <immintrin.h>

#define FLOPS_PER_ITERATION(acc, lanes) (2 * (acc) * (lanes))

/* AVX-512: 16 zmm accumulators of 16 floats (32 zmm registers in all). */
__attribute__((target("avx512f")))
float fma_avx512(long iterations)
{
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-6f);
    __m512 x0 = _mm512_set1_ps(0.10f), x1 = _mm512_set1_ps(0.11f), x2 = _mm512_set1_ps(0.12f),
           x3 = _mm512_set1_ps(0.13f), x4 = _mm512_set1_ps(0.14f), x5 = _mm512_set1_ps(0.15f),
           x6 = _mm512_set1_ps(0.16f), x7 = _mm512_set1_ps(0.17f), x8 = _mm512_set1_ps(0.18f),
           x9 = _mm512_set1_ps(0.19f), x10 = _mm512_set1_ps(0.20f), x11 = _mm512_set1_ps(0.21f),
           x12 = _mm512_set1_ps(0.22f), x13 = _mm512_set1_ps(0.23f), x14 = _mm512_set1_ps(0.24f),
           x15 = _mm512_set1_ps(0.25f);
    for (long i = 0; i < iterations; i++) {
        x0 = _mm512_fmadd_ps(x0, m, a);   x1 = _mm512_fmadd_ps(x1, m, a);
        x2 = _mm512_fmadd_ps(x2, m, a);   x3 = _mm512_fmadd_ps(x3, m, a);
        x4 = _mm512_fmadd_ps(x4, m, a);   x5 = _mm512_fmadd_ps(x5, m, a);
        x6 = _mm512_fmadd_ps(x6, m, a);   x7 = _mm512_fmadd_ps(x7, m, a);
        x8 = _mm512_fmadd_ps(x8, m, a);   x9 = _mm512_fmadd_ps(x9, m, a);
        x10 = _mm512_fmadd_ps(x10, m, a); x11 = _mm512_fmadd_ps(x11, m, a);
        x12 = _mm512_fmadd_ps(x12, m, a); x13 = _mm512_fmadd_ps(x13, m, a);
        x14 = _mm512_fmadd_ps(x14, m, a); x15 = _mm512_fmadd_ps(x15, m, a);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                             _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x8, x9),
                                                     _mm512_add_ps(x10, x11)),
                                       _mm512_add_ps(_mm512_add_ps(x12, x13),
                                                     _mm512_add_ps(x14, x15))));
    return _mm512_reduce_add_ps(s);
}

int fma_avx512_flops_per_iteration(void) { return FLOPS_PER_ITERATION(16, 16); }

/* AVX2 + FMA: 12 ymm accumulators of 8 floats (plus the two constants: 14 of 16 ymm). */
__attribute__((target("avx2,fma")))
float fma_avx2(long iterations)
{
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-6f);
    __m256 x0 = _mm256_set1_ps(0.10f), x1 = _mm256_set1_ps(0.11f), x2 = _mm256_set1_ps(0.12f),
           x3 = _mm256_set1_ps(0.13f), x4 = _mm256_set1_ps(0.14f), x5 = _mm256_set1_ps(0.15f),
           x6 = _mm256_set1_ps(0.16f), x7 = _mm256_set1_ps(0.17f), x8 = _mm256_set1_ps(0.18f),
           x9 = _mm256_set1_ps(0.19f), x10 = _mm256_set1_ps(0.20f), x11 = _mm256_set1_ps(0.21f);
    for (long i = 0; i < iterations; i++) {
        x0 = _mm256_fmadd_ps(x0, m, a);   x1 = _mm256_fmadd_ps(x1, m, a);
        x2 = _mm256_fmadd_ps(x2, m, a);   x3 = _mm256_fmadd_ps(x3, m, a);
        x4 = _mm256_fmadd_ps(x4, m, a);   x5 = _mm256_fmadd_ps(x5, m, a);
        x6 = _mm256_fmadd_ps(x6, m, a);   x7 = _mm256_fmadd_ps(x7, m, a);
        x8 = _mm256_fmadd_ps(x8, m, a);   x9 = _mm256_fmadd_ps(x9, m, a);
        x10 = _mm256_fmadd_ps(x10, m, a); x11 = _mm256_fmadd_ps(x11, m, a);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                             _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(x8, x9), _mm256_add_ps(x10, x11)));
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

int fma_avx2_flops_per_iteration(void) { return FLOPS_PER_ITERATION(12, 8); }
