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
// packed_conv(xb, wt, ..., corr, corr_rows, corr_cols, gamma, gamma_y, gamma_x, relu, residual, post_scale,
//     post_shift, post_relu, next_scale, next_thr, out_ph, out_pw, write_y, simd) -> [y, bits]: xb from
//     pack_signs, wt the packed weights laid out (o_pad / 32, kh * kw * cw, 32): for each tile of 32 output
//     channels, its rows (tap, word) one after another, channels innermost; y (N, h_out * w_out, o) float32:
//         y = (c kh kw - 2 sum popcount(a xor b) + corr) * gamma,
//     then max(y, 0) if relu, then residual + y, then (post_scale, post_shift (o,) given: a following batch norm)
//     y post_scale + post_shift (a multiply, then an add), then max(y, 0) if post_relu; write_y 1: y a new
//     tensor, 2: y written over the residual (given then, and returned as y), 0: no y (an undefined tensor).
//     corr a table (R, C, o)
//     int32 whose row corr_rows[y], column corr_cols[x] is pixel (y, x)'s, gamma (1 or h_out w_out, o) float32,
//     or gamma (1, o)
//     with its factors gamma_y (h_out or h_out w_out,) and gamma_x (w_out,), multiplied as (gamma gamma_y) gamma_x
//     (Cases 3-4 without their dense Gamma), and residual (N, h_out w_out, o) float32 are optional. One multiply per
//     output (Eq. 9). With next_scale and next_thr (o,) also bits, the next binary layer's input as pack_signs
//     gives it with that threshold and padding (out_ph, out_pw): bit = next_scale y > next_thr.
// packed_conv_bits(xb, wt, ..., bound, flip, out_ph, out_pw, simd): the same
//     popcounts v, written as the sign bits of the next binary layer's input,
//         bit = (v <= bound) xor flip,
//     bound (1 or h_out w_out, o_pad) int32, flip (1 or h_out w_out, o_pad / 32)
//     int32 bit masks -> (N, h_out + 2 out_ph, w_out + 2 out_pw, ceil(o / 64)) int64.
//
// Border words are 0, i.e. sign -1, so the count is that of pad_mode
// "minus_one"; pad_mode "zero" is obtained by the caller's corr (or bound).
//
// Int8 tiles (AMX), the same convolution on CPUs with AMX-INT8: signs stored one
// byte each (+1 / -1), the counts sum_i a_i b_i computed by the tile multiply-add
// TDPBSSD (16 x 64 by 64 x 16 bytes, exact int32 sums). The border holds the pad
// value itself (-1, or 0 for pad_mode "zero"), so no correction is needed:
// pack_signs_i8(x, ph, pw, scale, thr, border): as pack_signs, -> (N Hp Wp + TAIL, cp)
//     int8, cp = 64 ceil(C / 64), rows = padded pixels (n, y, x) in order; border and the
//     TAIL spare rows hold border; unused channels hold any sign (their weights are 0).
// amx_conv(xi, wi, N, Hp, Wp, ..., gamma, gamma_y, gamma_x, relu, residual, post_scale, post_shift, post_relu,
//     next_scale, next_thr, out_ph, out_pw, out_border, write_y) -> [y, signs]: y (N, h_out w_out, o) float32 =
//     count * gamma (Gamma of Cases 3-4 from its factors: (gamma[o] gamma_y[y or p]) gamma_x[x]),
//     then max(y, 0) if relu, then residual + y, then the affine map and its ReLU (as packed_conv); with
//     next_scale and next_thr also the next layer's input signs of y (as pack_signs_i8), else an undefined
//     tensor; y as packed_conv's write_y (0: undefined, the signs alone); wi int8: for tap t,
//     channel block cb and 16 outputs ob, a 1 KB tile whose row r holds, output by
//     output, the weights of channels 64 cb + 4 r .. 64 cb + 4 r + 3; laid out
//     (o_pad / 32, kh kw, cp / 64, 2, 16, 16, 4), so that the tiles of 32 outputs follow
//     each other in the order the kernel reads them.
// Instead of int8 tiles, wi may hold row masks, int64 (o_pad / 32, kh kw, cp / 64, 2, 16): bit j of a row's
//     mask is the sign of its byte j (so 16 bytes of weights per 128), for layers of a multiple of 64 channels.
// amx_conv_signs(xi, wi, N, Hp, Wp, ..., bound, flip, out_ph, out_pw, out_border) ->
//     the next binary layer's input in pack_signs_i8's layout, bit = (count >= bound)
//     xor flip, with bound and flip shaped as for packed_conv_bits.
// A tile row is one output pixel (y, x), which reads the input at s (y Wp + x) + ky Wp + kx:
// for stride s = sh = sw, 16 pixels of one row, or of the rows padded to Wp columns,
// are an arithmetic sequence, one strided tile load (AmxGeometry). Strides 1 and 2; the
// last image's tiles read up to TAIL rows past it, which are checked.
// Multi-threaded with at::parallel_for (torch.set_num_threads applies).
//
// Built with -DXNORPP_AMX_EMULATION=1 (the backend "cpp_amx_emulated"), the tile instructions are
// amx_emulation.h's software ones, with the hardware's semantics: the same int8-tile code runs, slowly,
// on any CPU with AVX-512 (its epilogues), and amx_available() says so; the tests run it everywhere.
//
// Portability: the file is built for the compiler's default target (plus POPCNT
// on x86-64, chosen by the Python side). The AVX-512 VPOPCNTDQ functions carry
// their own target attribute and run only when simd = true and the CPU reports
// the instructions at run time (simd_available()); otherwise the portable loops
// run. Both give identical results. Every shape is checked before any memory
// is touched: the kernels never read or write outside their tensors.

#include "common.h"

#ifndef XNORPP_AMX_EMULATION
#define XNORPP_AMX_EMULATION 0
#endif

#if XNORPP_AVX512
#if XNORPP_AMX_EMULATION  // software tiles (amx_emulation.h): no AMX instruction is emitted
#define XNORPP_AMX_FN __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#else
#define XNORPP_AMX_FN __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512dq,avx512vl")))
#endif
#endif

#if XNORPP_AVX512 && XNORPP_AMX_EMULATION
#include "amx_emulation.h"
#define XNORPP_AMX 1
#elif XNORPP_AVX512 && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define XNORPP_AMX 1
#else
#define XNORPP_AMX 0
#endif


namespace xnorpp {

// Whether the CPU has AVX-512 (F, BW, DQ, VL) with VPOPCNTDQ (the popcount kernels), or with VNNI (int8_gemm).
bool cpu_has_avx512(bool vnni) {
#if XNORPP_AVX512
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         (vnni ? __builtin_cpu_supports("avx512vnni") : __builtin_cpu_supports("avx512vpopcntdq"));
#else
  return false;
#endif
}

bool simd_available() {
  static const bool has = cpu_has_avx512(false);
  return has;
}

bool vnni_available() {
  static const bool has = cpu_has_avx512(true);
  return has;
}

}  // namespace xnorpp

using xnorpp::simd_available;
using xnorpp::vnni_available;

namespace {

constexpr int64_t OB = 32;  // output channels per tile (4 x 8 lanes of 64 bits; one 32-bit half word of bits)
constexpr int64_t PB = 6;   // output pixels per tile

bool cpu_has_amx() {
#if XNORPP_AMX && XNORPP_AMX_EMULATION
  return simd_available();  // software tiles on any CPU; the epilogues around them are AVX-512
#elif XNORPP_AMX
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!((d >> 24) & 1) || !((d >> 25) & 1) || !simd_available()) return false;  // AMX-TILE, AMX-INT8; AVX-512 epilogue
  // Linux hands out the 8 KB tile state per process on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
  return false;
#endif
}

bool amx_available() {
  static const bool has = cpu_has_amx();
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

// Checks x and the optional threshold of pack_signs / pack_signs_i8.
Threshold check_pack(const torch::Tensor& x, int64_t ph, int64_t pw, const c10::optional<torch::Tensor>& scale,
                     const c10::optional<torch::Tensor>& thr) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "pack_signs: x must be a 4-d float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(ph >= 0 && pw >= 0, "pack_signs: negative padding");
  const bool has_scale = scale && scale->defined(), has_thr = thr && thr->defined();
  TORCH_CHECK(has_scale == has_thr, "pack_signs: scale and thr go together");
  if (!has_scale) return {nullptr, nullptr};
  for (const auto& t : {*scale, *thr})
    TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(1) && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                "pack_signs: scale and thr must be contiguous float32 (C,)");
  return {scale->data_ptr<float>(), thr->data_ptr<float>()};
}

torch::Tensor pack_signs(torch::Tensor x, int64_t ph, int64_t pw, c10::optional<torch::Tensor> scale,
                         c10::optional<torch::Tensor> thr, bool simd) {
  const Threshold th = check_pack(x, ph, pw, scale, thr);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
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
  int64_t out_Hp, out_Wp, out_ph, out_pw;
  int64_t out_units;       // per output pixel: 32-bit halves of words (bits) or bytes (sign bytes)
  // sign bytes (int8 tiles): of the counts (y null) or of y, bit = scale y > thr
  int8_t* bytes;           // (N out_Hp out_Wp + TAIL, out_units)
  const float* scale;      // (o,)
  const float* thr;        // (o,)
  // corr as a table (XNOR-popcount float epilogue): pixel (y, x) reads row corr_rows[y] * corr_ncols + corr_cols[x]
  const int32_t* corr_rows;  // (h_out,)
  const int32_t* corr_cols;  // (w_out,)
  int64_t corr_ncols;
  // Gamma from its factors: gamma (1, o) times gamma_y[y] (or [p]), then times gamma_x[x]
  const float* gamma_y;    // (h_out,) or, when gamma_y_pixel, (h_out w_out,); or null
  bool gamma_y_pixel;
  const float* gamma_x;    // (w_out,) or null
  // after the residual: y = y * post_scale + post_shift (a multiply, then an add), then max(y, 0) if post_relu
  const float* post_scale;  // (o,) or null
  const float* post_shift;  // (o,), with post_scale
  bool post_relu;
};

// Gamma (1 or P rows, o columns) of a float epilogue, checked: e.gamma and e.gamma_rows (1 when absent).
void set_gamma(Epilogue& e, const c10::optional<torch::Tensor>& gamma, int64_t P, int64_t o, const char* who) {
  e.gamma_rows = 1;
  if (!(gamma && gamma->defined())) return;
  TORCH_CHECK(gamma->scalar_type() == torch::kFloat32 && gamma->is_contiguous() && gamma->dim() == 2 &&
                  gamma->size(1) == o && (gamma->size(0) == 1 || gamma->size(0) == P),
              who, ": gamma must be contiguous float32 (1 or h_out * w_out, o)");
  e.gamma = gamma->data_ptr<float>();
  e.gamma_rows = gamma->size(0);
}

