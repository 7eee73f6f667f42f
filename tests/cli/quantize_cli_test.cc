// `llmint8 quantize` on the golden tiny-opt checkpoint, then the int8 checkpoint served by
// ShardModel (kInt8) at TP 1 and TP 2 against the on-the-fly int8 path on the original weights.
//
// Why the results must agree: the checkpoint stores q = round(127 w / absmax(row)) and the fp32
// absmax of every FULL row, computed from the fp32 weights with kernels::QuantizeWeight, which is
// exactly what the on-the-fly path does at load for a full row. Every other tensor is stored
// fp16, and kInt8 rounds those to fp16 at load anyway. So at TP 1 the loaded weights are
// bit-identical: the logits must be equal bit for bit and the greedy tokens identical. At TP 2
// the checkpoint still gives every rank TP 1's weights (full-row scales), so its greedy tokens
// equal TP 1's; only the activations' outliers and row scales are found per rank slice. The
// on-the-fly path quantizes each rank's column slice of the row-parallel layers (out_proj, fc2)
// with that slice's own absmax, a slightly different int8 rounding: fed the same tokens, its
// logits stay within int8 noise of the checkpoint's and its argmax differs only at near ties.
//
// Ranks run in forked processes (Gloo over loopback, file rendezvous); the parent only runs the
// CLI and compares files, so it starts no threads before forking.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/comm_options.h"
#include "comm/file_rendezvous.h"
#include "comm/fork_ranks.h"
#include "comm/make_communicator.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/forward_test_util.h"
#include "model/shard_model.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_cli.h"

namespace llmint8::tools {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunCli;
using testing::SourceDir;

constexpr int kSteps = 24;

const std::vector<std::vector<int32_t>>& Prompts() {
  static const auto* p = new std::vector<std::vector<int32_t>>{
      {2, 17, 300, 45, 9, 101, 4}, {2, 999}, {2, 8, 8, 8, 250, 33, 71, 12, 400, 5, 6}};
  return *p;
}

struct DecodeRun {
  std::vector<int32_t> tokens;  // [sequences * kSteps]
  std::vector<float> logits;    // [kSteps * sequences * vocab]
};

std::string ResultPath(const std::string& dir, const std::string& tag, int tp) {
  return absl::StrCat(dir, "/", tag, "-tp", tp, ".bin");
}

// Rank `rank` of a TP group greedily decodes Prompts() from `model_dir` in kInt8; rank 0 writes
// tokens and logits to ResultPath(dir, tag, tp).
DecodeRun ReadRun(const std::string& path, int64_t vocab);

// With `forced_from` (a result file), its tokens are fed instead of this run's argmax.
absl::Status DecodeRank(const std::string& model_dir, const std::string& tag, int tp, int rank,
                        const std::string& dir, const std::string& forced_from) {
  const std::string rdzv_dir = absl::StrCat(dir, "/rdzv-", tag, "-tp", tp);
  std::filesystem::create_directories(rdzv_dir);
  comm::FileRendezvous rdzv(rdzv_dir);
  comm::CommOptions co;
  co.rank = rank;
  co.world_size = tp;
  co.rendezvous = &rdzv;
  co.key_prefix = "q/";
  co.timeout = absl::Seconds(60);
  ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> comm,
                   comm::MakeCommunicator(tp == 1 ? "local" : "gloo", co));
  ASSIGN_OR_RETURN(model::OpenedModel opened, model::OpenModelDir(model_dir));
  model::ShardOptions o;
  o.precision = model::Precision::kInt8;
  o.threshold = 6.0f;
  ASSIGN_OR_RETURN(std::unique_ptr<model::ShardModel> m,
                   model::ShardModel::Load(opened.config, *opened.source, tp, rank, comm.get(), o));
  std::vector<std::vector<int32_t>> forced;
  if (!forced_from.empty()) {
    const DecodeRun from = ReadRun(forced_from, opened.config.vocab_size);
    for (size_t i = 0; i < Prompts().size(); ++i) {
      forced.emplace_back(from.tokens.begin() + i * kSteps, from.tokens.begin() + (i + 1) * kSteps);
    }
  }
  ASSIGN_OR_RETURN(
      model::testing::GreedyResult g,
      model::testing::Greedy(*m, Prompts(), kSteps, 1, forced_from.empty() ? nullptr : &forced));
  if (rank != 0) return absl::OkStatus();
  const std::string path = ResultPath(dir, tag, tp);
  std::ofstream f(path, std::ios::binary);
  for (const auto& t : g.tokens) f.write(reinterpret_cast<const char*>(t.data()), t.size() * 4);
  for (const auto& l : g.logits) f.write(reinterpret_cast<const char*>(l.data()), l.size() * 4);
  if (!f.good()) return absl::InternalError("cannot write " + path);
  return absl::OkStatus();
}

