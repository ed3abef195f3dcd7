// The int8 real layers of the packed network (xnorpp_core/packed/int8.py): a 1x1 convolution or linear layer
// (int8_gemm) and a convolution with its ReLU and max pooling (int8_conv), each on uint8 codes of its float
// input and int8 weights, exact int32 sums, a float output. AVX-512 VNNI where the CPU has it (vnni_available()
// and simd = true), else portable loops: the same integers and the same float operations, so the same floats.

#include <atomic>
#include <memory>

#include "common.h"

namespace xnorpp {
namespace {

// ------------------------------------------------------------ int8 real layers (1x1 convolutions, linear)
//
// int8_gemm(x, sh, sw, inv_scale, zero_point, wq, w_sums, scale, bias, out_features, simd) -> y: a 1x1
// convolution (no padding; on every sh-th row and sw-th column) or a linear layer, x (N, H, W, K) float32
// (channels innermost; a linear layer's input is (N, 1, 1, K)) -> y (N, h, w, out_features) float32, h =
// (H - 1) / sh + 1, w = (W - 1) / sw + 1. Each input is quantized to a code
//     q = min(max(nearbyint(x * inv_scale) + zero_point, 0), 255)    (float32 arithmetic, ties to even),
// the sums acc = sum_k (q_k - zero_point) w_k are exact int32 (w int8), and
//     y = float(acc) * scale[o] + bias[o]                           (a multiply, then an add: two roundings).
// wq holds the weights (o_pad / 16, ceil(K / 4), 16, 4): for 16 outputs and 4 inputs, output by output, the
// 4 weights of consecutive inputs (zero past K and past out_features); w_sums (o_pad,) int32 their sums over
// k; scale, bias (o_pad,) float32; o_pad a multiple of 64. With AVX-512 VNNI (simd) 4 pixels x 64 outputs
// per tile, VPDPBUSD (unsigned codes times signed weights, exact int32 sums); else portable loops, the same
// integers and the same float operations.

// This thread's streaming stores (store_output) made visible to the other threads: called before its share of a
// parallel loop ends.
inline void streamed() {
#if XNORPP_AVX512
  _mm_sfence();
#endif
}

constexpr int64_t GP = 4;   // pixels per tile
constexpr int64_t GO = 64;  // outputs per tile (4 x 16 lanes)

struct GemmShape {
  int64_t N, H, W, K, K4, sh, sw, h, w, M, o, o_pad;
};

// The code of one input, as the header gives it.
inline uint8_t quantize_one(float x, float inv, float zp) {
  const float v = std::nearbyint(x * inv) + zp;
  return static_cast<uint8_t>(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
}

// The codes of one pixel's K inputs (codes[K .. 4 K4) stay 0: their weights are 0); returns how many of the
// inputs are NaN or infinite (their codes are then meaningless, and the caller refuses the input).
int64_t quantize_generic(const float* x, int64_t K, float inv, float zp, uint8_t* codes) {
  int64_t bad = 0;
  for (int64_t k = 0; k < K; ++k) {
    bad += !std::isfinite(x[k]);
    codes[k] = quantize_one(x[k], inv, zp);
  }
  return bad;
}

// One tile of pixels m0 .. m0 + np - 1 (codes[j], j < np), outputs o_begin .. o_end - 1, portable.
void gemm_tile_generic(const GemmShape& s, const uint8_t* codes, int64_t np, int64_t o_begin, int64_t o_end,
                       const int8_t* wq, const int32_t* w_sums, const float* scale, const float* bias, int32_t zp,
                       float* y) {
  for (int64_t j = 0; j < np; ++j) {
    const uint8_t* q = codes + j * 4 * s.K4;
    for (int64_t o = o_begin; o < std::min(o_end, s.o); ++o) {
      const int8_t* w = wq + (o / 16) * s.K4 * 64 + (o % 16) * 4;
      int32_t acc = 0;
      for (int64_t k4 = 0; k4 < s.K4; ++k4)
        for (int64_t r = 0; r < 4; ++r) acc += static_cast<int32_t>(q[4 * k4 + r]) * w[k4 * 64 + r];
      acc -= zp * w_sums[o];
      const float v = static_cast<float>(acc) * scale[o];
      y[j * s.o + o] = v + bias[o];
    }
  }
}

#if XNORPP_AVX512
// The codes of 16 inputs as int32 lanes (quantize_one's), and how many of them are NaN or infinite into bad.
XNORPP_VNNI_FN inline __m512i quantize16(__m512 xv, float inv, float zp, int64_t& bad) {
  bad += __builtin_popcount(_mm512_fpclass_ps_mask(xv, 0x99));  // QNaN 0x01, +inf 0x08, -inf 0x10, SNaN 0x80
  __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(xv, _mm512_set1_ps(inv)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, _mm512_set1_ps(zp)), _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
  return _mm512_cvtps_epi32(v);
}

XNORPP_VNNI_FN int64_t quantize_avx512(const float* x, int64_t K, float inv, float zp, uint8_t* codes) {
  int64_t bad = 0;
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512i q = quantize16(_mm512_maskz_loadu_ps(m, x + k), inv, zp, bad);
    _mm_mask_storeu_epi8(codes + k, m, _mm512_cvtepi32_epi8(q));
  }
  return bad;
}

// The codes of W pixels of 3 channels whose inputs lie in planes (channel c's pixel x at x[c sc + x]), interleaved
// (pixel by pixel, its 3 codes): 16 pixels at a time, whose 48 codes are four 16-byte stores 12 bytes apart, each
// writing 4 bytes that the next one (or, after the last pixel, the caller) overwrites; as long as 4 bytes past
// the last pixel's codes stay in the row (room), the rest one by one. Returns the pixels done.
XNORPP_VNNI_FN int64_t quantize_planes3_avx512(const float* x, int64_t sc, int64_t W, int64_t room, float inv,
                                               float zp, uint8_t* codes, int64_t& bad) {
  // per 128-bit lane: the first three bytes of each of its four pixels
  const __m512i pick = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
  int64_t x0 = 0;
  for (; x0 + 16 <= W && 3 * (x0 + 16) + 4 <= room; x0 += 16) {
    const __m512i c0 = quantize16(_mm512_loadu_ps(x + x0), inv, zp, bad);
    const __m512i c1 = quantize16(_mm512_loadu_ps(x + sc + x0), inv, zp, bad);
    const __m512i c2 = quantize16(_mm512_loadu_ps(x + 2 * sc + x0), inv, zp, bad);
    const __m512i p = _mm512_shuffle_epi8(
        _mm512_or_si512(c0, _mm512_or_si512(_mm512_slli_epi32(c1, 8), _mm512_slli_epi32(c2, 16))), pick);
    uint8_t* d = codes + 3 * x0;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm512_castsi512_si128(p));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 12), _mm512_extracti32x4_epi32(p, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 24), _mm512_extracti32x4_epi32(p, 2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 36), _mm512_extracti32x4_epi32(p, 3));
  }
  return x0;
}

