# config, checkpoints, shard plan: llmint8_model_io (alias llmint8::model_io).
llmint8_cc_library(
  NAME model_io
  SRCS config.cc
       generation_config.cc
       tensor_names.cc
       shard_plan.cc
       checkpoint.cc
       safetensors_header.cc
       safetensors.cc
       safetensors_writer.cc
       synthetic.cc
  DEPS llmint8::common llmint8::file llmint8::mapped_copy absl::int128
       absl::status absl::statusor
       absl::strings nlohmann_json::nlohmann_json)

# Synthetic weights are generated on all cores (OpenMP, as the kernels' GEMMs): a 66B-shaped
# model is 65e9 values.
find_package(OpenMP REQUIRED COMPONENTS CXX)
set_source_files_properties(synthetic.cc PROPERTIES COMPILE_OPTIONS "${OpenMP_CXX_FLAGS}")
target_link_libraries(llmint8_model_io PRIVATE ${OpenMP_CXX_LIBRARIES})

# `llmint8 quantize`'s writer: it quantizes with the kernels' QuantizeWeight, which nothing
# else of model_io needs (the coordinator and the planner read checkpoints without kernels).
llmint8_cc_library(NAME int8_checkpoint SRCS int8_checkpoint.cc
                   DEPS llmint8::model_io llmint8::kernels nlohmann_json::nlohmann_json)

# What a group's workers compare: one checkpoint under one --model on every host.
llmint8_cc_library(NAME checkpoint_fingerprint SRCS checkpoint_fingerprint.cc
                   DEPS llmint8::model_io absl::strings)

# What --model names (a directory or synthetic:<preset>,...), opened.
llmint8_cc_library(NAME model_spec SRCS model_spec.cc
                   DEPS llmint8::model_io llmint8::common absl::strings)

llmint8_cc_test(NAME config_test SRCS config_test.cc DEPS llmint8::model_io LABELS model)
llmint8_cc_test(NAME generation_config_test SRCS generation_config_test.cc DEPS llmint8::model_io
                LABELS model)
llmint8_cc_test(NAME shard_plan_test SRCS shard_plan_test.cc DEPS llmint8::model_io LABELS model)
llmint8_cc_test(NAME safetensors_test SRCS safetensors_test.cc DEPS llmint8::model_io LABELS model)
llmint8_cc_test(NAME synthetic_test SRCS synthetic_test.cc DEPS llmint8::model_io LABELS model)
# --model specs: synthetic overrides and their bounds.
llmint8_cc_test(NAME model_spec_test SRCS model_spec_test.cc DEPS llmint8::model_spec LABELS model)
llmint8_cc_test(NAME checkpoint_fingerprint_test SRCS checkpoint_fingerprint_test.cc
                DEPS llmint8::checkpoint_fingerprint LABELS model)
llmint8_cc_test(NAME int8_checkpoint_test SRCS int8_checkpoint_test.cc
                DEPS llmint8::int8_checkpoint LABELS model)

# libFuzzer target for the safetensors header parser (clang only; see model/fuzz/README.md).
if(LLMINT8_FUZZ)
  include(fuzz/fuzz.cmake)
endif()
