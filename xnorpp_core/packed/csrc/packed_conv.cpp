// Bit-packed XNOR-popcount convolution (CPU), the compiled backend of
// xnorpp_core/packed.py. See that module for the maths; in short:
//
//   signs are stored one bit each, bit = 1 for +1 and 0 for -1 (Eq. 1),
//   64 input channels per 64-bit word, words innermost ("NHWC" words);
//   for two sign vectors a, b of length n:  <a, b> = n - 2 popcount(a xor b).
//
// pack_signs(x, ph, pw, simd):  x (N, C, H, W) float32, any strides
//     -> (N, H + 2 ph, W + 2 pw, cw) int64 words, cw = ceil(C / 64); the border
//     words and the unused high bits of the last word are 0.
// packed_conv(xb, wt, ..., simd): xb from pack_signs, wt the packed weights laid out
//     (kh * kw * cw, o_pad) with output channels innermost
//     -> (N, h_out * w_out, o) float32:
//     y = (c * kh * kw - 2 sum popcount(a xor b) + corr) * gamma
//     corr (h_out * w_out, o) int32 and gamma (1 or h_out * w_out, o) float32
//     are optional (undefined tensors). One multiply per output (Eq. 9).
//
// Border words are 0, i.e. sign -1, so the count is that of pad_mode
// "minus_one"; pad_mode "zero" is obtained by the caller's corr.
// Multi-threaded with at::parallel_for (torch.set_num_threads applies).
// simd = true takes the AVX-512 VPOPCNTDQ path where it was compiled in
// (-march=native on a CPU that has it); simd = false, or a CPU without it,
// the portable loops (__builtin_popcountll). Both give identical results.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#include <immintrin.h>
#define XNORPP_AVX512 1
#else
#define XNORPP_AVX512 0
#endif

using u64 = uint64_t;

namespace {

constexpr int64_t OB = 32;  // output channels per tile (4 x 8 lanes of 64 bits)
constexpr int64_t PB = 4;   // output pixels per tile

// ---------------------------------------------------------------- packing

// Sign bits of nb (<= 64) contiguous floats: bit b = (s[b] > 0).
inline u64 pack_word(const float* s, int64_t nb, bool simd) {
#if XNORPP_AVX512
  if (simd && nb == 64) {
    const __m512 zero = _mm512_setzero_ps();
    u64 bits = 0;
    for (int q = 0; q < 4; ++q)
      bits |= static_cast<u64>(_mm512_cmp_ps_mask(_mm512_loadu_ps(s + 16 * q), zero, _CMP_GT_OQ)) << (16 * q);
    return bits;
  }
#endif
  u64 bits = 0;
  for (int64_t b = 0; b < nb; ++b) bits |= static_cast<u64>(s[b] > 0.0f) << b;
  return bits;
}

// bits[j] |= (s[b * sC + j * sW] > 0) << b for nb channels b and np (<= 64) pixels j.
inline void pack_block(const float* s, int64_t sC, int64_t sW, int64_t nb, int64_t np, u64* bits, bool simd) {
#if XNORPP_AVX512
  if (simd && sW == 1) {
    __m512i acc[8];
    for (int q = 0; q < 8; ++q) acc[q] = _mm512_setzero_si512();
    const __m512 zero = _mm512_setzero_ps();
    const int nq = static_cast<int>((np + 15) / 16);
    for (int64_t b = 0; b < nb; ++b) {
      const float* sb = s + b * sC;
      const __m512i bit = _mm512_set1_epi64(static_cast<long long>(1ULL << b));
      for (int q = 0; q < nq; ++q) {
        const int64_t left = np - 16 * q;
        const __mmask16 in = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
        const __mmask16 m = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(in, sb + 16 * q), zero, _CMP_GT_OQ);
        acc[2 * q] = _mm512_mask_or_epi64(acc[2 * q], static_cast<__mmask8>(m), acc[2 * q], bit);
        acc[2 * q + 1] = _mm512_mask_or_epi64(acc[2 * q + 1], static_cast<__mmask8>(m >> 8), acc[2 * q + 1], bit);
      }
    }
    for (int q = 0; q < 8; ++q) _mm512_store_si512(bits + 8 * q, acc[q]);
    return;
  }
#endif
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < np; ++j) bits[j] |= static_cast<u64>(s[b * sC + j * sW] > 0.0f) << b;
}

