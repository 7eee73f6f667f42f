#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_features.h"

namespace llmint8::kernels {
namespace {

using ::testing::HasSubstr;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> RandomLogits(int n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

SamplingParams Params(float temperature, int32_t top_k, float top_p, uint64_t seed = 7) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

TEST(SamplingTest, ValidationNamesTheField) {
  struct Bad {
    SamplingParams p;
    const char* field;
  };
  SamplingParams base;
  auto with = [&](auto f) {
    SamplingParams p = base;
    f(p);
    return p;
  };
  const Bad bad[] = {
      {with([](auto& p) { p.temperature = -0.1f; }), "temperature"},
      {with([](auto& p) { p.temperature = std::nanf(""); }), "temperature"},
      {with([](auto& p) { p.temperature = std::numeric_limits<float>::infinity(); }),
       "temperature"},
      {with([](auto& p) { p.top_p = 0.0f; }), "top_p"},
      {with([](auto& p) { p.top_p = -0.5f; }), "top_p"},
      {with([](auto& p) { p.top_p = 1.0001f; }), "top_p"},
      {with([](auto& p) { p.top_p = std::nanf(""); }), "top_p"},
      {with([](auto& p) { p.top_k = -1; }), "top_k"},
      {with([](auto& p) { p.top_logprobs = -1; }), "top_logprobs"},
      {with([](auto& p) { p.top_logprobs = kMaxTopLogprobs + 1; }), "top_logprobs"},
      {with([](auto& p) { p.frequency_penalty = 2.01f; }), "frequency_penalty"},
      {with([](auto& p) { p.frequency_penalty = std::nanf(""); }), "frequency_penalty"},
      {with([](auto& p) { p.presence_penalty = -2.01f; }), "presence_penalty"},
      {with([](auto& p) { p.presence_penalty = std::numeric_limits<float>::infinity(); }),
       "presence_penalty"},
  };
  const std::vector<float> logits = {1, 2, 3};
  for (const Bad& b : bad) {
    const absl::Status s = ValidateSamplingParams(b.p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.field;
    EXPECT_THAT(s.message(), HasSubstr(b.field));
    EXPECT_EQ(SampleToken(logits, b.p, 0).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(ValidateSamplingParams(Params(0.0f, 0, 1.0f)).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(100.0f, 1 << 30, 1e-30f)).ok());
}

TEST(SamplingTest, BadLogitsAreInvalidArgument) {
  const SamplingParams p = Params(1.0f, 0, 1.0f);
  const std::vector<std::vector<float>> bad = {{},
                                               {1.0f, std::nanf("")},
                                               {std::numeric_limits<float>::infinity(), 0.0f},
                                               {kNegInf, kNegInf}};
  for (const auto& row : bad) {
    EXPECT_EQ(SampleToken(row, p, 0).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Argmax(row).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(SamplingTest, GreedyTiesGoToLowestId) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, kNegInf};
  EXPECT_EQ(*Argmax(logits), 1);
  for (uint64_t step = 0; step < 10; ++step) {
    EXPECT_EQ(SampleToken(logits, Params(0.0f, 0, 1.0f), step)->token, 1);
    EXPECT_EQ(SampleToken(logits, Params(1.0f, 1, 1.0f), step)->token, 1);   // top_k = 1
    EXPECT_EQ(SampleToken(logits, Params(1.0f, 0, 1e-7f), step)->token, 1);  // top_p tiny
  }
  EXPECT_EQ(*Argmax(std::vector<float>{kNegInf, kNegInf, -1e30f}), 2);
}

// Argmax (eight lanes at a time where the CPU has AVX2) is the first id of the largest value,
// as a plain scan finds it: rows of every length around the vector width, ties, signed zeros,
// -inf, the max in the tail; a NaN or +inf anywhere is an error naming its id.
TEST(SamplingTest, ArgmaxIsTheFirstLargestIdForEveryLength) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> pick(0, 5);
  for (size_t n = 1; n <= 41; ++n) {
    for (int trial = 0; trial < 30; ++trial) {
      std::vector<float> row(n);
      for (float& v : row) {
        static const float kValues[] = {-1.0f, 2.0f, 2.0f, -0.0f, 0.0f, kNegInf};
        v = kValues[pick(rng)];
      }
      size_t want = n;
      float best = kNegInf;
      for (size_t i = 0; i < n; ++i) {
        if (row[i] > best) best = row[i], want = i;
      }
      const absl::StatusOr<int32_t> got = Argmax(row);
      if (want == n) {
        EXPECT_FALSE(got.ok()) << "all -inf, n=" << n;
        continue;
      }
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, static_cast<int32_t>(want)) << "n=" << n << " trial " << trial;
      std::vector<float> with_nan = row;
      with_nan[trial % n] = std::nanf("");
      const absl::Status nan = Argmax(with_nan).status();
      EXPECT_NE(nan.message().find(absl::StrCat("id ", trial % n, " ")), std::string::npos) << nan;
    }
  }
  std::vector<float> vocab = RandomLogits(50275, 9);  // 3 past the last full vector
  vocab[50274] = 100.0f;
  EXPECT_EQ(*Argmax(vocab), 50274);
  vocab[12345] = std::numeric_limits<float>::infinity();
  EXPECT_NE(Argmax(vocab).status().message().find("id 12345 "), std::string::npos);
}

// The AVX2 scan returns with clean upper halves of the vector registers (cpu_features.h): the
// sampler's exp calls that follow it pay no AVX-SSE transition penalty.
TEST(SamplingTest, ArgmaxLeavesTheUpperHalvesOfTheVectorRegistersClean) {
  if (!VectorUpperHalvesInUse().has_value())
    GTEST_SKIP() << "the vector state is not readable here (no XGETBV(1), or ASan)";
  ASSERT_TRUE(Argmax(RandomLogits(50272, 10)).ok());
  EXPECT_EQ(VectorUpperHalvesInUse(), false);
}

// top_k = 1, a tiny top_p and a tiny temperature are all greedy, for any seed and step.
TEST(SamplingTest, DegenerateFiltersEqualGreedy) {
  for (uint32_t trial = 0; trial < 20; ++trial) {
    const std::vector<float> logits = RandomLogits(1000, trial);
    const int32_t greedy = *Argmax(logits);
    for (uint64_t step = 0; step < 20; ++step) {
      const uint64_t seed = trial * 1000 + step;
      EXPECT_EQ(SampleToken(logits, Params(0.7f, 1, 1.0f, seed), step)->token, greedy);
      EXPECT_EQ(SampleToken(logits, Params(1.3f, 0, 1e-6f, seed), step)->token, greedy);
      EXPECT_EQ(SampleToken(logits, Params(1.0f, 50, 1e-6f, seed), step)->token, greedy);
      EXPECT_EQ(SampleToken(logits, Params(1e-6f, 0, 1.0f, seed), step)->token, greedy);
      EXPECT_EQ(SampleToken(logits, Params(1e-45f, 0, 1.0f, seed), step)->token, greedy);
    }
  }
}

TEST(SamplingTest, MaskedIdsAreNeverChosen) {
  std::vector<float> logits(64, 0.0f);
  for (size_t i = 0; i < logits.size(); i += 2) logits[i] = kNegInf;
  for (uint64_t step = 0; step < 2000; ++step) {
    for (const SamplingParams& p : {Params(1.0f, 0, 1.0f), Params(5.0f, 10, 0.9f)}) {
      const int32_t t = SampleToken(logits, p, step)->token;
      EXPECT_EQ(t % 2, 1) << "step " << step;
    }
  }
}

TEST(SamplingTest, Uniform01IsInRangeAndUnbiased) {
  constexpr int kN = 200000;
  double sum = 0;
  for (int i = 0; i < kN; ++i) {
    const double u = Uniform01(42, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  // Mean of kN uniforms: sd = sqrt(1/12/kN); 5 sd.
  EXPECT_NEAR(sum / kN, 0.5, 5.0 * std::sqrt(1.0 / 12.0 / kN));
  EXPECT_EQ(Uniform01(1, 5), Uniform01(1, 5));
  EXPECT_NE(Uniform01(1, 5), Uniform01(2, 5));
  EXPECT_NE(Uniform01(1, 5), Uniform01(1, 6));
  EXPECT_NE(Uniform01(0, 0), Uniform01(0, 1));
}

// Expected distribution after temperature, top-k and top-p, computed in double from the spec.
std::vector<double> ExpectedProbs(const std::vector<double>& p, double temperature, int top_k,
                                  double top_p) {
  const size_t n = p.size();
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  std::vector<double> w(n, 0.0);
  const size_t k = top_k > 0 ? std::min<size_t>(top_k, n) : n;
  double total = 0;
  for (size_t i = 0; i < k; ++i) total += w[order[i]] = std::pow(p[order[i]], 1.0 / temperature);
  double acc = 0;
  size_t keep = 0;
  while (keep < k && acc < top_p * total) acc += w[order[keep++]];
  for (size_t i = keep; i < n; ++i) w[order[i]] = 0.0;
  double mass = 0;
  for (double x : w) mass += x;
  for (double& x : w) x /= mass;
  return w;
}

// Empirical frequencies over many seeded draws: each count within 5 binomial standard
// deviations of N q (the draws are a deterministic function of the seeds, so this either always
// passes or always fails; a correct sampler fails with probability < 1e-5 per seed choice).
TEST(SamplingTest, EmpiricalFrequenciesMatchTheFilteredDistribution) {
  const std::vector<double> p = {0.4, 0.3, 0.15, 0.1, 0.05};
  std::vector<float> logits;
  for (double x : p) logits.push_back(static_cast<float>(std::log(x) + 3.0));  // any offset
  struct Case {
    float temperature;
    int top_k;
    float top_p;
  };
  const Case cases[] = {{1.0f, 0, 1.0f}, {1.0f, 2, 1.0f}, {1.0f, 0, 0.8f},
                        {2.0f, 0, 1.0f}, {0.5f, 4, 0.9f}, {1.0f, 3, 0.5f}};
  constexpr int kN = 20000;
  for (const Case& c : cases) {
    const std::vector<double> q = ExpectedProbs(p, c.temperature, c.top_k, c.top_p);
    std::vector<int> counts(p.size(), 0);
    for (uint64_t step = 0; step < kN; ++step) {
      // A different seed per sequence and a step counter: both must be random.
      const uint64_t seed = step % 97;
      ++counts[SampleToken(logits, Params(c.temperature, c.top_k, c.top_p, seed), step)->token];
    }
    for (size_t i = 0; i < p.size(); ++i) {
      const double mean = kN * q[i];
      const double sd = std::sqrt(kN * q[i] * (1.0 - q[i]));
      if (q[i] == 0.0) {
        EXPECT_EQ(counts[i], 0) << "id " << i << " must be filtered out (T " << c.temperature
                                << ", k " << c.top_k << ", p " << c.top_p << ")";
      } else {
        EXPECT_NEAR(counts[i], mean, 5.0 * sd + 1.0)
            << "id " << i << " (T " << c.temperature << ", k " << c.top_k << ", p " << c.top_p
            << ")";
      }
    }
  }
}

// A nucleus far larger than the first sorted prefix: the kept set is exactly the spec's.
TEST(SamplingTest, LargeNucleusIsExact) {
  constexpr int kVocab = 5000;
  std::vector<float> logits(kVocab);
  std::vector<double> p(kVocab);
  for (int i = 0; i < kVocab; ++i) logits[(i * 7919) % kVocab] = -2e-4f * i;  // shuffled ranks
  double total = 0;
  for (int i = 0; i < kVocab; ++i) total += p[i] = std::exp(static_cast<double>(logits[i]));
  for (double& x : p) x /= total;
  const std::vector<double> q = ExpectedProbs(p, 1.0, 0, 0.5);
  int kept = 0;
  for (double x : q) kept += x > 0;
  ASSERT_GT(kept, 1000);  // several growths of the sorted prefix
  // The less likely half of the nucleus (by rank) must get its share of the draws.
  std::vector<double> sorted_q;
  for (double x : q) {
    if (x > 0) sorted_q.push_back(x);
  }
  std::sort(sorted_q.begin(), sorted_q.end(), std::greater<double>());
  const double tail_cut = sorted_q[kept / 2];
  double tail_mass = 0;
  for (size_t i = kept / 2; i < sorted_q.size(); ++i) tail_mass += sorted_q[i];
  constexpr int kDraws = 5000;
  int tail = 0;
  for (uint64_t step = 0; step < kDraws; ++step) {
    const int32_t t = SampleToken(logits, Params(1.0f, 0, 0.5f, 3), step)->token;
    ASSERT_GT(q[t], 0.0) << "id " << t << " is outside the nucleus of " << kept;
    tail += q[t] <= tail_cut;
  }
  EXPECT_NEAR(tail, kDraws * tail_mass, 5.0 * std::sqrt(kDraws * tail_mass * (1 - tail_mass)) + 1);
}

// top_k keeps every id tied with the k-th largest logit, as Hugging Face and vLLM do: with
// logits {1, 2, 2, 2, 0} top_k 2 keeps ids 1, 2 and 3, each drawn a third of the time.
TEST(SamplingTest, TopKKeepsEveryIdTiedWithTheKth) {
  const std::vector<float> logits = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f};
  std::vector<int> counts(5, 0);
  constexpr int kDraws = 3000;
  for (uint64_t step = 0; step < kDraws; ++step) {
    ++counts[SampleToken(logits, Params(1.0f, 2, 1.0f), step)->token];
  }
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[4], 0);
  for (int id = 1; id <= 3; ++id) {
    EXPECT_NEAR(counts[id], kDraws / 3.0, 5.0 * std::sqrt(kDraws * (1.0 / 3) * (2.0 / 3)))
        << "id " << id;
  }
}

// Same (seed, step, logits) -> same token, whatever the batch around it.
TEST(SamplingTest, SeededDrawsDoNotDependOnBatchComposition) {
  constexpr int kVocab = 300;
  std::vector<std::vector<float>> rows;
  std::vector<SamplingParams> params;
  for (int r = 0; r < 4; ++r) {
    rows.push_back(RandomLogits(kVocab, 100 + r));
    params.push_back(Params(0.8f + 0.1f * r, r * 20, 0.95f, /*seed=*/1000 + r));
  }
  const std::vector<uint64_t> steps = {3, 3, 17, 0};
  auto run = [&](const std::vector<int>& which) {
    std::vector<float> logits;
    std::vector<SamplingParams> ps;
    std::vector<uint64_t> ss;
    for (int r : which) {
      logits.insert(logits.end(), rows[r].begin(), rows[r].end());
      ps.push_back(params[r]);
      ss.push_back(steps[r]);
    }
    auto out = SampleBatch(logits, which.size(), kVocab, ps, ss);
    EXPECT_TRUE(out.ok()) << out.status();
    std::vector<int32_t> tokens;
    for (const auto& t : *out) tokens.push_back(t.token);
    return tokens;
  };
  const std::vector<int32_t> all = run({0, 1, 2, 3});
  const std::vector<int32_t> some = run({3, 1});
  EXPECT_EQ(some[0], all[3]);
  EXPECT_EQ(some[1], all[1]);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(run({r})[0], all[r]);
    EXPECT_EQ(SampleToken(rows[r], params[r], steps[r])->token, all[r]);
  }
  // Different seeds do give different streams.
  int differ = 0;
  for (uint64_t step = 0; step < 50; ++step) {
    differ += SampleToken(rows[0], Params(1.0f, 0, 1.0f, 1), step)->token !=
              SampleToken(rows[0], Params(1.0f, 0, 1.0f, 2), step)->token;
  }
  EXPECT_GT(differ, 25);
}

// Greedy, with the chosen token's logprob and `top` candidates.
SamplingParams GreedyWithLogprobs(int32_t top) {
  SamplingParams p = Params(0.0f, 0, 1.0f);
  p.return_logprob = true;
  p.top_logprobs = top;
  return p;
}

TEST(SamplingTest, LogprobsAreLogSoftmaxOfRawLogits) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, kNegInf, -4.0f};
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v));
  const double lse = std::log(sum);
  auto out = SampleToken(logits, GreedyWithLogprobs(4), 0);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->token, 1);
  ASSERT_TRUE(out->logprob.has_value());
  EXPECT_NEAR(*out->logprob, 3.0 - lse, 1e-6);
  ASSERT_EQ(out->top.size(), 4u);
  const int32_t ids[] = {1, 2, 3, 0};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(out->top[i].token, ids[i]);
    EXPECT_NEAR(out->top[i].logprob, logits[ids[i]] - lse, 1e-6);
  }
  // Logprobs do not depend on temperature or filters: they describe the model.
  SamplingParams hot = Params(3.0f, 2, 0.5f);
  hot.return_logprob = true;
  for (uint64_t step = 0; step < 20; ++step) {
    auto s = SampleToken(logits, hot, step);
    ASSERT_TRUE(s.ok());
    EXPECT_NEAR(*s->logprob, logits[s->token] - lse, 1e-6);
  }
  // Fewer ids than requested alternatives; no logprobs unless asked.
  SamplingParams many = Params(0.0f, 0, 1.0f);
  many.top_logprobs = kMaxTopLogprobs;
  auto few = SampleToken(std::vector<float>{0.0f, 1.0f}, many, 0);
  ASSERT_EQ(few->top.size(), 2u);
  EXPECT_EQ(few->top[0].token, 1);
  EXPECT_FALSE(few->logprob.has_value());
  EXPECT_TRUE(SampleToken(logits, Params(1.0f, 0, 1.0f), 0)->top.empty());
  // Huge logits keep their precision: two tied at 3e38 are each log(1/2), not 0.
  auto huge = SampleToken(std::vector<float>{3e38f, -3e38f, 3e38f}, GreedyWithLogprobs(2), 0);
  ASSERT_TRUE(huge.ok());
  EXPECT_NEAR(*huge->logprob, std::log(0.5), 1e-6);
}