// A vector of float outputs into fresh memory that a later layer reads: a streaming store, which writes the line
// without reading it into the cache first, where the vector is whole and its line aligned; else a masked store.
XNORPP_VNNI_FN inline void store_output(float* p, __mmask16 m, __m512 v) {
  if (m == 0xFFFF && (reinterpret_cast<uintptr_t>(p) & 63) == 0)
    _mm512_stream_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, m, v);
}

// As gemm_tile_generic: NP pixels x GO outputs at a time (o_begin and o_end multiples of GO); the sums start
// from -zero_point sum_k w_k.
template <int64_t NP>
XNORPP_VNNI_FN void gemm_tile_np(const GemmShape& s, const uint8_t* codes, int64_t o_begin, int64_t o_end,
                                 const int8_t* wq, const int32_t* w_sums, const float* scale, const float* bias,
                                 int32_t zp, float* y) {
  const int32_t* q[NP];
  for (int64_t j = 0; j < NP; ++j) q[j] = reinterpret_cast<const int32_t*>(codes + j * 4 * s.K4);
  const __m512i vzp = _mm512_set1_epi32(-zp);
  for (int64_t o0 = o_begin; o0 < o_end; o0 += GO) {
    __m512i acc[NP][4];
    for (int b = 0; b < 4; ++b) {
      const __m512i init = _mm512_mullo_epi32(vzp, _mm512_loadu_si512(w_sums + o0 + 16 * b));
      for (int64_t j = 0; j < NP; ++j) acc[j][b] = init;
    }
    const int8_t* w = wq + (o0 / 16) * s.K4 * 64;
    for (int64_t k4 = 0; k4 < s.K4; ++k4) {
      __m512i wv[4];
      for (int b = 0; b < 4; ++b) wv[b] = _mm512_loadu_si512(w + (b * s.K4 + k4) * 64);
      for (int64_t j = 0; j < NP; ++j) {
        const __m512i a = _mm512_set1_epi32(q[j][k4]);
        for (int b = 0; b < 4; ++b) acc[j][b] = _mm512_dpbusd_epi32(acc[j][b], a, wv[b]);
      }
    }
    for (int b = 0; b < 4; ++b) {
      const int64_t o = o0 + 16 * b;
      if (o >= s.o) break;
      const __mmask16 m = s.o - o >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (s.o - o)) - 1);
      const __m512 sc = _mm512_loadu_ps(scale + o), bi = _mm512_loadu_ps(bias + o);
      for (int64_t j = 0; j < NP; ++j) {
        const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[j][b]), sc);
        store_output(y + j * s.o + o, m, _mm512_add_ps(v, bi));
      }
    }
  }
}

