// The vocabulary scan of guided decoding (OutputConstraint::AllowedTokens), which the
// scheduler's thread runs before each guided token, with the bundled model's tokenizer (50,265
// tokens): JSON mode in each kind of place, a regular expression, a JSON Schema, and a choice
// list.
//
//   build/coordinator/llmint8_output_constraint_benchmark
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "coordinator/guided_regex.h"
#include "coordinator/json_schema.h"
#include "coordinator/output_constraint.h"
#include "coordinator/tokenizer.h"

namespace llmint8::coordinator {
namespace {

const TokenVocabulary& Vocabulary() {
  static const TokenVocabulary* vocab = [] {
    const char* src = std::getenv("LLMINT8_SOURCE_DIR");
    auto tok = Tokenizer::FromDirectory(
        std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) + "/models/opt-sotu-cpu");
    if (!tok.ok()) std::abort();
    return new TokenVocabulary(TokenVocabulary::FromTokenizer(**tok));
  }();
  return *vocab;
}

// The JSON object's text so far, per benchmark argument.
const char* const kJsonPrefixes[] = {
    "",                       // before the object
    "{\"na",                  // in a key
    "{\"name\": \"The Pres",  // in a string value
    "{\"name\": [1, 2",       // in a number, in an array
    "{\"a\": {\"b\": true}",  // after a value
};

// One scan: a vocabulary that keeps no JSON-mode scans (served ones keep them by state:
// TokenVocabulary::json_scans) and a fresh constraint each time (each keeps its last answer).
void BM_JsonAllowedTokens(benchmark::State& state) {
  TokenVocabulary unkept = Vocabulary();
  unkept.json_scans = nullptr;
  TokenSet allowed;
  for (auto _ : state) {
    std::unique_ptr<OutputConstraint> c = OutputConstraint::JsonObject();
    if (!c->Advance(kJsonPrefixes[state.range(0)])) std::abort();
    if (!c->Allowed(unkept, allowed).ok()) std::abort();
    benchmark::DoNotOptimize(allowed.ids.data());
  }
  const size_t size = unkept.bytes.size();
  state.counters["allowed"] =
      static_cast<double>(allowed.allow ? allowed.ids.size() : size - allowed.ids.size());
  state.counters["listed"] = static_cast<double>(allowed.ids.size());  // what the mask sends
  state.SetLabel(kJsonPrefixes[state.range(0)]);
}
BENCHMARK(BM_JsonAllowedTokens)->DenseRange(0, 4)->Unit(benchmark::kMicrosecond);

void BM_ChoiceAllowedTokens(benchmark::State& state) {
  const TokenVocabulary& vocab = Vocabulary();
  std::vector<std::string> choices;
  for (int i = 0; i < state.range(0); ++i) choices.push_back("choice number " + std::to_string(i));
  std::unique_ptr<OutputConstraint> c = *OutputConstraint::Choice(choices);
  std::vector<int32_t> ids;
  for (auto _ : state) {
    if (!c->AllowedTokens(vocab, ids).ok()) std::abort();
    benchmark::DoNotOptimize(ids.data());
  }
  state.counters["allowed"] = static_cast<double>(ids.size());
}
const char* const kRegexes[] = {
    // A date.
    "(January|February|March|April|May|June) ([1-9]|[12][0-9]|3[01]), (19|20)\\d{2}",
    // Long optional runs (seconds a token before the DFA).
    "(?:[ -~]?){200}",
    ".{0,100}",
};

// Scans from one state, from the start and after a few bytes: after the first (the DFA built
// as it goes) each is a copy of the ids kept for the state (kMaxGuidedRegexAllowedEntries).
void BM_RegexAllowedTokens(benchmark::State& state) {
  const TokenVocabulary& vocab = Vocabulary();
  auto re = *CompiledRegex::Compile(kRegexes[state.range(0)]);
  std::unique_ptr<OutputConstraint> c = re->NewConstraint(re);
  if (state.range(1) == 1 && !c->Advance("March 3")) std::abort();
  std::vector<int32_t> ids;
  for (auto _ : state) {
    if (!c->AllowedTokens(vocab, ids).ok()) std::abort();
    benchmark::DoNotOptimize(ids.data());
  }
  state.counters["allowed"] = static_cast<double>(ids.size());
  state.SetLabel(kRegexes[state.range(0)]);
}
BENCHMARK(BM_RegexAllowedTokens)
    ->Args({0, 0})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({2, 0})
    ->Args({2, 1})
    ->Unit(benchmark::kMicrosecond);

// One scan from a fresh DFA: what the first token of a request costs.
void BM_RegexFirstScan(benchmark::State& state) {
  const TokenVocabulary& vocab = Vocabulary();
  std::vector<int32_t> ids;
  for (auto _ : state) {
    auto re = *CompiledRegex::Compile(kRegexes[state.range(0)]);
    std::unique_ptr<OutputConstraint> c = re->NewConstraint(re);
    if (!c->AllowedTokens(vocab, ids).ok()) std::abort();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetLabel(kRegexes[state.range(0)]);
}
BENCHMARK(BM_RegexFirstScan)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

// The `r`-th member of `set` (of ids [0, size)), r taken modulo the members' count.
int32_t Member(const TokenSet& set, size_t size, uint64_t r) {
  if (set.allow) return set.ids[r % set.ids.size()];
  int64_t id = static_cast<int64_t>(r % (size - set.ids.size()));
  for (int32_t banned : set.ids) {  // increasing: each one at or before id moves it on
    if (banned > id) break;
    ++id;
  }
  return static_cast<int32_t>(id);
}

// A whole guided generation: 8 sequences of one request, 64 tokens each, a random allowed token
// at each step (within the request's work budget, or it aborts).
void Generate(const std::shared_ptr<const CompiledRegex>& re, const TokenVocabulary& vocab) {
  TokenSet allowed;
  std::vector<std::unique_ptr<OutputConstraint>> seqs;
  auto work = std::make_shared<RegexRequestWork>();
  for (int i = 0; i < 8; ++i) seqs.push_back(re->NewConstraint(re, work));
  uint64_t rng = 7;
  for (int token = 0; token < 64; ++token) {
    for (auto& c : seqs) {
      if (c->MustEnd()) continue;
      if (!c->Allowed(vocab, allowed).ok()) std::abort();
      rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
      const int32_t id = Member(allowed, vocab.bytes.size(), rng >> 33);
      if (!c->Advance(vocab.bytes[static_cast<size_t>(id)])) std::abort();
    }
  }
}

void BM_RegexGeneration(benchmark::State& state) {
  const TokenVocabulary& vocab = Vocabulary();
  for (auto _ : state) Generate(*CompiledRegex::Compile(kRegexes[state.range(0)]), vocab);
  state.SetLabel(kRegexes[state.range(0)]);
}
BENCHMARK(BM_RegexGeneration)->DenseRange(0, 2)->Unit(benchmark::kMillisecond);

// guided_json: a pydantic-style schema (an enum, bounded integers, short strings, an optional
// nested object, a list), and a value of any type.
const char* const kSchemas[] = {
    R"({"$defs": {"Address": {"type": "object", "properties": {
          "street": {"type": "string", "maxLength": 40},
          "zip": {"type": "integer", "minimum": 10000, "maximum": 99999}},
        "required": ["street", "zip"]}},
      "type": "object", "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 4}},
      "required": ["name", "age", "role"]})",
    "{}",
};

