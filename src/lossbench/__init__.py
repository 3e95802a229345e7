"""lossbench: which classification loss should I use, and does the difference hold up?"""

from lossbench.numerics import pin_cpu_kernels

# Before any lossbench code computes with torch, in this process and in those it
# starts (the seed workers inherit the environment): the same bits on every
# x86-64 CPU with AVX2 (numerics.py says why and what was measured).
pin_cpu_kernels()