// The thresholds of a sign epilogue (bound (1 or P, o_pad), flip (rows of bound, o_pad / 32)), checked.
void set_bounds(Epilogue& e, const torch::Tensor& bound, const torch::Tensor& flip, int64_t P, int64_t o_pad,
                const char* who) {
  TORCH_CHECK(bound.scalar_type() == torch::kInt32 && bound.is_contiguous() && bound.dim() == 2 &&
                  bound.size(1) == o_pad && (bound.size(0) == 1 || bound.size(0) == P),
              who, ": bound must be contiguous int32 (1 or h_out * w_out, o_pad)");
  TORCH_CHECK(flip.scalar_type() == torch::kInt32 && flip.is_contiguous() && flip.dim() == 2 &&
                  flip.size(0) == bound.size(0) && flip.size(1) == o_pad / OB,
              who, ": flip must be contiguous int32 (rows of bound, o_pad / 32)");
  e.bound = bound.data_ptr<int32_t>();
  e.flip = flip.data_ptr<int32_t>();
  e.bound_rows = bound.size(0);
}

// Two per-channel float32 vectors (o,) that go together (both or neither), checked: their data into a and b;
// returns whether they are given.
bool channel_pair(const c10::optional<torch::Tensor>& ta, const c10::optional<torch::Tensor>& tb, int64_t o,
                  const float*& a, const float*& b, const char* who, const char* names) {
  const bool given = ta && ta->defined();
  TORCH_CHECK(given == (tb && tb->defined()), who, ": ", names, " go together");
  if (!given) return false;
  for (const auto& t : {*ta, *tb})
    TORCH_CHECK(t.dim() == 1 && t.size(0) == o && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                who, ": ", names, " must be contiguous float32 (o,)");
  a = ta->data_ptr<float>();
  b = tb->data_ptr<float>();
  return true;
}

// The float epilogue's tensors, checked: Gamma (1 or P rows, o columns) or its factors (gamma (1, o) with
// gamma_y (h_out,) or (P,), and gamma_x (w_out,)), ReLU, the residual (N, P, o), a per-channel affine map after
// it (post_scale, post_shift (o,): a following batch norm) with its ReLU (post_relu), and the next layer's
// per-channel threshold (next_scale, next_thr (o,)); returns whether the threshold is given.
bool set_float_epilogue(Epilogue& e, const c10::optional<torch::Tensor>& gamma,
                        const c10::optional<torch::Tensor>& gamma_y, const c10::optional<torch::Tensor>& gamma_x,
                        bool relu, const c10::optional<torch::Tensor>& residual,
                        const c10::optional<torch::Tensor>& post_scale, const c10::optional<torch::Tensor>& post_shift,
                        bool post_relu, const c10::optional<torch::Tensor>& next_scale,
                        const c10::optional<torch::Tensor>& next_thr, int64_t N, int64_t h_out, int64_t w_out,
                        int64_t o, const char* who) {
  const int64_t P = h_out * w_out;
  e.relu = relu;
  set_gamma(e, gamma, P, o, who);
  for (const auto& f : {gamma_y, gamma_x})
    TORCH_CHECK(!(f && f->defined()) || (f->scalar_type() == torch::kFloat32 && f->is_contiguous() && f->dim() == 1),
                who, ": gamma_y and gamma_x must be contiguous float32 vectors");
  if (gamma_y && gamma_y->defined()) {
    TORCH_CHECK(e.gamma && e.gamma_rows == 1, who, ": gamma_y multiplies a per-channel gamma (1, o)");
    TORCH_CHECK(gamma_y->size(0) == h_out || gamma_y->size(0) == P, who, ": gamma_y must be (h_out,) or (P,)");
    e.gamma_y = gamma_y->data_ptr<float>();
    e.gamma_y_pixel = gamma_y->size(0) == P && P != h_out;
  }
  if (gamma_x && gamma_x->defined()) {
    TORCH_CHECK(e.gamma_y && !e.gamma_y_pixel && gamma_x->size(0) == w_out,
                who, ": gamma_x (w_out,) goes with gamma_y (h_out,)");
    e.gamma_x = gamma_x->data_ptr<float>();
  }
  if (residual && residual->defined()) {
    TORCH_CHECK(residual->scalar_type() == torch::kFloat32 && residual->is_contiguous() &&
                    residual->numel() == N * P * o,
                who, ": residual must be contiguous float32 (N, h_out * w_out, o)");
    e.residual = residual->data_ptr<float>();
  }
  channel_pair(post_scale, post_shift, o, e.post_scale, e.post_shift, who, "post_scale and post_shift");
  e.post_relu = post_relu;
  return channel_pair(next_scale, next_thr, o, e.scale, e.thr, who, "next_scale and next_thr");
}

// The float output y of a float epilogue, (N, h_out w_out, o): none (write_y 0, when the next layer's signs are
// all that is wanted), a new tensor (1), or the residual itself (2: each output overwrites its own residual,
// read just before).
torch::Tensor float_output(Epilogue& e, int64_t write_y, bool has_scale, const c10::optional<torch::Tensor>& residual,
                           int64_t N, int64_t P, int64_t o, const torch::TensorOptions& options, const char* who) {
  TORCH_CHECK(write_y >= 0 && write_y <= 2, who, ": write_y must be 0 (no y), 1 (a new y) or 2 (y into the residual)");
  TORCH_CHECK(write_y || has_scale, who, ": nothing to write (neither y nor the next layer's signs)");
  if (write_y == 0) return torch::Tensor();
  if (write_y == 2) {
    TORCH_CHECK(e.residual, who, ": write_y 2 writes y into the residual, which is not given");
    e.y = const_cast<float*>(e.residual);
    return residual->view({N, P, o});
  }
  auto out = torch::empty({N, P, o}, options.dtype(torch::kFloat32));
  e.y = out.data_ptr<float>();
  return out;
}

// One tile: PB output pixels of image n (a short tile repeats its last pixel) and OB channels from o0.
struct Tile {
  int64_t n, p0, np, o0, oe;
  int64_t base[PB];    // word offset of each pixel's receptive field in xb
  int64_t py[PB], px[PB];  // each pixel's output row and column
};

// The tile of image n, pixels from p0 = (y, x), channels from o0.
Tile make_tile(const Geometry& g, int64_t n, int64_t p0, int64_t y, int64_t x, int64_t o0) {
  Tile t{n, p0, std::min(PB, g.P - p0), o0, std::min(OB, g.o - o0), {}, {}, {}};
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

// The order of a layer's tiles: output-channel tiles outermost, so that each thread keeps its slice of the
// weights in cache while it sweeps the pixels; when all the weights fit in the first-level cache
// (pixels_outer), pixels outermost instead, so that each pixel's outputs (and residual, Gamma, correction) are
// read and written at once. n_ob x rows tiles (rows: images x pixel blocks of n_pb).
struct TileOrder {
  bool pixels_outer;
  int64_t n_ob, rows, n_pb;
};

// The tiles of an order from the i-th on, one after another (next): the divisions that place tile i once, then
// steps (a tile of one word per pixel takes a few hundred cycles, of which six divisions would be a fifth).
struct TileCursor {
  const TileOrder& order;
  int64_t ob, n, pb, y, x;  // output-channel tile, image, pixel block and the block's first pixel (y, x)
  TileCursor(const Geometry& g, const TileOrder& o, int64_t i) : order(o) {
    ob = o.pixels_outer ? i % o.n_ob : i / o.rows;
    const int64_t r = o.pixels_outer ? i / o.n_ob : i % o.rows;
    n = r / o.n_pb, pb = r % o.n_pb, y = pb * PB / g.w_out, x = pb * PB % g.w_out;
  }
  Tile tile(const Geometry& g) const { return make_tile(g, n, pb * PB, y, x, ob * OB); }
  void next(const Geometry& g) {
    if (order.pixels_outer && ++ob < order.n_ob) return;
    if (order.pixels_outer) ob = 0;
    if (++pb == order.n_pb) {  // the image's last block: the next image (or, channels outermost, the next channels)
      pb = 0, y = 0, x = 0;
      if (++n == order.rows / order.n_pb) n = 0, ob += !order.pixels_outer;
      return;
    }
    for (x += PB; x >= g.w_out; x -= g.w_out) ++y;
  }
};

// Where pixel j's 32 bits of channels o0 .. o0 + 31 go.
inline u32* bits_at(const Epilogue& e, const Tile& t, int64_t j) {
  return e.bits + ((t.n * e.out_Hp + t.py[j] + e.out_ph) * e.out_Wp + t.px[j] + e.out_pw) * e.out_units + t.o0 / OB;
}

// corr of pixel j of tile t, channels o0 ..: its row of the table (a table of one row per kind of border).
inline const int32_t* corr_at(const Epilogue& e, const Tile& t, int64_t j, int64_t o) {
  return e.corr + (e.corr_rows[t.py[j]] * e.corr_ncols + e.corr_cols[t.px[j]]) * o + t.o0;
}

// Gamma's per-pixel factors (1 without them): gamma_y of the pixel's row (or the pixel), gamma_x of its column.
inline float factor_y(const Epilogue& e, int64_t p, int64_t y) {
  return e.gamma_y ? e.gamma_y[e.gamma_y_pixel ? p : y] : 1.0f;
}
inline float factor_x(const Epilogue& e, int64_t x) { return e.gamma_x ? e.gamma_x[x] : 1.0f; }

// Portable epilogue of one pixel: acc[q] popcounts of channels o0 + q. Sign bits (v <= bound) xor flip when
// e.bound is set; otherwise the float outputs y (written when e.y is set) and, when e.scale is set, the next
// layer's sign bits of them (scale y > thr, as pack_signs).
inline void epilogue_generic(const Geometry& g, const Tile& t, const Epilogue& e, int64_t j, const u64* acc) {
  const int64_t p = t.p0 + j;
  if (e.bound) {
    const int64_t r = e.bound_rows == 1 ? 0 : p;
    const int32_t* bd = e.bound + r * g.o_pad + t.o0;
    u32 word = 0;
    for (int64_t q = 0; q < OB; ++q) word |= static_cast<u32>(static_cast<int64_t>(acc[q]) <= bd[q]) << q;
    *bits_at(e, t, j) = word ^ static_cast<u32>(e.flip[r * (g.o_pad / OB) + t.o0 / OB]);
    return;
  }
  float* y = e.y ? e.y + (t.n * g.P + p) * g.o + t.o0 : nullptr;
  const int32_t* corr = e.corr ? corr_at(e, t, j, g.o) : nullptr;
  const float* gamma = e.gamma ? e.gamma + (e.gamma_rows == 1 ? 0 : p) * g.o + t.o0 : nullptr;
  const float* res = e.residual ? e.residual + (t.n * g.P + p) * g.o + t.o0 : nullptr;
  const float gy = factor_y(e, p, t.py[j]), gx = factor_x(e, t.px[j]);
  u32 word = 0;
  for (int64_t q = 0; q < t.oe; ++q) {
    int64_t count = g.n_bits - 2 * static_cast<int64_t>(acc[q]);
    if (corr) count += corr[q];
    float v = static_cast<float>(count);  // exact: |count| < 2^24
    if (gamma) {
      float gv = gamma[q];
      if (e.gamma_y) gv = gv * gy;  // Gamma's own products, in its order: (alpha beta) gamma
      if (e.gamma_x) gv = gv * gx;
      v = v * gv;                   // one multiply (Eq. 9)
    }
    if (e.relu) v = v > 0.0f ? v : 0.0f;
    if (res) v = res[q] + v;
    if (e.post_scale) {
      v = v * e.post_scale[t.o0 + q];
      v = v + e.post_shift[t.o0 + q];
    }
    if (e.post_relu) v = v > 0.0f ? v : 0.0f;
    if (y) y[q] = v;
    if (e.scale) word |= static_cast<u32>(e.scale[t.o0 + q] * v > e.thr[t.o0 + q]) << q;
  }
  if (e.scale) *bits_at(e, t, j) = word;
}

// Portable tile: acc[j][q] = sum over taps and words of popcount(a xor b).
void tile_generic(const u64* __restrict xb, const u64* __restrict wt, const Geometry& g, const Tile& t,
                  const Epilogue& e) {
  u64 acc[PB][OB];
  std::memset(acc, 0, sizeof(acc));
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t a = (ky * g.Wp + kx) * g.cw;
      const u64* bt = wt + (t.o0 / OB * g.kh * g.kw * g.cw + (ky * g.kw + kx) * g.cw) * OB;
      for (int64_t w = 0; w < g.cw; ++w) {
        const u64* b = bt + w * OB;
        for (int64_t j = 0; j < PB; ++j) {
          const u64 x = xb[t.base[j] + a + w];
          for (int64_t q = 0; q < OB; ++q) acc[j][q] += static_cast<u64>(__builtin_popcountll(x ^ b[q]));
        }
      }
    }
  for (int64_t j = 0; j < t.np; ++j) epilogue_generic(g, t, e, j, acc[j]);
}