DecodeRun ReadRun(const std::string& path, int64_t vocab) {
  DecodeRun r;
  r.tokens.resize(Prompts().size() * kSteps);
  r.logits.resize(kSteps * Prompts().size() * vocab);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(r.tokens.data()), r.tokens.size() * 4);
  f.read(reinterpret_cast<char*>(r.logits.data()), r.logits.size() * 4);
  EXPECT_TRUE(f.good()) << "short result file " << path;
  return r;
}

class QuantizeCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("quantize");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

TEST_F(QuantizeCliTest, Int8CheckpointDecodesLikeOnTheFlyInt8AtTp1AndTp2) {
  const std::string original = SourceDir() + "/tests/golden/tiny-opt";
  const std::string tokenizer = SourceDir() + "/tests/fixtures/tokenizer/tiny-bpe/tokenizer.json";
  const std::string int8_dir = dir_ + "/tiny-opt-int8";
  const testing::CliResult q = RunCli(
      absl::StrCat("quantize --model=", original, " --out=", int8_dir, " --tokenizer=", tokenizer));
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_THAT(q.err, HasSubstr("quantizing layer 2/2"));
  for (const char* file :
       {"config.json", "model.safetensors.index.json", "model-int8-00001-of-00002.safetensors",
        "model-int8-00002-of-00002.safetensors", "tokenizer.json", "generation_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(int8_dir + "/" + file)) << file;
  }
  // The model's generation defaults come from the model, whatever --tokenizer names.
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(read(int8_dir + "/generation_config.json"), read(original + "/generation_config.json"));

  const int64_t vocab = 1000;
  struct Job {
    std::string tag;
    std::string model_dir;
    int tp;
    std::string forced_from;
  };
  const Job jobs[] = {{"ckpt", int8_dir, 1, ""},
                      {"fly", original, 1, ""},
                      {"ckpt", int8_dir, 2, ""},
                      // Fed TP 1's tokens: compares logits position by position (free-running
                      // greedy would diverge after the first near-tie flip).
                      {"fly", original, 2, ResultPath(dir_, "ckpt", 1)}};
  for (const Job& job : jobs) {
    const std::vector<comm::RankOutcome> outcomes = comm::ForkRanks(
        job.tp,
        [&](int rank) {
          return DecodeRank(job.model_dir, job.tag, job.tp, rank, dir_, job.forced_from);
        },
        absl::Seconds(120));
    for (const auto& o : outcomes) {
      ASSERT_TRUE(o.reported && o.status.ok())
          << job.tag << " tp " << job.tp << ": " << o.Describe();
    }
  }
  const DecodeRun ckpt1 = ReadRun(ResultPath(dir_, "ckpt", 1), vocab);
  const DecodeRun fly1 = ReadRun(ResultPath(dir_, "fly", 1), vocab);
  const DecodeRun ckpt2 = ReadRun(ResultPath(dir_, "ckpt", 2), vocab);
  const DecodeRun fly2 = ReadRun(ResultPath(dir_, "fly", 2), vocab);

  // TP 1: the same weights bit for bit, so the same logits bit for bit.
  EXPECT_EQ(ckpt1.tokens, fly1.tokens);
  EXPECT_EQ(model::testing::MaxAbsDiff(ckpt1.logits, fly1.logits), 0.0);
  // TP 2. The checkpoint's weights are TP 1's: the same greedy tokens as TP 1, logits within
  // int8 noise (only the activations' outliers and row scales are found per rank slice).
  // On the fly the row-parallel weights get slice scales too. Tolerance: 0.15 x the logits' rms
  // (4.07 here; this fixture's weights are scaled up, so int8 noise is ~8% of rms, measured
  // 0.31 and 0.34); a wrong slice, a missing all-reduce or a doubled bias moves logits by O(rms).
  double sum2 = 0;
  for (float v : ckpt1.logits) sum2 += double{v} * v;
  const double tol = 0.15 * std::sqrt(sum2 / static_cast<double>(ckpt1.logits.size()));
  EXPECT_EQ(ckpt2.tokens, ckpt1.tokens);
  EXPECT_LE(model::testing::MaxAbsDiff(ckpt2.logits, ckpt1.logits), tol);
  EXPECT_LE(model::testing::MaxAbsDiff(ckpt2.logits, fly2.logits), tol);
  // fly2 was fed the same tokens; where its argmax differs, it is a near tie in ckpt2's logits.
  const size_t seqs = Prompts().size();
  int flips = 0;
  for (size_t i = 0; i < seqs; ++i) {
    for (int step = 0; step < kSteps; ++step) {
      const int32_t a = ckpt2.tokens[i * kSteps + step];
      const int32_t b = fly2.tokens[i * kSteps + step];
      if (a == b) continue;
      ++flips;
      const float* row = ckpt2.logits.data() + (step * seqs + i) * vocab;
      EXPECT_LE(row[a] - row[b], 2 * tol) << "sequence " << i << " step " << step;
    }
  }
  EXPECT_LE(flips, static_cast<int>(seqs) * kSteps / 20);  // measured: 1 of 72
}

TEST_F(QuantizeCliTest, BadFlagsExitTwo) {
  const std::string original = SourceDir() + "/tests/golden/tiny-opt";
  std::filesystem::create_directories(dir_ + "/full");
  std::ofstream(dir_ + "/full/keep.txt") << "user file";
  struct Case {
    std::string args;
    const char* message;
  };
  const Case cases[] = {
      {"quantize --out=" + dir_ + "/x", "--model is required"},
      {"quantize --model=" + original, "--out is required"},
      {"quantize --model=" + dir_ + "/nothing --out=" + dir_ + "/x", "not a model directory"},
      {"quantize --model=" + original + " --out=" + dir_ + "/full", "--overwrite"},
      {"quantize --model=" + original + " --out=" + original, "is the model directory"},
      {"quantize --model=" + original + " --out=" + dir_ + "/x --threshold=0",
       "--threshold is not a flag of llmint8 quantize"},
      {"quantize --model=synthetic:nope --out=" + dir_ + "/x", "nope"},
      {"quantize --model=" + original + " --out --overwrite", "--out needs a value"},
      // The tokenizer is checked before any weight is read.
      {"quantize --model=" + original + " --out=" + dir_ + "/x --tokenizer=" + original +
           "/config.json",
       "does not load"},
      {"quantize --model=" + original + " --out=" + dir_ + "/x --tokenizer=" + SourceDir() +
           "/models/opt-sotu-cpu",
       "it is another model's tokenizer"},
      {"quantize --model=" + original + " --out=" + dir_ + "/x --tokenizer=" + dir_ + "/full",
       "holds no tokenizer files"},
  };
  for (const Case& c : cases) {
    const testing::CliResult r = RunCli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.args;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x"));
  EXPECT_TRUE(std::filesystem::exists(original + "/model.safetensors"));
}

TEST_F(QuantizeCliTest, SyntheticModelAndOverwrite) {
  const std::string out = dir_ + "/synthetic-int8";
  const std::string spec = "synthetic:125m,layers=2,hidden=64,heads=4,ffn=128,vocab=256";
  ASSERT_EQ(RunCli(absl::StrCat("quantize --model=", spec, " --out=", out)).exit_code, 0);
  EXPECT_EQ(RunCli(absl::StrCat("quantize --model=", spec, " --out=", out)).exit_code, 2);
  const testing::CliResult again =
      RunCli(absl::StrCat("quantize --model=", spec, " --out=", out, " --overwrite"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  absl::StatusOr<model::OpenedModel> opened = model::OpenModelDir(out);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->config.vocab_size, 256);
  absl::StatusOr<model::TensorInfo> info =
      opened->source->Info("model.decoder.layers.1.fc1.weight");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->quantized());
}

// Without --dtype a coordinator serves a pre-quantized checkpoint int8, saying so (fp16 would
// dequantize it); --dtype=fp16 still does that, and an fp16 checkpoint stays fp16.
TEST_F(QuantizeCliTest, ACoordinatorServesAnInt8CheckpointInt8WithoutDtype) {
  const std::string out = dir_ + "/tiny-int8";
  const std::string original = SourceDir() + "/tests/golden/tiny-opt";
  ASSERT_EQ(RunCli(absl::StrCat("quantize --model=", original, " --out=", out)).exit_code, 0);
  // Up for a second (no worker answers at port 1), then SIGINT: its start is what is read.
  const auto coordinator = [](const std::string& flags) {
    return RunCli(absl::StrCat("coordinator --listen=127.0.0.1:0 --workers=127.0.0.1:1 ", flags),
                  "timeout -s INT 2");
  };
  const testing::CliResult int8 = coordinator("--model=" + out);
  EXPECT_THAT(int8.err, HasSubstr("is a pre-quantized int8 checkpoint (llmint8 quantize): serving "
                                  "it int8"));
  EXPECT_THAT(int8.err, HasSubstr(", int8, 1 worker"));
  const testing::CliResult fp16 = coordinator("--model=" + out + " --dtype=fp16");
  EXPECT_THAT(fp16.err, HasSubstr(", fp16, 1 worker"));
  EXPECT_THAT(fp16.err, Not(HasSubstr("serving it int8")));
  const testing::CliResult original_fp16 = coordinator("--model=" + original);
  EXPECT_THAT(original_fp16.err, HasSubstr(", fp16, 1 worker"));
}

// The first fp32 value of `tensor` in the safetensors file `path` set to NaN.
void PutNan(const std::string& path, const std::string& tensor) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  const nlohmann::json h = nlohmann::json::parse(header);
  ASSERT_EQ(h[tensor]["dtype"], "F32");
  const float nan = std::nanf("");
  f.seekp(static_cast<std::streamoff>(8 + n + h[tensor]["data_offsets"][0].get<uint64_t>()));
  f.write(reinterpret_cast<const char*>(&nan), sizeof(nan));
  ASSERT_TRUE(f.good());
}

// A fine-tune's added tokens (added_tokens.json beside vocab.json and merges.txt) go with the
// tokenizer, or the int8 checkpoint would encode them as plain text.
TEST_F(QuantizeCliTest, AddedTokensGoWithTheTokenizer) {
  namespace fs = std::filesystem;
  const std::string model = SourceDir() + "/models/opt-sotu-cpu";
  const std::string tok = dir_ + "/tok";
  fs::create_directory(tok);
  for (const char* f : {"vocab.json", "merges.txt"}) fs::copy_file(model + "/" + f, tok + "/" + f);
  const std::string added = R"({"<extra>": 50270})";
  std::ofstream(tok + "/added_tokens.json") << added;
  const std::string out = dir_ + "/out";
  const testing::CliResult q =
      RunCli(absl::StrCat("quantize --model=", model, " --out=", out, " --tokenizer=", tok));
  ASSERT_EQ(q.exit_code, 0) << q.err;
  std::ifstream in(out + "/added_tokens.json");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), added);
  EXPECT_TRUE(fs::exists(out + "/generation_config.json")) << "the model's, not the tokenizer's";
}

