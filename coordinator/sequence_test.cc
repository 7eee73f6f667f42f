#include "coordinator/sequence.h"

#include <algorithm>
#include <initializer_list>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/output_constraint.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

constexpr int32_t kEos = 2;
constexpr int32_t kEosIds[] = {kEos};

// Token id -> text; the pieces of ids in `held` wait for the next token (as a decoder holds
// back part of a UTF-8 character) and Flush releases them.
class FakeText : public TokenTextStream {
 public:
  explicit FakeText(std::vector<int32_t> held = {}) : held_ids_(std::move(held)) {}
  std::string Add(int32_t id) override {
    const std::string piece = Text(id);
    if (std::find(held_ids_.begin(), held_ids_.end(), id) != held_ids_.end()) {
      held_ += piece;
      return "";
    }
    std::string out = held_ + piece;
    held_.clear();
    return out;
  }
  std::string Flush() override { return std::exchange(held_, ""); }
  size_t held_bytes() const override { return held_.size(); }
  // Bytes unlike the text, so a test sees which of the two a field carries.
  TextAndBytes TokenTextAndBytes(int32_t id) const override { return {Text(id), "raw" + Text(id)}; }
  std::vector<std::string> Pieces(std::span<const int32_t> ids) const override {
    std::vector<std::string> out;
    for (int32_t id : ids) out.push_back(Text(id));
    return out;
  }

 private:
  static std::string Text(int32_t id) {
    static const std::map<int32_t, std::string> kText = {{kEos, "</s>"}, {10, " a"},   {11, " b"},
                                                         {12, "\n"},     {13, "STOP"}, {14, " c"}};
    const auto it = kText.find(id);
    return it == kText.end() ? "?" : it->second;
  }
  std::vector<int32_t> held_ids_;
  std::string held_;
};

struct Outcome {
  std::vector<v1::GenerateResponse> responses;
  std::string text;
  int added = 0;  // tokens the sequence took before it finished
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
};

// Feeds `tokens` until the sequence finishes; collects its responses.
Outcome Feed(GenerationParams params, const std::vector<int32_t>& tokens,
             std::vector<int32_t> held = {}, std::span<const int32_t> eos_ids = kEosIds) {
  Sequence seq(1, {2, 5}, std::move(params), std::make_unique<FakeText>(std::move(held)));
  Outcome run;
  for (int32_t t : tokens) {
    v1::SeqResult r;
    r.set_token_id(t);
    ++run.added;
    if (seq.AddToken(r, eos_ids)) break;
  }
  std::optional<absl::Status> final = seq.WaitOutput(absl::ZeroDuration(), run.responses);
  EXPECT_TRUE(final.has_value() && final->ok());
  for (const v1::GenerateResponse& r : run.responses) {
    run.text += r.text();
    if (r.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) run.finish = r.finish_reason();
  }
  return run;
}

GenerationParams Params(int32_t max_new_tokens) {
  GenerationParams p;
  p.max_new_tokens = max_new_tokens;
  return p;
}

// A mask's ids, in order.
std::vector<int32_t> Ids(const v1::TokenMask& mask) {
  return std::vector<int32_t>(mask.token_ids().begin(), mask.token_ids().end());
}

// Sequence `id` (prompt {2, 5}, up to 8 tokens) guided by the regular expression `pattern`
// over `vocab`; null, and a test failure, when the pattern does not compile.
std::unique_ptr<Sequence> RegexGuided(uint64_t id, const std::string& pattern,
                                      std::shared_ptr<const TokenVocabulary> vocab) {
  auto re = CompiledRegex::Compile(pattern);
  if (!re.ok()) {
    ADD_FAILURE() << pattern << ": " << re.status();
    return nullptr;
  }
  GenerationParams p = Params(8);
  p.guided_regex = *re;
  auto seq =
      std::make_unique<Sequence>(id, std::vector<int32_t>{2, 5}, p, std::make_unique<FakeText>());
  seq->set_guide((*re)->NewConstraint(*re), std::move(vocab));
  return seq;
}

