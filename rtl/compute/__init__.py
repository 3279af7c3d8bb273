"""The compute kernels: the systolic int8 array and the linear kernel on it, streaming
attention, the integer softmax, LayerNorm and GELU units, and their arithmetic helpers."""
