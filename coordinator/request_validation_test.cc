#include "coordinator/request_validation.h"

#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

ModelLimits Limits(bool tokenizer = true) {
  ModelLimits l;
  l.vocab_size = 1000;
  l.max_context = 128;
  l.has_tokenizer = tokenizer;
  return l;
}

v1::GenerateRequest Ids(std::vector<int32_t> ids, int max_new_tokens) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.set_max_new_tokens(max_new_tokens);
  return r;
}

absl::StatusCode Code(const v1::GenerateRequest& r, const ModelLimits& limits = Limits()) {
  absl::StatusOr<GenerationParams> p = ValidateGenerationParams(r, limits);
  if (!p.ok()) return p.status().code();
  std::vector<int32_t> prompt(r.token_ids().ids().begin(), r.token_ids().ids().end());
  return ValidatePromptTokens(prompt, *p, limits).code();
}

TEST(RequestValidationTest, DefaultsAreGreedyWithTopPOne) {
  absl::StatusOr<GenerationParams> p = ValidateGenerationParams(Ids({2, 5}, 4), Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->max_new_tokens, 4);
  EXPECT_EQ(p->temperature, 0.0f);
  EXPECT_EQ(p->top_k, 0);
  EXPECT_EQ(p->top_p, 1.0f);
  EXPECT_EQ(p->repetition_penalty, 1.0f);
}

TEST(RequestValidationTest, TruncatePromptTokensIsAtLeastOneWhenSet) {
  v1::GenerateRequest r = Ids({2, 5}, 4);
  absl::StatusOr<GenerationParams> p = ValidateGenerationParams(r, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->truncate_prompt_tokens, 0) << "unset: the whole prompt";
  r.set_truncate_prompt_tokens(5);
  p = ValidateGenerationParams(r, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->truncate_prompt_tokens, 5);
  for (int32_t bad : {0, -1}) {
    r.set_truncate_prompt_tokens(bad);
    p = ValidateGenerationParams(r, Limits());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// A priority needs a server that schedules by it; any value is taken there.
TEST(RequestValidationTest, APriorityNeedsPriorityScheduling) {
  v1::GenerateRequest r = Ids({2, 5}, 4);
  r.set_priority(-7);
  absl::StatusOr<GenerationParams> p = ValidateGenerationParams(r, Limits());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  EXPECT_THAT(p.status().message(), ::testing::HasSubstr("--scheduling=priority"));
  ModelLimits by_priority = Limits();
  by_priority.priority_scheduling = true;
  p = ValidateGenerationParams(r, by_priority);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->priority, -7);
  r.set_priority(0);
  p = ValidateGenerationParams(r, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->priority, 0);
}

TEST(RequestValidationTest, AGuideIsCheckedAndNeedsTheTokenizer) {
  v1::GenerateRequest r = Ids({2, 5}, 4);
  r.mutable_guide()->mutable_choice()->add_choices("yes");
  r.mutable_guide()->mutable_choice()->add_choices("no");
  absl::StatusOr<GenerationParams> p = ValidateGenerationParams(r, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->guided_choice, (std::vector<std::string>{"yes", "no"}));
  EXPECT_FALSE(p->guided_json_object);
  EXPECT_EQ(Code(r, Limits(/*tokenizer=*/false)), absl::StatusCode::kFailedPrecondition);
  r.set_min_tokens(1);
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument) << "the guide decides the end";
  r.set_min_tokens(0);
  r.mutable_guide()->mutable_choice()->add_choices("");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument) << "an empty choice";
  r.mutable_guide()->set_json_object(true);
  p = ValidateGenerationParams(r, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->guided_json_object);
  EXPECT_TRUE(p->guided_choice.empty()) << "one guide: the oneof's last";
  EXPECT_FALSE(ValidateGenerationParams(Ids({2}, 4), Limits())->guided());
  r.mutable_guide()->set_regex("[0-9]{3}");
  p = ValidateGenerationParams(r, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE(p->guided_regex, nullptr);
  r.mutable_guide()->set_regex("(a)\\1");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument) << "a backreference";
  r.mutable_guide()->set_json_schema(R"({"type": "integer", "minimum": 3})");
  p = ValidateGenerationParams(r, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_NE(p->guided_regex, nullptr) << "a schema is followed as the pattern written from it";
  r.mutable_guide()->set_json_schema(R"({"type": "object", "minProperties": 2})");
  p = ValidateGenerationParams(r, Limits());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(),
              ::testing::HasSubstr("json_schema: #: the keyword \"minProperties\""));
}

