# int8 ops: quantize, int8 GEMM, int8 linear, fp16 linear, and their tests.
# The GEMMs and the weight quantizer thread with OpenMP (the runtime oneDNN itself uses in the
# Debian build); the flag is set on those sources only, so the rest of the library is unaffected.
find_package(OpenMP REQUIRED COMPONENTS CXX)
target_sources(llmint8_kernels PRIVATE
  quantize_weight.cc
  quantize_activation.cc
  int8_gemm.cc
  int8_linear.cc
  linear.cc)
set_source_files_properties(quantize_weight.cc quantize_activation.cc int8_gemm.cc int8_linear.cc
                            linear.cc PROPERTIES
                            COMPILE_OPTIONS "${OpenMP_CXX_FLAGS}")
target_link_libraries(llmint8_kernels PRIVATE ${OpenMP_CXX_LIBRARIES})

foreach(_op quantize_weight quantize_activation int8_gemm int8_linear linear)
  llmint8_cc_test(NAME ${_op}_test SRCS ${_op}_test.cc DEPS llmint8::kernels LABELS kernels)
endforeach()
# oneDNN's int8 GEMM is used only on VNNI CPUs; run the GEMM tests again with oneDNN capped at
# AVX2 so the fallback kernel is checked on every machine that has AVX2.
if(BUILD_TESTING)
  add_test(NAME int8_gemm_avx2_test COMMAND llmint8_int8_gemm_test)
  set_tests_properties(int8_gemm_avx2_test PROPERTIES LABELS kernels TIMEOUT 300
                       ENVIRONMENT "DNNL_MAX_CPU_ISA=AVX2")
endif()

llmint8_cc_binary(NAME int8_linear_benchmark SRCS int8_linear_benchmark.cc
                  DEPS llmint8::kernels benchmark::benchmark)
