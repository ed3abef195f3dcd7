"""The packed engine: binary networks on bits, for CPU inference (Section 4.3).

- ``layer``: the packed binary convolution (``PackedBinaryConv2d``), its bit and
  int8-tile layouts, ``pack_model`` and ``storage_bytes``;
- ``backend``: which kernel runs (``backend_info``, ``BACKENDS``): the compiled
  ``csrc/packed_conv.cpp`` or ``numpy_kernels``;
- ``network``: the whole binary network on packed signs (``PackedNetwork``) and
  its float reference (``fused_emulation``); ``int8``: its real layers in int8;
- ``model_file``: the shippable model file (``export_bytes``, and ``load_network``,
  which gives the packed network of a file with no data).

    from xnorpp_core.packed import PackedNetwork, load_network
    net = load_network("RUN/model.xnorpp")          # int8 real layers, as exported
    logits = net(images)                             # (N, 3, H, W) float32
"""

from .backend import BACKENDS, ENV_VAR, BackendInfo, backend_info
from .layer import (SUPPORTED_METHODS, PackedBinaryConv2d, amx_capable, amx_weights, kernel_weights, pack_model,
                    pack_signs, pack_weight, storage_bytes)
from .model_file import ModelFileError, export_bytes, load_model, load_network
from .network import REAL_LAYERS, PackedNetwork, fused_emulation

__all__ = ["BACKENDS", "ENV_VAR", "SUPPORTED_METHODS", "BackendInfo", "backend_info", "pack_signs", "amx_weights",
           "amx_capable", "kernel_weights", "pack_weight", "PackedBinaryConv2d", "pack_model", "storage_bytes",
           "REAL_LAYERS", "PackedNetwork", "fused_emulation", "ModelFileError", "export_bytes", "load_model",
           "load_network"]