#if XNORPP_AVX512
constexpr int ANY = 0, SIGNS = 1, BLOCK = 2;

// A float epilogue's operands of one tile, set once per tile.
struct FloatTile {
  __mmask16 m[2];                   // the tile's channels: two halves of 16
  __m512 g_row[2], s_row[2], t_row[2], p_scale[2], p_shift[2];
  float* y;                         // the tile's first pixel's outputs, or null
  const float* res;                 // its residual, or null
  const float* gamma;               // its Gamma row (null when gamma_row), or null
  bool gamma_row;                   // one Gamma row for every pixel, in g_row
};

// The float epilogue of the pixels of a tile (as epilogue_generic). ROW: a full tile in one output row, whose
// pixels read one correction row (the tile's first pixel's), whose bits follow each other, and whose Gamma
// factors follow each other too: gamma_x of its columns times the tile's row's alpha beta (Case 4), or the
// pixels' beta times alpha (Case 3); so that nothing per pixel is looked up.
template <bool CORR, bool FACTORS, int KIND, bool UNROLL, bool ROW>
XNORPP_AVX512_FN __attribute__((always_inline)) inline void float_pixels(const Geometry& g, const Tile& t,
                                                                         const Epilogue& e, const FloatTile& f,
                                                                         const __m512i (&acc)[PB][OB / 8]) {
  const __m512i n_bits = _mm512_set1_epi32(static_cast<int32_t>(g.n_bits));
  const __m512i low_halves = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512 zero = _mm512_setzero_ps();
  const int64_t o = g.o;
  const bool has_res = KIND == BLOCK || (KIND == ANY && e.residual), relu = KIND == BLOCK || (KIND == ANY && e.relu);
  const bool post = KIND == ANY && e.post_scale, post_relu = KIND == ANY && e.post_relu;
  const bool signs = KIND == SIGNS || e.scale;
  const int64_t pixels = ROW || UNROLL ? PB : t.np;
  const int32_t* corr_row = ROW && CORR ? corr_at(e, t, 0, o) : nullptr;
  u32* bits_row = ROW && signs ? bits_at(e, t, 0) : nullptr;
  __m512 a_row[2] = {f.g_row[0], f.g_row[1]};
  __m512i base[2] = {n_bits, n_bits};  // n_bits + the row's correction
  if (ROW && CORR)
    for (int h = 0; h < 2; ++h) base[h] = _mm512_add_epi32(n_bits, _mm512_maskz_loadu_epi32(f.m[h], corr_row + 16 * h));
  const float* factor = nullptr;
  if (ROW && FACTORS) {
    if (e.gamma_x) {  // Case 4: the row's (alpha beta), then gamma_x of each column
      const __m512 gy = _mm512_set1_ps(e.gamma_y[t.py[0]]);
      for (int h = 0; h < 2; ++h) a_row[h] = _mm512_mul_ps(f.g_row[h], gy);
      factor = e.gamma_x + t.px[0];
    } else {
      factor = e.gamma_y + t.p0;  // Case 3: beta of each pixel
    }
  }
#pragma GCC unroll 8
  for (int64_t j = 0; j < pixels; ++j) {
    if (!ROW && UNROLL && j >= t.np) break;
    const int32_t* corr = CORR ? (ROW ? corr_row : corr_at(e, t, j, o)) : nullptr;
    __m512 gy = zero, gx = zero;
    if (FACTORS && ROW) gx = _mm512_set1_ps(factor[j]);
    if (FACTORS && !ROW) {
      gy = _mm512_set1_ps(e.gamma_y[e.gamma_y_pixel ? t.p0 + j : t.py[j]]);
      gx = _mm512_set1_ps(e.gamma_x ? e.gamma_x[t.px[j]] : 1.0f);
    }
    u32 word = 0;
    for (int h = 0; h < 2; ++h) {
      const __m512i cnt = _mm512_permutex2var_epi32(acc[j][2 * h], low_halves, acc[j][2 * h + 1]);
      __m512i count = _mm512_sub_epi32(ROW ? base[h] : n_bits, _mm512_slli_epi32(cnt, 1));
      if (CORR && !ROW) count = _mm512_add_epi32(count, _mm512_maskz_loadu_epi32(f.m[h], corr + 16 * h));
      __m512 yv = _mm512_cvtepi32_ps(count);  // exact: |count| < 2^24
      if (FACTORS || e.gamma) {  // factors multiply a Gamma row (set_float_epilogue)
        __m512 gv = FACTORS || f.gamma_row ? a_row[h] : _mm512_maskz_loadu_ps(f.m[h], f.gamma + j * o + 16 * h);
        if (FACTORS && ROW) gv = _mm512_mul_ps(gv, gx);  // Gamma's own products, in its order: (alpha beta) gamma
        if (FACTORS && !ROW) gv = _mm512_mul_ps(_mm512_mul_ps(gv, gy), gx);
        yv = _mm512_mul_ps(yv, gv);  // one multiply (Eq. 9)
      }
      if (relu) yv = _mm512_max_ps(yv, zero);  // max(y, 0): a NaN-free y gives torch's relu
      if (has_res) yv = _mm512_add_ps(_mm512_maskz_loadu_ps(f.m[h], f.res + j * o + 16 * h), yv);
      if (post) yv = _mm512_add_ps(_mm512_mul_ps(yv, f.p_scale[h]), f.p_shift[h]);
      if (post_relu) yv = _mm512_max_ps(yv, zero);
      if (f.y) _mm512_mask_storeu_ps(f.y + j * o + 16 * h, f.m[h], yv);
      if (signs)  // as pack_signs with a threshold: scale y > thr
        word |= static_cast<u32>(_mm512_mask_cmp_ps_mask(f.m[h], _mm512_mul_ps(yv, f.s_row[h]), f.t_row[h],
                                                         _CMP_GT_OQ))
                << (16 * h);
    }
    if (signs) *(ROW ? bits_row + j * e.out_units : bits_at(e, t, j)) = word;
  }
}

// Whether a tile takes float_pixels' ROW path: PB pixels in one row, in columns of one correction, and Gamma's
// factors (if any) of Case 3 or 4.
inline bool row_tile(const Tile& t, const Epilogue& e, bool corr, bool factors) {
  if (t.np != PB || t.py[0] != t.py[PB - 1]) return false;
  if (factors && !(e.gamma_x || e.gamma_y_pixel)) return false;
  if (corr)
    for (int64_t j = 1; j < PB; ++j)
      if (e.corr_cols[t.px[j]] != e.corr_cols[t.px[0]]) return false;
  return true;
}

