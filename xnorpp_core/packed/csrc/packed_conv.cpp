// Bit-packed XNOR-popcount convolution (CPU), the compiled backend of
// xnorpp_core/packed. See that package for the maths; in short:
//
//   signs are stored one bit each, bit = 1 for +1 and 0 for -1 (Eq. 1),
//   64 input channels per 64-bit word, words innermost ("NHWC" words);
//   for two sign vectors a, b of length n:  <a, b> = n - 2 popcount(a xor b).
//
// pack_signs(x, ph, pw, scale, thr, simd): x (N, C, H, W) float32, any strides
//     -> (N, H + 2 ph, W + 2 pw, cw) int64 words, cw = ceil(C / 64); the border
//     words and the unused high bits of the last word are 0. Bit = x > 0, or,
//     with the per-channel tensors scale (+-1) and thr, bit = scale[c] x > thr[c]
//     (a BN -> sign folded into a threshold).
// packed_conv(xb, wt, ..., corr, gamma, relu, residual, simd): xb from pack_signs,
//     wt the packed weights laid out (kh * kw * cw, o_pad), output channels
//     innermost -> (N, h_out * w_out, o) float32:
//         y = (c kh kw - 2 sum popcount(a xor b) + corr) * gamma,
//         then max(y, 0) if relu, then residual + y;
//     corr (h_out w_out, o) int32, gamma (1 or h_out w_out, o) float32 and
//     residual (N, h_out w_out, o) float32 are optional. One multiply per output (Eq. 9).
// packed_conv_bits(xb, wt, ..., bound, flip, out_ph, out_pw, simd): the same
//     popcounts v, written as the sign bits of the next binary layer's input,
//         bit = (v <= bound) xor flip,
//     bound (1 or h_out w_out, o_pad) int32, flip (1 or h_out w_out, o_pad / 32)
//     int32 bit masks -> (N, h_out + 2 out_ph, w_out + 2 out_pw, ceil(o / 64)) int64.
//
// Border words are 0, i.e. sign -1, so the count is that of pad_mode
// "minus_one"; pad_mode "zero" is obtained by the caller's corr (or bound).
// Multi-threaded with at::parallel_for (torch.set_num_threads applies).
//
// Portability: the file is built for the compiler's default target (plus POPCNT
// on x86-64, chosen by the Python side). The AVX-512 VPOPCNTDQ functions carry
// their own target attribute and run only when simd = true and the CPU reports
// the instructions at run time (simd_available()); otherwise the portable loops
// run. Both give identical results. Every shape is checked before any memory
// is touched: the kernels never read or write outside their tensors.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define XNORPP_AVX512 1
#define XNORPP_AVX512_FN __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq")))
#else
#define XNORPP_AVX512 0
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "bit outputs are written as 32-bit halves of words");

using u64 = uint64_t;
using u32 = uint32_t;

namespace {

constexpr int64_t OB = 32;  // output channels per tile (4 x 8 lanes of 64 bits; one 32-bit half word of bits)
constexpr int64_t PB = 6;   // output pixels per tile

bool cpu_has_avx512() {
#if XNORPP_AVX512
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vpopcntdq");
#else
  return false;
#endif
}

bool simd_available() {
  static const bool has = cpu_has_avx512();
  return has;
}

// ---------------------------------------------------------------- packing

// Per-channel threshold of a folded BN -> sign: bit = scale[c] x > thr[c]; plain sign when scale is null.
struct Threshold {
  const float* scale;
  const float* thr;
  inline bool bit(float x, int64_t c) const { return scale ? scale[c] * x > thr[c] : x > 0.0f; }
};

// Sign bits of nb (<= 64) contiguous channels c0 .. c0 + nb - 1.
inline u64 pack_word(const float* s, int64_t c0, int64_t nb, const Threshold& th) {
  u64 bits = 0;
  for (int64_t b = 0; b < nb; ++b) bits |= static_cast<u64>(th.bit(s[b], c0 + b)) << b;
  return bits;
}

#if XNORPP_AVX512
XNORPP_AVX512_FN inline u64 pack_word_avx512(const float* s, int64_t c0, const Threshold& th) {
  u64 bits = 0;
  for (int q = 0; q < 4; ++q) {
    __m512 x = _mm512_loadu_ps(s + 16 * q), t = _mm512_setzero_ps();
    if (th.scale) {
      x = _mm512_mul_ps(x, _mm512_loadu_ps(th.scale + c0 + 16 * q));
      t = _mm512_loadu_ps(th.thr + c0 + 16 * q);
    }
    bits |= static_cast<u64>(_mm512_cmp_ps_mask(x, t, _CMP_GT_OQ)) << (16 * q);
  }
  return bits;
}
#endif

// bits[j] |= bit(s[b * sC + j * sW]) << b for nb channels b and np (<= 64) pixels j.
inline void pack_block(const float* s, int64_t sC, int64_t sW, int64_t c0, int64_t nb, int64_t np, u64* bits,
                       const Threshold& th) {
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < np; ++j) bits[j] |= static_cast<u64>(th.bit(s[b * sC + j * sW], c0 + b)) << b;
}

