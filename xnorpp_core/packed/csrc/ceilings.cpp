// Microbenchmarks of what this core can do, beside which the kernels' achieved rates are read
// (studies.bench_inference, results/inference/layers.csv):
//
// core_clock(seconds) -> cycles per second: a chain of dependent 64-bit adds, one cycle each on every x86-64
//     core, timed with the steady clock: the clock the core ran at while it ran the chain.
// popcount_peak(seconds, simd) -> binary multiply-adds per second of the XNOR-popcount kernel's inner loop
//     (packed_conv.cpp, tiles_avx512: 6 pixels x 32 outputs, per input word four weight vectors, six
//     broadcasts and 24 times xor, vpopcntq, vpaddq) on data that stays in the first-level cache; with simd
//     false (or a CPU without AVX-512 VPOPCNTDQ) the portable loop's (tile_generic: popcount of 64-bit words).
// vnni_peak(seconds, simd) -> int8 multiply-adds per second of int8_conv's inner loop (int8_layers.cpp:
//     4 pixels x 64 outputs, per group of 4 codes four weight vectors, four broadcasts and 16 VPDPBUSD),
//     or of the portable loop.
// Each runs for about `seconds` in rounds of about a millisecond and reports its best round (the least
// disturbed by other processes: one undisturbed millisecond is enough).

#include "common.h"

#include <chrono>

namespace xnorpp {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The best rate (work per second) of `call` (one call does `work`) over rounds of about a millisecond that fill
// about `seconds`.
template <typename Call>
double best_rate(double seconds, double work, const Call& call) {
  call();  // warm up
  const double t0 = now();
  call();
  const double once = std::max(now() - t0, 1e-9);
  const int64_t calls = std::max<int64_t>(1, static_cast<int64_t>(1e-3 / once));
  const int64_t rounds = std::max<int64_t>(3, static_cast<int64_t>(seconds / (calls * once)));
  double best = 0;
  for (int64_t r = 0; r < rounds; ++r) {
    const double a = now();
    for (int64_t i = 0; i < calls; ++i) call();
    best = std::max(best, work * calls / std::max(now() - a, 1e-9));
  }
  return best;
}

__attribute__((noinline)) uint64_t add_chain(uint64_t n) {
  uint64_t a = 0;
  for (uint64_t i = 0; i < n; ++i)
    asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                 "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                 : "+r"(a));
  return a;
}

constexpr int64_t WORDS = 64;  // input words per tile (the first-level cache holds them and the weights)
constexpr int64_t PIX = 6, OUT = 32;

#if XNORPP_AVX512
XNORPP_AVX512_FN __attribute__((noinline)) void popcount_tile_avx512(const u64* x, const u64* w, u64* out) {
  __m512i v[PIX][OUT / 8];
  for (int64_t j = 0; j < PIX; ++j)
    for (int64_t q = 0; q < OUT / 8; ++q) v[j][q] = _mm512_setzero_si512();
  for (int64_t k = 0; k < WORDS; ++k, w += OUT) {
    const __m512i b0 = _mm512_loadu_si512(w), b1 = _mm512_loadu_si512(w + 8);
    const __m512i b2 = _mm512_loadu_si512(w + 16), b3 = _mm512_loadu_si512(w + 24);
    for (int64_t j = 0; j < PIX; ++j) {
      const __m512i xv = _mm512_set1_epi64(static_cast<long long>(x[j * WORDS + k]));
      v[j][0] = _mm512_add_epi64(v[j][0], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b0)));
      v[j][1] = _mm512_add_epi64(v[j][1], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b1)));
      v[j][2] = _mm512_add_epi64(v[j][2], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b2)));
      v[j][3] = _mm512_add_epi64(v[j][3], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b3)));
    }
  }
  for (int64_t j = 0; j < PIX; ++j)
    for (int64_t q = 0; q < OUT / 8; ++q) _mm512_storeu_si512(out + (j * OUT / 8 + q) * 8, v[j][q]);
}