// The epilogue of a tile of tiles_avx512 (as epilogue_generic), 16 channels at a time: acc[j][q] holds the popcounts of
// channels o0 + 8 q .. o0 + 8 q + 7 of pixel j in 64-bit lanes. CORR and FACTORS say whether e.corr and
// e.gamma_y are set; KIND which float outputs the epilogue has, each choice compiled apart, free of the tests of
// the others: SIGNS only the next layer's signs (no ReLU, residual, y or affine map), BLOCK a block's output
// (ReLU, residual and y; no affine map; signs when e.scale), ANY whatever e holds. A missing factor of Gamma is 1
// (an exact product). UNROLL (one word per pixel, whose tiles are short): the pixel loops run to the constant PB,
// unrolled, so that acc stays in registers instead of going through memory; with more words per pixel the
// registers that this holds made the inner loop spill, and the loops run to t.np.
template <bool CORR, bool FACTORS, int KIND, bool UNROLL>
XNORPP_AVX512_FN __attribute__((always_inline)) inline void epilogue_avx512(const Geometry& g, const Tile& t,
                                                                            const Epilogue& epi,
                                                                            const __m512i (&acc)[PB][OB / 8]) {
  const Epilogue e = epi;  // a local copy: its fields stay in registers across the stores below
  const __m512i low_halves = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512 zero = _mm512_setzero_ps();
  const int64_t o = g.o, o0 = t.o0, P = g.P;
  FloatTile f;
  f.m[0] = static_cast<__mmask16>(t.oe >= 16 ? 0xFFFF : (1u << t.oe) - 1);
  f.m[1] = static_cast<__mmask16>(t.oe >= 32 ? 0xFFFF : t.oe <= 16 ? 0 : (1u << (t.oe - 16)) - 1);
  const __mmask16* m = f.m;
  const int64_t pixels = UNROLL ? PB : t.np;
  if (e.bound) {
#pragma GCC unroll 8
    for (int64_t j = 0; j < pixels; ++j) {
      if (UNROLL && j >= t.np) break;
      const int64_t r = e.bound_rows == 1 ? 0 : t.p0 + j;
      const int32_t* bd = e.bound + r * g.o_pad + o0;
      const __m512i c0 = _mm512_permutex2var_epi32(acc[j][0], low_halves, acc[j][1]);
      const __m512i c1 = _mm512_permutex2var_epi32(acc[j][2], low_halves, acc[j][3]);
      const u32 word = static_cast<u32>(_mm512_cmple_epi32_mask(c0, _mm512_loadu_si512(bd))) |
                       static_cast<u32>(_mm512_cmple_epi32_mask(c1, _mm512_loadu_si512(bd + 16))) << 16;
      *bits_at(e, t, j) = word ^ static_cast<u32>(e.flip[r * (g.o_pad / OB) + o0 / OB]);
    }
    return;
  }
  // per tile: the channels' Gamma (one row), threshold; per pixel j: j rows of o further on
  const int64_t first = t.n * P + t.p0;
  const bool has_res = KIND == BLOCK || (KIND == ANY && e.residual);
  const bool post = KIND == ANY && e.post_scale;
  const bool signs = KIND == SIGNS || e.scale;
  f.y = KIND != SIGNS && e.y ? e.y + first * o + o0 : nullptr;
  f.res = has_res ? e.residual + first * o + o0 : nullptr;
  f.gamma_row = e.gamma && e.gamma_rows == 1;
  f.gamma = e.gamma && !f.gamma_row ? e.gamma + t.p0 * o + o0 : nullptr;
  for (int h = 0; h < 2; ++h) {
    f.g_row[h] = f.s_row[h] = f.t_row[h] = f.p_scale[h] = f.p_shift[h] = zero;
    if (f.gamma_row) f.g_row[h] = _mm512_maskz_loadu_ps(m[h], e.gamma + o0 + 16 * h);
    if (post) {
      f.p_scale[h] = _mm512_maskz_loadu_ps(m[h], e.post_scale + o0 + 16 * h);
      f.p_shift[h] = _mm512_maskz_loadu_ps(m[h], e.post_shift + o0 + 16 * h);
    }
    if (signs) {
      f.s_row[h] = _mm512_maskz_loadu_ps(m[h], e.scale + o0 + 16 * h);
      f.t_row[h] = _mm512_maskz_loadu_ps(m[h], e.thr + o0 + 16 * h);
    }
  }
  if (has_res && t.p0 + 3 * PB <= P) {  // the residual of the tile two tiles ahead: its loads would stall the epilogue
    for (int64_t j = 0; j < PB; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(f.res + (2 * PB + j) * o), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(f.res + (2 * PB + j) * o + 16), _MM_HINT_T0);
    }
  }
  if (row_tile(t, e, CORR, FACTORS))
    float_pixels<CORR, FACTORS, KIND, UNROLL, true>(g, t, e, f, acc);
  else
    float_pixels<CORR, FACTORS, KIND, UNROLL, false>(g, t, e, f, acc);
}

// The tiles begin .. end - 1 of a layer (run_tiles' order) with AVX-512 VPOPCNTDQ: 8 output channels per
// vector, PB x 4 accumulators per tile, then the tile's epilogue, inlined. CW > 0: a layer of CW words per pixel
// (the word loop unrolled), else g.cw. The weight rows (tap, word) of a tile of 32 outputs follow each other.
template <int64_t CW, bool CORR, bool FACTORS, int KIND>
XNORPP_AVX512_FN void tiles_avx512(const u64* __restrict xb, const u64* __restrict wt, const Geometry& g,
                                   const Epilogue& e, const TileOrder& order, int64_t begin, int64_t end) {
  const int64_t cw = CW > 0 ? CW : g.cw, taps = g.kh * g.kw;
  int64_t offset[64];  // each tap's first word, from the pixel's receptive field (kh kw <= 64, or computed)
  const bool table = taps <= 64;
  for (int64_t k = 0; table && k < taps; ++k) offset[k] = ((k / g.kw) * g.Wp + k % g.kw) * cw;
  TileCursor cursor(g, order, begin);
  for (int64_t i = begin; i < end; ++i, cursor.next(g)) {
    const Tile t = cursor.tile(g);
    __m512i v[PB][OB / 8];
    for (int64_t j = 0; j < PB; ++j)
      for (int64_t q = 0; q < OB / 8; ++q) v[j][q] = _mm512_setzero_si512();
    const u64* x[PB];
    for (int64_t j = 0; j < PB; ++j) x[j] = xb + t.base[j];
    const u64* b = wt + t.o0 / OB * taps * cw * OB;  // the tile's weights, row after row
    for (int64_t k = 0; k < taps; ++k) {
      const int64_t a = table ? offset[k] : ((k / g.kw) * g.Wp + k % g.kw) * cw;
      for (int64_t w = 0; w < cw; ++w, b += OB) {
        const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 8);
        const __m512i b2 = _mm512_loadu_si512(b + 16), b3 = _mm512_loadu_si512(b + 24);
        for (int64_t j = 0; j < PB; ++j) {
          const __m512i xv = _mm512_set1_epi64(static_cast<long long>(x[j][a + w]));
          v[j][0] = _mm512_add_epi64(v[j][0], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b0)));
          v[j][1] = _mm512_add_epi64(v[j][1], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b1)));
          v[j][2] = _mm512_add_epi64(v[j][2], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b2)));
          v[j][3] = _mm512_add_epi64(v[j][3], _mm512_popcnt_epi64(_mm512_xor_si512(xv, b3)));
        }
      }
    }
    epilogue_avx512<CORR, FACTORS, KIND, CW == 1>(g, t, e, v);
  }
}

using TilesFn = void (*)(const u64*, const u64*, const Geometry&, const Epilogue&, const TileOrder&, int64_t, int64_t);

template <int64_t CW>
constexpr TilesFn tiles_table[4][3] = {
    {tiles_avx512<CW, false, false, ANY>, tiles_avx512<CW, false, false, SIGNS>, tiles_avx512<CW, false, false, BLOCK>},
    {tiles_avx512<CW, false, true, ANY>, tiles_avx512<CW, false, true, SIGNS>, tiles_avx512<CW, false, true, BLOCK>},
    {tiles_avx512<CW, true, false, ANY>, tiles_avx512<CW, true, false, SIGNS>, tiles_avx512<CW, true, false, BLOCK>},
    {tiles_avx512<CW, true, true, ANY>, tiles_avx512<CW, true, true, SIGNS>, tiles_avx512<CW, true, true, BLOCK>}};

// The compiled tiles for g's words per pixel and e's fields.
TilesFn choose_avx512(const Geometry& g, const Epilogue& e) {
  const bool no_post = !e.post_scale && !e.post_relu;
  const int kind = !e.residual && !e.relu && !e.y && e.scale && no_post ? SIGNS
                   : e.residual && e.relu && e.y && no_post ? BLOCK : ANY;
  const int fields = (e.corr ? 2 : 0) + (e.gamma_y ? 1 : 0);
  switch (g.cw) {
    case 1: return tiles_table<1>[fields][kind];
    case 2: return tiles_table<2>[fields][kind];
    case 4: return tiles_table<4>[fields][kind];
    case 8: return tiles_table<8>[fields][kind];
    default: return tiles_table<0>[fields][kind];
  }
}
#endif

Geometry check_conv(const torch::Tensor& xb, const torch::Tensor& wt, int64_t channels, int64_t out_channels,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t h_out, int64_t w_out) {
  TORCH_CHECK(xb.dim() == 4 && xb.scalar_type() == torch::kInt64 && xb.is_contiguous() && xb.device().is_cpu(),
              "packed_conv: xb must be contiguous int64 (N, Hp, Wp, cw)");
  TORCH_CHECK(wt.dim() == 3 && wt.size(2) == OB && wt.scalar_type() == torch::kInt64 && wt.is_contiguous() &&
                  wt.device().is_cpu(),
              "packed_conv: wt must be contiguous int64 (o_pad / 32, kh * kw * cw, 32)");
  TORCH_CHECK(channels >= 1 && out_channels >= 1 && kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1,
              "packed_conv: channels, kernel and stride must be positive");
  TORCH_CHECK(h_out >= 1 && w_out >= 1, "packed_conv: the input is smaller than the kernel (output ", h_out, "x",
              w_out, ")");
  Geometry g{xb.size(1), xb.size(2), xb.size(3), kh, kw, sh, sw, w_out, h_out * w_out,
             out_channels, wt.size(0) * OB, channels * kh * kw};
  TORCH_CHECK(g.cw == (channels + 63) / 64 && wt.size(1) == kh * kw * g.cw, "packed_conv: word counts disagree");
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
  const TileOrder order{wt.numel() * 8 <= 32 * 1024, n_ob, N * n_pb, n_pb};
#if XNORPP_AVX512
  const TilesFn tiles = simd ? choose_avx512(g, e) : nullptr;
#endif
  at::parallel_for(0, n_ob * N * n_pb, 1, [&](int64_t begin, int64_t end) {
#if XNORPP_AVX512
    if (simd) {
      tiles(xp, wp, g, e, order, begin, end);
      return;
    }
#endif
    TileCursor cursor(g, order, begin);
    for (int64_t i = begin; i < end; ++i, cursor.next(g)) tile_generic(xp, wp, g, cursor.tile(g), e);
  });
}

