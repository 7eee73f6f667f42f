# One helper per kind of target, in the manner of abseil's AbseilHelpers.cmake.
#
#   llmint8_cc_library(NAME foo SRCS a.cc b.cc [CUDA_SRCS k.cu] DEPS x y)
#   llmint8_cc_test(NAME foo_test SRCS foo_test.cc DEPS foo LABELS kernels [gpu])
#   llmint8_cc_binary(NAME tool SRCS main.cc DEPS foo)
#
# Targets are named llmint8_<NAME>; an alias llmint8::<NAME> is created for libraries.

function(llmint8_cc_library)
  cmake_parse_arguments(L "" "NAME" "SRCS;DEPS;PUBLIC_DEFS" ${ARGN})
  set(_t llmint8_${L_NAME})
  if(L_SRCS)
    add_library(${_t} STATIC ${L_SRCS})
    target_link_libraries(${_t} PUBLIC ${L_DEPS})
    target_include_directories(${_t} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_compile_options(${_t} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LLMINT8_WARNINGS}>)
    if(L_PUBLIC_DEFS)
      target_compile_definitions(${_t} PUBLIC ${L_PUBLIC_DEFS})
    endif()
  else()
    add_library(${_t} INTERFACE)
    target_link_libraries(${_t} INTERFACE ${L_DEPS})
    target_include_directories(${_t} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  endif()
  add_library(llmint8::${L_NAME} ALIAS ${_t})
endfunction()

function(llmint8_cc_binary)
  cmake_parse_arguments(B "" "NAME;OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  set(_t llmint8_${B_NAME})
  add_executable(${_t} ${B_SRCS})
  target_link_libraries(${_t} PRIVATE ${B_DEPS})
  target_include_directories(${_t} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${_t} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LLMINT8_WARNINGS}>)
  if(B_OUTPUT_NAME)
    set_target_properties(${_t} PROPERTIES OUTPUT_NAME ${B_OUTPUT_NAME})
  endif()
endfunction()

# Tests are registered with ctest; LABELS picks the suites (kernels, gpu, model, comm,
# service, scaleout, ...). TIMEOUT defaults to 300 s (x3 under LLMINT8_SANITIZE). OpenMP
# threads sleep when idle (OMP_WAIT_POLICY=PASSIVE) so multi-process tests on few cores do not
# spin against each other.
# REPORT_SKIPS (implied by the label gpu): a run whose tests skipped and none failed is
# reported by ctest as Skipped, not Passed (a test that needs what the machine may lack).
function(llmint8_cc_test)
  cmake_parse_arguments(T "REPORT_SKIPS" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS" ${ARGN})
  if("gpu" IN_LIST T_LABELS)
    set(T_REPORT_SKIPS TRUE)
  endif()
  if(NOT BUILD_TESTING)
    return()
  endif()
  set(_t llmint8_${T_NAME})
  add_executable(${_t} ${T_SRCS})
  if(T_REPORT_SKIPS)
    set(_main llmint8_gpu_test_main)
  else()
    set(_main GTest::gtest_main)
  endif()
  target_link_libraries(${_t} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock ${_main})
  target_include_directories(${_t} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${_t} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LLMINT8_WARNINGS}>)
  add_test(NAME ${T_NAME} COMMAND ${_t} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(LLMINT8_SANITIZE)  # instrumented code at -O1 runs a few times slower
    math(EXPR T_TIMEOUT "${T_TIMEOUT} * 3")
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "LLMINT8_SOURCE_DIR=${PROJECT_SOURCE_DIR};LLMINT8_BINARY_DIR=${PROJECT_BINARY_DIR};OMP_WAIT_POLICY=PASSIVE")
  if(T_REPORT_SKIPS)
    # A GPU test whose tests skipped (no device) and none failed exits 77 (gpu_test_main.cc):
    # ctest reports it as Skipped, never as Passed.
    set_tests_properties(${T_NAME} PROPERTIES SKIP_RETURN_CODE 77)
  endif()
endfunction()