// gemm_tile_np for the np (1 .. GP) pixels of a tile: a short tile (a linear layer's single input) computes its
// own pixels only.
XNORPP_VNNI_FN void gemm_tile_avx512(const GemmShape& s, const uint8_t* codes, int64_t np, int64_t o_begin,
                                     int64_t o_end, const int8_t* wq, const int32_t* w_sums, const float* scale,
                                     const float* bias, int32_t zp, float* y) {
  static_assert(GP == 4, "one case per tile length");
  switch (np) {
    case 1: return gemm_tile_np<1>(s, codes, o_begin, o_end, wq, w_sums, scale, bias, zp, y);
    case 2: return gemm_tile_np<2>(s, codes, o_begin, o_end, wq, w_sums, scale, bias, zp, y);
    case 3: return gemm_tile_np<3>(s, codes, o_begin, o_end, wq, w_sums, scale, bias, zp, y);
    default: return gemm_tile_np<GP>(s, codes, o_begin, o_end, wq, w_sums, scale, bias, zp, y);
  }
}
#endif

// The checks both int8 layers make of their input's quantization (inv_scale, zero_point) and of their
// per-channel operands (w_sums int32, scale and bias float32, each (o_pad,)); op names the layer.
void check_quantization(const char* op, double inv_scale, int64_t zero_point) {
  TORCH_CHECK(zero_point >= 0 && zero_point <= 255, op, ": zero_point must be a uint8 code");
  TORCH_CHECK(std::isfinite(inv_scale) && inv_scale > 0, op, ": inv_scale must be finite and positive");
}

void check_channel_operands(const char* op, const torch::Tensor& w_sums, const torch::Tensor& scale,
                            const torch::Tensor& bias, int64_t o_pad) {
  TORCH_CHECK(w_sums.dim() == 1 && w_sums.size(0) == o_pad && w_sums.scalar_type() == torch::kInt32 &&
                  w_sums.is_contiguous(),
              op, ": w_sums must be contiguous int32 (o_pad,)");
  for (const auto& t : {scale, bias})
    TORCH_CHECK(t.dim() == 1 && t.size(0) == o_pad && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                op, ": scale and bias must be contiguous float32 (o_pad,)");
}

}  // namespace

torch::Tensor int8_gemm(torch::Tensor x, int64_t sh, int64_t sw, double inv_scale, int64_t zero_point,
                        torch::Tensor wq, torch::Tensor w_sums, torch::Tensor scale, torch::Tensor bias,
                        int64_t out_features, bool simd) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.is_contiguous() && x.device().is_cpu(),
              "int8_gemm: x must be contiguous float32 (N, H, W, K)");
  TORCH_CHECK(x.size(3) >= 1 && sh >= 1 && sw >= 1, "int8_gemm: K and the steps must be positive");
  TORCH_CHECK(x.size(3) <= (int64_t{1} << 31) / (255 * 128) - 1, "int8_gemm: K too large for exact int32 sums");
  check_quantization("int8_gemm", inv_scale, zero_point);
  GemmShape s{x.size(0), x.size(1), x.size(2), x.size(3), (x.size(3) + 3) / 4, sh, sw, 0, 0, 0, out_features,
              wq.dim() == 3 ? 16 * wq.size(0) : 0};
  s.h = s.H > 0 ? (s.H - 1) / sh + 1 : 0;
  s.w = s.W > 0 ? (s.W - 1) / sw + 1 : 0;
  s.M = s.N * s.h * s.w;
  TORCH_CHECK(wq.dim() == 3 && wq.scalar_type() == torch::kInt8 && wq.is_contiguous() && wq.size(1) == s.K4 &&
                  wq.size(2) == 64,
              "int8_gemm: wq must be contiguous int8 (o_pad / 16, ceil(K / 4), 64)");
  TORCH_CHECK(s.o_pad % GO == 0 && out_features >= 1 && out_features <= s.o_pad,
              "int8_gemm: o_pad must be a multiple of 64, >= out_features >= 1");
  check_channel_operands("int8_gemm", w_sums, scale, bias, s.o_pad);
  auto y = torch::empty({s.N, s.h, s.w, out_features}, x.options());
  if (s.M == 0) return y;
  const float* xp = x.data_ptr<float>();
  const int8_t* wp = wq.data_ptr<int8_t>();
  const int32_t* sp = w_sums.data_ptr<int32_t>();
  const float* scp = scale.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float inv = static_cast<float>(inv_scale), zp = static_cast<float>(zero_point);
  simd = simd && vnni_available();
  const int32_t z = static_cast<int32_t>(zero_point);
  // The codes of pixels m0 .. m0 + np - 1 (np <= GP) into codes (GP * 4 K4; the padding past K stays 0).
  auto quantize = [&](int64_t m0, int64_t np, uint8_t* codes) {
    for (int64_t j = 0; j < np; ++j) {
      const int64_t m = m0 + j, n = m / (s.h * s.w), r = m % (s.h * s.w);
      const float* src = xp + ((n * s.H + (r / s.w) * sh) * s.W + (r % s.w) * sw) * s.K;
#if XNORPP_AVX512
      if (simd) {
        (void)quantize_avx512(src, s.K, inv, zp, codes + j * 4 * s.K4);
        continue;
      }
#endif
      (void)quantize_generic(src, s.K, inv, zp, codes + j * 4 * s.K4);
    }
  };
  auto tile = [&](const uint8_t* codes, int64_t m0, int64_t np, int64_t o_begin, int64_t o_end) {
#if XNORPP_AVX512
    if (simd) return gemm_tile_avx512(s, codes, np, o_begin, o_end, wp, sp, scp, bp, z, yp + m0 * s.o);
#endif
    gemm_tile_generic(s, codes, np, o_begin, o_end, wp, sp, scp, bp, z, yp + m0 * s.o);
  };
  const int64_t tiles = (s.M + GP - 1) / GP, chunks = s.o_pad / GO;
  if (tiles >= at::get_num_threads()) {  // the pixel tiles shared out, each quantized where it is multiplied
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> codes(GP * 4 * s.K4, 0);
      for (int64_t t = begin; t < end; ++t) {
        quantize(t * GP, std::min(GP, s.M - t * GP), codes.data());
        tile(codes.data(), t * GP, std::min(GP, s.M - t * GP), 0, s.o_pad);
      }
      streamed();
    });
    return y;
  }
  // fewer tiles than threads (a linear layer at batch 1): quantized once, then (tile, GO outputs) shared out
  std::vector<uint8_t> codes(tiles * GP * 4 * s.K4, 0);
  for (int64_t t = 0; t < tiles; ++t) quantize(t * GP, std::min(GP, s.M - t * GP), codes.data() + t * GP * 4 * s.K4);
  at::parallel_for(0, tiles * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = i / chunks, c = i % chunks;
      tile(codes.data() + t * GP * 4 * s.K4, t * GP, std::min(GP, s.M - t * GP), c * GO, (c + 1) * GO);
    }
    streamed();
  });
  return y;
}