// The next binary layer's packed input, (N, h_out + 2 out_ph, w_out + 2 out_pw, ceil(o / 64)) words, zero (sign -1)
// where no tile writes (border, unused channels); e's bit output set to it.
torch::Tensor next_bits(const Geometry& g, Epilogue& e, int64_t N, int64_t h_out, int64_t w_out, int64_t out_ph,
                        int64_t out_pw, const torch::TensorOptions& options, const char* who) {
  TORCH_CHECK(out_ph >= 0 && out_pw >= 0, who, ": negative padding of the next layer");
  const int64_t cw_out = (g.o + 63) / 64;
  auto out = torch::zeros({N, h_out + 2 * out_ph, w_out + 2 * out_pw, cw_out}, options.dtype(torch::kInt64));
  e.bits = reinterpret_cast<u32*>(out.data_ptr<int64_t>());
  e.out_Hp = h_out + 2 * out_ph;
  e.out_Wp = w_out + 2 * out_pw;
  e.out_units = 2 * cw_out;
  e.out_ph = out_ph;
  e.out_pw = out_pw;
  // A tile of channels o0 .. o0 + 31 writes half (o0 / 32) of a pixel's words: inside the row when o0 < o.
  TORCH_CHECK(g.o_pad / OB <= e.out_units, who, ": o_pad too large for the output words");
  return out;
}

std::vector<torch::Tensor> packed_conv(torch::Tensor xb, torch::Tensor wt, int64_t channels, int64_t out_channels,
                                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t h_out, int64_t w_out,
                                       c10::optional<torch::Tensor> corr, c10::optional<torch::Tensor> corr_rows,
                                       c10::optional<torch::Tensor> corr_cols,
                                       c10::optional<torch::Tensor> gamma, c10::optional<torch::Tensor> gamma_y,
                                       c10::optional<torch::Tensor> gamma_x, bool relu,
                                       c10::optional<torch::Tensor> residual, c10::optional<torch::Tensor> post_scale,
                                       c10::optional<torch::Tensor> post_shift, bool post_relu,
                                       c10::optional<torch::Tensor> next_scale,
                                       c10::optional<torch::Tensor> next_thr, int64_t out_ph, int64_t out_pw,
                                       int64_t write_y, bool simd) {
  const Geometry g = check_conv(xb, wt, channels, out_channels, kh, kw, sh, sw, h_out, w_out);
  const int64_t N = xb.size(0);
  Epilogue e{};
  if (corr && corr->defined()) {
    TORCH_CHECK(corr_rows && corr_rows->defined() && corr_cols && corr_cols->defined(),
                "packed_conv: corr goes with corr_rows and corr_cols");
    for (const auto& ids : {*corr_rows, *corr_cols})
      TORCH_CHECK(ids.scalar_type() == torch::kInt32 && ids.is_contiguous() && ids.dim() == 1,
                  "packed_conv: corr_rows and corr_cols must be contiguous int32 vectors");
    TORCH_CHECK(corr_rows->size(0) == h_out && corr_cols->size(0) == w_out,
                "packed_conv: corr_rows must be (h_out,) and corr_cols (w_out,)");
    TORCH_CHECK(corr->scalar_type() == torch::kInt32 && corr->is_contiguous() && corr->dim() == 3 &&
                    corr->size(2) == g.o,
                "packed_conv: corr must be a contiguous int32 table (rows, columns, o)");
    const int32_t* rows = corr_rows->data_ptr<int32_t>();
    const int32_t* cols = corr_cols->data_ptr<int32_t>();
    for (int64_t y = 0; y < h_out; ++y)
      TORCH_CHECK(rows[y] >= 0 && rows[y] < corr->size(0), "packed_conv: corr_rows out of the table");
    for (int64_t x = 0; x < w_out; ++x)
      TORCH_CHECK(cols[x] >= 0 && cols[x] < corr->size(1), "packed_conv: corr_cols out of the table");
    e.corr = corr->data_ptr<int32_t>();
    e.corr_rows = rows;
    e.corr_cols = cols;
    e.corr_ncols = corr->size(1);
  }
  const bool has_scale = set_float_epilogue(e, gamma, gamma_y, gamma_x, relu, residual, post_scale, post_shift,
                                            post_relu, next_scale, next_thr, N, h_out, w_out, g.o, "packed_conv");
  torch::Tensor out = float_output(e, write_y, has_scale, residual, N, g.P, g.o, xb.options(), "packed_conv"), bits;
  if (has_scale) bits = next_bits(g, e, N, h_out, w_out, out_ph, out_pw, xb.options(), "packed_conv");
  if (N > 0) run_tiles(xb, wt, g, e, simd);
  return {out, bits};
}

torch::Tensor packed_conv_bits(torch::Tensor xb, torch::Tensor wt, int64_t channels, int64_t out_channels,
                               int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t h_out, int64_t w_out,
                               torch::Tensor bound, torch::Tensor flip, int64_t out_ph, int64_t out_pw, bool simd) {
  const Geometry g = check_conv(xb, wt, channels, out_channels, kh, kw, sh, sw, h_out, w_out);
  Epilogue e{};
  set_bounds(e, bound, flip, g.P, g.o_pad, "packed_conv_bits");
  const int64_t N = xb.size(0);
  auto out = next_bits(g, e, N, h_out, w_out, out_ph, out_pw, xb.options(), "packed_conv_bits");
  if (N > 0) run_tiles(xb, wt, g, e, simd);
  return out;
}

// ------------------------------------------------------------ int8 tiles (AMX)

constexpr int64_t TAIL = 64;  // spare rows after the last image (a stride-2 tile reads at most 62 past it)

#if XNORPP_AMX
// +1 / -1 bytes of 16 channels from a 16-bit mask.
XNORPP_AMX_FN inline __m128i sign_bytes(__mmask16 m) {
  return _mm_mask_blend_epi8(m, _mm_set1_epi8(-1), _mm_set1_epi8(1));
}

// Sign bytes of the 16 channels c0 .. c0 + 15 of one pixel (channels innermost).
XNORPP_AMX_FN inline void pack_bytes16(const float* s, int64_t c0, const Threshold& th, int8_t* d) {
  __m512 x = _mm512_loadu_ps(s), t = _mm512_setzero_ps();
  if (th.scale) {
    x = _mm512_mul_ps(x, _mm512_loadu_ps(th.scale + c0));
    t = _mm512_loadu_ps(th.thr + c0);
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d), sign_bytes(_mm512_cmp_ps_mask(x, t, _CMP_GT_OQ)));
}
#endif

#if XNORPP_AVX512
// Sign bytes from words of 64 signs (bit = +1): d + j stride gets the 64 bytes of bits[j] (pixels' channels,
// or the int8 tiles' weight rows from their masks).
XNORPP_AVX512_FN void expand_words(const u64* bits, int64_t np, int64_t stride, int8_t* d) {
  const __m512i minus = _mm512_set1_epi8(-1), plus = _mm512_set1_epi8(1);
  for (int64_t j = 0; j < np; ++j)
    _mm512_storeu_si512(d + j * stride, _mm512_mask_blend_epi8(static_cast<__mmask64>(bits[j]), minus, plus));
}
#endif

torch::Tensor pack_signs_i8(torch::Tensor x, int64_t ph, int64_t pw, c10::optional<torch::Tensor> scale,
                            c10::optional<torch::Tensor> thr, int64_t border) {
  const Threshold th = check_pack(x, ph, pw, scale, thr);
  TORCH_CHECK(border == -1 || border == 0, "pack_signs_i8: border must be -1 or 0");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t cp = (C + 63) / 64 * 64, Hp = H + 2 * ph, Wp = W + 2 * pw;
  auto out = torch::full({N * Hp * Wp + TAIL, cp}, border, x.options().dtype(torch::kInt8));
  if (x.numel() == 0) return out;
  const bool simd = amx_available();
  const int64_t sN = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const float* src = x.data_ptr<float>();
  int8_t* dst = out.data_ptr<int8_t>();
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, y = r % H;
#if XNORPP_AVX512
      if (simd && sC != 1 && sW == 1) {  // channel planes: bits of 64 channels per pixel, then their bytes
        int8_t* drow = dst + ((n * Hp + y + ph) * Wp + pw) * cp;
        for (int64_t c0 = 0; c0 < C; c0 += 64)
          for (int64_t p0 = 0; p0 < W; p0 += 64) {
            const int64_t nb = std::min<int64_t>(64, C - c0), np = std::min<int64_t>(64, W - p0);
            u64 bits[64] = {0};
            pack_block_avx512(src + n * sN + y * sH + c0 * sC + p0, sC, c0, nb, np, bits, th);
            expand_words(bits, np, cp, drow + p0 * cp + c0);  // channels past C: weights 0, any byte
          }
        continue;
      }
#endif
      for (int64_t px = 0; px < W; ++px) {
        const float* s = src + n * sN + y * sH + px * sW;
        int8_t* d = dst + ((n * Hp + y + ph) * Wp + px + pw) * cp;
        int64_t c = 0;
#if XNORPP_AMX
        if (simd && sC == 1)
          for (; c + 16 <= C; c += 16) pack_bytes16(s + c, c, th, d + c);
#endif
        for (; c < C; ++c) d[c] = th.bit(s[c * sC], c) ? 1 : -1;
      }
    }
  });
  return out;
}

// Tiles of 16 output pixels, two per block. Pixel rows (per_row): tile j is pixels x0 .. x0 + 15 of output
// row y, x0 = 16 (j % per_row), for strided layers, whose pixel rows are otherwise half dropped. Otherwise
// tile j is pixels 16 j .. 16 j + 15 of the rows padded to Wp columns (the x >= w_out ones are dropped).
struct AmxGeometry {
  int64_t N, Hp, Wp, cp, cb, kh, kw, s, h_out, w_out, P, o, o_pad, n_bits, nb;
  int64_t per_row;  // tiles per output row in pixel-row tiling, else 0
  int64_t tiles, n_mb;  // tiles per image; blocks per image (the last may hold a repeat of the last tile)
};

// Output pixel (y, x) where tile j starts.
inline void tile_start(const AmxGeometry& g, int64_t j, int64_t& y, int64_t& x) {
  if (g.per_row) {
    y = j / g.per_row, x = 16 * (j % g.per_row);
  } else {
    y = 16 * j / g.Wp, x = 16 * j % g.Wp;
  }
}

