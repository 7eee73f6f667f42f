# forward of one shard: llmint8_model (weights in the shard's precision, KV cache, Step).
llmint8_cc_library(NAME model
  SRCS forward_weights.cc kv_cache.cc shard_model.cc
  DEPS llmint8::model_io llmint8::kernels llmint8::comm llmint8::common absl::flat_hash_map
       absl::status absl::statusor absl::strings absl::base)
llmint8_cc_test(NAME kv_cache_test SRCS kv_cache_test.cc DEPS llmint8::model LABELS model)
llmint8_cc_test(NAME shard_model_runtime_test SRCS shard_model_runtime_test.cc
                DEPS llmint8::model LABELS model)
llmint8_cc_test(NAME int8_agreement_runtime_test SRCS int8_agreement_runtime_test.cc
                DEPS llmint8::model LABELS model)
