# Evaluation: perplexity with strided windows through ShardModel (llmint8_eval).
llmint8_cc_library(NAME eval
  SRCS perplexity.cc
  DEPS llmint8::model llmint8::common absl::status absl::statusor absl::strings)
llmint8_cc_test(NAME perplexity_test SRCS perplexity_test.cc
                DEPS llmint8::eval llmint8::model llmint8::model_io llmint8::comm nlohmann_json::nlohmann_json
                LABELS model)
