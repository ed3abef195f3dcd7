"""The packed arithmetic in numpy: the reference path of the ``numpy`` backend, single-threaded.

Layouts as ``layer`` describes them: packed signs ``(N, Hp, Wp, cw)`` int64 words,
bit ``b`` of word ``k`` is channel ``64 k + b``.
"""

import numpy as np
import torch


def popcount(words):
    """Bits set in each uint64 of ``words`` (numpy >= 2 has it built in)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1, dtype=np.uint64)


def pack_numpy(x, ph, pw):
    n, c, h, w = x.shape
    cw = -(-c // 64)
    bits = np.zeros((n, h + 2 * ph, w + 2 * pw, 64 * cw), dtype=bool)
    bits[:, ph:ph + h, pw:pw + w, :c] = (x > 0).permute(0, 2, 3, 1).numpy()
    words = np.packbits(bits, axis=-1, bitorder="little").view("<u8").astype(np.uint64)
    return torch.from_numpy(words.view(np.int64))  # (N, Hp, Wp, cw), bit b of word k = channel 64 k + b


def conv_numpy(xb, wbits, channels, stride, out_size, corr, gamma):
    xb, wb = xb.numpy().view(np.uint64), wbits.numpy().view(np.uint64)
    o, kh, kw, cw = wb.shape
    (sh, sw), (h_out, w_out) = stride, out_size
    win = np.lib.stride_tricks.sliding_window_view(xb, (kh, kw), axis=(1, 2))  # (N, ., ., cw, kh, kw)
    win = win[:, ::sh, ::sw][:, :h_out, :w_out].transpose(0, 1, 2, 4, 5, 3)  # (N, h_out, w_out, kh, kw, cw)
    a = win.reshape(-1, kh * kw * cw)  # (N P, K)
    b = wb.reshape(o, -1)  # (o, K)
    pop = np.empty((a.shape[0], o), dtype=np.int64)
    rows = max(1, (1 << 22) // (o * b.shape[1]))  # bound the (rows, o, K) temporary to 32 MB
    for r in range(0, a.shape[0], rows):
        pop[r:r + rows] = popcount(a[r:r + rows, None, :] ^ b[None]).sum(-1)
    count = channels * kh * kw - 2 * pop.reshape(xb.shape[0], h_out * w_out, o)  # (N, P, o)
    if corr is not None:
        count = count + corr.numpy()
    y = torch.from_numpy(count.astype(np.float32))  # exact: |count| < 2^24
    return y * gamma if gamma is not None else y
