"""Deploying and measuring: the real network in the forms a user would deploy, and the packed binary one beside it.

- ``forms``: the real-valued network in fp32, bf16 and int8, as a user would deploy it (``real_forms``);
- ``runtimes``: its ONNX Runtime and OpenVINO forms (the ``deploy`` extra), which ``real_forms`` includes;
- ``timing``: the timing protocol (interleaved rounds, median call first) and the speed-up over the fastest
  form of each precision;
- ``whole_network``: the whole-network benchmark (``studies.bench_inference``);
- ``tradeoff``: top-1 and latency of trained networks, real against binary (``studies.deploy_tradeoff``).
"""