// The schema written out and compiled (each request does it once), with its NFA's size.
void BM_JsonSchemaCompile(benchmark::State& state) {
  int states = 0;
  for (auto _ : state) {
    auto re = *CompileJsonSchema(kSchemas[state.range(0)]);
    states = re->nfa_states();
  }
  state.counters["nfa_states"] = states;
}
BENCHMARK(BM_JsonSchemaCompile)->DenseRange(0, 1)->Unit(benchmark::kMillisecond);

void BM_JsonSchemaGeneration(benchmark::State& state) {
  const TokenVocabulary& vocab = Vocabulary();
  for (auto _ : state) Generate(*CompileJsonSchema(kSchemas[state.range(0)]), vocab);
}
BENCHMARK(BM_JsonSchemaGeneration)->DenseRange(0, 1)->Unit(benchmark::kMillisecond);

// The same generation from a schema kept across requests (guide_cache.h): each request after
// the first starts with the DFA and the kept masks of those before (the same 8 walks, so only
// the first iteration scans).
void BM_JsonSchemaKeptGeneration(benchmark::State& state) {
  const TokenVocabulary& vocab = Vocabulary();
  const std::shared_ptr<const CompiledRegex> re = *CompileJsonSchema(kSchemas[state.range(0)]);
  Generate(re, vocab);
  for (auto _ : state) Generate(re, vocab);
  state.counters["dfa_states"] = static_cast<double>(re->dfa_states());
}
BENCHMARK(BM_JsonSchemaKeptGeneration)->DenseRange(0, 1)->Unit(benchmark::kMillisecond);

// A pattern built to be costly, 16 sequences of one request: the scans until the request's work
// budget fails them (kMaxGuidedRegexRequestWork), the most scheduler time one request takes.
void BM_RegexBudget(benchmark::State& state) {
  const TokenVocabulary& vocab = Vocabulary();
  std::vector<int32_t> ids;
  int scans = 0;
  for (auto _ : state) {
    auto re = *CompiledRegex::Compile("(?:[ -~]*a[ -~]{9}|(?:(?:[ -~]?){250}){10})");
    std::vector<std::unique_ptr<OutputConstraint>> seqs;
    for (int i = 0; i < 16; ++i) seqs.push_back(re->NewConstraint(re));
    uint64_t rng = 7;
    bool failed = false;
    scans = 0;
    for (int token = 0; token < 256 && !failed; ++token) {
      for (auto& c : seqs) {
        ++scans;
        if (!c->AllowedTokens(vocab, ids).ok()) {
          failed = true;
          break;
        }
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        c->Advance(vocab.bytes[static_cast<size_t>(ids[(rng >> 33) % ids.size()])]);
      }
    }
    if (!failed) std::abort();
  }
  state.counters["scans"] = scans;
}
BENCHMARK(BM_RegexBudget)->Unit(benchmark::kMillisecond)->Iterations(1);

BENCHMARK(BM_ChoiceAllowedTokens)->Arg(2)->Arg(16)->Arg(256)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace llmint8::coordinator

BENCHMARK_MAIN();