AmxGeometry check_amx(const torch::Tensor& xi, const torch::Tensor& wi, int64_t N, int64_t Hp, int64_t Wp,
                      int64_t channels, int64_t out_channels, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                      int64_t h_out, int64_t w_out) {
  TORCH_CHECK(amx_available(), "amx_conv: this CPU (or the operating system) does not offer AMX-INT8 tiles");
  TORCH_CHECK(xi.dim() == 2 && xi.scalar_type() == torch::kInt8 && xi.is_contiguous() && xi.device().is_cpu(),
              "amx_conv: xi must be contiguous int8 (rows, cp)");
  TORCH_CHECK((wi.scalar_type() == torch::kInt8 || wi.scalar_type() == torch::kInt64) && wi.is_contiguous() &&
                  wi.device().is_cpu(),
              "amx_conv: wi must be contiguous int8 (tiles) or int64 (row masks)");
  TORCH_CHECK(N >= 0 && Hp >= 1 && Wp >= 1 && channels >= 1 && out_channels >= 1 && kh >= 1 && kw >= 1,
              "amx_conv: sizes must be positive");
  TORCH_CHECK(sh == sw && (sh == 1 || sh == 2), "amx_conv: equal strides of 1 or 2 only");
  TORCH_CHECK(h_out >= 1 && w_out >= 1 && (h_out - 1) * sh + kh <= Hp && (w_out - 1) * sw + kw <= Wp,
              "amx_conv: output size does not fit the input");
  AmxGeometry g{};
  g.N = N, g.Hp = Hp, g.Wp = Wp, g.cp = xi.size(1), g.cb = g.cp / 64, g.kh = kh, g.kw = kw, g.s = sh;
  g.h_out = h_out, g.w_out = w_out, g.P = h_out * w_out, g.o = out_channels;
  g.o_pad = (out_channels + OB - 1) / OB * OB, g.nb = g.o_pad / 16, g.n_bits = channels * kh * kw;
  const int64_t padded = ((h_out - 1) * Wp + w_out + 15) / 16, per_row = (w_out + 15) / 16;
  g.per_row = h_out * per_row < padded ? per_row : 0;  // fewer tiles: pixel rows (strided layers)
  g.tiles = g.per_row ? h_out * per_row : padded, g.n_mb = (g.tiles + 1) / 2;
  TORCH_CHECK(g.cp == (channels + 63) / 64 * 64, "amx_conv: xi has ", g.cp, " columns, expected 64 ceil(c / 64)");
  const int64_t rows = kh * kw * g.cb * g.nb * 16;  // 64-byte tile rows
  TORCH_CHECK(wi.numel() * wi.element_size() == rows * (wi.scalar_type() == torch::kInt8 ? 64 : 8),
              "amx_conv: wi has ", wi.numel(), " elements, expected ",
              rows * (wi.scalar_type() == torch::kInt8 ? 64 : 1));
  TORCH_CHECK(wi.scalar_type() == torch::kInt8 || channels % 64 == 0,
              "amx_conv: row masks need a multiple of 64 channels (they have no zero weights)");
  // Rows read by the last image's last tile (a repeat of the last one completes a block in pixel-row tiling).
  int64_t y_last, x_last;
  tile_start(g, g.per_row ? g.tiles - 1 : 2 * g.n_mb - 1, y_last, x_last);
  const int64_t need = N == 0 ? 0 : (N - 1) * Hp * Wp + g.s * (y_last * Wp + x_last + 15) + (kh - 1) * Wp + kw;
  TORCH_CHECK(xi.size(0) >= std::max(need, N * Hp * Wp), "amx_conv: xi has ", xi.size(0), " rows, the tiles read ",
              need);
  return g;
}

#if XNORPP_AMX
struct TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Eight tiles of 16 rows x 64 bytes: 0-3 accumulators (16 x 16 int32), 4-5 inputs, 6-7 weights.
XNORPP_AMX_FN void amx_configure() {
  TileConfig cfg{};
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.rows[i] = 16;
    cfg.colsb[i] = 64;
  }
  asm volatile("" : : "r"(&cfg) : "memory");  // GCC does not see ldtilecfg read cfg: keep its stores
  _tile_loadconfig(&cfg);
}

XNORPP_AMX_FN void amx_release() { _tile_release(); }

// A block whose counts wait in memory for their epilogue: image n, two tiles of 16 pixels, output channels
// 32 ob .. 32 ob + 31; row r (pixel y, x) is next.
struct Pending {
  const int32_t* acc;  // 32 x 32 counts
  int64_t n, ob, r;
  int64_t y[2], x[2];  // the next pixel of each tile
  bool real[2];        // false for a repeated tile
};

Pending pending(const AmxGeometry& g, const int32_t* acc, int64_t n, int64_t mb, int64_t ob) {
  Pending q{acc, n, ob, 0, {0, 0}, {0, 0}, {true, 2 * mb + 1 < g.tiles}};
  tile_start(g, 2 * mb, q.y[0], q.x[0]);
  tile_start(g, q.real[1] || !g.per_row ? 2 * mb + 1 : 2 * mb, q.y[1], q.x[1]);
  return q;
}

// The epilogue of up to `rows` rows of block q (row r: pixel r % 16 of tile r / 16): sign bytes
// (count >= bound) xor flip when e.bound is set;
// otherwise float outputs y as packed_conv, written when e.y is set, and, when e.scale is set, the next
// layer's sign bytes of them (scale y > thr).
XNORPP_AMX_FN void epilogue_rows(const AmxGeometry& g, const Epilogue& e, Pending& q, int64_t rows) {
  const int64_t o0 = 32 * q.ob;
  const __m512 zero = _mm512_setzero_ps();
  const int64_t wrap = g.per_row ? -1 : g.Wp;  // pixel-row tiles never wrap
  for (int64_t end = std::min<int64_t>(32, q.r + rows); q.r < end; ++q.r) {
    const int64_t t = q.r >> 4, y = q.y[t], x = q.x[t];
    if (++q.x[t] == wrap) {
      q.x[t] = 0;
      ++q.y[t];
    }
    if (!q.real[t] || x >= g.w_out || y >= g.h_out) continue;  // a dropped row (padding, past the end, repeat)
    const int64_t p = y * g.w_out + x, n = q.n;
    const int32_t* dot = q.acc + 32 * q.r;
    int8_t* d = e.bytes ? e.bytes + ((n * e.out_Hp + y + e.out_ph) * e.out_Wp + x + e.out_pw) * e.out_units + o0
                        : nullptr;  // 32 bytes: o0 + 32 <= o_pad <= out_units
    if (e.bound) {
      const int64_t row = e.bound_rows == 1 ? 0 : p;
      const int32_t* bd = e.bound + row * g.o_pad + o0;
      const u32 flip = static_cast<u32>(e.flip[row * (g.o_pad / OB) + q.ob]);
      for (int h = 0; h < 2; ++h) {
        const __mmask16 m = _mm512_cmpge_epi32_mask(_mm512_loadu_si512(dot + 16 * h), _mm512_loadu_si512(bd + 16 * h)) ^
                            static_cast<__mmask16>(flip >> (16 * h));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16 * h), sign_bytes(m));
      }
      continue;
    }
    float* yo = e.y ? e.y + (n * g.P + p) * g.o + o0 : nullptr;
    const float* gamma = e.gamma ? e.gamma + (e.gamma_rows == 1 ? 0 : p) * g.o + o0 : nullptr;
    const float* res = e.residual ? e.residual + (n * g.P + p) * g.o + o0 : nullptr;
    const __m512 gy = _mm512_set1_ps(e.gamma_y ? e.gamma_y[e.gamma_y_pixel ? p : y] : 1.0f);
    const __m512 gx = _mm512_set1_ps(e.gamma_x ? e.gamma_x[x] : 1.0f);
    for (int64_t h = 0; h < 2 && o0 + 16 * h < g.o; ++h) {
      const int64_t left = g.o - o0 - 16 * h;
      const __mmask16 m = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
      __m512 v = _mm512_cvtepi32_ps(_mm512_loadu_si512(dot + 16 * h));  // exact: |count| < 2^24
      if (gamma) {
        __m512 gv = _mm512_maskz_loadu_ps(m, gamma + 16 * h);
        if (e.gamma_y) gv = _mm512_mul_ps(gv, gy);  // Gamma's own products, in its order: (alpha beta) gamma
        if (e.gamma_x) gv = _mm512_mul_ps(gv, gx);
        v = _mm512_mul_ps(v, gv);  // one multiply (Eq. 9)
      }
      if (e.relu) v = _mm512_max_ps(v, zero);
      if (res) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, res + 16 * h), v);
      if (e.post_scale)
        v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, e.post_scale + o0 + 16 * h)),
                          _mm512_maskz_loadu_ps(m, e.post_shift + o0 + 16 * h));
      if (e.post_relu) v = _mm512_max_ps(v, zero);
      if (yo) _mm512_mask_storeu_ps(yo + 16 * h, m, v);
      if (e.scale) {  // as pack_signs_i8 with a threshold: scale y > thr
        const __m512 sv = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, e.scale + o0 + 16 * h));
        const __mmask16 b = _mm512_mask_cmp_ps_mask(m, sv, _mm512_maskz_loadu_ps(m, e.thr + o0 + 16 * h), _CMP_GT_OQ);
        _mm_mask_storeu_epi8(d + 16 * h, m, sign_bytes(b));
      }
    }
  }
}

// The 32 x 32 int32 counts of block mb (two tiles of 16 pixels) of image n and the 32 channels whose weight tiles
// (kh kw cp / 64 pairs) start at wi, into acc: tiles 0-3 accumulate, 4-5 hold two 16-pixel input tiles,
// 6-7 two 16-channel weight tiles. Between its tile multiply-adds, which run in the background, the
// vector units do the epilogue of the previous block (prev), a slice after each.
XNORPP_AMX_FN void amx_block(const int8_t* xi, const int8_t* wi, const AmxGeometry& g, int64_t n, int64_t mb,
                             int32_t* acc, const Epilogue& e, Pending& prev) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t stride = g.s * g.cp, slice = (32 + 4 * g.kh * g.kw * g.cb - 1) / (4 * g.kh * g.kw * g.cb);
  const int8_t* img = xi + n * g.Hp * g.Wp * g.cp;
  int64_t y0, x0, y1, x1;  // where the two tiles start (a repeated last tile reads what the last one reads)
  tile_start(g, 2 * mb, y0, x0);
  tile_start(g, 2 * mb + 1 < g.tiles || !g.per_row ? 2 * mb + 1 : 2 * mb, y1, x1);
  const int64_t second = g.s * ((y1 - y0) * g.Wp + x1 - x0) * g.cp;  // from the first tile's inputs
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int8_t* a = img + (g.s * (y0 * g.Wp + x0) + ky * g.Wp + kx) * g.cp;
      const int8_t* b = wi + (ky * g.kw + kx) * g.cb * 2048;
      for (int64_t c = 0; c < g.cb; ++c) {
        const int8_t* ac = a + 64 * c;
        const int8_t* bc = b + c * 2048;
        _tile_loadd(4, ac, stride);
        _tile_loadd(6, bc, 64);
        _tile_dpbssd(0, 4, 6);
        if (prev.acc) epilogue_rows(g, e, prev, slice);
        _tile_loadd(7, bc + 1024, 64);
        _tile_dpbssd(1, 4, 7);
        if (prev.acc) epilogue_rows(g, e, prev, slice);
        _tile_loadd(5, ac + second, stride);
        _tile_dpbssd(2, 5, 6);
        if (prev.acc) epilogue_rows(g, e, prev, slice);
        _tile_dpbssd(3, 5, 7);
        if (prev.acc) epilogue_rows(g, e, prev, slice);
      }
    }
  if (prev.acc) epilogue_rows(g, e, prev, 32);
  _tile_stored(0, acc, 128);
  _tile_stored(1, acc + 16, 128);
  _tile_stored(2, acc + 16 * 32, 128);
  _tile_stored(3, acc + 16 * 32 + 16, 128);
}
#endif

