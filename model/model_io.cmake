# config, checkpoints, shard plan: llmint8_model_io (alias llmint8::model_io).
llmint8_cc_library(
  NAME model_io
  SRCS config.cc
       tensor_names.cc
       shard_plan.cc
       checkpoint.cc
       safetensors.cc
       synthetic.cc
       int8_checkpoint.cc
  DEPS llmint8::common llmint8::file llmint8::mapped_copy llmint8::kernels absl::int128
       absl::status absl::statusor
       absl::strings nlohmann_json::nlohmann_json)

# Synthetic weights are generated on all cores (OpenMP, as the kernels' GEMMs): a 66B-shaped
# model is 65e9 values.
find_package(OpenMP REQUIRED COMPONENTS CXX)
set_source_files_properties(synthetic.cc PROPERTIES COMPILE_OPTIONS "${OpenMP_CXX_FLAGS}")
target_link_libraries(llmint8_model_io PRIVATE ${OpenMP_CXX_LIBRARIES})

llmint8_cc_test(NAME config_test SRCS config_test.cc DEPS llmint8::model_io LABELS model)
llmint8_cc_test(NAME shard_plan_test SRCS shard_plan_test.cc DEPS llmint8::model_io LABELS model)
llmint8_cc_test(NAME safetensors_test SRCS safetensors_test.cc DEPS llmint8::model_io LABELS model)
llmint8_cc_test(NAME synthetic_test SRCS synthetic_test.cc DEPS llmint8::model_io LABELS model)
llmint8_cc_test(NAME int8_checkpoint_test SRCS int8_checkpoint_test.cc DEPS llmint8::model_io
                LABELS model)

# libFuzzer target for the safetensors header parser (clang only; see model/fuzz/README.md).
if(LLMINT8_FUZZ)
  include(fuzz/fuzz.cmake)
endif()