#if XNORPP_AVX512
// pack_block for unit pixel stride: 16 pixels per compare, bits gathered in 8 vectors of 8 words.
XNORPP_AVX512_FN void pack_block_avx512(const float* s, int64_t sC, int64_t c0, int64_t nb, int64_t np, u64* bits,
                                        const Threshold& th) {
  __m512i acc[8];
  for (int q = 0; q < 8; ++q) acc[q] = _mm512_setzero_si512();
  const int nq = static_cast<int>((np + 15) / 16);
  for (int64_t b = 0; b < nb; ++b) {
    const float* sb = s + b * sC;
    const __m512 scale = _mm512_set1_ps(th.scale ? th.scale[c0 + b] : 1.0f);
    const __m512 thr = _mm512_set1_ps(th.scale ? th.thr[c0 + b] : 0.0f);
    const __m512i bit = _mm512_set1_epi64(static_cast<long long>(1ULL << b));
    for (int q = 0; q < nq; ++q) {
      const int64_t left = np - 16 * q;
      const __mmask16 in = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
      __m512 x = _mm512_maskz_loadu_ps(in, sb + 16 * q);
      if (th.scale) x = _mm512_mul_ps(x, scale);
      const __mmask16 m = _mm512_mask_cmp_ps_mask(in, x, thr, _CMP_GT_OQ);
      acc[2 * q] = _mm512_mask_or_epi64(acc[2 * q], static_cast<__mmask8>(m), acc[2 * q], bit);
      acc[2 * q + 1] = _mm512_mask_or_epi64(acc[2 * q + 1], static_cast<__mmask8>(m >> 8), acc[2 * q + 1], bit);
    }
  }
  for (int q = 0; q < 8; ++q) _mm512_storeu_si512(bits + 8 * q, acc[q]);
}
#endif