void run_amx(const torch::Tensor& xi, const torch::Tensor& wi, const AmxGeometry& g, const Epilogue& e) {
#if XNORPP_AMX
  const int8_t* xp = xi.data_ptr<int8_t>();
  const bool masks = wi.scalar_type() == torch::kInt64;
  const int64_t n_ob = g.o_pad / OB, n_m = g.N * g.n_mb, pair = g.kh * g.kw * g.cb * 32;  // rows per 32 channels
  // Output-channel blocks outermost keeps a thread's weights in cache while it sweeps the pixels; with few
  // weights (they stay in L2 anyway), pixel blocks outermost reuse each block's inputs and output rows.
  // Row masks (one bit per weight, 8 times less to read) are expanded into the thread's buffer: all of them
  // at once when they are few, else 32 channels at a time.
  const bool pixels_outer = g.kh * g.kw * g.cp * g.o_pad <= (256 << 10);
  const int64_t span = pixels_outer ? n_ob * pair : pair;  // rows expanded at once
  at::parallel_for(0, n_ob * n_m, 1, [&](int64_t begin, int64_t end) {
    amx_configure();  // per thread: the tile state is the thread's
    alignas(64) int32_t acc[2][32 * 32];  // this block's counts and the previous one's, awaiting its epilogue
    thread_local std::vector<int8_t> buffer;  // kept between calls: no allocation per layer
    if (masks && buffer.size() < static_cast<size_t>(64 * span + 64)) buffer.resize(64 * span + 64);
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t(63);
    int8_t* tiles = masks ? reinterpret_cast<int8_t*>(aligned) : nullptr;
    int64_t expanded = -1;
    Pending prev{};
    for (int64_t t = begin; t < end; ++t) {
      const int64_t ob = pixels_outer ? t % n_ob : t / n_m, r = pixels_outer ? t / n_ob : t % n_m;
      const int64_t n = r / g.n_mb, mb = r % g.n_mb;
      const int64_t first = pixels_outer ? 0 : ob;  // the first output block in the buffer
      if (masks && first != expanded) {
        expand_words(reinterpret_cast<const u64*>(wi.data_ptr<int64_t>()) + first * pair, span, 64, tiles);
        expanded = first;
      }
      int32_t* out = acc[(t - begin) & 1];
      const int8_t* w = masks ? tiles + (ob - first) * pair * 64 : wi.data_ptr<int8_t>() + ob * pair * 64;
      amx_block(xp, w, g, n, mb, out, e, prev);
      prev = pending(g, out, n, mb, ob);
    }
    if (prev.acc) epilogue_rows(g, e, prev, 32);
    amx_release();
  });
#else
  TORCH_CHECK(false, "amx_conv: not compiled for this platform");
#endif
}

// The sign bytes of the next binary layer's input, (N (h_out + 2 out_ph) (w_out + 2 out_pw) + TAIL, cp) int8.
torch::Tensor next_signs(const AmxGeometry& g, Epilogue& e, int64_t out_ph, int64_t out_pw, int64_t out_border,
                         const torch::TensorOptions& options) {
  TORCH_CHECK(out_ph >= 0 && out_pw >= 0, "amx_conv: negative padding of the next layer");
  TORCH_CHECK(out_border == -1 || out_border == 0, "amx_conv: the next layer's border must be -1 or 0");
  e.out_Hp = g.h_out + 2 * out_ph;
  e.out_Wp = g.w_out + 2 * out_pw;
  e.out_units = (g.o + 63) / 64 * 64;  // bytes per pixel, >= o_pad: a block's 32 bytes fit
  e.out_ph = out_ph;
  e.out_pw = out_pw;
  auto out = torch::full({g.N * e.out_Hp * e.out_Wp + TAIL, e.out_units}, out_border, options.dtype(torch::kInt8));
  e.bytes = out.data_ptr<int8_t>();
  return out;
}

std::vector<torch::Tensor> amx_conv(torch::Tensor xi, torch::Tensor wi, int64_t N, int64_t Hp, int64_t Wp,
                                    int64_t channels, int64_t out_channels, int64_t kh, int64_t kw, int64_t sh,
                                    int64_t sw, int64_t h_out, int64_t w_out, c10::optional<torch::Tensor> gamma,
                                    c10::optional<torch::Tensor> gamma_y, c10::optional<torch::Tensor> gamma_x,
                                    bool relu, c10::optional<torch::Tensor> residual,
                                    c10::optional<torch::Tensor> post_scale, c10::optional<torch::Tensor> post_shift,
                                    bool post_relu, c10::optional<torch::Tensor> next_scale,
                                    c10::optional<torch::Tensor> next_thr, int64_t out_ph, int64_t out_pw,
                                    int64_t out_border, int64_t write_y) {
  const AmxGeometry g = check_amx(xi, wi, N, Hp, Wp, channels, out_channels, kh, kw, sh, sw, h_out, w_out);
  Epilogue e{};
  const bool has_scale = set_float_epilogue(e, gamma, gamma_y, gamma_x, relu, residual, post_scale, post_shift,
                                            post_relu, next_scale, next_thr, N, g.h_out, g.w_out, g.o, "amx_conv");
  torch::Tensor signs;
  if (has_scale) signs = next_signs(g, e, out_ph, out_pw, out_border, xi.options());
  torch::Tensor out = float_output(e, write_y, has_scale, residual, N, g.P, g.o, xi.options(), "amx_conv");
  if (N > 0) run_amx(xi, wi, g, e);
  return {out, signs};
}

torch::Tensor amx_conv_signs(torch::Tensor xi, torch::Tensor wi, int64_t N, int64_t Hp, int64_t Wp,
                             int64_t channels, int64_t out_channels, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t h_out, int64_t w_out, torch::Tensor bound, torch::Tensor flip, int64_t out_ph,
                             int64_t out_pw, int64_t out_border) {
  const AmxGeometry g = check_amx(xi, wi, N, Hp, Wp, channels, out_channels, kh, kw, sh, sw, h_out, w_out);
  Epilogue e{};
  set_bounds(e, bound, flip, g.P, g.o_pad, "amx_conv_signs");
  auto out = next_signs(g, e, out_ph, out_pw, out_border, xi.options());
  if (N > 0) run_amx(xi, wi, g, e);
  return out;
}

// ------------------------------------------------------------ fused max pooling

// max_pool_signs(x, kh, kw, sh, sw, ph, pw, relu, scale, thr, out_ph, out_pw, out_border) -> [y, signs]:
//     torch's max_pool2d (dilation 1, floor mode; the padding never wins) of x (N, C, H, W) float32 in
//     channels-last memory, of relu(x) when relu (max and relu commute, NaN propagates as in torch), y
//     channels-last; with scale and thr also the next binary layer's sign bytes of y (as pack_signs_i8),
//     else an undefined tensor. One pass where torch takes three (ReLU, pooling, packing).
// max_pool_bits(x, kh, kw, sh, sw, ph, pw, relu, scale, thr, out_ph, out_pw, simd) -> [y, bits]: the same
//     pooling, with the next binary layer's sign bits of y (as pack_signs with that threshold and padding);
//     the AVX-512 loop when simd (and the CPU has it), else the portable one.
#if XNORPP_AVX512
// One output pixel: the window rows iy0 .. iy1 - 1 and columns ix0 .. ix1 - 1 of image x (H, W, C); its signs
// scale y > thr as bytes d (+1 / -1) or as bits of 64-channel words wb, when given.
XNORPP_AVX512_FN void pool_pixel_avx512(const float* x, int64_t W, int64_t C, int64_t iy0, int64_t iy1,
                                        int64_t ix0, int64_t ix1, bool relu, const float* scale, const float* thr,
                                        float* y, int8_t* d, u64* wb) {
  const __m512 zero = _mm512_setzero_ps();
  u64 word = 0;
  for (int64_t c = 0; c < C; c += 16) {
    const int64_t left = C - c;
    const __mmask16 m = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    const float* first = x + (iy0 * W + ix0) * C + c;
    __m512 v = _mm512_maskz_loadu_ps(m, first);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    for (int64_t iy = iy0; iy < iy1; ++iy)
      for (int64_t ix = iy == iy0 ? ix0 + 1 : ix0; ix < ix1; ++ix) {
        const __m512 u = _mm512_maskz_loadu_ps(m, x + (iy * W + ix) * C + c);
        nan |= _mm512_cmp_ps_mask(u, u, _CMP_UNORD_Q);
        v = _mm512_max_ps(u, v);  // u > v ? u : v, torch's rule (NaN set below)
      }
    if (relu) v = _mm512_max_ps(v, zero);  // NaN-free lanes; NaN ones are set below
    v = _mm512_mask_blend_ps(nan, v, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
    _mm512_mask_storeu_ps(y + c, m, v);
    if (!scale) continue;
    const __m512 sv = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, scale + c));
    const __mmask16 b = _mm512_mask_cmp_ps_mask(m, sv, _mm512_maskz_loadu_ps(m, thr + c), _CMP_GT_OQ);
    if (d) _mm_mask_storeu_epi8(d + c, m, _mm_mask_blend_epi8(b, _mm_set1_epi8(-1), _mm_set1_epi8(1)));
    if (wb) {
      word |= static_cast<u64>(b) << (c % 64);
      if (c % 64 == 48 || c + 16 >= C) {
        wb[c / 64] = word;
        word = 0;
      }
    }
  }
}
#endif

// Calls row(n, oy, iy0, iy1) for every output row of a pooling, in parallel: the input rows iy0 .. iy1 - 1 of
// image n that its windows read (the padding never wins).
template <typename Row>
void pool_rows(int64_t N, int64_t H, int64_t Ho, int64_t kh, int64_t sh, int64_t ph, const Row& row) {
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho, oy = r % Ho;
      row(n, oy, std::max<int64_t>(0, oy * sh - ph), std::min(H, oy * sh - ph + kh));
    }
  });
}