// --overwrite replaces the checkpoint in --out (no stale shard or tokenizer.json is left to be
// read with the new ones; the user's own files stay), and a run that fails part-way (a NaN
// weight in layer 1) leaves --out exactly as it was, with no staging directory behind.
TEST_F(QuantizeCliTest, OverwriteReplacesTheCheckpointAndAFailureChangesNothing) {
  namespace fs = std::filesystem;
  const std::string out = dir_ + "/replaced";
  const std::string tiny = SourceDir() + "/tests/golden/tiny-opt";
  ASSERT_EQ(RunCli(absl::StrCat("quantize --model=", tiny, " --out=", out, " --tokenizer=",
                                SourceDir(), "/tests/fixtures/tokenizer/tiny-bpe/tokenizer.json"))
                .exit_code,
            0);
  std::ofstream(out + "/keep.txt") << "user file";
  ASSERT_TRUE(fs::exists(out + "/tokenizer.json"));
  // An existing empty --out keeps its inode and mode (the files move into it).
  const std::string priv = dir_ + "/private";
  fs::create_directory(priv);
  fs::permissions(priv, fs::perms::owner_all);
  ASSERT_EQ(RunCli(absl::StrCat("quantize --model=", tiny, " --out=", priv)).exit_code, 0);
  EXPECT_EQ(fs::status(priv).permissions(), fs::perms::owner_all);
  EXPECT_TRUE(fs::exists(priv + "/config.json"));
  ASSERT_TRUE(fs::exists(out + "/model-int8-00002-of-00002.safetensors"));
  const std::string spec = "synthetic:125m,layers=1,hidden=64,heads=4,ffn=128,vocab=256";
  const testing::CliResult replaced =
      RunCli(absl::StrCat("quantize --model=", spec, " --out=", out, " --overwrite"));
  ASSERT_EQ(replaced.exit_code, 0) << replaced.err;
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(out)) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("config.json", "keep.txt",
                                                     "model.safetensors.index.json",
                                                     "model-int8-00001-of-00001.safetensors"));
  // A failing run: out is unchanged byte for byte.
  const std::string broken = dir_ + "/broken";
  fs::copy(tiny, broken);
  PutNan(broken + "/model.safetensors", "model.decoder.layers.1.fc1.weight");
  // Every entry of a directory with its bytes ("/" for a directory).
  const auto snapshot = [](const std::string& dir) {
    std::map<std::string, std::string> files;
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
      files[e.path().filename().string()] =
          e.is_directory() ? "/" : testing::ReadFile(e.path().string());
    }
    return files;
  };
  const std::map<std::string, std::string> before = snapshot(out);
  const auto mode = fs::status(out).permissions();
  const testing::CliResult failed =
      RunCli(absl::StrCat("quantize --model=", broken, " --out=", out, " --overwrite"));
  EXPECT_EQ(failed.exit_code, 1) << failed.err;
  EXPECT_THAT(failed.err, HasSubstr("is not finite (nan)"));
  EXPECT_THAT(failed.err, HasSubstr("quantizing layer 2/2"));  // it failed part-way
  EXPECT_TRUE(snapshot(out) == before) << "--out changed";     // nothing added, removed or changed
  EXPECT_EQ(fs::status(out).permissions(), mode);
  for (const fs::directory_entry& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".quantizing-"), std::string::npos)
        << e.path() << " left behind";
  }
}

}  // namespace
}  // namespace llmint8::tools
