"""curvedit workers: everything that touches tensors (curvature math, evaluation, the edit
pipeline, the RQ job). Importing this package does not import torch."""