// The candidates are the n first ids in (logit descending, id ascending) order, ties too: a
// vocabulary of few distinct logits against a full sort.
TEST(SamplingTest, TopLogprobsAreTheFirstIdsOfAFullSort) {
  std::vector<float> logits(5003);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 7919) % 13);
  logits[4000] = kNegInf;
  std::vector<int32_t> sorted(logits.size());
  for (size_t i = 0; i < sorted.size(); ++i) sorted[i] = static_cast<int32_t>(i);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int32_t n : {1, 7, kMaxTopLogprobs}) {
    auto scored = ScoreToken(logits, 4000, n);
    ASSERT_TRUE(scored.ok()) << scored.status();
    ASSERT_EQ(scored->top.size(), static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) EXPECT_EQ(scored->top[i].token, sorted[i]) << "n " << n;
  }
}

// min_p keeps the ids whose probability (after temperature) is at least min_p times the
// likeliest's, and draws from them renormalised: the kept set exactly, the frequencies within
// 6 standard deviations of p / sum(kept p) over 4000 draws.
TEST(SamplingTest, MinPKeepsTheIdsAtLeastMinPTimesTheLikeliest) {
  const std::vector<double> p = {0.5, 0.25, 0.15, 0.07, 0.03};
  std::vector<float> logits;
  for (double v : p) logits.push_back(static_cast<float>(std::log(v)));
  struct Case {
    float temperature, min_p;
    size_t kept;  // the first ids: (p / 0.5)^(1/T) >= min_p
  };
  // T 1: relative 1, .5, .3, .14, .06; T 2: their square roots 1, .71, .55, .37, .24.
  for (const Case& c :
       {Case{1.0f, 0.2f, 3}, Case{2.0f, 0.3f, 4}, Case{1.0f, 1.0f, 1}, Case{1.0f, 0.0f, 5}}) {
    SamplingParams sp = Params(c.temperature, 0, 1.0f);
    sp.min_p = c.min_p;
    std::vector<double> w(p.size()), count(p.size(), 0);
    double total = 0;
    for (size_t i = 0; i < c.kept; ++i) total += w[i] = std::pow(p[i], 1.0 / c.temperature);
    constexpr int kDraws = 4000;
    for (uint64_t step = 0; step < kDraws; ++step) {
      auto out = SampleToken(logits, sp, step);
      ASSERT_TRUE(out.ok()) << out.status();
      ASSERT_LT(static_cast<size_t>(out->token), c.kept) << "min_p " << c.min_p;
      ++count[out->token];
    }
    for (size_t i = 0; i < c.kept; ++i) {
      const double q = w[i] / total, sd = std::sqrt(q * (1 - q) / kDraws);
      EXPECT_NEAR(count[i] / kDraws, q, 6 * sd + 1e-12) << "min_p " << c.min_p << " id " << i;
    }
  }
  SamplingParams bad = Params(1.0f, 0, 1.0f);
  bad.min_p = 1.5f;
  EXPECT_EQ(SampleToken(logits, bad, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

// logit_bias moves the choice (greedy and sampled; -inf bans) but not the logprobs, which
// stay the model's; a bad id or value is InvalidArgument.
TEST(SamplingTest, LogitBiasMovesTheChoiceNotTheLogprobs) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f};
  SamplingParams greedy = GreedyWithLogprobs(3);
  auto plain = SampleToken(logits, greedy, 0);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->token, 1);
  greedy.logit_bias = {{0, 5.0f}};
  auto up = SampleToken(logits, greedy, 0);
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(up->token, 0);
  const double lse = std::log(std::exp(1.0) + std::exp(3.0) + std::exp(2.0));
  EXPECT_NEAR(*up->logprob, 1.0 - lse, 1e-6);  // the model's, not the biased one's
  EXPECT_EQ(up->top, plain->top);              // the candidates too
  greedy.logit_bias = {{1, -std::numeric_limits<float>::infinity()}};
  EXPECT_EQ(SampleToken(logits, greedy, 0)->token, 2);

  SamplingParams hot = Params(5.0f, 0, 1.0f);
  hot.logit_bias = {{1, -std::numeric_limits<float>::infinity()}, {2, -100.0f}};
  for (uint64_t step = 0; step < 200; ++step) {
    auto s = SampleToken(logits, hot, step);
    ASSERT_TRUE(s.ok());
    EXPECT_NE(s->token, 1) << "a banned id was drawn";
  }
  for (TokenBias b : {TokenBias{3, 1.0f}, TokenBias{-1, 1.0f},
                      TokenBias{0, std::numeric_limits<float>::quiet_NaN()},
                      TokenBias{0, std::numeric_limits<float>::infinity()}}) {
    greedy.logit_bias = {b};
    EXPECT_EQ(SampleToken(logits, greedy, 0).status().code(), absl::StatusCode::kInvalidArgument)
        << b.token << " " << b.bias;
  }
}

