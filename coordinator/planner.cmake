# Memory planner: TP degree and bytes per GPU for an OPT model in fp16 / int8, the fp16-vs-int8
# compare table, the coordinator's group decision, and the flag-free core of `llmint8 plan`.
llmint8_cc_library(
  NAME planner
  SRCS planner.cc
  DEPS llmint8::model_io llmint8::common llmint8::byte_size absl::status absl::statusor absl::strings
       absl::str_format nlohmann_json::nlohmann_json)

# Pins the LLM.int8() paper's Table 2 (8 x 24 GB, 80 GB) and the byte accounting.
llmint8_cc_test(NAME planner_test SRCS planner_test.cc DEPS llmint8::planner LABELS planner)
