// Shared by the compiled kernels of xnorpp_core/packed (packed_conv.cpp, int8_layers.cpp): headers, the
// target attributes of the AVX-512 functions, and the run-time checks of what the CPU offers.
#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define XNORPP_AVX512 1
#define XNORPP_AVX512_FN __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq")))
#define XNORPP_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
#else
#define XNORPP_AVX512 0
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "bit outputs are written as 32-bit halves of words");

using u64 = uint64_t;
using u32 = uint32_t;


namespace xnorpp {

bool simd_available();  // AVX-512 (F, BW, DQ, VL) with VPOPCNTDQ: the popcount kernels' fast path
bool vnni_available();  // AVX-512 (F, BW, DQ, VL) with VNNI: the int8 layers' fast path

// The int8 real layers (int8_layers.cpp).
torch::Tensor int8_gemm(torch::Tensor x, int64_t sh, int64_t sw, double inv_scale, int64_t zero_point,
                        torch::Tensor wq, torch::Tensor w_sums, torch::Tensor scale, torch::Tensor bias,
                        int64_t out_features, bool simd);
std::vector<torch::Tensor> int8_conv(torch::Tensor x, double inv_scale, int64_t zero_point, torch::Tensor wq,
                                     torch::Tensor w_sums, torch::Tensor scale, torch::Tensor bias,
                                     int64_t out_channels, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                     int64_t pw, bool relu, int64_t pkh, int64_t pkw, int64_t psh, int64_t psw,
                                     int64_t pph, int64_t ppw, c10::optional<torch::Tensor> next_scale,
                                     c10::optional<torch::Tensor> next_thr, int64_t out_ph, int64_t out_pw,
                                     bool simd);


// Microbenchmarks of this core (ceilings.cpp).
double core_clock(double seconds);
double popcount_peak(double seconds, bool simd);
double vnni_peak(double seconds, bool simd);

}  // namespace xnorpp