// A token mask (guided decoding) lets only its ids through (allow) or bans them, before the
// bias, and the logprobs are of the masked row; an id outside is InvalidArgument, and a mask
// that leaves nothing is the all -inf row's error.
TEST(SamplingTest, ATokenMaskKeepsTheChoiceAndTheCandidatesWithinIt) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.5f};
  const double lse = std::log(std::exp(1.0) + std::exp(0.5));  // of the allowed ids
  const std::vector<int32_t> only = {0, 3};
  SamplingParams greedy = GreedyWithLogprobs(2);
  greedy.mask = TokenMask{.allow = true, .ids = only};
  auto allowed = SampleToken(logits, greedy, 0);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(allowed->token, 0);
  EXPECT_NEAR(*allowed->logprob, 1.0 - lse, 1e-6);
  EXPECT_EQ(allowed->top[0].token, 0) << "the candidates are the allowed ids";
  EXPECT_EQ(allowed->top[1].token, 3);
  greedy.logit_bias = {{3, 1.0f}};
  EXPECT_EQ(SampleToken(logits, greedy, 0)->token, 3) << "the bias moves within the mask";
  greedy.logit_bias = {{2, 50.0f}};
  EXPECT_EQ(SampleToken(logits, greedy, 0)->token, 0) << "no bias brings a masked id back";
  greedy.logit_bias.clear();
  const std::vector<int32_t> banned = {1, 2};
  greedy.mask = TokenMask{.allow = false, .ids = banned};
  EXPECT_EQ(SampleToken(logits, greedy, 0)->token, 0);

  SamplingParams hot = Params(5.0f, 0, 1.0f);
  hot.mask = TokenMask{.allow = true, .ids = only};
  for (uint64_t step = 0; step < 200; ++step) {
    auto s = SampleToken(logits, hot, step);
    ASSERT_TRUE(s.ok());
    EXPECT_TRUE(s->token == 0 || s->token == 3) << s->token;
  }
  const std::vector<int32_t> outside = {4};
  greedy.mask = TokenMask{.allow = false, .ids = outside};
  auto bad = SampleToken(logits, greedy, 0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("token mask id 4"));
  greedy.mask = TokenMask{.allow = true, .ids = {}};
  EXPECT_EQ(SampleToken(logits, greedy, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SamplingTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOnce) {
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, kNegInf};
  // Ids 0, 1 and 4 seen (0 twice: penalised once), 2 and 3 not.
  ASSERT_TRUE(ApplyRepetitionPenalty(logits, std::vector<int32_t>{0, 1, 0, 4}, 2.0f).ok());
  EXPECT_EQ(logits, (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f, kNegInf}));
  // A penalty below 1 favours the seen ids the same way round.
  std::vector<float> favour = {2.0f, -1.0f};
  ASSERT_TRUE(ApplyRepetitionPenalty(favour, std::vector<int32_t>{0, 1}, 0.5f).ok());
  EXPECT_EQ(favour, (std::vector<float>{4.0f, -0.5f}));
  // A tiny penalty saturates at the largest float, never inf; -inf stays masked.
  std::vector<float> tiny = {10.0f, -1.0f, 5.0f, kNegInf};
  ASSERT_TRUE(ApplyRepetitionPenalty(tiny, std::vector<int32_t>{0, 1, 3}, 1e-38f).ok());
  constexpr float kMax = std::numeric_limits<float>::max();
  EXPECT_EQ(tiny, (std::vector<float>{kMax, -1e-38f, 5.0f, kNegInf}));
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::nanf("")}) {
    EXPECT_EQ(ApplyRepetitionPenalty(logits, std::vector<int32_t>{0}, bad).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_THAT(ApplyRepetitionPenalty(logits, std::vector<int32_t>{5}, 1.5f).message(),
              HasSubstr("token id 5 is outside the vocabulary of 5"));
  EXPECT_EQ(ApplyRepetitionPenalty(logits, std::vector<int32_t>{-1}, 1.5f).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SamplingTest, RepetitionPenaltyChangesTheChoiceNotTheLogprobs) {
  const std::vector<float> logits = {3.0f, 2.5f, 0.0f};
  SamplingParams p = Params(0.0f, 0, 1.0f);
  p.return_logprob = true;
  p.repetition_penalty = 1.5f;  // 3 / 1.5 = 2 < 2.5: id 1 wins once id 0 was seen
  const std::vector<int32_t> seen = {0, 2};
  auto penalised = SampleToken(logits, p, 0, seen);
  ASSERT_TRUE(penalised.ok()) << penalised.status();
  EXPECT_EQ(penalised->token, 1);
  const double lse = std::log(std::exp(3.0) + std::exp(2.5) + std::exp(0.0));
  EXPECT_NEAR(*penalised->logprob, 2.5 - lse, 1e-6);  // the model's own distribution
  EXPECT_EQ(SampleToken(logits, p, 0)->token, 0);     // nothing seen: no penalty
  p.repetition_penalty = 1.0f;
  EXPECT_EQ(SampleToken(logits, p, 0, seen)->token, 0);  // penalty 1: off
  // Sampling draws from the penalised distribution: id 0 at 2 vs id 1 at 2.5, never id 2 with
  // top_k 2.
  SamplingParams hot = Params(1.0f, 2, 1.0f);
  hot.repetition_penalty = 1.5f;
  int ones = 0;
  for (uint64_t step = 0; step < 2000; ++step) {
    auto s = SampleToken(logits, hot, step, seen);
    ASSERT_TRUE(s.ok());
    ASSERT_NE(s->token, 2);
    ones += s->token == 1;
  }
  // p(1) = e^2.5 / (e^2 + e^2.5) = 0.6225; 2000 draws: sd 0.011, 5 sd = 0.054.
  EXPECT_NEAR(ones / 2000.0, 0.6225, 0.054);
  SamplingParams bad = Params(0.0f, 0, 1.0f);
  bad.repetition_penalty = 0.0f;
  EXPECT_THAT(SampleToken(logits, bad, 0).status().message(), HasSubstr("repetition_penalty"));
}

TEST(SamplingTest, FrequencyAndPresencePenaltiesSubtractPerCountAndOnce) {
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, kNegInf};
  // Id 0 generated three times, 1 once, 4 (masked) once; 2 and 3 never.
  const std::vector<int32_t> generated = {0, 1, 0, 4, 0};
  ASSERT_TRUE(ApplyFrequencyPresencePenalties(logits, generated, 0.5f, 0.25f).ok());
  // 2 - 3 * 0.5 - 0.25 = 0.25; -1 - 0.5 - 0.25 = -1.75 (exact in float).
  EXPECT_EQ(logits, (std::vector<float>{0.25f, -1.75f, 0.5f, 3.0f, kNegInf}));
  // Negative penalties favour what was generated, the same formula.
  std::vector<float> favour = {1.0f, 1.0f};
  ASSERT_TRUE(ApplyFrequencyPresencePenalties(favour, std::vector<int32_t>{1, 1}, -2.0f, -1.0f)
                  .ok());
  EXPECT_EQ(favour, (std::vector<float>{1.0f, 6.0f}));
  for (float bad : {2.5f, -2.5f, std::numeric_limits<float>::infinity(), std::nanf("")}) {
    EXPECT_EQ(ApplyFrequencyPresencePenalties(logits, generated, bad, 0.0f).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
    EXPECT_EQ(ApplyFrequencyPresencePenalties(logits, generated, 0.0f, bad).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_THAT(
      ApplyFrequencyPresencePenalties(logits, std::vector<int32_t>{5}, 1.0f, 0.0f).message(),
      HasSubstr("token id 5 is outside the vocabulary of 5"));
  EXPECT_EQ(ApplyFrequencyPresencePenalties(logits, std::vector<int32_t>{-3}, 1.0f, 0.0f).code(),
            absl::StatusCode::kInvalidArgument);
}

// Under a token mask the logprobs are of the guided distribution (vLLM V1 applies its grammar
// bitmask before its sampler computes them): renormalised over the allowed ids, -inf for the
// rest; a bias on top of the mask does not move them.
TEST(SamplingTest, LogprobsUnderAMaskAreOfTheGuidedDistribution) {
  const std::vector<float> logits = {5.0f, 1.0f, 0.0f};
  const std::vector<int32_t> allowed = {1, 2};
  SamplingParams p = Params(0.0f, 0, 1.0f);
  p.return_logprob = true;
  p.top_logprobs = 3;
  p.mask = TokenMask{.allow = true, .ids = allowed};
  p.logit_bias = {{2, 10.0f}};  // id 2 is sampled; its logprob is the mask's alone
  auto out = SampleToken(logits, p, 0, {});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->token, 2);
  const double lse = std::log(std::exp(1.0) + std::exp(0.0));
  EXPECT_NEAR(*out->logprob, 0.0 - lse, 1e-6);
  ASSERT_EQ(out->top.size(), 3u);
  EXPECT_EQ(out->top[0].token, 1);
  EXPECT_NEAR(out->top[0].logprob, 1.0 - lse, 1e-6);
  EXPECT_EQ(out->top[1].token, 2);
  EXPECT_EQ(out->top[2].token, 0);
  EXPECT_EQ(out->top[2].logprob, -std::numeric_limits<float>::infinity()) << "ruled out";
  // Without the mask: the model's own.
  p.mask.reset();
  p.logit_bias.clear();
  const double all = std::log(std::exp(5.0) + std::exp(1.0) + std::exp(0.0));
  EXPECT_NEAR(SampleToken(logits, p, 0, {})->top[0].logprob, 5.0 - all, 1e-6);
}

TEST(SamplingTest, PenaltiesComposeRepetitionFirstAndCountOnlyGeneratedIds) {
  const std::vector<float> logits = {3.0f, 2.6f, 2.0f};
  SamplingParams p = Params(0.0f, 0, 1.0f);
  p.return_logprob = true;
  p.top_logprobs = 3;
  p.frequency_penalty = 0.3f;
  // Id 0 was in the prompt only: not counted. Generated: id 0 not at all, so id 0 keeps 3.
  const std::vector<int32_t> seen = {0, 2, 1};
  const std::vector<int32_t> generated = {1};
  auto out = SampleToken(logits, p, 1, seen, generated);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->token, 0);
  // Generated twice: 3 - 2 * 0.3 = 2.4 < 2.6, id 1 wins.
  const std::vector<int32_t> twice = {0, 0};
  EXPECT_EQ(SampleToken(logits, p, 2, seen, twice)->token, 1);
  // Logprobs and top_logprobs stay the model's own distribution.
  const double lse = std::log(std::exp(3.0) + std::exp(2.6) + std::exp(2.0));
  auto penalised = SampleToken(logits, p, 2, seen, twice);
  EXPECT_NEAR(*penalised->logprob, 2.6 - lse, 1e-6);
  ASSERT_EQ(penalised->top.size(), 3u);
  EXPECT_EQ(penalised->top[0].token, 0);
  EXPECT_NEAR(penalised->top[0].logprob, 3.0 - lse, 1e-6);
  // Repetition first (3 / 1.25 = 2.4, 2.6 / 1.25 = 2.08), then presence 0.5 on id 0:
  // 1.9 < 2.08 = id 1 (seen, not generated) and 2.0 (id 2, neither).
  SamplingParams both = Params(0.0f, 0, 1.0f);
  both.repetition_penalty = 1.25f;
  both.presence_penalty = 0.5f;
  const std::vector<int32_t> seen01 = {0, 1};
  const std::vector<int32_t> gen0 = {0};
  EXPECT_EQ(SampleToken(logits, both, 1, seen01, gen0)->token, 1);
  // Presence alone: 3 - 0.5 = 2.5 < 2.6.
  both.repetition_penalty = 1.0f;
  EXPECT_EQ(SampleToken(logits, both, 1, seen01, gen0)->token, 1);
  both.presence_penalty = 0.3f;  // 2.7 > 2.6
  EXPECT_EQ(SampleToken(logits, both, 1, seen01, gen0)->token, 0);
  // Nothing generated: no penalty whatever the values.
  p.frequency_penalty = 2.0f;
  EXPECT_EQ(SampleToken(logits, p, 0, seen)->token, 0);
}

TEST(SamplingTest, ScoreTokenGivesTheTokensLogprobAndTheCandidates) {
  const std::vector<float> logits = {1.0f, 3.0f, kNegInf, 2.0f};
  const double lse = std::log(std::exp(1.0) + std::exp(3.0) + std::exp(2.0));
  auto scored = ScoreToken(logits, 0, 2);
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ(scored->token, 0);
  EXPECT_NEAR(*scored->logprob, 1.0 - lse, 1e-6);
  ASSERT_EQ(scored->top.size(), 2u);
  EXPECT_EQ(scored->top[0].token, 1);
  EXPECT_EQ(scored->top[1].token, 3);
  EXPECT_NEAR(scored->top[1].logprob, 2.0 - lse, 1e-6);
  EXPECT_EQ(*ScoreToken(logits, 2, 0)->logprob, kNegInf);  // a masked id: -inf, no error
  EXPECT_TRUE(ScoreToken(logits, 3, 0)->top.empty());
  for (int32_t bad : {-1, 4}) {
    EXPECT_THAT(ScoreToken(logits, bad, 0).status().message(), HasSubstr("outside"));
  }
  EXPECT_EQ(ScoreToken(logits, 0, kMaxTopLogprobs + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScoreToken(std::vector<float>{std::nanf("")}, 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SamplingTest, BatchShapeErrorsAndRowErrors) {
  const std::vector<float> logits(6, 0.0f);
  const std::vector<SamplingParams> two(2);
  const std::vector<uint64_t> steps2 = {0, 0};
  EXPECT_EQ(SampleBatch(logits, 2, 4, two, steps2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SampleBatch(logits, 2, 3, std::vector<SamplingParams>(1), steps2).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bad = logits;
  bad[4] = std::nanf("");
  auto out = SampleBatch(bad, 2, 3, two, steps2);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("row 1"));
  EXPECT_TRUE(SampleBatch({}, 0, 3, {}, {}).ok());
}

}  // namespace
}  // namespace llmint8::kernels
