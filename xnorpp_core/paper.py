"""The numbers the paper prints, in one place, for side-by-side tables.

Nothing here is ever used as a result: these are the targets we compare with.
"""

# Table 2 (Section 4.2): L1 distance, mean and std over 100 trials. Case 2 is not reported.
TABLE2 = {
    "direct": (6.36, 0.04),
    "xnor": (0.095, 0.002),
    "case1": (0.038, 0.001),
    "case3": (0.037, 0.001),
    "case4": (0.035, 0.001),
}

# Table 1: binarized ResNet-18 on ImageNet, (top-1 %, top-5 %).
TABLE1 = {
    "xnor": (51.2, 73.2),
    "case1": (55.5, 78.5),
    "case2": (56.1, 79.0),
    "case3": (56.7, 79.5),
    "case4": (57.1, 79.9),
}

# Table 3: ImageNet (top-1 %, top-5 %) by architecture and method; None where not given.
TABLE3 = {
    "alexnet": {"direct": (41.8, 67.1), "xnor": (44.2, 69.2), "case4": (46.9, 71.0), "real": (56.6, 80.2)},
    "resnet18": {"direct": (42.2, 69.2), "xnor": (51.2, 73.2), "bethge": (54.4, 77.5),
                 "case4": (57.1, 79.9), "real": (69.3, 89.2)},
}

# Section 4.3: the printed speed-ups for o = 256, 3x3 kernels.
SPEEDUP_256_3x3 = {"xnor": 63.69, "ours": 63.98}