torch::Tensor pack_signs(torch::Tensor x, int64_t ph, int64_t pw, c10::optional<torch::Tensor> scale,
                         c10::optional<torch::Tensor> thr, bool simd) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "pack_signs: x must be a 4-d float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(ph >= 0 && pw >= 0, "pack_signs: negative padding");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Threshold th{nullptr, nullptr};
  const bool has_scale = scale && scale->defined(), has_thr = thr && thr->defined();
  TORCH_CHECK(has_scale == has_thr, "pack_signs: scale and thr go together");
  if (has_scale) {
    for (const auto& t : {*scale, *thr})
      TORCH_CHECK(t.dim() == 1 && t.size(0) == C && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                  "pack_signs: scale and thr must be contiguous float32 (C,)");
    th = {scale->data_ptr<float>(), thr->data_ptr<float>()};
  }
  simd = simd && simd_available();
  const int64_t sN = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const int64_t cw = (C + 63) / 64, Hp = H + 2 * ph, Wp = W + 2 * pw;
  auto out = torch::zeros({N, Hp, Wp, cw}, x.options().dtype(torch::kInt64));
  if (x.numel() == 0) return out;
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
          for (int64_t px = 0; px < W; ++px) {
#if XNORPP_AVX512
            if (simd && nb == 64) {
              drow[px * cw + w] = pack_word_avx512(row + px * sW + c0, c0, th);
              continue;
            }
#endif
            drow[px * cw + w] = pack_word(row + px * sW + c0, c0, nb, th);
          }
        } else {  // channel planes: a block of pixels, bit by bit
          for (int64_t p0 = 0; p0 < W; p0 += 64) {
            const int64_t np = std::min<int64_t>(64, W - p0);
            u64 bits[64] = {0};
#if XNORPP_AVX512
            if (simd && sW == 1) {
              pack_block_avx512(row + c0 * sC + p0, sC, c0, nb, np, bits, th);
              for (int64_t j = 0; j < np; ++j) drow[(p0 + j) * cw + w] = bits[j];
              continue;
            }
#endif
            pack_block(row + c0 * sC + p0 * sW, sC, sW, c0, nb, np, bits, th);
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

// What a tile does with its popcounts: float outputs (y) or sign bits (bits).
struct Epilogue {
  // float output
  const int32_t* corr;     // (P, o) or null
  const float* gamma;      // (gamma_rows, o) or null
  int64_t gamma_rows;
  bool relu;
  const float* residual;   // (N, P, o) or null
  float* y;                // (N, P, o)
  // bit output
  const int32_t* bound;    // (bound_rows, o_pad)
  const int32_t* flip;     // (bound_rows, o_pad / 32)
  int64_t bound_rows;
  u32* bits;               // (N, out_Hp, out_Wp, 2 out_cw) halves of words
  int64_t out_Hp, out_Wp, out_halves, out_ph, out_pw;
};

// One tile: PB output pixels of image n (a short tile repeats its last pixel) and OB channels from o0.
struct Tile {
  int64_t n, p0, np, o0, oe;
  int64_t base[PB];    // word offset of each pixel's receptive field in xb
  int64_t py[PB], px[PB];  // each pixel's output row and column
};

Tile make_tile(const Geometry& g, int64_t n, int64_t p0, int64_t o0) {
  Tile t{n, p0, std::min(PB, g.P - p0), o0, std::min(OB, g.o - o0), {}, {}, {}};
  int64_t y = p0 / g.w_out, x = p0 % g.w_out;  // one division per tile, then steps
  for (int64_t j = 0; j < PB; ++j) {
    t.py[j] = y;
    t.px[j] = x;
    t.base[j] = ((n * g.Hp + y * g.sh) * g.Wp + x * g.sw) * g.cw;
    if (j + 1 < t.np && ++x == g.w_out) {
      x = 0;
      ++y;
    }
  }
  return t;
}

// Where pixel j's 32 bits of channels o0 .. o0 + 31 go.
inline u32* bits_at(const Epilogue& e, const Tile& t, int64_t j) {
  return e.bits + ((t.n * e.out_Hp + t.py[j] + e.out_ph) * e.out_Wp + t.px[j] + e.out_pw) * e.out_halves + t.o0 / OB;
}

// Portable epilogue of one pixel: acc[q] popcounts of channels o0 + q.
inline void epilogue_generic(const Geometry& g, const Tile& t, const Epilogue& e, int64_t j, const u64* acc) {
  const int64_t p = t.p0 + j;
  if (e.bits) {
    const int64_t r = e.bound_rows == 1 ? 0 : p;
    const int32_t* bd = e.bound + r * g.o_pad + t.o0;
    u32 word = 0;
    for (int64_t q = 0; q < OB; ++q) word |= static_cast<u32>(static_cast<int64_t>(acc[q]) <= bd[q]) << q;
    *bits_at(e, t, j) = word ^ static_cast<u32>(e.flip[r * (g.o_pad / OB) + t.o0 / OB]);
    return;
  }
  float* y = e.y + (t.n * g.P + p) * g.o + t.o0;
  const int32_t* corr = e.corr ? e.corr + p * g.o + t.o0 : nullptr;
  const float* gamma = e.gamma ? e.gamma + (e.gamma_rows == 1 ? 0 : p) * g.o + t.o0 : nullptr;
  const float* res = e.residual ? e.residual + (t.n * g.P + p) * g.o + t.o0 : nullptr;
  for (int64_t q = 0; q < t.oe; ++q) {
    int64_t count = g.n_bits - 2 * static_cast<int64_t>(acc[q]);
    if (corr) count += corr[q];
    float v = static_cast<float>(count);  // exact: |count| < 2^24
    if (gamma) v = v * gamma[q];          // one multiply (Eq. 9)
    if (e.relu) v = v > 0.0f ? v : 0.0f;
    if (res) v = res[q] + v;
    y[q] = v;
  }
}

// Portable tile: acc[j][q] = sum over taps and words of popcount(a xor b).
void tile_generic(const u64* __restrict xb, const u64* __restrict wt, const Geometry& g, const Tile& t,
                  const Epilogue& e) {
  u64 acc[PB][OB];
  std::memset(acc, 0, sizeof(acc));
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t a = (ky * g.Wp + kx) * g.cw;
      const u64* bt = wt + ((ky * g.kw + kx) * g.cw) * g.o_pad + t.o0;
      for (int64_t w = 0; w < g.cw; ++w) {
        const u64* b = bt + w * g.o_pad;
        for (int64_t j = 0; j < PB; ++j) {
          const u64 x = xb[t.base[j] + a + w];
          for (int64_t q = 0; q < OB; ++q) acc[j][q] += static_cast<u64>(__builtin_popcountll(x ^ b[q]));
        }
      }
    }
  for (int64_t j = 0; j < t.np; ++j) epilogue_generic(g, t, e, j, acc[j]);
}

#if XNORPP_AVX512
// The same tile with AVX-512 VPOPCNTDQ: 8 output channels per vector, PB x 4 accumulators.
XNORPP_AVX512_FN void tile_avx512(const u64* __restrict xb, const u64* __restrict wt, const Geometry& g,
                                  const Tile& t, const Epilogue& e) {
  __m512i v[PB][OB / 8];
  for (int64_t j = 0; j < PB; ++j)
    for (int64_t q = 0; q < OB / 8; ++q) v[j][q] = _mm512_setzero_si512();
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t a = (ky * g.Wp + kx) * g.cw;
      const u64* bt = wt + ((ky * g.kw + kx) * g.cw) * g.o_pad + t.o0;
      for (int64_t w = 0; w < g.cw; ++w) {
        const u64* b = bt + w * g.o_pad;
        const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 8);
        const __m512i b2 = _mm512_loadu_si512(b + 16), b3 = _mm512_loadu_si512(b + 24);
        for (int64_t j = 0; j < PB; ++j) {
          const __m512i x = _mm512_set1_epi64(static_cast<long long>(xb[t.base[j] + a + w]));
          v[j][0] = _mm512_add_epi64(v[j][0], _mm512_popcnt_epi64(_mm512_xor_si512(x, b0)));
          v[j][1] = _mm512_add_epi64(v[j][1], _mm512_popcnt_epi64(_mm512_xor_si512(x, b1)));
          v[j][2] = _mm512_add_epi64(v[j][2], _mm512_popcnt_epi64(_mm512_xor_si512(x, b2)));
          v[j][3] = _mm512_add_epi64(v[j][3], _mm512_popcnt_epi64(_mm512_xor_si512(x, b3)));
        }
      }
    }
  const __m512i n_bits = _mm512_set1_epi64(g.n_bits);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t j = 0; j < t.np; ++j) {
    const int64_t p = t.p0 + j;
    if (e.bits) {
      const int64_t r = e.bound_rows == 1 ? 0 : p;
      const int32_t* bd = e.bound + r * g.o_pad + t.o0;
      u32 word = 0;
      for (int q = 0; q < OB / 8; ++q) {
        const __m512i bq = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bd + 8 * q)));
        word |= static_cast<u32>(_mm512_cmple_epi64_mask(v[j][q], bq)) << (8 * q);
      }
      *bits_at(e, t, j) = word ^ static_cast<u32>(e.flip[r * (g.o_pad / OB) + t.o0 / OB]);
      continue;
    }
    float* y = e.y + (t.n * g.P + p) * g.o + t.o0;
    const int32_t* corr = e.corr ? e.corr + p * g.o + t.o0 : nullptr;
    const float* gamma = e.gamma ? e.gamma + (e.gamma_rows == 1 ? 0 : p) * g.o + t.o0 : nullptr;
    const float* res = e.residual ? e.residual + (t.n * g.P + p) * g.o + t.o0 : nullptr;
    for (int64_t q = 0; q < OB / 8 && 8 * q < t.oe; ++q) {
      const int64_t left = t.oe - 8 * q;
      const __mmask8 m = left >= 8 ? 0xFF : static_cast<__mmask8>((1u << left) - 1);
      __m512i count = _mm512_sub_epi64(n_bits, _mm512_slli_epi64(v[j][q], 1));
      if (corr) count = _mm512_add_epi64(count, _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, corr + 8 * q)));
      __m256 yv = _mm512_cvtepi64_ps(count);  // exact: |count| < 2^24
      if (gamma) yv = _mm256_mul_ps(yv, _mm256_maskz_loadu_ps(m, gamma + 8 * q));  // one multiply (Eq. 9)
      if (e.relu) yv = _mm256_max_ps(yv, zero);  // max(y, 0): a NaN-free y gives torch's relu
      if (res) yv = _mm256_add_ps(_mm256_maskz_loadu_ps(m, res + 8 * q), yv);
      _mm256_mask_storeu_ps(y + 8 * q, m, yv);
    }
  }
}
#endif