torch::Tensor pack_signs(torch::Tensor x, int64_t ph, int64_t pw, bool simd) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "pack_signs: x must be a 4-d float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(ph >= 0 && pw >= 0, "pack_signs: negative padding");
  simd = simd && XNORPP_AVX512;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t sN = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const int64_t cw = (C + 63) / 64, Hp = H + 2 * ph, Wp = W + 2 * pw;
  auto out = torch::zeros({N, Hp, Wp, cw}, x.options().dtype(torch::kInt64));
  const float* src = x.data_ptr<float>();
  u64* dst = reinterpret_cast<u64*>(out.data_ptr<int64_t>());
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, y = r % H;
      const float* row = src + n * sN + y * sH;
      u64* drow = dst + ((n * Hp + y + ph) * Wp + pw) * cw;
      for (int64_t w = 0; w < cw; ++w) {
        const int64_t c0 = w * 64, nb = std::min<int64_t>(64, C - c0);
        if (sC == 1) {  // channels innermost: one word per pixel
          for (int64_t px = 0; px < W; ++px) drow[px * cw + w] = pack_word(row + px * sW + c0, nb, simd);
        } else {  // channel planes: a block of pixels, bit by bit
          for (int64_t p0 = 0; p0 < W; p0 += 64) {
            const int64_t np = std::min<int64_t>(64, W - p0);
            alignas(64) u64 bits[64] = {0};
            pack_block(row + c0 * sC + p0 * sW, sC, sW, nb, np, bits, simd);
            for (int64_t j = 0; j < np; ++j) drow[(p0 + j) * cw + w] = bits[j];
          }
        }
      }
    }
  });
  return out;
}

// ------------------------------------------------------------ convolution

struct Geometry {
  int64_t Hp, Wp, cw, kh, kw, sh, sw, w_out, P, o, o_pad, n_bits;
};

// Where the outputs of one tile go, and its epilogue operands.
struct Tile {
  int64_t n, p0, np, o0, oe;  // image, first pixel, pixels (<= PB), first channel, channels (<= OB)
  int64_t base[PB];           // word offset of each pixel's receptive field in xb
};

Tile make_tile(const Geometry& g, int64_t n, int64_t p0, int64_t o0) {
  Tile t{n, p0, std::min(PB, g.P - p0), o0, std::min(OB, g.o - o0), {}};
  for (int64_t j = 0; j < PB; ++j) {
    const int64_t p = p0 + std::min(j, t.np - 1);  // a short tile repeats its last pixel
    t.base[j] = ((n * g.Hp + (p / g.w_out) * g.sh) * g.Wp + (p % g.w_out) * g.sw) * g.cw;
  }
  return t;
}

// Calls f(b, a) for every kernel tap and input word: b points to the tile's OB
// weight words, a is the word's offset inside each pixel's receptive field.
template <typename F>
inline void for_each_word(const u64* wt, const Geometry& g, const Tile& t, F&& f) {
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t a = (ky * g.Wp + kx) * g.cw;
      const u64* bt = wt + ((ky * g.kw + kx) * g.cw) * g.o_pad + t.o0;
      for (int64_t w = 0; w < g.cw; ++w) f(bt + w * g.o_pad, a + w);
    }
}

// Where pixel j of a tile writes its outputs, and its rows of corr and gamma (or null).
struct Row {
  float* y;
  const int32_t* corr;
  const float* gamma;
};

inline Row row(const Geometry& g, const Tile& t, int64_t j, const int32_t* corr, const float* gamma,
               int64_t g_rows, float* out) {
  const int64_t p = t.p0 + j;
  return {out + (t.n * g.P + p) * g.o + t.o0, corr ? corr + p * g.o + t.o0 : nullptr,
          gamma ? gamma + (g_rows == 1 ? 0 : p) * g.o + t.o0 : nullptr};
}