// The pooling of max_pool_signs / max_pool_bits; signs as bytes (bytes, cp per pixel) or words (words, cw per
// pixel) of the next layer's padded input (oHp, oWp).
void max_pool_run(const torch::Tensor& x, torch::Tensor& y, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                  int64_t ph, int64_t pw, bool relu, const float* sc, const float* th, int8_t* bytes, u64* words,
                  int64_t units, int64_t out_ph, int64_t out_pw, bool simd) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = y.size(2), Wo = y.size(3);
  const int64_t oHp = Ho + 2 * out_ph, oWp = Wo + 2 * out_pw;
  const float* src = x.data_ptr<float>();
  float* dst = y.data_ptr<float>();
  simd = simd && simd_available();
  pool_rows(N, H, Ho, kh, sh, ph, [&](int64_t n, int64_t oy, int64_t iy0, int64_t iy1) {
    const float* img = src + n * H * W * C;
    for (int64_t ox = 0; ox < Wo; ++ox) {
      const int64_t ix0 = std::max<int64_t>(0, ox * sw - pw), ix1 = std::min(W, ox * sw - pw + kw);
      float* yo = dst + ((n * Ho + oy) * Wo + ox) * C;
      const int64_t at = ((n * oHp + oy + out_ph) * oWp + ox + out_pw) * units;
      int8_t* d = bytes ? bytes + at : nullptr;
      u64* wb = words ? words + at : nullptr;
#if XNORPP_AVX512
      if (simd) {
        pool_pixel_avx512(img, W, C, iy0, iy1, ix0, ix1, relu, sc, th, yo, d, wb);
        continue;
      }
#endif
      for (int64_t c = 0; c < C; ++c) {  // window row by row, as torch scans it
        float v = img[(iy0 * W + ix0) * C + c];
        for (int64_t iy = iy0; iy < iy1; ++iy)
          for (int64_t ix = ix0; ix < ix1; ++ix) {
            const float u = img[(iy * W + ix) * C + c];
            if (u > v || std::isnan(u)) v = u;
          }
        if (relu && !std::isnan(v)) v = v > 0.0f ? v : 0.0f;
        yo[c] = v;
        if (d) d[c] = sc[c] * v > th[c] ? 1 : -1;
        if (wb) wb[c / 64] |= static_cast<u64>(sc[c] * v > th[c]) << (c % 64);
      }
    }
  });
}

// Checks the input, kernel and threshold of max_pool_signs / max_pool_bits; returns y (N, C, Ho, Wo), empty.
torch::Tensor check_pool(const torch::Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                         int64_t pw, const c10::optional<torch::Tensor>& scale, const c10::optional<torch::Tensor>& thr,
                         int64_t out_ph, int64_t out_pw, const char* who) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu() &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              who, ": x must be a channels-last float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0 && 2 * ph <= kh && 2 * pw <= kw,
              who, ": bad kernel, stride or padding");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H + 2 * ph >= kh && W + 2 * pw >= kw, who, ": input smaller than the kernel");
  TORCH_CHECK((scale && scale->defined()) == (thr && thr->defined()), who, ": scale and thr go together");
  if (scale && scale->defined()) {
    for (const auto& t : {*scale, *thr})
      TORCH_CHECK(t.dim() == 1 && t.size(0) == C && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                  who, ": scale and thr must be contiguous float32 (C,)");
    TORCH_CHECK(out_ph >= 0 && out_pw >= 0, who, ": bad padding of the next layer");
  }
  const int64_t Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;
  return torch::empty({N, C, Ho, Wo},
                      torch::TensorOptions().dtype(torch::kFloat32).memory_format(at::MemoryFormat::ChannelsLast));
}


std::vector<torch::Tensor> max_pool_signs(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                          int64_t ph, int64_t pw, bool relu, c10::optional<torch::Tensor> scale,
                                          c10::optional<torch::Tensor> thr, int64_t out_ph, int64_t out_pw,
                                          int64_t out_border) {
  auto y = check_pool(x, kh, kw, sh, sw, ph, pw, scale, thr, out_ph, out_pw, "max_pool_signs");
  torch::Tensor signs;
  const int64_t cp = (x.size(1) + 63) / 64 * 64;
  const bool thresholded = scale && scale->defined();
  if (thresholded) {
    TORCH_CHECK(out_border == -1 || out_border == 0, "max_pool_signs: bad border of the next layer");
    TORCH_CHECK(amx_available(), "max_pool_signs: sign bytes are the AMX int8 tiles' input");
    signs = torch::full({x.size(0) * (y.size(2) + 2 * out_ph) * (y.size(3) + 2 * out_pw) + TAIL, cp}, out_border,
                        x.options().dtype(torch::kInt8));
  }
  if (y.numel() == 0) return {y, signs};
  max_pool_run(x, y, kh, kw, sh, sw, ph, pw, relu, thresholded ? scale->data_ptr<float>() : nullptr,
               thresholded ? thr->data_ptr<float>() : nullptr, thresholded ? signs.data_ptr<int8_t>() : nullptr,
               nullptr, cp, out_ph, out_pw, true);
  return {y, signs};
}

std::vector<torch::Tensor> max_pool_bits(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                         int64_t ph, int64_t pw, bool relu, torch::Tensor scale, torch::Tensor thr,
                                         int64_t out_ph, int64_t out_pw, bool simd) {
  auto y = check_pool(x, kh, kw, sh, sw, ph, pw, scale, thr, out_ph, out_pw, "max_pool_bits");
  const int64_t cw = (x.size(1) + 63) / 64;
  auto bits = torch::zeros({x.size(0), y.size(2) + 2 * out_ph, y.size(3) + 2 * out_pw, cw},
                           x.options().dtype(torch::kInt64));
  if (y.numel() == 0) return {y, bits};
  max_pool_run(x, y, kh, kw, sh, sw, ph, pw, relu, scale.data_ptr<float>(), thr.data_ptr<float>(), nullptr,
               reinterpret_cast<u64*>(bits.data_ptr<int64_t>()), cw, out_ph, out_pw, simd);
  return {y, bits};
}

// channel_mean(x, simd) -> y: x (N, C, H, W) float32 channels-last -> y (N, C), each channel's pixels summed in
//     order (row by row) from the first, y = sum / (H W): the global average pooling that the emulation
//     defines (network._GlobalMean), one pass.
#if XNORPP_AVX512
XNORPP_AVX512_FN void channel_mean_avx512(const float* x, int64_t P, int64_t C, float* y) {
  const __m512 count = _mm512_set1_ps(static_cast<float>(P));
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = C - c >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (C - c)) - 1);
    __m512 acc = _mm512_maskz_loadu_ps(m, x + c);
    for (int64_t p = 1; p < P; ++p) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, x + p * C + c));
    _mm512_mask_storeu_ps(y + c, m, _mm512_div_ps(acc, count));
  }
}
#endif

torch::Tensor channel_mean(torch::Tensor x, bool simd) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu() &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast) && x.size(2) * x.size(3) >= 1,
              "channel_mean: x must be a channels-last float32 CPU tensor (N, C, H, W) with H W >= 1");
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  auto y = torch::empty({N, C}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const float* src = x.data_ptr<float>();
  float* dst = y.data_ptr<float>();
  simd = simd && simd_available();
  for (int64_t n = 0; n < N; ++n) {
#if XNORPP_AVX512
    if (simd) {
      channel_mean_avx512(src + n * P * C, P, C, dst + n * C);
      continue;
    }
#endif
    for (int64_t c = 0; c < C; ++c) {
      float acc = src[n * P * C + c];
      for (int64_t p = 1; p < P; ++p) acc = acc + src[(n * P + p) * C + c];
      dst[n * C + c] = acc / static_cast<float>(P);
    }
  }
  return y;
}

}  // namespace

#include "plan.h"  // a whole network's steps in one call: the kernels above

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_signs", &pack_signs, "sign bits of x (or of a per-channel threshold), 64 channels per int64 word");
  m.def("packed_conv", &packed_conv,
        "XNOR-popcount convolution of packed signs, times Gamma, ReLU, + residual, and the next layer's bits");
  m.def("packed_conv_bits", &packed_conv_bits, "XNOR-popcount convolution thresholded into packed sign bits");
  m.def("simd_available", &simd_available, "whether this CPU runs the AVX-512 VPOPCNTDQ path (run-time check)");
  m.def("pack_signs_i8", &pack_signs_i8, "sign bytes (+1 / -1) of x (or of a per-channel threshold), int8 tile layout");
  m.def("amx_conv", &amx_conv, "binary convolution of sign bytes on AMX int8 tiles, times Gamma, ReLU, + residual");
  m.def("amx_conv_signs", &amx_conv_signs, "binary convolution on AMX int8 tiles thresholded into sign bytes");
  m.def("amx_available", &amx_available, "whether this CPU and OS run the AMX int8 tile path (run-time check)");
  m.def("max_pool_signs", &max_pool_signs, "max pooling (of relu(x)) in one pass, with the next layer's sign bytes");
  m.def("max_pool_bits", &max_pool_bits, "max pooling (of relu(x)) in one pass, with the next layer's sign bits");
  m.def("channel_mean", &channel_mean, "each channel's mean over the pixels, summed in order (global pooling)");
  m.def("int8_gemm", &xnorpp::int8_gemm, "a 1x1 convolution or linear layer on int8 codes of its input, float output");
  m.def("int8_conv", &xnorpp::int8_conv,
        "a convolution on int8 codes of its input, float output, with its ReLU, max pooling and the next layer's bits");
  m.def("core_clock", &xnorpp::core_clock, "cycles per second of a chain of dependent adds (the core's clock)");
  m.def("popcount_peak", &xnorpp::popcount_peak,
        "binary multiply-adds per second of the XNOR-popcount inner loop on data in the first-level cache");
  m.def("vnni_peak", &xnorpp::vnni_peak, "int8 multiply-adds per second of int8_conv's inner loop, in cache");
  m.def("vnni_available", &vnni_available, "whether this CPU runs int8_gemm's AVX-512 VNNI path (run-time check)");
  plan::bind_plan(m);
  m.attr("amx_tail_rows") = TAIL;
  m.attr("simd_compiled") = static_cast<bool>(XNORPP_AVX512);
  m.attr("amx_emulated") = static_cast<bool>(XNORPP_AMX && XNORPP_AMX_EMULATION);
  m.attr("tile_out_channels") = OB;
}