namespace {

// ------------------------------------------------------------ int8_conv: a convolution, its ReLU and max pooling
//
// int8_conv(x, inv_scale, zero_point, wq, w_sums, scale, bias, out_channels, kh, kw, sh, sw, ph, pw, relu,
//           pool (pkh, pkw, psh, psw, pph, ppw), next_scale, next_thr, out_ph, out_pw, simd) -> [y, bits]:
// x (N, H, W, C) float32 (any strides; fastest with channels innermost, or for 3 channels in planes, as a
// permuted view of torch's (N, C, H, W)), finite (else a ValueError that counts the NaN and infinite values,
// from the same pass that quantizes x), each input a code q as int8_gemm's; the convolution
//     acc[o] = sum_{ky, kx, c} (q[y sh + ky - ph][x sw + kx - pw][c] - zero_point) w[o][ky][kx][c]
// (exact int32; the zero padding is the code of 0.0, zero_point, and adds nothing), then
//     v = float(acc) * scale[o] + bias[o]   (a multiply, then an add), max(v, 0) if relu,
// then max pooling over (pkh, pkw) windows at strides (psh, psw) with padding (pph, ppw) (floor mode; the
// padding never wins): y (N, Hq, Wq, o) float32. scale > 0, so v never decreases with acc: the pooling takes
// the largest acc of each window and converts it once, which gives the same float. With next_scale and
// next_thr (o,) also bits, the next binary layer's input as pack_signs gives it with that threshold and
// padding (out_ph, out_pw): bit = next_scale y > next_thr, (N, Hq + 2 out_ph, Wq + 2 out_pw, ceil(o / 64))
// words; else an undefined tensor. No pooling: pool (1, 1, 1, 1, 0, 0).
// wq holds the weights (kh, Q, o_pad, 4), Q = ceil(kw C / 4): for each kernel row and 4 consecutive inputs
// j = 4 q .. 4 q + 3 of the row's kw C (kx, c) pairs, output by output, the 4 weights (zero past kw C and past
// out_channels); o_pad a multiple of 16; w_sums (o_pad,) int32 their sums; scale, bias (o_pad,) float32. A row's last quad
// reads up to 3 codes past its window, which meet zero weights.
// Each thread takes a run of output rows of an image and keeps the pkh convolution rows that its windows
// read in a ring; AVX-512 VNNI (simd): 4 pixels x 64 outputs per tile, VPDPBUSD; else portable loops.

struct ConvShape {
  int64_t N, H, W, C, o, o_pad, kh, kw, sh, sw, ph, pw, Q, Hp, Wp, Ho, Wo;
  int64_t F, L;  // AVX-512 tiles: F whole quads per kernel row, then L quads of the rows' last codes (L = 0: none)
  int64_t pkh, pkw, psh, psw, pph, ppw, Hq, Wq;
  int32_t zp;
};

constexpr int64_t CP = 4;  // pixels per VNNI tile

// The image's codes with its padding (Hp rows of Wp pixels of C codes, zero_point outside x), and 4 spare codes,
// from x (N, H, W, C) with strides st (elements): with AVX-512, rows of whole pixels (channels innermost) through
// quantize_avx512 and 3 channels in planes (pixels innermost: torch's (N, C, H, W)) through quantize_planes3; the
// rest one input at a time; returns how many values of x are NaN or infinite.
int64_t quantize_image(const ConvShape& s, const float* x, const int64_t* st, float inv, uint8_t* codes,
                       bool simd) {
  const int64_t row = s.Wp * s.C;
  const float zp = static_cast<float>(s.zp);
  [[maybe_unused]] const bool whole = st[3] == 1 && st[2] == s.C, planes = s.C == 3 && st[2] == 1;
  std::atomic<int64_t> bad{0};
  at::parallel_for(0, s.N * s.Hp, 1, [&](int64_t begin, int64_t end) {
    int64_t count = 0;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / s.Hp, iy = r % s.Hp - s.ph;
      uint8_t* dst = codes + r * row;
      if (iy < 0 || iy >= s.H) {
        std::memset(dst, s.zp, row);
        continue;
      }
      std::memset(dst, s.zp, s.pw * s.C);
      const float* src = x + n * st[0] + iy * st[1];
      uint8_t* out = dst + s.pw * s.C;
      int64_t done = 0;  // pixels quantized by a vector path; the rest one input at a time
#if XNORPP_AVX512
      if (simd && whole)
        count += quantize_avx512(src, s.W * s.C, inv, zp, out), done = s.W;
      else if (simd && planes)
        done = quantize_planes3_avx512(src, st[3], s.W, row - s.pw * s.C, inv, zp, out, count);
#endif
      for (int64_t px = done; px < s.W; ++px)
        for (int64_t c = 0; c < s.C; ++c) {
          const float v = src[px * st[2] + c * st[3]];
          count += !std::isfinite(v);
          out[px * s.C + c] = quantize_one(v, inv, zp);
        }
      std::memset(dst + (s.pw + s.W) * s.C, s.zp, s.pw * s.C);  // after the codes: quantize_planes3 writes past them
    }
    bad += count;
  });
  std::memset(codes + s.N * s.Hp * row, 0, 4);
  return bad;
}

