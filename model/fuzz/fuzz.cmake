# libFuzzer targets of model_io (LLMINT8_FUZZ=ON, clang only). The parser sources are compiled
# into the fuzzer itself so they carry the coverage and sanitizer instrumentation.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "LLMINT8_FUZZ=ON needs clang: configure with -DCMAKE_C_COMPILER=clang "
                      "-DCMAKE_CXX_COMPILER=clang++ (Debian: apt-get install clang libclang-rt-14-dev)")
endif()
add_executable(llmint8_safetensors_header_fuzzer
  fuzz/safetensors_header_fuzzer.cc safetensors_header.cc safetensors.cc safetensors_writer.cc
  checkpoint.cc tensor_names.cc config.cc)
target_include_directories(llmint8_safetensors_header_fuzzer PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_options(llmint8_safetensors_header_fuzzer PRIVATE
  ${LLMINT8_WARNINGS} -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=undefined)
target_link_options(llmint8_safetensors_header_fuzzer PRIVATE
  -fsanitize=fuzzer,address,undefined)
target_link_libraries(llmint8_safetensors_header_fuzzer PRIVATE
  llmint8::common llmint8::file llmint8::mapped_copy absl::status absl::statusor absl::strings
  nlohmann_json::nlohmann_json)
