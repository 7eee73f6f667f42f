# tokenizer: GPT-2/OPT byte-level BPE (vocab.json + merges.txt or tokenizer.json).
# ICU (Debian libicu-dev) supplies the Unicode letter/number/whitespace classes of the
# pre-tokenization pattern.
find_package(ICU REQUIRED COMPONENTS uc)

llmint8_cc_library(NAME tokenizer
  SRCS added_tokens.cc tokenizer.cc utf8.cc
  DEPS llmint8::common llmint8::file absl::flat_hash_map absl::flat_hash_set absl::span absl::status
       absl::statusor absl::strings absl::synchronization nlohmann_json::nlohmann_json ICU::uc)

# Fixtures: tests/fixtures/tokenizer/ (cases.json from make_cases.py, the GPT-2 vocabulary).
llmint8_cc_test(NAME tokenizer_test SRCS tokenizer_test.cc DEPS llmint8::tokenizer
                LABELS tokenizer)
if(TARGET llmint8_tokenizer_test)
  target_compile_definitions(llmint8_tokenizer_test PRIVATE
                             LLMINT8_DEFAULT_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endif()