// Convolution row cy of the image at img (codes): acc (Wo, o_pad) int32, portable.
void conv_row_generic(const ConvShape& s, const uint8_t* img, int64_t cy, const int8_t* wq, const int32_t* w_sums,
                      int32_t* acc) {
  const int64_t kwc = s.kw * s.C;
  for (int64_t x = 0; x < s.Wo; ++x)
    for (int64_t o = 0; o < s.o; ++o) {
      int32_t a = -s.zp * w_sums[o];
      for (int64_t ky = 0; ky < s.kh; ++ky) {
        const uint8_t* q = img + ((cy * s.sh + ky) * s.Wp + x * s.sw) * s.C;
        const int8_t* w = wq + (ky * s.Q * s.o_pad + o) * 4;
        for (int64_t j = 0; j < kwc; ++j) a += static_cast<int32_t>(q[j]) * w[(j / 4) * s.o_pad * 4 + j % 4];
      }
      acc[x * s.o_pad + o] = a;
    }
}

#if XNORPP_AVX512
constexpr int64_t MAX_L = 4;  // gathered quads of at most 16 kernel rows

// The weights of the AVX-512 tiles, (kh F + L, o_pad, 4), from wq, when each kernel row's kw C codes are 4 F + 1
// (ResNet's and AlexNet's stems: 7 x 3 = 21, 11 x 3 = 33) and kh <= 4 MAX_L: each row's F whole quads, then its
// last code gathered with those of three other rows into L = ceil(kh / 4) shared quads (row 4 l + i in byte i of
// quad l; zero weights past kh): 37 quads of a 7 x 7 x 3 window instead of 42 padded ones.
std::vector<int8_t> gathered_weights(const ConvShape& s, const int8_t* wq) {
  std::vector<int8_t> g((s.kh * s.F + s.L) * s.o_pad * 4, 0);
  for (int64_t ky = 0; ky < s.kh; ++ky) {
    std::memcpy(g.data() + ky * s.F * s.o_pad * 4, wq + ky * s.Q * s.o_pad * 4, s.F * s.o_pad * 4);
    for (int64_t o = 0; o < s.o_pad; ++o)  // the row's last code: byte 0 of its last (padded) quad
      g[((s.kh * s.F + ky / 4) * s.o_pad + o) * 4 + ky % 4] = wq[((ky * s.Q + s.F) * s.o_pad + o) * 4];
  }
  return g;
}