// A refused step's input goes again: the chunks since the last step that ran, and for a
// sequence that had not started, the prefix it skipped (which usage then no longer counts).
TEST(SequenceTest, UnsendTakesBackTheInputOfARefusedStep) {
  Sequence seq(1, {2, 5, 6, 7, 8, 9}, Params(4), std::make_unique<FakeText>());
  seq.SkipPrompt(2);
  EXPECT_EQ(seq.TakePrompt(2).size(), 2u);
  seq.Unsend();
  EXPECT_FALSE(seq.started());
  EXPECT_EQ(seq.prompt_remaining(), 6);
  seq.SkipPrompt(1);  // the next step copies a shorter prefix
  const std::span<const int32_t> first = seq.TakePrompt(2);
  EXPECT_EQ(std::vector<int32_t>(first.begin(), first.end()), (std::vector<int32_t>{5, 6}));
  seq.MarkStepRan();
  EXPECT_EQ(seq.TakePrompt(2).size(), 2u);
  seq.Unsend();
  EXPECT_EQ(seq.prompt_on_workers().size(), 3u);
  const std::span<const int32_t> again = seq.TakePrompt(8);
  EXPECT_EQ(std::vector<int32_t>(again.begin(), again.end()), (std::vector<int32_t>{7, 8, 9}));
  seq.MarkStepRan();
  v1::SeqResult r;
  r.set_token_id(10);
  for (int k = 0; k < 4; ++k) {
    if (seq.AddToken(r, kEosIds)) break;
  }
  std::vector<v1::GenerateResponse> out;
  seq.WaitOutput(absl::ZeroDuration(), out);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back().usage().cached_prompt_tokens(), 1) << "the prefix of the step that ran";
}

// The text held back until the end-of-sequence token completes a stop string: the sequence
// ends at the stop (STOP), as it would have at the length limit.
TEST(SequenceTest, AStopCompletedByTheTextTheEndReleasesFinishesAsStop) {
  GenerationParams p = Params(8);
  p.stop = {"STOP"};
  const Outcome run = Feed(p, {10, 13, kEos}, /*held=*/{13});
  EXPECT_EQ(run.added, 3);
  EXPECT_EQ(run.text, " a");
  EXPECT_EQ(run.finish, v1::FINISH_REASON_STOP);
}

TEST(SequenceTest, EosAndStopTokenIdsEndWithoutTheirTextAfterTheHeldBackText) {
  // " b" is held back by the decoder when it comes; the end releases it.
  const Outcome eos = Feed(Params(8), {10, 11, kEos, 14}, /*held=*/{11});
  EXPECT_EQ(eos.added, 3);
  EXPECT_EQ(eos.text, " a b");
  EXPECT_EQ(eos.finish, v1::FINISH_REASON_EOS);
  EXPECT_EQ(eos.responses.back().token_id(), kEos);

  GenerationParams p = Params(8);
  p.stop_token_ids = {12, 14};
  const Outcome stop = Feed(p, {10, 11, 14, 10}, /*held=*/{11});
  EXPECT_EQ(stop.added, 3);
  EXPECT_EQ(stop.text, " a b");  // not " c"
  EXPECT_EQ(stop.finish, v1::FINISH_REASON_STOP);
  EXPECT_EQ(stop.responses.back().token_id(), 14);
  EXPECT_EQ(stop.responses.back().usage().completion_tokens(), 3);
}

// A model's generation_config.json may list several end-of-sequence ids: each ends the
// sequence as EOS, unless ignore_eos.
TEST(SequenceTest, AnyOfSeveralEosIdsEndsTheSequence) {
  constexpr int32_t kTwoEos[] = {kEos, 12};
  const Outcome first = Feed(Params(8), {10, kEos, 11}, {}, kTwoEos);
  EXPECT_EQ(first.added, 2);
  EXPECT_EQ(first.finish, v1::FINISH_REASON_EOS);
  const Outcome second = Feed(Params(8), {10, 12, 11}, {}, kTwoEos);
  EXPECT_EQ(second.added, 2);
  EXPECT_EQ(second.text, " a") << "an eos id's text is not returned";
  EXPECT_EQ(second.finish, v1::FINISH_REASON_EOS);
  EXPECT_EQ(second.responses.back().token_id(), 12);
  GenerationParams p = Params(3);
  p.ignore_eos = true;
  const Outcome ignored = Feed(p, {12, kEos, 11}, {}, kTwoEos);
  EXPECT_EQ(ignored.added, 3);
  EXPECT_EQ(ignored.finish, v1::FINISH_REASON_LENGTH);
}