XNORPP_VNNI_FN __attribute__((noinline)) void vnni_tile_avx512(const uint8_t* x, const int8_t* w, int32_t* out) {
  __m512i v[4][4];
  for (int j = 0; j < 4; ++j)
    for (int z = 0; z < 4; ++z) v[j][z] = _mm512_setzero_si512();
  for (int64_t k = 0; k < WORDS; ++k, w += 256) {
    __m512i b[4];
    for (int z = 0; z < 4; ++z) b[z] = _mm512_loadu_si512(w + 64 * z);
    for (int j = 0; j < 4; ++j) {
      int32_t quad;
      std::memcpy(&quad, x + j * 4 * WORDS + 4 * k, 4);
      const __m512i a = _mm512_set1_epi32(quad);
      for (int z = 0; z < 4; ++z) v[j][z] = _mm512_dpbusd_epi32(v[j][z], a, b[z]);
    }
  }
  for (int j = 0; j < 4; ++j)
    for (int z = 0; z < 4; ++z) _mm512_storeu_si512(out + (4 * j + z) * 16, v[j][z]);
}
#endif

__attribute__((noinline)) void popcount_tile_generic(const u64* x, const u64* w, u64* out) {
  u64 acc[PIX][OUT] = {};
  for (int64_t k = 0; k < WORDS; ++k)
    for (int64_t j = 0; j < PIX; ++j)
      for (int64_t o = 0; o < OUT; ++o) acc[j][o] += __builtin_popcountll(x[j * WORDS + k] ^ w[k * OUT + o]);
  std::memcpy(out, acc, sizeof(acc));
}

__attribute__((noinline)) void vnni_tile_generic(const uint8_t* x, const int8_t* w, int32_t* out) {
  int32_t acc[4][64] = {};
  for (int64_t k = 0; k < WORDS; ++k)
    for (int j = 0; j < 4; ++j)
      for (int o = 0; o < 64; ++o)
        for (int r = 0; r < 4; ++r) acc[j][o] += static_cast<int32_t>(x[j * 4 * WORDS + 4 * k + r]) * w[(k * 64 + o) * 4 + r];
  std::memcpy(out, acc, sizeof(acc));
}

}  // namespace

double core_clock(double seconds) {
  TORCH_CHECK(std::isfinite(seconds) && seconds > 0 && seconds <= 60, "core_clock: seconds must be in (0, 60]");
  const uint64_t n = 1 << 16;
  return best_rate(seconds, 8.0 * n, [&] {
    volatile uint64_t sink = add_chain(n);
    (void)sink;
  });
}

double popcount_peak(double seconds, bool simd) {
  TORCH_CHECK(std::isfinite(seconds) && seconds > 0 && seconds <= 60, "popcount_peak: seconds must be in (0, 60]");
  std::vector<u64> x(PIX * WORDS), w(WORDS * OUT), out(PIX * OUT);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0x9E3779B97F4A7C15ULL * (i + 1);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0xC2B2AE3D27D4EB4FULL * (i + 7);
  const double work = 64.0 * WORDS * PIX * OUT;  // binary multiply-adds per tile
#if XNORPP_AVX512
  if (simd && simd_available())
    return best_rate(seconds, work, [&] { popcount_tile_avx512(x.data(), w.data(), out.data()); });
#endif
  return best_rate(seconds, work, [&] { popcount_tile_generic(x.data(), w.data(), out.data()); });
}

double vnni_peak(double seconds, bool simd) {
  TORCH_CHECK(std::isfinite(seconds) && seconds > 0 && seconds <= 60, "vnni_peak: seconds must be in (0, 60]");
  std::vector<uint8_t> x(4 * 4 * WORDS);
  std::vector<int8_t> w(WORDS * 256);
  std::vector<int32_t> out(4 * 64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(i * 37);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(i * 11);
  const double work = 4.0 * WORDS * 4 * 64;  // int8 multiply-adds per tile
#if XNORPP_AVX512
  if (simd && vnni_available())
    return best_rate(seconds, work, [&] { vnni_tile_avx512(x.data(), w.data(), out.data()); });
#endif
  return best_rate(seconds, work, [&] { vnni_tile_generic(x.data(), w.data(), out.data()); });
}

}  // namespace xnorpp