// As conv_row_generic, CP pixels x 16 NZ outputs from output o0 (a short tile repeats its last pixel); wq as
// gathered_weights gives it (or the kernel's own layout: F = Q, L = 0).
template <int NZ>
XNORPP_VNNI_FN void conv_tile_avx512(const ConvShape& s, const uint8_t* img, int64_t cy, int64_t x0, int64_t np,
                                     int64_t o0, const int8_t* wq, const int32_t* w_sums, int32_t* acc) {
  __m512i v[CP][NZ];
  for (int z = 0; z < NZ; ++z) {
    const __m512i init = _mm512_mullo_epi32(_mm512_set1_epi32(-s.zp), _mm512_loadu_si512(w_sums + o0 + 16 * z));
    for (int64_t j = 0; j < CP; ++j) v[j][z] = init;
  }
  const uint8_t* q[CP];
  for (int64_t j = 0; j < CP; ++j) q[j] = img + (cy * s.sh * s.Wp + (x0 + std::min(j, np - 1)) * s.sw) * s.C;
  int32_t last[MAX_L][CP];  // the gathered quads of the rows' last codes, built before the accumulators are busy
  for (int64_t l = 0; l < s.L; ++l)
    for (int64_t j = 0; j < CP; ++j) {
      uint32_t quad = 0;
      for (int64_t i = 0; i < 4 && 4 * l + i < s.kh; ++i)
        quad |= uint32_t{q[j][(4 * l + i) * s.Wp * s.C + 4 * s.F]} << (8 * i);
      last[l][j] = static_cast<int32_t>(quad);
    }
  const int8_t* w = wq + o0 * 4;  // (ky, k), then the gathered quads: o_pad outputs of 4 weights each
  for (int64_t ky = 0; ky < s.kh; ++ky) {
    const int64_t row = ky * s.Wp * s.C;
    for (int64_t k = 0; k < s.F; ++k, w += 4 * s.o_pad) {
      __m512i b[NZ];
      for (int z = 0; z < NZ; ++z) b[z] = _mm512_loadu_si512(w + 64 * z);
      for (int64_t j = 0; j < CP; ++j) {
        int32_t quad;
        std::memcpy(&quad, q[j] + row + 4 * k, 4);
        const __m512i a = _mm512_set1_epi32(quad);
        for (int z = 0; z < NZ; ++z) v[j][z] = _mm512_dpbusd_epi32(v[j][z], a, b[z]);
      }
    }
  }
  for (int64_t l = 0; l < s.L; ++l, w += 4 * s.o_pad) {
    __m512i b[NZ];
    for (int z = 0; z < NZ; ++z) b[z] = _mm512_loadu_si512(w + 64 * z);
    for (int64_t j = 0; j < CP; ++j) {
      const __m512i a = _mm512_set1_epi32(last[l][j]);
      for (int z = 0; z < NZ; ++z) v[j][z] = _mm512_dpbusd_epi32(v[j][z], a, b[z]);
    }
  }
  for (int64_t j = 0; j < np; ++j)
    for (int z = 0; z < NZ; ++z) _mm512_storeu_si512(acc + (x0 + j) * s.o_pad + o0 + 16 * z, v[j][z]);
}

XNORPP_VNNI_FN void conv_row_avx512(const ConvShape& s, const uint8_t* img, int64_t cy, const int8_t* wq,
                                    const int32_t* w_sums, int32_t* acc) {
  for (int64_t x0 = 0; x0 < s.Wo; x0 += CP) {
    const int64_t np = std::min(CP, s.Wo - x0);
    int64_t o0 = 0;
    for (; o0 + 64 <= s.o_pad; o0 += 64) conv_tile_avx512<4>(s, img, cy, x0, np, o0, wq, w_sums, acc);
    switch ((s.o_pad - o0) / 16) {
      case 3: conv_tile_avx512<3>(s, img, cy, x0, np, o0, wq, w_sums, acc); break;
      case 2: conv_tile_avx512<2>(s, img, cy, x0, np, o0, wq, w_sums, acc); break;
      case 1: conv_tile_avx512<1>(s, img, cy, x0, np, o0, wq, w_sums, acc); break;
      default: break;
    }
  }
}

// Pooled pixel from the window's convolution rows rows[0 .. nr) (each (Wo, o_pad) int32), columns cx0 .. cx1:
// y (o,) and, when scale is set, its sign bits into the words wb. NR, NC > 0: a window of NR rows and NC columns
// (nr and cx1 - cx0), its loops unrolled (the windows inside the image).
template <int NR, int NC>
XNORPP_VNNI_FN void pool_pixel_avx512(const ConvShape& s, int32_t* const* rows, int64_t nr, int64_t cx0,
                                      int64_t cx1, const float* scale, const float* bias, bool relu,
                                      const float* nscale, const float* nthr, float* y, u64* wb) {
  const __m512 zero = _mm512_setzero_ps();
  const int64_t rows_in = NR > 0 ? NR : nr, cols = NC > 0 ? NC : cx1 - cx0;
  u64 word = 0;
  for (int64_t c = 0; c < s.o; c += 16) {
    const __mmask16 m = s.o - c >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (s.o - c)) - 1);
    __m512i a = _mm512_loadu_si512(rows[0] + cx0 * s.o_pad + c);
#pragma GCC unroll 4
    for (int64_t r = 0; r < rows_in; ++r)
