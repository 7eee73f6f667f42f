# libFuzzer targets of the coordinator's parsers of client input (LLMINT8_FUZZ=ON, clang only).
# The sources under test are compiled into each fuzzer so they carry the coverage and sanitizer
# instrumentation; the generated protobuf messages come from llmint8::proto, uninstrumented.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "LLMINT8_FUZZ=ON needs clang: configure with -DCMAKE_C_COMPILER=clang "
                      "-DCMAKE_CXX_COMPILER=clang++ (Debian: apt-get install clang libclang-rt-14-dev)")
endif()

function(llmint8_coordinator_fuzzer name)
  cmake_parse_arguments(F "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${F_SRCS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(${name} PRIVATE
    ${LLMINT8_WARNINGS} -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE ${F_DEPS})
endfunction()

# What guided decoding and the tokenizer compile with (guides are checked where requests are
# parsed and validated; the guide cache counts its lookups in the service's metrics);
# instrumented too.
find_package(ICU REQUIRED COMPONENTS uc)
set(LLMINT8_FUZZ_GUIDE_SRCS
    guide_cache.cc json_schema.cc json_string_pattern.cc number_regex.cc regex_parser.cc
    guided_regex.cc
    output_constraint.cc tokenizer.cc added_tokens.cc utf8.cc metrics.cc)
set(LLMINT8_FUZZ_GUIDE_DEPS
    llmint8::common llmint8::file absl::flat_hash_map absl::flat_hash_set absl::span
    absl::status absl::statusor absl::strings absl::synchronization absl::time
    nlohmann_json::nlohmann_json ICU::uc prometheus-cpp::core)

# POST /v1/completions and /v1/chat/completions: the body parsers and the JSON they answer with
# (a chat tool's parameters are checked as a JSON schema).
llmint8_coordinator_fuzzer(llmint8_openai_api_fuzzer
  SRCS fuzz/openai_api_fuzzer.cc openai_api.cc openai_chat.cc openai_fields.cc
       ${LLMINT8_FUZZ_GUIDE_SRCS}
  DEPS llmint8::proto ${LLMINT8_FUZZ_GUIDE_DEPS})

# The tokenizer on prompt text and on token ids; the vocabulary is the bundled model's
# (models/opt-sotu-cpu/, or $LLMINT8_SOURCE_DIR/models/opt-sotu-cpu/ when that is set).
llmint8_coordinator_fuzzer(llmint8_tokenizer_fuzzer
  SRCS fuzz/tokenizer_fuzzer.cc tokenizer.cc added_tokens.cc utf8.cc
  DEPS llmint8::common llmint8::file absl::flat_hash_map absl::flat_hash_set absl::span
       absl::status absl::statusor absl::strings absl::synchronization nlohmann_json::nlohmann_json
       ICU::uc)
target_compile_definitions(llmint8_tokenizer_fuzzer PRIVATE
                           LLMINT8_DEFAULT_SOURCE_DIR="${PROJECT_SOURCE_DIR}")

# A GenerateRequest as the gRPC server decodes it, through the checks of
# GenerationService::MakeSequences (parameters, tokenization of a text prompt, prompt tokens).
llmint8_coordinator_fuzzer(llmint8_request_validation_fuzzer
  SRCS fuzz/request_validation_fuzzer.cc request_validation.cc ${LLMINT8_FUZZ_GUIDE_SRCS}
  DEPS llmint8::proto ${LLMINT8_FUZZ_GUIDE_DEPS})
target_compile_definitions(llmint8_request_validation_fuzzer PRIVATE
                           LLMINT8_DEFAULT_SOURCE_DIR="${PROJECT_SOURCE_DIR}")

# A model's config.json through what is computed from it before any weight is read: the
# parameter count, the expected tensors and their shard slices, and the planner.
llmint8_coordinator_fuzzer(llmint8_model_config_fuzzer
  SRCS fuzz/model_config_fuzzer.cc planner.cc ../model/config.cc ../model/shard_plan.cc
       ../model/tensor_names.cc
  DEPS llmint8::common llmint8::file llmint8::byte_size absl::int128 absl::status
       absl::statusor absl::strings absl::str_format nlohmann_json::nlohmann_json)
