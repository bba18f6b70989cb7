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

gemm_kernel gemm_select(i2r_isa isa, i2r_dtype dtype)
{
    gemm_kernel k;
    int f64 = dtype == I2R_F64;
    k.tr = f64 ? 4 : 8;
    k.transpose = f64 ? (void *)transpose_f64_4x4_generic : (void *)transpose_f32_8x8_generic;
#ifdef I2R_X86
    if (isa >= I2R_ISA_AVX2)   /* AVX instructions only: also right for the AVX-512 level */
        k.transpose = f64 ? (void *)transpose_f64_4x4_avx2 : (void *)transpose_f32_8x8_avx2;
    if (isa == I2R_ISA_AVX512) {
        k.mr = 14; k.nr = f64 ? 16 : 32;
        k.fn = f64 ? (void *)gemm_f64_14x16_avx512 : (void *)gemm_f32_14x32_avx512;
        k.dwconv = f64 ? (void *)dwconv_f64_avx512 : (void *)dwconv_f32_avx512;
        k.dwplane = f64 ? (void *)dwplane_f64_avx512 : (void *)dwplane_f32_avx512;
        return k;
    }
    if (isa == I2R_ISA_AVX2) {
        k.mr = 6; k.nr = f64 ? 8 : 16;
        k.fn = f64 ? (void *)gemm_f64_6x8_avx2 : (void *)gemm_f32_6x16_avx2;
        k.dwconv = f64 ? (void *)dwconv_f64_avx2 : (void *)dwconv_f32_avx2;
        k.dwplane = f64 ? (void *)dwplane_f64_avx2 : (void *)dwplane_f32_avx2;
        return k;
    }
#endif
    (void)isa;
    k.mr = 4; k.nr = f64 ? 8 : 16;
    k.fn = f64 ? (void *)gemm_f64_4x8_generic : (void *)gemm_f32_4x16_generic;
    k.dwconv = f64 ? (void *)dwconv_f64_generic : (void *)dwconv_f32_generic;
    k.dwplane = f64 ? (void *)dwplane_f64_generic : (void *)dwplane_f32_generic;
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
