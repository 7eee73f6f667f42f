# int8 ops: quantize, int8 GEMM, int8 linear, fp16 linear, and their tests.
target_sources(llmint8_kernels PRIVATE quantize_weight.cc)
