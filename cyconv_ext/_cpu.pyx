# Design: the CPU feature probe behind runtime dispatch (cyconv/_cpu.py), and
# the record of which kernel variants this build compiled.
#
# Always compiled for the baseline instruction set (setup.py never builds
# variants of it): it must load on every CPU the build targets.  Features come
# from __builtin_cpu_supports (GCC, Clang), which reads CPUID and, for AVX and
# AVX-512, checks with XGETBV that the OS saves the wide registers: a feature
# reported here is usable.  Only names both GCC (>= 8) and Clang accept are
# probed; elsewhere nothing is, and the dispatcher runs the baseline kernels.
# The feature list is a C X-macro (expanded into names and tests) because
# __builtin_cpu_supports takes only string literals -- not a type switch.
# The build record (variants best first, their flags and required features,
# the modules built per variant) is a .pxi that setup.py rewrites only when it
# changes, so Cython rebuilds this module exactly when the variants change.

include "_cpu_build_record.pxi"

cdef extern from *:
    """
    #if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    /* One list, expanded twice: into the names and into the tests.
       __builtin_cpu_supports needs a string literal, hence the macro. */
    #define CYCONV_X86_FEATURES(X) \\
        X("sse2") X("sse4.2") X("popcnt") X("avx") X("avx2") X("fma") X("bmi") X("bmi2") \\
        X("avx512f") X("avx512bw") X("avx512cd") X("avx512dq") X("avx512vl")
    #define CYCONV_FEATURE_NAME(name) name,
    #define CYCONV_FEATURE_TEST(name) (__builtin_cpu_supports(name) != 0),
    static const char *const cyconv_probed_names[] = {CYCONV_X86_FEATURES(CYCONV_FEATURE_NAME)};
    #define CYCONV_N_PROBED ((int)(sizeof(cyconv_probed_names) / sizeof(cyconv_probed_names[0])))
    static int cyconv_feature_supported(int i) {
        __builtin_cpu_init();
        const int found[] = {CYCONV_X86_FEATURES(CYCONV_FEATURE_TEST)};
        return found[i];
    }
    #else
    static const char *const cyconv_probed_names[1] = {""};
    #define CYCONV_N_PROBED 0
    static int cyconv_feature_supported(int i) { (void)i; return 0; }
    #endif
    """
    const char *cyconv_probed_names[]
    const int CYCONV_N_PROBED
    int cyconv_feature_supported(int i)


def probed_features():
    """The feature names this build can test for (empty: no probe, baseline only)."""
    return tuple(cyconv_probed_names[i].decode("ascii") for i in range(CYCONV_N_PROBED))


def cpu_features():
    """The probed features this CPU (and its operating system) supports, as a frozenset."""
    return frozenset(name for i, name in enumerate(probed_features())
                     if cyconv_feature_supported(i))


def build_record():
    """What setup.py compiled: ``{"variants": ((name, flags, features), ...), "modules": names}``.

    Variants are listed best first and end with ``"baseline"``; ``features``
    are the CPU features a variant's flags let the compiler use; ``modules``
    are the ``cyconv_ext`` modules built once per variant.
    """
    return {"variants": BUILT_VARIANTS, "modules": DISPATCHED_MODULES}