Geometry check_conv(const torch::Tensor& xb, const torch::Tensor& wt, int64_t channels, int64_t out_channels,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t h_out, int64_t w_out) {
  TORCH_CHECK(xb.dim() == 4 && xb.scalar_type() == torch::kInt64 && xb.is_contiguous() && xb.device().is_cpu(),
              "packed_conv: xb must be contiguous int64 (N, Hp, Wp, cw)");
  TORCH_CHECK(wt.dim() == 2 && wt.scalar_type() == torch::kInt64 && wt.is_contiguous() && wt.device().is_cpu(),
              "packed_conv: wt must be contiguous int64 (kh * kw * cw, o_pad)");
  TORCH_CHECK(channels >= 1 && out_channels >= 1 && kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1,
              "packed_conv: channels, kernel and stride must be positive");
  TORCH_CHECK(h_out >= 1 && w_out >= 1, "packed_conv: the input is smaller than the kernel (output ", h_out, "x",
              w_out, ")");
  Geometry g{xb.size(1), xb.size(2), xb.size(3), kh, kw, sh, sw, w_out, h_out * w_out,
             out_channels, wt.size(1), channels * kh * kw};
  TORCH_CHECK(g.cw == (channels + 63) / 64 && wt.size(0) == kh * kw * g.cw, "packed_conv: word counts disagree");
  TORCH_CHECK(g.n_bits < (1 << 24), "packed_conv: c * kh * kw must be below 2^24 for exact float counts");
  TORCH_CHECK(g.o_pad % OB == 0 && g.o_pad >= g.o, "packed_conv: o_pad must be a multiple of 32, >= o");
  TORCH_CHECK((h_out - 1) * sh + kh <= g.Hp && (w_out - 1) * sw + kw <= g.Wp, "packed_conv: output too large");
  return g;
}

