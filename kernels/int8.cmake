# int8 ops: quantize, int8 GEMM, int8 linear, fp16 linear, and their tests.
target_sources(llmint8_kernels PRIVATE
  quantize_weight.cc
  quantize_activation.cc)

foreach(_op quantize_weight quantize_activation)
  llmint8_cc_test(NAME ${_op}_test SRCS ${_op}_test.cc DEPS llmint8::kernels LABELS kernels)
endforeach()
