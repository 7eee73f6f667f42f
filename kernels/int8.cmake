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
# Again with the instruction sets capped (DNNL_MAX_CPU_ISA caps oneDNN and kernels/cpu_features
# alike), so that the paths a smaller CPU takes are checked on this one:
#   int8_gemm_avx2_test  the int8 GEMM's own kernel (oneDNN's is used only on VNNI CPUs);
#   linear_avx2_test     the fp16 linear's AVX2 tiles (AVX-512 ones on AVX-512 machines);
#   linear_sse41_test    the fp16 linear without AVX2 (oneDNN's sgemm);
#   cpu_features_*_test  the cap as the kernels see it.
if(BUILD_TESTING)
  foreach(_capped int8_gemm:AVX2 linear:AVX2 linear:SSE41 cpu_features:AVX2 cpu_features:SSE41)
    string(REPLACE ":" ";" _pair ${_capped})
    list(GET _pair 0 _op)
    list(GET _pair 1 _isa)
    string(TOLOWER ${_isa} _isa_name)
    add_test(NAME ${_op}_${_isa_name}_test COMMAND llmint8_${_op}_test)
    set_tests_properties(${_op}_${_isa_name}_test PROPERTIES LABELS kernels TIMEOUT 300
                         ENVIRONMENT "DNNL_MAX_CPU_ISA=${_isa};OMP_WAIT_POLICY=PASSIVE")
  endforeach()
endif()

llmint8_cc_binary(NAME int8_linear_benchmark SRCS int8_linear_benchmark.cc
                  DEPS llmint8::kernels benchmark::benchmark)
