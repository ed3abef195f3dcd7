// Software int8 tiles: the AMX-TILE / AMX-INT8 instructions that packed_conv.cpp uses, in plain C++, so that
// its int8-tile path (tile layouts, weight-mask expansion, fused epilogues) runs and is tested on a CPU
// without AMX. Included by packed_conv.cpp when it is built with XNORPP_AMX_EMULATION (the backend
// "cpp_amx_emulated"); the hardware build never includes it.
//
// Each function keeps the name and the semantics of the intrinsic it replaces (Intel SDM, "Intel AMX"):
//   _tile_loadconfig(cfg)        LDTILECFG: palette 1, up to 8 tiles of `rows` (<= 16) rows of `colsb`
//                                (<= 64) bytes; reserved bytes 0; all tiles zeroed; palette 0 releases;
//   _tile_zero(t)                TILEZERO;
//   _tile_loadd(t, base, stride) TILELOADD: row r (< rows) = colsb bytes at base + r stride, the rest zero;
//   _tile_stored(t, base, stride) TILESTORED: rows of colsb bytes to base + r stride;
//   _tile_dpbssd(c, a, b)        TDPBSSD: c[m][n] += sum_k sum_{i<4} a[m][4k+i] b[k][4n+i], signed bytes,
//                                int32 sums that wrap (no saturation), m < rows(c), n < colsb(c) / 4,
//                                k < colsb(a) / 4; c, a and b distinct, rows(a) = rows(c),
//                                colsb(a) = 4 rows(b), colsb(b) = colsb(c);
//   _tile_release()              TILERELEASE: back to the initial state.
// The tile state is per thread, as the hardware's. Where the hardware raises #UD or #GP (a tile used
// before its configuration, a tile index or a shape that breaks the rules above), the emulation throws
// (c10::Error, a RuntimeError in Python) naming the rule: a kernel bug shows as an error, not as a wrong
// number. Memory is read and written exactly where the instructions would, so AddressSanitizer sees the
// same accesses.

#pragma once

#include <cstdint>
#include <cstring>