// A guided sequence's mask: the tokens the guide allows, the ids that end the sequence only
// where the text may end (an eos id with text too), the shorter list of the two forms; a
// whole choice that nothing continues ends the sequence (STOP).
TEST(SequenceTest, AGuidedSequenceMasksItsTokensAndEndsWhereTheGuideDoes) {
  // Ids: 0 "" (special), 1 "no", 2 "n", 3 "o", 4 "t", 5 "x"; 6 and 7 past the tokenizer.
  auto vocab = std::make_shared<const TokenVocabulary>(
      std::vector<std::string>{"", "no", "n", "o", "t", "x"});
  constexpr int32_t kEnders[] = {0, 3};  // eos ids; 3 has text ("o")
  GenerationParams p = Params(8);
  p.guided_choice = {"no", "not"};
  p.stop_token_ids = {5};
  Sequence seq(1, {2, 5}, p, std::make_unique<FakeText>());
  seq.set_guide(*OutputConstraint::Choice(p.guided_choice), vocab);
  v1::TokenMask mask;
  ASSERT_TRUE(seq.FillTokenMask(kEnders, /*vocab_size=*/8, &mask).ok());
  EXPECT_TRUE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{1, 2}))
      << "eos id 3 ('o') is not allowed before the end";
  v1::SeqResult r;
  r.set_token_id(1);  // "no": a choice, which "not" continues
  ASSERT_FALSE(seq.AddToken(r, kEnders));
  ASSERT_TRUE(seq.FillTokenMask(kEnders, 8, &mask).ok());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{0, 3, 4, 5})) << "the end may come: eos and stop ids";
  r.set_token_id(4);  // "t": "not", which nothing continues
  EXPECT_TRUE(seq.AddToken(r, kEnders));
  std::vector<v1::GenerateResponse> out;
  ASSERT_TRUE(seq.WaitOutput(absl::ZeroDuration(), out).has_value());
  EXPECT_EQ(out.back().finish_reason(), v1::FINISH_REASON_STOP);

  // Most ids allowed: the banned ones are sent, those past the tokenizer's vocabulary too.
  GenerationParams json = Params(8);
  json.guided_json_object = true;
  auto plain = std::make_shared<const TokenVocabulary>(
      std::vector<std::string>{"{", "a", "b", "c", "d", "e", "\""});
  Sequence object(2, {2}, json, std::make_unique<FakeText>());
  object.set_guide(OutputConstraint::JsonObject(), plain);
  ASSERT_TRUE(object.FillTokenMask(kEosIds, 8, &mask).ok());
  EXPECT_TRUE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{0}));
  for (int32_t t : {0, 6}) {  // {" : inside a key, where any of the tokens is text
    r.set_token_id(t);
    ASSERT_FALSE(object.AddToken(r, kEosIds));
  }
  ASSERT_TRUE(object.FillTokenMask(kEosIds, 8, &mask).ok());
  EXPECT_FALSE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{kEos, 7}))
      << "the eos id 'b' cannot end a key; id 7 has no token";
}