// Portable tile: acc[j][q] = sum over taps and words of popcount(a xor b),
// then y = (n_bits - 2 acc + corr) * gamma.
void tile_generic(const u64* __restrict xb, const u64* __restrict wt, const Geometry& g, const Tile& t,
                  const int32_t* corr, const float* gamma, int64_t g_rows, float* out) {
  u64 acc[PB][OB];
  std::memset(acc, 0, sizeof(acc));
  for_each_word(wt, g, t, [&](const u64* b, int64_t a) {
    for (int64_t j = 0; j < PB; ++j) {
      const u64 x = xb[t.base[j] + a];
      for (int64_t q = 0; q < OB; ++q) acc[j][q] += static_cast<u64>(__builtin_popcountll(x ^ b[q]));
    }
  });
  for (int64_t j = 0; j < t.np; ++j) {
    const Row r = row(g, t, j, corr, gamma, g_rows, out);
    for (int64_t q = 0; q < t.oe; ++q) {
      int64_t count = g.n_bits - 2 * static_cast<int64_t>(acc[j][q]);
      if (r.corr) count += r.corr[q];
      const float yq = static_cast<float>(count);  // exact: |count| < 2^24
      r.y[q] = r.gamma ? yq * r.gamma[q] : yq;      // one multiply (Eq. 9)
    }
  }
}

#if XNORPP_AVX512
// The same tile with AVX-512: 8 output channels per vector, PB x 4 accumulators.
void tile_avx512(const u64* __restrict xb, const u64* __restrict wt, const Geometry& g, const Tile& t,
                 const int32_t* corr, const float* gamma, int64_t g_rows, float* out) {
  __m512i v[PB][OB / 8];
  for (int64_t j = 0; j < PB; ++j)
    for (int64_t q = 0; q < OB / 8; ++q) v[j][q] = _mm512_setzero_si512();
  for_each_word(wt, g, t, [&](const u64* b, int64_t a) {
    const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 8);
    const __m512i b2 = _mm512_loadu_si512(b + 16), b3 = _mm512_loadu_si512(b + 24);
    for (int64_t j = 0; j < PB; ++j) {
      const __m512i x = _mm512_set1_epi64(static_cast<long long>(xb[t.base[j] + a]));
      v[j][0] = _mm512_add_epi64(v[j][0], _mm512_popcnt_epi64(_mm512_xor_si512(x, b0)));
      v[j][1] = _mm512_add_epi64(v[j][1], _mm512_popcnt_epi64(_mm512_xor_si512(x, b1)));
      v[j][2] = _mm512_add_epi64(v[j][2], _mm512_popcnt_epi64(_mm512_xor_si512(x, b2)));
      v[j][3] = _mm512_add_epi64(v[j][3], _mm512_popcnt_epi64(_mm512_xor_si512(x, b3)));
    }
  });
  const __m512i n_bits = _mm512_set1_epi64(g.n_bits);
  for (int64_t j = 0; j < t.np; ++j) {
    const Row r = row(g, t, j, corr, gamma, g_rows, out);
    for (int64_t q = 0; q < OB / 8 && 8 * q < t.oe; ++q) {
      const int64_t left = t.oe - 8 * q;
      const __mmask8 m = left >= 8 ? 0xFF : static_cast<__mmask8>((1u << left) - 1);
      __m512i count = _mm512_sub_epi64(n_bits, _mm512_slli_epi64(v[j][q], 1));
      if (r.corr) count = _mm512_add_epi64(count, _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, r.corr + 8 * q)));
      __m256 yv = _mm512_cvtepi64_ps(count);  // exact: |count| < 2^24
      if (r.gamma) yv = _mm256_mul_ps(yv, _mm256_maskz_loadu_ps(m, r.gamma + 8 * q));  // one multiply (Eq. 9)
      _mm256_mask_storeu_ps(r.y + 8 * q, m, yv);
    }
  }
}
#endif