namespace xnorpp_amx_emulation {

struct State {
  bool configured = false;
  uint16_t colsb[8] = {};
  uint8_t rows[8] = {};
  alignas(64) uint8_t data[8][16][64] = {};
};

inline State& state() {
  thread_local State s;
  return s;
}

// The configured tile t, checked as the hardware does before it touches a tile.
inline State& tile(int t, const char* who) {
  State& s = state();
  TORCH_CHECK(s.configured, who, ": no tile configuration loaded (the hardware raises #UD)");
  TORCH_CHECK(t >= 0 && t < 8, who, ": tile ", t, " does not exist in palette 1");
  TORCH_CHECK(s.rows[t] > 0 && s.colsb[t] > 0, who, ": tile ", t, " is not configured (the hardware raises #UD)");
  return s;
}

inline void loadconfig(const void* config) {
  const uint8_t* c = static_cast<const uint8_t*>(config);
  State& s = state();
  if (c[0] == 0) {  // palette 0: the initial state
    s = State{};
    return;
  }
  TORCH_CHECK(c[0] == 1, "_tile_loadconfig: palette ", int(c[0]), " is not supported (the hardware raises #GP)");
  TORCH_CHECK(c[1] == 0, "_tile_loadconfig: start_row must be 0 outside a restarted instruction");
  for (int i = 2; i < 16; ++i) TORCH_CHECK(c[i] == 0, "_tile_loadconfig: reserved byte ", i, " is not 0 (#GP)");
  State next{};
  for (int t = 0; t < 16; ++t) {
    uint16_t colsb;
    std::memcpy(&colsb, c + 16 + 2 * t, 2);
    const uint8_t rows = c[48 + t];
    if (t >= 8) {
      TORCH_CHECK(colsb == 0 && rows == 0, "_tile_loadconfig: palette 1 has 8 tiles, tile ", t, " is set (#GP)");
      continue;
    }
    TORCH_CHECK(rows <= 16 && colsb <= 64, "_tile_loadconfig: tile ", t, " of ", int(rows), " rows x ", colsb,
                " bytes exceeds 16 x 64 (#GP)");
    TORCH_CHECK((rows == 0) == (colsb == 0), "_tile_loadconfig: tile ", t, " has rows or bytes but not both (#GP)");
    next.rows[t] = rows;
    next.colsb[t] = colsb;
  }
  next.configured = true;  // and every tile zeroed
  s = next;
}

inline void zero(int t) { std::memset(tile(t, "_tile_zero").data[t], 0, sizeof(State::data[0])); }

inline void loadd(int t, const void* base, long stride) {
  State& s = tile(t, "_tile_loadd");
  std::memset(s.data[t], 0, sizeof(State::data[0]));
  for (int r = 0; r < s.rows[t]; ++r)
    std::memcpy(s.data[t][r], static_cast<const uint8_t*>(base) + r * stride, s.colsb[t]);
}

inline void stored(int t, void* base, long stride) {
  State& s = tile(t, "_tile_stored");
  for (int r = 0; r < s.rows[t]; ++r) std::memcpy(static_cast<uint8_t*>(base) + r * stride, s.data[t][r], s.colsb[t]);
}

// XNORPP_AMX_FN (packed_conv.cpp): the AVX-512 its epilogues use, which the compiler takes to vectorise the sums.
XNORPP_AMX_FN inline void dpbssd(int c, int a, int b) {
  State& s = tile(c, "_tile_dpbssd");
  tile(a, "_tile_dpbssd");
  tile(b, "_tile_dpbssd");
  TORCH_CHECK(c != a && c != b && a != b, "_tile_dpbssd: tiles ", c, ", ", a, ", ", b, " are not distinct (#UD)");
  TORCH_CHECK(s.rows[a] == s.rows[c] && s.colsb[a] == 4 * s.rows[b] && s.colsb[b] == s.colsb[c] && s.colsb[c] % 4 == 0,
              "_tile_dpbssd: shapes disagree: ", int(s.rows[c]), "x", s.colsb[c], " += ", int(s.rows[a]), "x",
              s.colsb[a], " . ", int(s.rows[b]), "x", s.colsb[b], " (#UD)");
  const int rows = s.rows[c], n_out = s.colsb[c] / 4, depth = s.colsb[a] / 4;
  int16_t bt[16][4][16] = {};  // b[k][4 n + i] at [k][i][n]: 16 outputs side by side
  for (int k = 0; k < depth; ++k)
    for (int n = 0; n < n_out; ++n)
      for (int i = 0; i < 4; ++i) bt[k][i][n] = static_cast<int8_t>(s.data[b][k][4 * n + i]);
  for (int m = 0; m < rows; ++m) {
    const int8_t* am = reinterpret_cast<const int8_t*>(s.data[a][m]);
    uint32_t sum[16];  // int32 sums that wrap, as the hardware's (unsigned: no undefined overflow)
    std::memcpy(sum, s.data[c][m], sizeof(sum));
    for (int k = 0; k < depth; ++k)
      for (int i = 0; i < 4; ++i) {
        const int16_t v = am[4 * k + i];
        for (int n = 0; n < 16; ++n)  // each product is exact in 16 bits: |v b| <= 128 * 128
          sum[n] += static_cast<uint32_t>(static_cast<int32_t>(static_cast<int16_t>(v * bt[k][i][n])));
      }
    for (int n = n_out; n < 16; ++n) sum[n] = 0;  // the bytes past colsb are zeroed
    std::memcpy(s.data[c][m], sum, sizeof(sum));
  }
  std::memset(s.data[c][rows], 0, (16 - rows) * sizeof(s.data[c][0]));  // and the rows past rows(c)
}

inline void release() { state() = State{}; }

}  // namespace xnorpp_amx_emulation

// The intrinsics' names, for the kernel's unchanged calls (the compiler's own are macros or inline functions).
#undef _tile_loadconfig
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbssd
#undef _tile_release
#define _tile_loadconfig(config) ::xnorpp_amx_emulation::loadconfig(config)
#define _tile_zero(t) ::xnorpp_amx_emulation::zero(t)
#define _tile_loadd(t, base, stride) ::xnorpp_amx_emulation::loadd(t, base, stride)
#define _tile_stored(t, base, stride) ::xnorpp_amx_emulation::stored(t, base, stride)
#define _tile_dpbssd(c, a, b) ::xnorpp_amx_emulation::dpbssd(c, a, b)
#define _tile_release() ::xnorpp_amx_emulation::release()