// A guide that allows most tokens is masked by the few it bans; where the text may end, the
// end ids leave that list (a special eos id and one with text alike), and the ids past the
// tokenizer join it. Where it may not, they are banned.
TEST(SequenceTest, AMaskOfMostTokensListsTheBannedOnesAndLetsTheEndIdsThroughWhereTheTextEnds) {
  // Ids: 0 "" (special), 1 "a", 2 "b", 3 "c", 4 "d", 5 "1"; 6 and 7 past the tokenizer.
  auto vocab = std::make_shared<const TokenVocabulary>(
      std::vector<std::string>{"", "a", "b", "c", "d", "1"});
  constexpr int32_t kEnders[] = {0, 3};  // eos ids; 3 has text ("c")
  const std::unique_ptr<Sequence> any = RegexGuided(1, "[a-d]*1?", vocab);
  ASSERT_NE(any, nullptr);
  Sequence& seq = *any;
  v1::TokenMask mask;
  ASSERT_TRUE(seq.FillTokenMask(kEnders, /*vocab_size=*/8, &mask).ok());
  EXPECT_FALSE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{6, 7}))
      << "every token may come; the empty text may end";
  v1::SeqResult r;
  r.set_token_id(5);  // "1": the text may end, nothing continues it
  EXPECT_TRUE(seq.AddToken(r, kEnders));

  // "[a-d]+": at the start the text may not end, so the end ids are banned beside 5, 6 and 7.
  const std::unique_ptr<Sequence> plus = RegexGuided(2, "[a-d]+", vocab);
  ASSERT_NE(plus, nullptr);
  Sequence& more = *plus;
  ASSERT_TRUE(more.FillTokenMask(kEnders, 8, &mask).ok());
  EXPECT_FALSE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{0, 3, 5, 6, 7}));
  // A model vocabulary smaller than the tokenizer's: ids past it are neither sent nor counted.
  ASSERT_TRUE(more.FillTokenMask(kEnders, 4, &mask).ok());
  EXPECT_FALSE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{0, 3}));

  // The allowed list: an end id past the tokenizer's vocabulary joins it where the text may
  // end and is dropped past the model's; ids past a smaller model vocabulary leave it.
  constexpr int32_t kFarEnders[] = {0, 6};
  const std::unique_ptr<Sequence> digits = RegexGuided(3, "1d?", vocab);
  ASSERT_NE(digits, nullptr);
  Sequence& few = *digits;
  ASSERT_TRUE(few.FillTokenMask(kFarEnders, 8, &mask).ok());
  EXPECT_TRUE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{5}));
  r.set_token_id(5);  // "1": may end, or take "d"
  ASSERT_FALSE(few.AddToken(r, kFarEnders));
  ASSERT_TRUE(few.FillTokenMask(kFarEnders, 8, &mask).ok());
  EXPECT_TRUE(mask.allow());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{0, 4, 6}));
  ASSERT_TRUE(few.FillTokenMask(kFarEnders, 5, &mask).ok());
  EXPECT_EQ(Ids(mask), (std::vector<int32_t>{0, 4}))
      << "ids 5 and up are past a 5-id model vocabulary";
}

// Before min_tokens nothing ends the sequence: an end-of-sequence token or stop id there (the
// workers never sample one) is an ordinary token, and no stop string ends in their text.
TEST(SequenceTest, NothingEndsBeforeMinTokens) {
  GenerationParams p = Params(8);
  p.min_tokens = 3;
  p.stop_token_ids = {14};
  p.stop = {"STOP"};
  const Outcome early = Feed(p, {14, 13, kEos, 10, 14});
  EXPECT_EQ(early.added, 5);  // the stop id at token 5 ends it, not those at 1 to 3
  EXPECT_EQ(early.text, " cSTOP</s> a");
  EXPECT_EQ(early.finish, v1::FINISH_REASON_STOP);

  const Outcome string_after = Feed(p, {10, 11, 10, 13, 10});
  EXPECT_EQ(string_after.added, 4);  // "STOP" in the 4th token's text
  EXPECT_EQ(string_after.text, " a b a");
  EXPECT_EQ(string_after.finish, v1::FINISH_REASON_STOP);

  // A stop string that starts in the 3rd token's text and ends in the 4th's ends it there.
  GenerationParams straddle = Params(8);
  straddle.min_tokens = 3;
  straddle.stop = {" b", "aSTO"};  // " b" is the 2nd token's text: too early
  const Outcome across = Feed(straddle, {10, 11, 10, 13, 10});
  EXPECT_EQ(across.added, 4);
  EXPECT_EQ(across.text, " a b ");
  EXPECT_EQ(across.finish, v1::FINISH_REASON_STOP);

  // min_tokens == max_new_tokens: the length ends it, with the held-back text.
  GenerationParams full = Params(3);
  full.min_tokens = 3;
  full.stop = {"STOP"};
  const Outcome length = Feed(full, {13, 10, 11, 10}, /*held=*/{11});
  EXPECT_EQ(length.added, 3);
  EXPECT_EQ(length.text, "STOP a b");
  EXPECT_EQ(length.finish, v1::FINISH_REASON_LENGTH);
}