torch::Tensor packed_conv(torch::Tensor xb, torch::Tensor wt, int64_t channels, int64_t out_channels,
                          int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t h_out, int64_t w_out,
                          c10::optional<torch::Tensor> corr, c10::optional<torch::Tensor> gamma, bool simd) {
  TORCH_CHECK(xb.dim() == 4 && xb.scalar_type() == torch::kInt64 && xb.is_contiguous(),
              "packed_conv: xb must be contiguous int64 (N, Hp, Wp, cw)");
  TORCH_CHECK(wt.dim() == 2 && wt.scalar_type() == torch::kInt64 && wt.is_contiguous(),
              "packed_conv: wt must be contiguous int64 (kh * kw * cw, o_pad)");
  Geometry g{xb.size(1), xb.size(2), xb.size(3), kh, kw, sh, sw, w_out, h_out * w_out,
             out_channels, wt.size(1), channels * kh * kw};
  TORCH_CHECK(g.cw == (channels + 63) / 64 && wt.size(0) == kh * kw * g.cw, "packed_conv: word counts disagree");
  TORCH_CHECK(g.n_bits < (1 << 24), "packed_conv: c * kh * kw must be below 2^24 for exact float counts");
  TORCH_CHECK(g.o_pad % OB == 0 && g.o_pad >= g.o, "packed_conv: o_pad must be a multiple of 32, >= o");
  TORCH_CHECK((h_out - 1) * sh + kh <= g.Hp && (w_out - 1) * sw + kw <= g.Wp, "packed_conv: output too large");
  const int32_t* c = nullptr;
  const float* gm = nullptr;
  int64_t g_rows = 1;
  if (corr && corr->defined()) {
    TORCH_CHECK(corr->scalar_type() == torch::kInt32 && corr->is_contiguous() && corr->numel() == g.P * g.o,
                "packed_conv: corr must be contiguous int32 (h_out * w_out, o)");
    c = corr->data_ptr<int32_t>();
  }
  if (gamma && gamma->defined()) {
    TORCH_CHECK(gamma->scalar_type() == torch::kFloat32 && gamma->is_contiguous() && gamma->dim() == 2 &&
                    gamma->size(1) == g.o && (gamma->size(0) == 1 || gamma->size(0) == g.P),
                "packed_conv: gamma must be contiguous float32 (1 or h_out * w_out, o)");
    gm = gamma->data_ptr<float>();
    g_rows = gamma->size(0);
  }
  const int64_t N = xb.size(0);
  auto out = torch::empty({N, g.P, g.o}, xb.options().dtype(torch::kFloat32));
  const u64* xp = reinterpret_cast<const u64*>(xb.data_ptr<int64_t>());
  const u64* wp = reinterpret_cast<const u64*>(wt.data_ptr<int64_t>());
  float* yp = out.data_ptr<float>();
  const int64_t n_pb = (g.P + PB - 1) / PB, n_ob = g.o_pad / OB;
  // Output-channel tiles outermost, so that each thread keeps its slice of the
  // weights in cache while it sweeps the pixels.
  at::parallel_for(0, n_ob * N * n_pb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t ob = t / (N * n_pb), r = t % (N * n_pb), n = r / n_pb, pb = r % n_pb;
      const Tile tl = make_tile(g, n, pb * PB, ob * OB);
#if XNORPP_AVX512
      if (simd) {
        tile_avx512(xp, wp, g, tl, c, gm, g_rows, yp);
        continue;
      }
#endif
      tile_generic(xp, wp, g, tl, c, gm, g_rows, yp);
    }
  });
  return out;
}

bool simd_available() { return XNORPP_AVX512; }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_signs", &pack_signs, "sign bits of x, 64 channels per int64 word, with a border of 0 words");
  m.def("packed_conv", &packed_conv, "XNOR-popcount convolution of packed signs, times the fused Gamma");
  m.def("simd_available", &simd_available, "whether the AVX-512 VPOPCNTDQ path was compiled in");
  m.attr("tile_out_channels") = OB;
}