void run_tiles(const torch::Tensor& xb, const torch::Tensor& wt, const Geometry& g, const Epilogue& e, bool simd) {
  const u64* xp = reinterpret_cast<const u64*>(xb.data_ptr<int64_t>());
  const u64* wp = reinterpret_cast<const u64*>(wt.data_ptr<int64_t>());
  const int64_t N = xb.size(0), n_pb = (g.P + PB - 1) / PB, n_ob = g.o_pad / OB;
  simd = simd && simd_available();
  // Output-channel tiles outermost, so that each thread keeps its slice of the
  // weights in cache while it sweeps the pixels.
  at::parallel_for(0, n_ob * N * n_pb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t ob = t / (N * n_pb), r = t % (N * n_pb), n = r / n_pb, pb = r % n_pb;
      const Tile tl = make_tile(g, n, pb * PB, ob * OB);
#if XNORPP_AVX512
      if (simd) {
        tile_avx512(xp, wp, g, tl, e);
        continue;
      }
#endif
      tile_generic(xp, wp, g, tl, e);
    }
  });
}

torch::Tensor packed_conv(torch::Tensor xb, torch::Tensor wt, int64_t channels, int64_t out_channels,
                          int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t h_out, int64_t w_out,
                          c10::optional<torch::Tensor> corr, c10::optional<torch::Tensor> gamma, bool relu,
                          c10::optional<torch::Tensor> residual, bool simd) {
  const Geometry g = check_conv(xb, wt, channels, out_channels, kh, kw, sh, sw, h_out, w_out);
  const int64_t N = xb.size(0);
  Epilogue e{};
  e.relu = relu;
  if (corr && corr->defined()) {
    TORCH_CHECK(corr->scalar_type() == torch::kInt32 && corr->is_contiguous() && corr->numel() == g.P * g.o,
                "packed_conv: corr must be contiguous int32 (h_out * w_out, o)");
    e.corr = corr->data_ptr<int32_t>();
  }
  e.gamma_rows = 1;
  if (gamma && gamma->defined()) {
    TORCH_CHECK(gamma->scalar_type() == torch::kFloat32 && gamma->is_contiguous() && gamma->dim() == 2 &&
                    gamma->size(1) == g.o && (gamma->size(0) == 1 || gamma->size(0) == g.P),
                "packed_conv: gamma must be contiguous float32 (1 or h_out * w_out, o)");
    e.gamma = gamma->data_ptr<float>();
    e.gamma_rows = gamma->size(0);
  }
  if (residual && residual->defined()) {
    TORCH_CHECK(residual->scalar_type() == torch::kFloat32 && residual->is_contiguous() && residual->dim() == 3 &&
                    residual->size(0) == N && residual->size(1) == g.P && residual->size(2) == g.o,
                "packed_conv: residual must be contiguous float32 (N, h_out * w_out, o)");
    e.residual = residual->data_ptr<float>();
  }
  auto out = torch::empty({N, g.P, g.o}, xb.options().dtype(torch::kFloat32));
  e.y = out.data_ptr<float>();
  if (N > 0) run_tiles(xb, wt, g, e, simd);
  return out;
}