// With logprobs a token carries its text and its raw bytes alone, and so does each candidate.
TEST(SequenceTest, LogprobsCarryEachTokensTextAndRawBytes) {
  GenerationParams p = Params(1);
  p.logprobs = true;
  p.top_logprobs = 1;
  Sequence seq(1, {2, 5}, p, std::make_unique<FakeText>());
  v1::SeqResult r;
  r.set_token_id(10);
  r.set_logprob(-0.5f);
  v1::TokenCandidate* top = r.add_top();
  top->set_token_id(11);
  top->set_logprob(-0.25f);
  seq.AddToken(r, kEosIds);
  std::vector<v1::GenerateResponse> responses;
  ASSERT_TRUE(seq.WaitOutput(absl::ZeroDuration(), responses).has_value());
  ASSERT_FALSE(responses.empty());
  const v1::GenerateResponse& first = responses.front();
  EXPECT_EQ(first.token_text(), " a");
  EXPECT_EQ(first.token_bytes(), "raw a");
  EXPECT_EQ(first.decoded_bytes(), 2u);
  ASSERT_EQ(first.top_logprobs_size(), 1);
  EXPECT_EQ(first.top_logprobs(0).text(), " b");
  EXPECT_EQ(first.top_logprobs(0).bytes(), "raw b");
}

TEST(SequenceTest, IgnoredEosIsAnOrdinaryToken) {
  GenerationParams p = Params(3);
  p.ignore_eos = true;
  const Outcome run = Feed(p, {kEos, 10, kEos});
  EXPECT_EQ(run.added, 3);
  EXPECT_EQ(run.text, "</s> a</s>");
  EXPECT_EQ(run.finish, v1::FINISH_REASON_LENGTH);
}

// A decode step that sends `token` with `drafts`, and rank 0's answer to one: the drafts it
// accepted (one per logprob) and the token it sampled after them.
v1::SeqStep DraftStep(int32_t token, std::initializer_list<int32_t> drafts) {
  v1::SeqStep step;
  step.add_token_ids(token);
  for (int32_t d : drafts) step.add_draft_token_ids(d);
  return step;
}
v1::SeqResult DraftResult(std::initializer_list<float> accepted_logprobs, int32_t token) {
  v1::SeqResult result;
  result.set_drafts_accepted(static_cast<int32_t>(accepted_logprobs.size()));
  for (float lp : accepted_logprobs) result.add_drafts()->set_logprob(lp);
  result.set_token_id(token);
  return result;
}

// A step's output with draft tokens: the accepted drafts stream (with their scores) before
// the sampled token; a stop id among them ends the sequence there, and the drafts cached past
// its tokens (the one after the stop, the one not accepted) are what its next step would
// drop. The counts are there once the stream ends (the request log reads them then).
TEST(SequenceTest, AStepsDraftsStreamBeforeItsTokenAndAStopEndsThem) {
  GenerationParams params = Params(8);
  params.logprobs = true;
  params.stop_token_ids = {13};
  Sequence seq(1, {2, 5}, params, std::make_unique<FakeText>());
  v1::SeqResult first;
  first.set_token_id(10);
  ASSERT_FALSE(seq.AddToken(first, kEosIds));
  v1::SeqStep sent = DraftStep(10, {11, 14, 11});
  v1::SeqResult result = DraftResult({-0.5f, -0.25f}, 12);
  result.set_logprob(-1.0f);
  Sequence::StepOutput out = seq.AddStepOutput(sent, result, kEosIds);
  EXPECT_FALSE(out.finished);
  EXPECT_EQ(out.drafts_kept, 2);
  EXPECT_EQ(seq.num_generated(), 4);  // 10, then 11 14 and 12
  EXPECT_EQ(seq.drop_positions(), 1);
  // Then a stop id, the first of two accepted drafts: the second and the third draft stay
  // cached past the end.
  out =
      seq.AddStepOutput(DraftStep(12, {13, 10, 11}), DraftResult({-0.125f, -0.125f}, 11), kEosIds);
  EXPECT_TRUE(out.finished);
  EXPECT_EQ(out.drafts_kept, 1);
  EXPECT_EQ(seq.num_generated(), 5);
  EXPECT_EQ(seq.drop_positions(), 3);
  EXPECT_EQ(seq.drafts_sent(), 6);
  EXPECT_EQ(seq.drafts_accepted(), 3);
  std::vector<v1::GenerateResponse> responses;
  ASSERT_TRUE(seq.WaitOutput(absl::ZeroDuration(), responses).has_value());
  std::vector<float> logprobs;
  for (const v1::GenerateResponse& r : responses) {
    if (r.has_token_id()) logprobs.push_back(r.logprob());
  }
  EXPECT_EQ(logprobs, (std::vector<float>{0.0f, -0.5f, -0.25f, -1.0f, -0.125f}));
}

}  // namespace
}  // namespace llmint8::coordinator
