# forward ops (CPU, fp32 activations): layernorm, activations, attention, embedding, softmax.
target_sources(llmint8_kernels PRIVATE
  activation.cc
  attention.cc
  embedding.cc
  layer_norm.cc
  softmax.cc)
# Attention spreads its (row, head) pairs over OpenMP threads (found by int8.cmake).
set_source_files_properties(attention.cc PROPERTIES COMPILE_OPTIONS "${OpenMP_CXX_FLAGS}")

foreach(_op activation attention embedding layer_norm softmax)
  llmint8_cc_test(NAME ${_op}_test SRCS ${_op}_test.cc DEPS llmint8::kernels LABELS kernels)
endforeach()
llmint8_cc_binary(NAME attention_benchmark SRCS attention_benchmark.cc
                  DEPS llmint8::kernels benchmark::benchmark)
llmint8_cc_binary(NAME row_ops_benchmark SRCS row_ops_benchmark.cc
                  DEPS llmint8::kernels benchmark::benchmark)
