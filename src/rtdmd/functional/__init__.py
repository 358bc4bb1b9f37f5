"""The method's math as small pure functions of tensors (torch only; no config, no I/O).

Notation follows ``RTDMD.md``: rectified flow ``x_sigma = (1 - sigma) * x0 + sigma * eps``, every network
predicts a velocity ``v ~ eps - x0``, sigma = 1 is pure noise.
"""
