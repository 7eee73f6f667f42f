// The test helper of json_schema_check.py: what coordinator/json_schema.h lets a sequence write.
//
//   llmint8_json_schema_sample sample SCHEMA_FILE COUNT SEED   # COUNT random whole outputs
//   llmint8_json_schema_sample check SCHEMA_FILE < candidates  # 1 or 0: each a whole output?
//
// Every text, in and out, is one line: a JSON string holding it (outputs may hold newlines).
// A sample is a random walk over the bytes the constraint allows next, which ends where the
// text may end with probability 1/4 a byte, and past 256 bytes closes what it can (below).
#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "coordinator/json_schema.h"
#include "coordinator/output_constraint.h"
#include "nlohmann/json.hpp"

namespace {

using llmint8::coordinator::CompiledRegex;
using llmint8::coordinator::OutputConstraint;
using llmint8::coordinator::TokenVocabulary;

constexpr size_t kSoftLength = 256;
constexpr size_t kHardLength = 1 << 16;

// One random whole output, or false when the walk found none within kHardLength bytes.
bool Sample(const std::shared_ptr<const CompiledRegex>& re, const TokenVocabulary& bytes,
            std::mt19937& rng, std::string& text) {
  std::unique_ptr<OutputConstraint> c = re->NewConstraint(re);
  text.clear();
  std::vector<int32_t> next;
  while (text.size() < kHardLength) {
    if (c->MustEnd()) return true;
    if (c->CanEnd() && (text.size() > kSoftLength || rng() % 4 == 0)) return true;
    if (!c->AllowedTokens(bytes, next).ok() || next.empty()) return false;
    int32_t b = next[rng() % next.size()];
    // Past kSoftLength: close what is open where the schema lets it, a string always, a
    // container half the time (inside a string its brackets are text, which a pattern may
    // take forever).
    if (text.size() > kSoftLength) {
      for (char closing : {'"', '}', ']'}) {
        if (std::binary_search(next.begin(), next.end(), static_cast<uint8_t>(closing)) &&
            (closing == '"' || rng() % 2 == 0)) {
          b = static_cast<uint8_t>(closing);
          break;
        }
      }
    }
    const std::string byte(1, static_cast<char>(b));
    if (!c->Advance(byte)) return false;
    text += byte;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (argc < 3 || (mode == "sample" && argc != 5) || (mode != "sample" && mode != "check")) {
    std::cerr << "usage: " << argv[0] << " sample SCHEMA_FILE COUNT SEED | check SCHEMA_FILE\n";
    return 2;
  }
  std::ifstream file(argv[2]);
  std::stringstream schema;
  schema << file.rdbuf();
  auto re = llmint8::coordinator::CompileJsonSchema(schema.str());
  if (!re.ok()) {
    std::cerr << argv[2] << ": " << re.status() << "\n";
    return 1;
  }
  using Json = nlohmann::json;
  if (mode == "check") {
    for (std::string line; std::getline(std::cin, line);) {
      const std::string text = Json::parse(line).get<std::string>();
      std::unique_ptr<OutputConstraint> c = (*re)->NewConstraint(*re);
      std::cout << (c->Advance(text) && c->CanEnd() ? 1 : 0) << "\n";
    }
    return 0;
  }
  std::vector<std::string> byte_tokens;
  for (int b = 0; b < 256; ++b) byte_tokens.emplace_back(1, static_cast<char>(b));
  const TokenVocabulary bytes(std::move(byte_tokens));
  std::mt19937 rng(static_cast<uint32_t>(std::stoul(argv[4])));
  for (int i = 0, n = std::stoi(argv[3]); i < n; ++i) {
    std::string text;
    if (!Sample(*re, bytes, rng, text)) {
      std::cerr << argv[2] << ": sample " << i << " did not end within " << kHardLength
                << " bytes\n";
      return 1;
    }
    try {
      std::cout << Json(text).dump(-1, ' ', false, Json::error_handler_t::strict) << "\n";
    } catch (const Json::type_error& e) {  // not UTF-8
      std::cerr << argv[2] << ": sample " << i << ": " << e.what() << "\n";
      return 1;
    }
  }
  return 0;
}