#pragma GCC unroll 4
      for (int64_t k = r == 0 ? 1 : 0; k < cols; ++k)
        a = _mm512_max_epi32(a, _mm512_loadu_si512(rows[r] + (cx0 + k) * s.o_pad + c));
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_loadu_ps(scale + c)),
                             _mm512_loadu_ps(bias + c));
    if (relu) v = _mm512_max_ps(v, zero);
    store_output(y + c, m, v);
    if (!nscale) continue;
    const __m512 sv = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, nscale + c));
    word |= static_cast<u64>(_mm512_mask_cmp_ps_mask(m, sv, _mm512_maskz_loadu_ps(m, nthr + c), _CMP_GT_OQ))
            << (c % 64);
    if (c % 64 == 48 || c + 16 >= s.o) {
      wb[c / 64] = word;
      word = 0;
    }
  }
}
#endif

void pool_pixel_generic(const ConvShape& s, int32_t* const* rows, int64_t nr, int64_t cx0, int64_t cx1,
                        const float* scale, const float* bias, bool relu, const float* nscale, const float* nthr,
                        float* y, u64* wb) {
  for (int64_t c = 0; c < s.o; ++c) {
    int32_t a = rows[0][cx0 * s.o_pad + c];
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t cx = cx0; cx < cx1; ++cx) a = std::max(a, rows[r][cx * s.o_pad + c]);
    const float p = static_cast<float>(a) * scale[c];
    float v = p + bias[c];
    if (relu) v = v > 0.0f ? v : 0.0f;
    y[c] = v;
    if (nscale) wb[c / 64] |= static_cast<u64>(nscale[c] * v > nthr[c]) << (c % 64);
  }
}

}  // namespace

std::vector<torch::Tensor> int8_conv(torch::Tensor x, double inv_scale, int64_t zero_point, torch::Tensor wq,
                                     torch::Tensor w_sums, torch::Tensor scale, torch::Tensor bias,
                                     int64_t out_channels, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                     int64_t pw, bool relu, int64_t pkh, int64_t pkw, int64_t psh, int64_t psw,
                                     int64_t pph, int64_t ppw, c10::optional<torch::Tensor> next_scale,
                                     c10::optional<torch::Tensor> next_thr, int64_t out_ph, int64_t out_pw,
                                     bool simd) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "int8_conv: x must be float32 (N, H, W, C)");
  check_quantization("int8_conv", inv_scale, zero_point);
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0 && out_channels >= 1,
              "int8_conv: bad kernel, stride, padding or channel count");
  TORCH_CHECK(pkh >= 1 && pkw >= 1 && psh >= 1 && psw >= 1 && pph >= 0 && ppw >= 0 && 2 * pph <= pkh &&
                  2 * ppw <= pkw && pkh <= 64,
              "int8_conv: bad pooling kernel (at most 64 rows), stride or padding");
  ConvShape s{};
  s.N = x.size(0), s.H = x.size(1), s.W = x.size(2), s.C = x.size(3), s.o = out_channels;
  s.kh = kh, s.kw = kw, s.sh = sh, s.sw = sw, s.ph = ph, s.pw = pw, s.zp = static_cast<int32_t>(zero_point);
  TORCH_CHECK(s.C >= 1, "int8_conv: x has no channels");
  TORCH_CHECK(kh * kw * s.C <= (int64_t{1} << 31) / (2 * 255 * 128) - 1,
              "int8_conv: kh kw C too large for exact int32 sums");
  s.Q = (kw * s.C + 3) / 4, s.Hp = s.H + 2 * ph, s.Wp = s.W + 2 * pw;
  TORCH_CHECK(s.Hp >= kh && s.Wp >= kw, "int8_conv: the input is smaller than the kernel");
  s.Ho = (s.Hp - kh) / sh + 1, s.Wo = (s.Wp - kw) / sw + 1;
  s.pkh = pkh, s.pkw = pkw, s.psh = psh, s.psw = psw, s.pph = pph, s.ppw = ppw;
  TORCH_CHECK(s.Ho + 2 * pph >= pkh && s.Wo + 2 * ppw >= pkw, "int8_conv: the convolution's output is smaller than "
              "the pooling kernel");
  s.Hq = (s.Ho + 2 * pph - pkh) / psh + 1, s.Wq = (s.Wo + 2 * ppw - pkw) / psw + 1;
  TORCH_CHECK(wq.dim() == 4 && wq.scalar_type() == torch::kInt8 && wq.is_contiguous() && wq.size(0) == kh &&
                  wq.size(1) == s.Q && wq.size(3) == 4,
              "int8_conv: wq must be contiguous int8 (kh, ceil(kw C / 4), o_pad, 4)");
  s.o_pad = wq.size(2);
  TORCH_CHECK(s.o_pad % 16 == 0 && s.o <= s.o_pad && s.o_pad - s.o < 16,
              "int8_conv: o_pad must be the multiple of 16 at or above out_channels");
  check_channel_operands("int8_conv", w_sums, scale, bias, s.o_pad);
  const float* scp = scale.data_ptr<float>();
  for (int64_t c = 0; c < s.o; ++c)
    TORCH_CHECK(std::isfinite(scp[c]) && scp[c] > 0, "int8_conv: scale must be finite and positive");
  const bool has_next = next_scale && next_scale->defined();
  TORCH_CHECK(has_next == (next_thr && next_thr->defined()), "int8_conv: next_scale and next_thr go together");
  if (has_next) {
    for (const auto& t : {*next_scale, *next_thr})
      TORCH_CHECK(t.dim() == 1 && t.size(0) == s.o && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                  "int8_conv: next_scale and next_thr must be contiguous float32 (out_channels,)");
    TORCH_CHECK(out_ph >= 0 && out_pw >= 0, "int8_conv: bad padding of the next layer");
  }
  auto y = torch::empty({s.N, s.Hq, s.Wq, s.o}, x.options());
  const int64_t cw = (s.o + 63) / 64, oHp = s.Hq + 2 * out_ph, oWp = s.Wq + 2 * out_pw;
  torch::Tensor bits;
  if (has_next) bits = torch::zeros({s.N, oHp, oWp, cw}, x.options().dtype(torch::kInt64));
  if (s.N == 0) return {y, bits};
  simd = simd && vnni_available();
  // quantize_image writes every code, and each convolution row's outputs are written before they are read: neither
  // buffer is cleared first
  std::unique_ptr<uint8_t[]> codes(new uint8_t[s.N * s.Hp * s.Wp * s.C + 4]);
  const int64_t bad = quantize_image(s, x.data_ptr<float>(), x.strides().data(), static_cast<float>(inv_scale),
                                     codes.get(), simd);
  TORCH_CHECK_VALUE(bad == 0, "x holds ", bad, " NaN or infinite values");  // before any output is written
  const int8_t* wp = wq.data_ptr<int8_t>();
  s.F = s.Q, s.L = 0;