torch::Tensor packed_conv_bits(torch::Tensor xb, torch::Tensor wt, int64_t channels, int64_t out_channels,
                               int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t h_out, int64_t w_out,
                               torch::Tensor bound, torch::Tensor flip, int64_t out_ph, int64_t out_pw, bool simd) {
  const Geometry g = check_conv(xb, wt, channels, out_channels, kh, kw, sh, sw, h_out, w_out);
  TORCH_CHECK(out_ph >= 0 && out_pw >= 0, "packed_conv_bits: negative padding");
  TORCH_CHECK(bound.scalar_type() == torch::kInt32 && bound.is_contiguous() && bound.dim() == 2 &&
                  bound.size(1) == g.o_pad && (bound.size(0) == 1 || bound.size(0) == g.P),
              "packed_conv_bits: bound must be contiguous int32 (1 or h_out * w_out, o_pad)");
  TORCH_CHECK(flip.scalar_type() == torch::kInt32 && flip.is_contiguous() && flip.dim() == 2 &&
                  flip.size(0) == bound.size(0) && flip.size(1) == g.o_pad / OB,
              "packed_conv_bits: flip must be contiguous int32 (rows of bound, o_pad / 32)");
  const int64_t N = xb.size(0), cw_out = (g.o + 63) / 64;
  auto out = torch::zeros({N, h_out + 2 * out_ph, w_out + 2 * out_pw, cw_out}, xb.options());
  Epilogue e{};
  e.bound = bound.data_ptr<int32_t>();
  e.flip = flip.data_ptr<int32_t>();
  e.bound_rows = bound.size(0);
  e.bits = reinterpret_cast<u32*>(out.data_ptr<int64_t>());
  e.out_Hp = h_out + 2 * out_ph;
  e.out_Wp = w_out + 2 * out_pw;
  e.out_halves = 2 * cw_out;
  e.out_ph = out_ph;
  e.out_pw = out_pw;
  // A tile of channels o0 .. o0 + 31 writes half (o0 / 32) of a pixel's words: inside the row when o0 < o.
  TORCH_CHECK(g.o_pad / OB <= e.out_halves, "packed_conv_bits: o_pad too large for the output words");
  if (N > 0) run_tiles(xb, wt, g, e, simd);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_signs", &pack_signs, "sign bits of x (or of a per-channel threshold), 64 channels per int64 word");
  m.def("packed_conv", &packed_conv, "XNOR-popcount convolution of packed signs, times Gamma, ReLU, + residual");
  m.def("packed_conv_bits", &packed_conv_bits, "XNOR-popcount convolution thresholded into packed sign bits");
  m.def("simd_available", &simd_available, "whether this CPU runs the AVX-512 VPOPCNTDQ path (run-time check)");
  m.attr("simd_compiled") = static_cast<bool>(XNORPP_AVX512);
  m.attr("tile_out_channels") = OB;
}
