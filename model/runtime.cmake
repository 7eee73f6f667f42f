# forward of one shard: llmint8_model (weights in the shard's precision, KV cache, Step).
#   llmint8::model_core  weights, KV cache, batch validation: what every backend shares
#   llmint8::model       ShardModel (the CPU forward) + the device backend it dispatches to:
#                        llmint8::model_cuda (model/cuda) in CUDA builds, else a stub
llmint8_cc_library(NAME model_core
  SRCS forward_weights.cc kv_cache.cc shard_backend.cc
  DEPS llmint8::model_io llmint8::kernels llmint8::comm_core llmint8::common absl::flat_hash_map
       absl::status absl::statusor absl::strings absl::base)
if(LLMINT8_HAVE_CUDA)
  set(_model_backend_srcs)
  set(_model_backend_deps llmint8::model_cuda)  # defined in cuda/CMakeLists.txt
else()
  set(_model_backend_srcs cuda/shard_backend_cuda_unavailable.cc)
  set(_model_backend_deps)
endif()
llmint8_cc_library(NAME model
  SRCS shard_model.cc ${_model_backend_srcs}
  DEPS llmint8::model_core ${_model_backend_deps} llmint8::model_io llmint8::kernels
       llmint8::comm_core llmint8::common absl::status absl::statusor absl::strings)
llmint8_cc_test(NAME kv_cache_test SRCS kv_cache_test.cc DEPS llmint8::model LABELS model)
llmint8_cc_test(NAME forward_weights_test SRCS forward_weights_test.cc DEPS llmint8::model
                LABELS model)
llmint8_cc_test(NAME shard_model_runtime_test SRCS shard_model_runtime_test.cc
                DEPS llmint8::model LABELS model)
llmint8_cc_test(NAME int8_agreement_runtime_test SRCS int8_agreement_runtime_test.cc
                DEPS llmint8::model LABELS model)