#if XNORPP_AVX512
  std::vector<int8_t> gathered;
  if (simd && (kw * s.C) % 4 == 1 && kh <= 4 * MAX_L) {
    s.F = kw * s.C / 4, s.L = (kh + 3) / 4;
    gathered = gathered_weights(s, wp);
    wp = gathered.data();
  }
#endif
  const int32_t* sp = w_sums.data_ptr<int32_t>();
  const float* bp = bias.data_ptr<float>();
  const float* nsp = has_next ? next_scale->data_ptr<float>() : nullptr;
  const float* ntp = has_next ? next_thr->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  u64* words = has_next ? reinterpret_cast<u64*>(bits.data_ptr<int64_t>()) : nullptr;
  at::parallel_for(0, s.N * s.Hq, 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<int32_t[]> ring(new int32_t[s.pkh * s.Wo * s.o_pad]);  // convolution rows, row cy in slot cy % pkh
    std::vector<int64_t> held(s.pkh, -1);                // which row each slot holds (of image n_held)
    int64_t n_held = -1;
    int32_t* rows[64];
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / s.Hq, qy = r % s.Hq;
      if (n != n_held) std::fill(held.begin(), held.end(), -1), n_held = n;
      const uint8_t* img = codes.get() + n * s.Hp * s.Wp * s.C;
      const int64_t cy0 = std::max<int64_t>(0, qy * s.psh - s.pph), cy1 = std::min(s.Ho, qy * s.psh - s.pph + s.pkh);
      for (int64_t cy = cy0; cy < cy1; ++cy) {
        int32_t* slot = ring.get() + (cy % s.pkh) * s.Wo * s.o_pad;
        rows[cy - cy0] = slot;
        if (held[cy % s.pkh] == cy) continue;
        held[cy % s.pkh] = cy;
#if XNORPP_AVX512
        if (simd) {
          conv_row_avx512(s, img, cy, wp, sp, slot);
          continue;
        }
#endif
        conv_row_generic(s, img, cy, wp, sp, slot);
      }
      for (int64_t qx = 0; qx < s.Wq; ++qx) {
        const int64_t cx0 = std::max<int64_t>(0, qx * s.psw - s.ppw), cx1 = std::min(s.Wo, qx * s.psw - s.ppw + s.pkw);
        float* yo = yp + ((n * s.Hq + qy) * s.Wq + qx) * s.o;
        u64* wb = words ? words + ((n * oHp + qy + out_ph) * oWp + qx + out_pw) * cw : nullptr;
#if XNORPP_AVX512
        if (simd) {
          if (cy1 - cy0 == 3 && cx1 - cx0 == 3)  // a whole 3x3 window (ResNet's pooling inside the image)
            pool_pixel_avx512<3, 3>(s, rows, 3, cx0, cx1, scp, bp, relu, nsp, ntp, yo, wb);
          else
            pool_pixel_avx512<0, 0>(s, rows, cy1 - cy0, cx0, cx1, scp, bp, relu, nsp, ntp, yo, wb);
          continue;
        }
#endif
        pool_pixel_generic(s, rows, cy1 - cy0, cx0, cx1, scp, bp, relu, nsp, ntp, yo, wb);
      }
    }
    streamed();
  });
  return {y, bits};
}

}  // namespace xnorpp
