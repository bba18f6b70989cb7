/* Run-time choice of the microkernels: CPU detection, and the kernel table. */
#include "gemm.h"

#ifdef I2R_HAVE_OPENMP
#include <omp.h>
#endif

i2r_isa i2r_cpu_isa(void)
{
#ifdef I2R_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return I2R_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return I2R_ISA_AVX2;
#endif
    return I2R_ISA_GENERIC;
}

/* The cache-line streaming copy of an ISA level (the same for both dtypes). */
static stream_copy_fn stream_copy_for(i2r_isa isa)
{
#ifdef I2R_X86
    if (isa == I2R_ISA_AVX512)
        return stream_copy_avx512;
    if (isa == I2R_ISA_AVX2)
        return stream_copy_avx2;
#endif
    (void)isa;
    return stream_copy_generic;
}

kernels_f32 select_kernels_f32(i2r_isa isa)
{
    kernels_f32 k = {4, 16, 8, gemm_f32_4x16_generic, gemm_f32_4x16_generic_segs,
                     gemm_f32_4x16_generic_deferred,
                     dwconv_f32_generic, dwplane_f32_generic, dwrow_f32_generic,
                     transpose_f32_8x8_generic, stream_copy_for(isa), wino_in_f32_generic,
                     wino_out_f32_generic, wino_w_f32_generic};
#ifdef I2R_X86
    if (isa >= I2R_ISA_AVX2)   /* AVX instructions only: also right for the AVX-512 level */
        k.transpose = transpose_f32_8x8_avx2;
    if (isa == I2R_ISA_AVX512) {
        k.mr = 14; k.nr = 32;
        k.wino_in = wino_in_f32_avx512; k.wino_out = wino_out_f32_avx512;
        k.wino_w = wino_w_f32_avx512;
        k.gemm = gemm_f32_14x32_avx512; k.gemm_segs = gemm_f32_14x32_avx512_segs;
        k.gemm_deferred = gemm_f32_14x32_avx512_deferred;
        k.dwconv = dwconv_f32_avx512;
        k.dwplane = dwplane_f32_avx512; k.dwrow = dwrow_f32_avx512;
    } else if (isa == I2R_ISA_AVX2) {
        k.mr = 6; k.nr = 16;
        k.wino_in = wino_in_f32_avx2; k.wino_out = wino_out_f32_avx2;
        k.wino_w = wino_w_f32_avx2;
        k.gemm = gemm_f32_6x16_avx2; k.gemm_segs = gemm_f32_6x16_avx2_segs;
        k.gemm_deferred = gemm_f32_6x16_avx2_deferred;
        k.dwconv = dwconv_f32_avx2; k.dwplane = dwplane_f32_avx2;
        k.dwrow = dwrow_f32_avx2;
    }
#endif
    (void)isa;
    return k;
}

kernels_f64 select_kernels_f64(i2r_isa isa)
{
    kernels_f64 k = {4, 8, 4, gemm_f64_4x8_generic, gemm_f64_4x8_generic_segs,
                     gemm_f64_4x8_generic_deferred,
                     dwconv_f64_generic, dwplane_f64_generic, dwrow_f64_generic,
                     transpose_f64_4x4_generic, stream_copy_for(isa), wino_in_f64_generic,
                     wino_out_f64_generic, wino_w_f64_generic};
#ifdef I2R_X86
    if (isa >= I2R_ISA_AVX2)
        k.transpose = transpose_f64_4x4_avx2;
    if (isa == I2R_ISA_AVX512) {
        k.mr = 14; k.nr = 16;
        k.wino_in = wino_in_f64_avx512; k.wino_out = wino_out_f64_avx512;
        k.wino_w = wino_w_f64_avx512;
        k.gemm = gemm_f64_14x16_avx512; k.gemm_segs = gemm_f64_14x16_avx512_segs;
        k.gemm_deferred = gemm_f64_14x16_avx512_deferred;
        k.dwconv = dwconv_f64_avx512;
        k.dwplane = dwplane_f64_avx512; k.dwrow = dwrow_f64_avx512;
    } else if (isa == I2R_ISA_AVX2) {
        k.mr = 6; k.nr = 8;
        k.wino_in = wino_in_f64_avx2; k.wino_out = wino_out_f64_avx2;
        k.wino_w = wino_w_f64_avx2;
        k.gemm = gemm_f64_6x8_avx2; k.gemm_segs = gemm_f64_6x8_avx2_segs;
        k.gemm_deferred = gemm_f64_6x8_avx2_deferred;
        k.dwconv = dwconv_f64_avx2; k.dwplane = dwplane_f64_avx2;
        k.dwrow = dwrow_f64_avx2;
    }
#endif
    (void)isa;
    return k;
}

int i2r_have_openmp(void)
{
#ifdef I2R_HAVE_OPENMP
    return 1;
#else
    return 0;
#endif
}

int i2r_max_threads(void)
{
#ifdef I2R_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
