/* Which ISA paths this build and CPU can run, and the dtype table. */
#include "core.h"

static const char *const isa_names[NS_ISA_COUNT] = {"scalar", "avx2", "avx512"};

const char *ns_isa_name(int isa) { return (isa >= 0 && isa < NS_ISA_COUNT) ? isa_names[isa] : "?"; }

int ns_isa_available(int isa) {
    if (isa == NS_ISA_SCALAR) return 1;
#ifdef NS_X86
    __builtin_cpu_init();
    if (isa == NS_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    if (isa == NS_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

int ns_best_isa(void) {
    for (int isa = NS_ISA_COUNT - 1; isa > 0; isa--)
        if (ns_isa_available(isa)) return isa;
    return NS_ISA_SCALAR;
}

const ns_ops *ns_get_ops(int isa) {
#ifdef NS_X86
    if (isa == NS_ISA_AVX512 && ns_isa_available(NS_ISA_AVX512)) return &ns_ops_avx512;
    if (isa == NS_ISA_AVX2 && ns_isa_available(NS_ISA_AVX2)) return &ns_ops_avx2;
#else
    (void)isa;
#endif
    return &ns_ops_scalar;
}

size_t ns_dtype_size(int dtype) {
    switch (dtype) {
    case NS_F32: return 4;
    case NS_F64: return 8;
    case NS_F16:
    case NS_BF16: return 2;
    default: return 0;
    }
}