TEST(RequestValidationTest, EachBadFieldGetsItsCode) {
  using C = absl::StatusCode;
  EXPECT_EQ(Code(Ids({}, 4)), C::kInvalidArgument);
  EXPECT_EQ(Code(Ids({2}, 0)), C::kInvalidArgument);
  EXPECT_EQ(Code(Ids({2}, -1)), C::kInvalidArgument);
  EXPECT_EQ(Code(Ids({2}, 128)), C::kOutOfRange);
  EXPECT_EQ(Code(Ids(std::vector<int32_t>(128, 3), 1)), C::kOutOfRange);
  EXPECT_EQ(Code(Ids(std::vector<int32_t>(100, 3), 29)), C::kOutOfRange);
  EXPECT_EQ(Code(Ids(std::vector<int32_t>(100, 3), 28)), C::kOk);
  EXPECT_EQ(Code(Ids({2, 1000}, 4)), C::kInvalidArgument);
  EXPECT_EQ(Code(Ids({-1}, 4)), C::kInvalidArgument);

  v1::GenerateRequest r = Ids({2}, 4);
  r.set_temperature(-1.0f);
  EXPECT_EQ(Code(r), C::kInvalidArgument);
  r.set_temperature(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(Code(r), C::kInvalidArgument);

  for (float top_p : {0.0f, -0.5f, 1.01f}) {
    v1::GenerateRequest q = Ids({2}, 4);
    q.set_top_p(top_p);
    EXPECT_EQ(Code(q), C::kInvalidArgument) << top_p;
  }
  for (float penalty : {0.0f, -1.2f, std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN()}) {
    v1::GenerateRequest q = Ids({2}, 4);
    q.set_repetition_penalty(penalty);
    EXPECT_EQ(Code(q), C::kInvalidArgument) << penalty;
  }
  v1::GenerateRequest penalised = Ids({2}, 4);
  penalised.set_repetition_penalty(1.3f);
  EXPECT_EQ(ValidateGenerationParams(penalised, Limits())->repetition_penalty, 1.3f);
  v1::GenerateRequest k = Ids({2}, 4);
  k.set_top_k(-2);
  EXPECT_EQ(Code(k), C::kInvalidArgument);

  for (float penalty : {2.01f, -2.5f, std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN()}) {
    v1::GenerateRequest f = Ids({2}, 4);
    f.set_frequency_penalty(penalty);
    EXPECT_EQ(Code(f), C::kInvalidArgument) << penalty;
    v1::GenerateRequest q = Ids({2}, 4);
    q.set_presence_penalty(penalty);
    EXPECT_EQ(Code(q), C::kInvalidArgument) << penalty;
  }
  v1::GenerateRequest counted = Ids({2}, 4);
  counted.set_frequency_penalty(-2.0f);
  counted.set_presence_penalty(2.0f);
  counted.set_top_logprobs(20);
  absl::StatusOr<GenerationParams> cp = ValidateGenerationParams(counted, Limits());
  ASSERT_TRUE(cp.ok()) << cp.status();
  EXPECT_EQ(cp->frequency_penalty, -2.0f);
  EXPECT_EQ(cp->presence_penalty, 2.0f);
  EXPECT_EQ(cp->top_logprobs, 20);
  // max_new_tokens 0 only scores a prompt: allowed with prompt_logprobs alone, and then the
  // prompt may fill the whole context.
  v1::GenerateRequest scoring = Ids(std::vector<int32_t>(128, 3), 0);
  EXPECT_EQ(Code(scoring), C::kInvalidArgument);
  scoring.set_prompt_logprobs(true);
  EXPECT_EQ(Code(scoring), C::kOk);
  EXPECT_EQ(Code(Ids(std::vector<int32_t>(129, 3), 0)), C::kInvalidArgument);
  v1::GenerateRequest echo = Ids({2, 5}, 0);
  echo.set_echo_prompt(true);  // returned, not scored: max_new_tokens 0 is allowed too
  EXPECT_EQ(Code(echo), C::kOk);
  v1::GenerateRequest too_long = Ids(std::vector<int32_t>(129, 3), 0);
  too_long.set_prompt_logprobs(true);
  EXPECT_EQ(Code(too_long), C::kOutOfRange);
  for (int32_t n : {-1, 21}) {
    v1::GenerateRequest t = Ids({2}, 4);
    t.set_top_logprobs(n);
    EXPECT_EQ(Code(t), C::kInvalidArgument) << n;
  }

  v1::GenerateRequest s = Ids({2}, 4);
  s.add_stop("");
  EXPECT_EQ(Code(s), C::kInvalidArgument);
  EXPECT_EQ(Code(s, Limits(/*tokenizer=*/false)), C::kFailedPrecondition);

  v1::GenerateRequest text;
  text.set_text("hi");
  text.set_max_new_tokens(4);
  EXPECT_EQ(Code(text, Limits(/*tokenizer=*/false)), C::kFailedPrecondition);
}

// min_p, logit_bias, stop_token_ids, min_tokens: ranges, ids in the vocabulary, the caps.
TEST(RequestValidationTest, SamplingExtensionsAreRangeChecked) {
  using C = absl::StatusCode;
  auto with = [](auto set) {
    v1::GenerateRequest r = Ids({2}, 4);
    set(r);
    return r;
  };
  for (float min_p : {-0.1f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
    EXPECT_EQ(Code(with([&](auto& r) { r.set_min_p(min_p); })), C::kInvalidArgument) << min_p;
  }
  EXPECT_EQ(Code(with([](auto& r) { r.set_min_p(1.0f); })), C::kOk);
  EXPECT_EQ(Code(with([](auto& r) { (*r.mutable_logit_bias())[1000] = 1; })), C::kInvalidArgument);
  EXPECT_EQ(Code(with([](auto& r) { (*r.mutable_logit_bias())[-1] = 1; })), C::kInvalidArgument);
  EXPECT_EQ(Code(with([](auto& r) { (*r.mutable_logit_bias())[5] = 100.5f; })),
            C::kInvalidArgument);
  EXPECT_EQ(Code(with([](auto& r) {
              (*r.mutable_logit_bias())[5] = -std::numeric_limits<float>::infinity();
            })),
            C::kInvalidArgument);
  EXPECT_EQ(Code(with([](auto& r) {
              for (int id = 0; id <= kMaxLogitBiasTokens; ++id) (*r.mutable_logit_bias())[id] = 1;
            })),
            C::kInvalidArgument);
  EXPECT_EQ(Code(with([](auto& r) { r.add_stop_token_ids(1000); })), C::kInvalidArgument);
  EXPECT_EQ(Code(with([](auto& r) {
              for (int i = 0; i <= kMaxStopTokenIds; ++i) r.add_stop_token_ids(i);
            })),
            C::kInvalidArgument);
  EXPECT_EQ(Code(with([](auto& r) { r.set_min_tokens(5); })), C::kInvalidArgument);  // > 4
  EXPECT_EQ(Code(with([](auto& r) { r.set_min_tokens(-1); })), C::kInvalidArgument);

  v1::GenerateRequest ok = Ids({2}, 4);
  ok.set_min_p(0.05f);
  (*ok.mutable_logit_bias())[9] = -100;
  (*ok.mutable_logit_bias())[3] = 2.5f;
  ok.add_stop_token_ids(7);
  ok.add_stop_token_ids(4);
  ok.set_min_tokens(4);
  absl::StatusOr<GenerationParams> p = ValidateGenerationParams(ok, Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->min_p, 0.05f);
  EXPECT_EQ(p->logit_bias,
            (std::vector<std::pair<int32_t, float>>{{3, 2.5f}, {9, -100.0f}}));  // by id
  EXPECT_EQ(p->stop_token_ids, (std::vector<int32_t>{4, 7}));                    // sorted
  EXPECT_EQ(p->min_tokens, 4);
}

// A text that more than max_context tokens of the tokenizer's longest could not hold is
// refused before it is encoded (encoding a 4 MiB text costs hundreds of MB).
TEST(RequestValidationTest, ATextTooLongForAnyEncodingIsRefusedBeforeEncoding) {
  ModelLimits limits = Limits();
  limits.max_token_bytes = 4;  // 128 tokens of at most 4 bytes: 512 bytes
  v1::GenerateRequest r;
  r.set_max_new_tokens(1);
  r.set_text(std::string(512, 'a'));
  EXPECT_TRUE(ValidatePromptInput(r, limits).ok());
  r.set_text(std::string(513, 'a'));
  const absl::Status refused = ValidatePromptInput(r, limits);
  EXPECT_EQ(refused.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(refused.message().find("513 bytes"), std::string::npos) << refused;
  limits.max_token_bytes = 0;  // unknown: left to the token count
  EXPECT_TRUE(ValidatePromptInput(r, limits).ok());
}

TEST(RequestValidationTest, MessagesSayWhatToChange) {
  absl::StatusOr<GenerationParams> p =
      ValidateGenerationParams(Ids(std::vector<int32_t>(100, 3), 50), Limits());
  ASSERT_TRUE(p.ok());
  absl::Status s = ValidatePromptTokens(std::vector<int32_t>(100, 3), *p, Limits());
  EXPECT_NE(s.message().find("max_new_tokens <= 28"), absl::string_view::npos) << s;
  // A prompt truncated to more than the context less max_new_tokens: the truncation to change
  // (the limits' context is 128).
  v1::GenerateRequest truncated = Ids(std::vector<int32_t>(200, 3), 16);
  truncated.set_truncate_prompt_tokens(128);
  p = ValidateGenerationParams(truncated, Limits());
  ASSERT_TRUE(p.ok());
  s = ValidatePromptTokens(std::vector<int32_t>(128, 3), *p, Limits());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("set truncate_prompt_tokens <= 112"), absl::string_view::npos) << s;
  s = ValidatePromptTokens(std::vector<int32_t>(120, 3), *p, Limits());
  EXPECT_NE(s.message().find("or truncate_prompt_tokens <= 112"), absl::string_view::npos) << s;
  // A limit past the context: the number to ask for, counted from the prompt's own length.
  p = ValidateGenerationParams(Ids({3, 4}, 128), Limits());
  ASSERT_TRUE(p.ok()) << p.status();
  s = ValidatePromptTokens({3, 4}, *p, Limits());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("including the prompt (2 tokens here); set max_new_tokens <= 126"),
            absl::string_view::npos)
      << s;
  // A prompt that fills the context as well: both limits at once.
  s = ValidatePromptTokens(std::vector<int32_t>(200, 3), *p, Limits());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("(200 tokens here); the prompt alone fills it: shorten it (or set "
                             "truncate_prompt_tokens) to k < 128 tokens and set max_new_tokens "
                             "<= 128 - k"),
            absl::string_view::npos)
      << s;
}

}  // namespace
}  // namespace llmint8::coordinator
