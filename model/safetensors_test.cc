#include "model/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/half.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string TestDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/modelio_safetensors_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A file made of an 8-byte length (of `header`, or `declared_len` when >= 0), the header and
// `data_bytes` bytes of data.
std::string WriteRaw(const std::string& path, const std::string& header, int64_t data_bytes,
                     int64_t declared_len = -1) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = declared_len >= 0 ? static_cast<uint64_t>(declared_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header;
  for (int64_t i = 0; i < data_bytes; ++i) out.put(static_cast<char>(i));
  return path;
}

std::vector<float> Iota(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(i - n / 2);
  return v;
}

float RoundHalf(float v) { return HalfToFloat(FloatToHalf(v)); }

TEST(SafetensorsTest, RoundTripAllDtypesAndSlices) {
  const std::string path = TestDir("roundtrip") + "/t.safetensors";
  const std::vector<float> w = Iota(6 * 10, 0.37f);                              // [6, 10]
  const std::vector<int8_t> q = {1, -2, 3, -4, 5, -6, 7, -127, 127, 0, 11, 12};  // [3, 4]
  const std::vector<float> absmax = {2.0f, 0.5f, 127.0f};
  SafetensorsWriter wr;
  wr.SetMetadata("format", "pt");
  ASSERT_TRUE(wr.AddF32("f32", {6, 10}, w).ok());
  ASSERT_TRUE(wr.AddF16("f16", {6, 10}, w).ok());
  ASSERT_TRUE(wr.AddBF16("bf16", {6, 10}, w).ok());
  ASSERT_TRUE(wr.AddF32("vec", {7}, Iota(7, 1.0f)).ok());
  ASSERT_TRUE(wr.AddI8("q.weight", {3, 4}, q).ok());
  ASSERT_TRUE(wr.AddF32("q.weight_absmax", {3}, absmax).ok());
  EXPECT_FALSE(wr.AddF32("f32", {1}, Iota(1, 1.0f)).ok());       // duplicate name
  EXPECT_FALSE(wr.AddF32("short", {2, 3}, Iota(5, 1.0f)).ok());  // wrong byte count
  ASSERT_TRUE(wr.Finish(path).ok());

  auto src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(SafetensorsMetadata(**src).at("format"), "pt");
  EXPECT_THAT((*src)->TensorNames(),
              ::testing::ElementsAre("bf16", "f16", "f32", "q.weight", "q.weight_absmax", "vec"));
  const Range rows{2, 5}, cols{3, 9};
  for (const char* name : {"f32", "f16", "bf16"}) {
    auto info = (*src)->Info(name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->shape, (std::vector<int64_t>{6, 10}));
    std::vector<float> out(static_cast<size_t>(rows.size() * cols.size()));
    ASSERT_TRUE((*src)->ReadSlice(name, rows, cols, out).ok());
    for (int64_t r = rows.begin; r < rows.end; ++r) {
      for (int64_t c = cols.begin; c < cols.end; ++c) {
        const float want = w[r * 10 + c];
        const float got = out[(r - rows.begin) * cols.size() + (c - cols.begin)];
        if (std::string(name) == "f32") {
          EXPECT_EQ(got, want);
        } else if (std::string(name) == "f16") {
          EXPECT_EQ(got, RoundHalf(want));
        } else {  // bf16 keeps 8 significant bits: relative error <= 2^-8
          EXPECT_NEAR(got, want, std::abs(want) * (1.0f / 256)) << r << "," << c;
        }
      }
    }
    std::vector<Half> half(out.size());
    ASSERT_TRUE((*src)->ReadSliceHalf(name, rows, cols, half).ok());
    for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(HalfToFloat(half[i]), RoundHalf(out[i]));
  }
  // 1-D tensors are [n, 1].
  std::vector<float> v(3);
  ASSERT_TRUE((*src)->ReadSlice("vec", {4, 7}, {0, 1}, v).ok());
  EXPECT_EQ(v, (std::vector<float>{1.0f, 2.0f, 3.0f}));
  // int8: values + full-row absmax; ReadSlice dequantizes.
  auto qi = (*src)->Info("q.weight");
  ASSERT_TRUE(qi.ok());
  EXPECT_TRUE(qi->quantized());
  std::vector<int8_t> qs(4);
  std::vector<float> sc(2);
  ASSERT_TRUE((*src)->ReadInt8Slice("q.weight", {1, 3}, {2, 4}, qs, sc).ok());
  EXPECT_EQ(qs, (std::vector<int8_t>{7, -127, 11, 12}));
  EXPECT_EQ(sc, (std::vector<float>{0.5f, 127.0f}));
  std::vector<float> dq(2);
  ASSERT_TRUE((*src)->ReadSlice("q.weight", {2, 3}, {0, 2}, dq).ok());
  EXPECT_EQ(dq, (std::vector<float>{127.0f, 0.0f}));
  // A float tensor has no int8 view.
  auto not_q = (*src)->ReadInt8Slice("f32", {0, 1}, {0, 1}, std::span<int8_t>(qs).first(1),
                                     std::span<float>(sc).first(1));
  EXPECT_EQ(not_q.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(not_q.message()), HasSubstr("f32"));
}

// Slices that span every column are read many rows per copy (up to 1 MiB): rows across the
// runs' seams come out as they are in the file, in every dtype and view.
TEST(SafetensorsTest, FullWidthSlicesReadAcrossCopyRuns) {
  const std::string path = TestDir("runs") + "/t.safetensors";
  constexpr int64_t kRows = 700, kCols = 1000;  // 1.4 MB of F16: two runs of 524 rows
  std::vector<float> w(static_cast<size_t>(kRows * kCols));
  std::vector<int8_t> q(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = static_cast<float>(static_cast<int64_t>(i % 2003) - 1001);
    q[i] = static_cast<int8_t>(static_cast<int64_t>(i % 251) - 125);
  }
  const std::vector<float> absmax(kRows, 127.0f);
  SafetensorsWriter wr;
  ASSERT_TRUE(wr.AddF16("h", {kRows, kCols}, w).ok());
  ASSERT_TRUE(wr.AddF32("f", {kRows * kCols}, w).ok());  // 1-D: [n, 1], a row per element
  ASSERT_TRUE(wr.AddI8("q", {kRows, kCols}, q).ok());
  ASSERT_TRUE(wr.AddF32("q_absmax", {kRows}, absmax).ok());
  ASSERT_TRUE(wr.Finish(path).ok());
  auto src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();

  const Range rows{3, kRows}, all{0, kCols};
  const size_t n = static_cast<size_t>(rows.size() * kCols);
  const size_t first = static_cast<size_t>(rows.begin * kCols);
  std::vector<float> out(n);
  std::vector<Half> half(n);
  ASSERT_TRUE((*src)->ReadSlice("h", rows, all, out).ok());
  ASSERT_TRUE((*src)->ReadSliceHalf("h", rows, all, half).ok());
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(out[i], w[first + i]) << i;  // integers up to 1001 are exact in fp16
    ASSERT_EQ(HalfToFloat(half[i]), w[first + i]) << i;
  }
  std::vector<float> flat(n);
  ASSERT_TRUE(
      (*src)
          ->ReadSlice("f", Range{static_cast<int64_t>(first), kRows * kCols}, Range{0, 1}, flat)
          .ok());
  EXPECT_TRUE(std::equal(flat.begin(), flat.end(), w.begin() + first));
  std::vector<int8_t> qs(n);
  std::vector<float> scales(static_cast<size_t>(rows.size()));
  ASSERT_TRUE((*src)->ReadInt8Slice("q", rows, all, qs, scales).ok());
  EXPECT_TRUE(std::equal(qs.begin(), qs.end(), q.begin() + first));
  ASSERT_TRUE((*src)->ReadSlice("q", rows, all, out).ok());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], static_cast<float>(q[first + i])) << i;
}

TEST(SafetensorsTest, SliceRequestsAreChecked) {
  const std::string path = TestDir("slices") + "/t.safetensors";
  SafetensorsWriter wr;
  ASSERT_TRUE(wr.AddF32("m", {4, 4}, Iota(16, 1.0f)).ok());
  ASSERT_TRUE(wr.Finish(path).ok());
  auto src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok());
  std::vector<float> out(4);
  EXPECT_THAT(std::string((*src)->ReadSlice("m", {3, 5}, {0, 2}, out).message()),
              HasSubstr("\"m\""));
  EXPECT_FALSE((*src)->ReadSlice("m", {2, 1}, {0, 4}, out).ok());
  EXPECT_FALSE((*src)->ReadSlice("m", {0, 2}, {-1, 1}, out).ok());
  EXPECT_FALSE((*src)->ReadSlice("m", {0, 1}, {0, 3}, out).ok());  // buffer size mismatch
  auto missing = (*src)->ReadSlice("nope", {0, 1}, {0, 1}, std::span<float>(out).first(1));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("nope"));
}

// A file truncated after it was opened (replaced in place while a worker loads it): reading
// its vanished pages through the mapping would raise SIGBUS and end the process; every read
// (fp32, fp16, int8 and its scales) is DataLoss naming the file instead.
TEST(SafetensorsTest, AFileThatShrinksWhileOpenIsDataLossNotACrash) {
  const std::string path = TestDir("shrinks") + "/t.safetensors";
  SafetensorsWriter wr;
  const int64_t n = 8192;  // 32 KiB per f32 row: rows span pages
  ASSERT_TRUE(wr.AddF32("a", {4, n}, Iota(4 * n, 1.0f)).ok());
  ASSERT_TRUE(wr.AddF16("h", {4, n}, Iota(4 * n, 1.0f)).ok());
  ASSERT_TRUE(wr.Finish(path).ok());
  auto src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  std::vector<float> out(static_cast<size_t>(n));
  ASSERT_TRUE((*src)->ReadSlice("a", {3, 4}, {0, n}, out).ok());
  std::filesystem::resize_file(path, 4096);  // the header and little else remain
  const absl::Status f32 = (*src)->ReadSlice("a", {3, 4}, {0, n}, out);
  EXPECT_EQ(f32.code(), absl::StatusCode::kDataLoss) << f32;
  EXPECT_THAT(std::string(f32.message()), HasSubstr(path));
  EXPECT_THAT(std::string(f32.message()), HasSubstr("shrank"));
  std::vector<Half> half_out(static_cast<size_t>(n));
  EXPECT_EQ((*src)->ReadSliceHalf("h", {2, 3}, {0, n}, half_out).code(),
            absl::StatusCode::kDataLoss);
}

struct BadHeader {
  const char* what;
  std::string header;
  int64_t data_bytes;
  std::string must_mention;  // the tensor (or file) the error names
  int64_t declared_len = -1;
};

// Untrusted headers: every malformed file gives InvalidArgument naming the file and tensor.
TEST(SafetensorsTest, BadFilesGiveStatusNamingTheTensor) {
  const std::string dir = TestDir("bad");
  const BadHeader cases[] = {
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, "\"b\""},
      {"out of range", R"({"w":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}})", 16,
       "\"w\""},
      {"wrong dtype", R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", 16, "F64"},
      {"wrong dtype names tensor", R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}})", 1,
       "\"w\""},
      {"shape/byte mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       "\"w\""},
      {"begin after end", R"({"w":{"dtype":"I8","shape":[0],"data_offsets":[8,0]}})", 8, "\"w\""},
      {"hole", R"({"w":{"dtype":"I8","shape":[4],"data_offsets":[4,8]}})", 8, "\"w\""},
      {"trailing bytes", R"({"w":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 8, "trailing"},
      {"negative dim", R"({"w":{"dtype":"I8","shape":[-4],"data_offsets":[0,4]}})", 4, "\"w\""},
      {"float offsets", R"({"w":{"dtype":"I8","shape":[4],"data_offsets":[0.0,4.5]}})", 4, "\"w\""},
      {"huge offsets",
       R"({"w":{"dtype":"I8","shape":[4],"data_offsets":[18446744073709551615,4]}})", 4, "\"w\""},
      {"overflowing shape",
       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}})", 4,
       "\"w\""},
      {"entry not an object", R"({"w":[1,2]})", 0, "\"w\""},
      {"missing offsets", R"({"w":{"dtype":"I8","shape":[4]}})", 4, "\"w\""},
      {"metadata not strings", R"({"__metadata__":{"a":1}})", 0, "__metadata__"},
      {"garbage JSON", "{\"w\": {\"dtype\": \"F3", 4, "not valid JSON"},
      {"not an object", "[1, 2, 3]", 0, "'{'"},
      {"NUL ends the JSON early",
       std::string(R"({"w":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})") + '\0' +
           R"({"v":1})",
       4, "NUL"},
      {"deep shape",
       R"({"w":{"dtype":"I8","shape":[)" + std::string(200, '[') + std::string(200, ']') +
           R"(],"data_offsets":[0,4]}})",
       4, "an array of"},
      {"shape nested too deep to parse",
       R"({"w":{"dtype":"I8","shape":[)" + std::string(100000, '[') + std::string(100000, ']') +
           R"(],"data_offsets":[0,4]}})",
       4, "its header is nested 100003 deep; JSON nested more than 256 deep is refused"},
      {"header length beyond file", "{}", 0, "beyond the file size", 1 << 20},
      // 2 MB of tiny values would take ~80 MB parsed; the limit's text could take gigabytes.
      {"a million tiny values",
       "{\"m\":[" +
           [] {
             std::string zeros;
             for (int z = 0; z < (1 << 20); ++z) zeros += "0,";
             return zeros;
           }() +
           "0]}",
       0, "JSON values"},
      {"I8 without scales", R"({"w":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 4,
       "w_absmax"},
  };
  int i = 0;
  for (const BadHeader& bc : cases) {
    const std::string path = WriteRaw(dir + "/bad" + std::to_string(i++) + ".safetensors",
                                      bc.header, bc.data_bytes, bc.declared_len);
    auto src = OpenSafetensors(path);
    ASSERT_FALSE(src.ok()) << bc.what;
    EXPECT_NE(src.status().code(), absl::StatusCode::kOk);
    EXPECT_THAT(std::string(src.status().message()),
                AllOf(HasSubstr(path), HasSubstr(bc.must_mention)))
        << bc.what;
  }
}

// Commas and brackets inside strings are text, not values: a large metadata string is fine.
TEST(SafetensorsTest, PunctuationInStringsIsNotCountedAsValues) {
  const std::string path = TestDir("strings") + "/t.safetensors";
  SafetensorsWriter wr;
  wr.SetMetadata("notes", std::string(3 << 20, ',') + "[{\\\"");
  ASSERT_TRUE(wr.AddF32("w", {4}, Iota(4, 1.0f)).ok());
  ASSERT_TRUE(wr.Finish(path).ok());
  auto src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(SafetensorsMetadata(**src).at("notes").size(), (3u << 20) + 4);
}

TEST(SafetensorsTest, TruncatedAndTinyFiles) {
  const std::string dir = TestDir("trunc");
  const std::string path = dir + "/t.safetensors";
  SafetensorsWriter wr;
  ASSERT_TRUE(wr.AddF32("first", {4}, Iota(4, 1.0f)).ok());
  ASSERT_TRUE(wr.AddF32("model.decoder.layers.0.fc1.weight", {4, 4}, Iota(16, 1.0f)).ok());
  ASSERT_TRUE(wr.Finish(path).ok());
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 10);
  auto src = OpenSafetensors(path);
  ASSERT_FALSE(src.ok());
  EXPECT_THAT(std::string(src.status().message()),
              AllOf(HasSubstr(path), HasSubstr("model.decoder.layers.0.fc1.weight"),
                    HasSubstr("truncated")));
  // Truncated inside the header.
  std::filesystem::resize_file(path, 20);
  src = OpenSafetensors(path);
  ASSERT_FALSE(src.ok());
  EXPECT_THAT(std::string(src.status().message()), HasSubstr("beyond the file size"));
  for (int n : {0, 3, 8}) {
    std::filesystem::resize_file(path, n);
    src = OpenSafetensors(path);
    ASSERT_FALSE(src.ok()) << n;
    EXPECT_THAT(std::string(src.status().message()), HasSubstr(path));
  }
  src = OpenSafetensors(dir + "/does_not_exist.safetensors");
  EXPECT_EQ(src.status().code(), absl::StatusCode::kNotFound);
}

OptConfig TinyConfig() {
  auto c = ParseOptConfig(R"({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    "ffn_dim": 16, "vocab_size": 10, "max_position_embeddings": 6, "torch_dtype": "float16"})");
  return *c;
}

// Writes every tensor of `c` (zeros) except `skip`; `override_name` gets `override_shape`.
// `unprefixed` drops the "model." prefix as OPTModel checkpoints do.
absl::Status WriteModel(const OptConfig& c, const std::string& path, const std::string& skip = "",
                        const std::string& override_name = "",
                        std::vector<int64_t> override_shape = {}, bool unprefixed = false) {
  SafetensorsWriter wr;
  for (const ExpectedTensor& t : ExpectedTensors(c)) {
    if (t.name == skip) continue;
    std::vector<int64_t> shape = t.name == override_name ? override_shape : t.shape;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::string name = unprefixed && t.name.starts_with("model.") ? t.name.substr(6) : t.name;
    absl::Status s = wr.AddF16(name, shape, std::vector<float>(static_cast<size_t>(n), 0.5f));
    if (!s.ok()) return s;
  }
  return wr.Finish(path);
}

TEST(SafetensorsTest, ModelDirValidatedAgainstConfig) {
  const OptConfig c = TinyConfig();
  const std::string dir = TestDir("modeldir");
  { std::ofstream(dir + "/config.json") << OptConfigToJson(c); }
  ASSERT_TRUE(WriteModel(c, dir + "/model.safetensors", "", "", {}, /*unprefixed=*/true).ok());
  auto m = OpenModelDir(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.hidden_size, 8);
  EXPECT_TRUE(m->source->Has("model.decoder.layers.0.fc1.weight"));
  EXPECT_TRUE(m->source->Has("decoder.layers.0.fc1.weight"));

  const std::string q = LayerTensorName(0, LayerTensor::kQProjWeight);
  ASSERT_TRUE(WriteModel(c, dir + "/model.safetensors", q).ok());
  m = OpenModelDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(q));

  ASSERT_TRUE(WriteModel(c, dir + "/model.safetensors", "", q, {8, 4}).ok());
  m = OpenModelDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()),
              AllOf(HasSubstr(q), HasSubstr("[8, 4]"), HasSubstr("[8, 8]")));
  std::filesystem::remove(dir + "/model.safetensors");
  m = OpenModelDir(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);

  // A config of fewer layers than the checkpoint holds does not describe it: refused, not
  // served truncated.
  OptConfig two = c;
  two.num_hidden_layers = 2;
  ASSERT_TRUE(WriteModel(two, dir + "/model.safetensors", "", "", {}).ok());
  OptConfig fewer = c;  // 1 layer
  { std::ofstream(dir + "/config.json") << OptConfigToJson(fewer); }
  m = OpenModelDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()),
              AllOf(HasSubstr("layer " + std::to_string(fewer.num_hidden_layers)),
                    HasSubstr("num_hidden_layers=" + std::to_string(fewer.num_hidden_layers))));
  std::filesystem::remove(dir + "/model.safetensors");

  // A symlink loop in its place is an error naming the path, not an uncaught exception.
  std::filesystem::create_symlink("model.safetensors.index.json",
                                  dir + "/model.safetensors.index.json");
  m = OpenModelDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("model.safetensors.index.json"));
  std::filesystem::remove(dir + "/model.safetensors.index.json");
}

// An int8 checkpoint damaged on disk: row scales of the wrong dtype or shape (refused at
// open), a NaN or negative row scale (refused when read, naming the row), and an I8 tensor
// that is not a linear weight (refused against the config). Each names the tensor.
TEST(SafetensorsTest, DamagedInt8TensorsAreRefusedNamingThem) {
  const std::string dir = TestDir("damaged-int8");
  const std::vector<int8_t> q = {1, -2, 3, -4, 5, -6, 7, -8};
  struct BadScales {
    TensorDType dtype;
    std::vector<int64_t> shape;
  };
  for (const BadScales& b :
       {BadScales{TensorDType::kF16, {2}}, BadScales{TensorDType::kF32, {3}}}) {
    const std::string path = dir + "/scales.safetensors";
    SafetensorsWriter wr;
    ASSERT_TRUE(wr.AddI8("w", {2, 4}, q).ok());
    const std::vector<float> scales(static_cast<size_t>(b.shape[0]), 1.0f);
    ASSERT_TRUE((b.dtype == TensorDType::kF16 ? wr.AddF16("w_absmax", b.shape, scales)
                                              : wr.AddF32("w_absmax", b.shape, scales))
                    .ok());
    ASSERT_TRUE(wr.Finish(path).ok());
    auto src = OpenSafetensors(path);
    ASSERT_FALSE(src.ok());
    EXPECT_EQ(src.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(src.status().message()),
                AllOf(HasSubstr("w_absmax"), HasSubstr("row scales must be F32 [2]")));
  }
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), -1.0f}) {
    const std::string path = dir + "/values.safetensors";
    SafetensorsWriter wr;
    ASSERT_TRUE(wr.AddI8("w", {2, 4}, q).ok());
    ASSERT_TRUE(wr.AddF32("w_absmax", {2}, std::vector<float>{1.0f, bad}).ok());
    ASSERT_TRUE(wr.Finish(path).ok());
    auto src = OpenSafetensors(path);
    ASSERT_TRUE(src.ok()) << src.status();  // values are checked as they are read
    std::vector<int8_t> got(8);
    std::vector<float> absmax(2);
    const absl::Status read = (*src)->ReadInt8Slice("w", Range{0, 2}, Range{0, 4}, got, absmax);
    EXPECT_EQ(read.code(), absl::StatusCode::kInvalidArgument) << read;
    EXPECT_THAT(std::string(read.message()),
                AllOf(HasSubstr("w_absmax"), HasSubstr("row 1"), HasSubstr("damaged")));
    std::vector<float> dequantized(8);
    EXPECT_EQ((*src)->ReadSlice("w", Range{0, 2}, Range{0, 4}, dequantized).code(),
              absl::StatusCode::kInvalidArgument);
    // The row before it is fine on its own.
    EXPECT_TRUE((*src)
                    ->ReadInt8Slice("w", Range{0, 1}, Range{0, 4}, std::span(got).first(4),
                                    std::span(absmax).first(1))
                    .ok());
  }
  {
    // A weight of -128 (quantize writes [-127, 127]): refused read as int8 and dequantized
    // alike, naming where.
    const std::string path = dir + "/minus128.safetensors";
    std::vector<int8_t> damaged = q;
    damaged[6] = -128;
    SafetensorsWriter wr;
    ASSERT_TRUE(wr.AddI8("w", {2, 4}, damaged).ok());
    ASSERT_TRUE(wr.AddF32("w_absmax", {2}, std::vector<float>{1.0f, 2.0f}).ok());
    ASSERT_TRUE(wr.Finish(path).ok());
    auto src = OpenSafetensors(path);
    ASSERT_TRUE(src.ok()) << src.status();
    std::vector<int8_t> got(8);
    std::vector<float> absmax(2), dequantized(8);
    std::vector<Half> half(8);
    for (const absl::Status& read :
         {(*src)->ReadInt8Slice("w", Range{0, 2}, Range{0, 4}, got, absmax),
          (*src)->ReadSlice("w", Range{0, 2}, Range{0, 4}, dequantized),
          (*src)->ReadSliceHalf("w", Range{0, 2}, Range{0, 4}, half)}) {
      EXPECT_EQ(read.code(), absl::StatusCode::kInvalidArgument) << read;
      EXPECT_THAT(std::string(read.message()), HasSubstr("row 1 column 2 is -128")) << read;
    }
    EXPECT_TRUE(
        (*src)->ReadSlice("w", Range{0, 2}, Range{0, 2}, std::span(dequantized).first(4)).ok())
        << "the columns before it are fine";
    const absl::Status part =
        (*src)->ReadInt8Slice("w", Range{0, 2}, Range{1, 4}, std::span(got).first(6), absmax);
    EXPECT_THAT(std::string(part.message()), HasSubstr("row 1 column 2 is -128")) << part;
  }
  // The token embeddings stored as I8: only linear weights may be.
  const OptConfig c = TinyConfig();
  { std::ofstream(dir + "/config.json") << OptConfigToJson(c); }
  SafetensorsWriter wr;
  for (const ExpectedTensor& t : ExpectedTensors(c)) {
    const int64_t n = t.shape.size() == 2 ? t.shape[0] * t.shape[1] : t.shape[0];
    if (t.name == kEmbedTokens) {
      ASSERT_TRUE(wr.AddI8(t.name, t.shape, std::vector<int8_t>(static_cast<size_t>(n), 1)).ok());
      ASSERT_TRUE(wr.AddF32(t.name + "_absmax", {t.shape[0]},
                            std::vector<float>(static_cast<size_t>(t.shape[0]), 1.0f))
                      .ok());
    } else {
      ASSERT_TRUE(
          wr.AddF16(t.name, t.shape, std::vector<float>(static_cast<size_t>(n), 0.5f)).ok());
    }
  }
  ASSERT_TRUE(wr.Finish(dir + "/model.safetensors").ok());
  auto m = OpenModelDir(dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()),
              AllOf(HasSubstr(std::string(kEmbedTokens)), HasSubstr("only linear weights")));
}

TEST(SafetensorsTest, ShardedIndex) {
  const std::string dir = TestDir("sharded");
  SafetensorsWriter a, b;
  ASSERT_TRUE(a.AddF32("model.decoder.x", {2, 2}, Iota(4, 1.0f)).ok());
  ASSERT_TRUE(b.AddF16("model.decoder.y", {3}, Iota(3, 2.0f)).ok());
  ASSERT_TRUE(a.Finish(dir + "/m-1.safetensors").ok());
  ASSERT_TRUE(b.Finish(dir + "/m-2.safetensors").ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata": {"total_size": 22}, "weight_map": {"model.decoder.x": "m-1.safetensors",
            "model.decoder.y": "m-2.safetensors"}})";
  auto src = OpenSafetensorsDir(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  auto y = (*src)->ReadAll("model.decoder.y");
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(*y, (std::vector<float>{-2.0f, 0.0f, 2.0f}));
  auto x = (*src)->ReadAll("decoder.x");
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(*x, (std::vector<float>{-2.0f, -1.0f, 0.0f, 1.0f}));
  {
    // Named by a bare file name, the index finds its shards in the working directory.
    const std::filesystem::path was = std::filesystem::current_path();
    std::filesystem::current_path(dir);
    auto bare = OpenSafetensors("model.safetensors.index.json");
    std::filesystem::current_path(was);
    ASSERT_TRUE(bare.ok()) << bare.status();
    EXPECT_TRUE((*bare)->ReadAll("model.decoder.y").ok());
  }
  // A shard that is a symlink (as in the Hugging Face cache) is read; one to a device is
  // refused without being opened.
  std::filesystem::rename(dir + "/m-2.safetensors", dir + "/blob");
  std::filesystem::create_symlink("blob", dir + "/m-2.safetensors");
  src = OpenSafetensorsDir(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  std::filesystem::remove(dir + "/m-2.safetensors");
  std::filesystem::create_symlink("/dev/null", dir + "/m-2.safetensors");
  src = OpenSafetensorsDir(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_THAT(std::string(src.status().message()), HasSubstr("is not a regular file"));
  std::filesystem::remove(dir + "/m-2.safetensors");
  std::filesystem::rename(dir + "/blob", dir + "/m-2.safetensors");

  // The index names a tensor its file lacks; a path that escapes the directory.
  std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc)
      << R"({"weight_map": {"model.decoder.x": "m-2.safetensors"}})";
  src = OpenSafetensorsDir(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_THAT(std::string(src.status().message()),
              AllOf(HasSubstr("model.decoder.x"), HasSubstr("m-2.safetensors")));
  std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc)
      << R"({"weight_map": {"model.decoder.x": "../etc/passwd"}})";
  src = OpenSafetensorsDir(dir);
  ASSERT_FALSE(src.ok());
  EXPECT_THAT(std::string(src.status().message()), HasSubstr("model.decoder.x"));
  std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc) << "{]";
  EXPECT_FALSE(OpenSafetensorsDir(dir).ok());
}

// A finite weight beyond fp16's range, read as fp16 (an fp16 or int8 load, `quantize`'s fp16
// tensors), is an error naming the tensor, not a silent inf; in fp32 it reads as it is.
TEST(SafetensorsTest, AValueBeyondHalfRangeIsAnErrorNotInf) {
  const std::string path = TestDir("range") + "/big.safetensors";
  SafetensorsWriter w;
  const std::vector<float> in_range = {1.0f, -65504.0f, 65519.0f};  // 65519 rounds to 65504
  const std::vector<float> big = {1.0f, 70000.0f, -2.0f};
  ASSERT_TRUE(w.AddF32("ok", {3}, in_range).ok());
  ASSERT_TRUE(w.AddF32("big.bias", {3}, big).ok());
  ASSERT_TRUE(w.Finish(path).ok());
  auto src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  std::vector<Half> half(3);
  EXPECT_TRUE((*src)->ReadSliceHalf("ok", {0, 3}, {0, 1}, half).ok());
  EXPECT_EQ(HalfToFloat(half[2]), 65504.0f);
  const absl::Status s = (*src)->ReadSliceHalf("big.bias", {0, 3}, {0, 1}, half);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("big.bias"), HasSubstr("element 1"), HasSubstr("--dtype=fp32")));
  std::vector<float> f32(3);
  ASSERT_TRUE((*src)->ReadSlice("big.bias", {0, 3}, {0, 1}, f32).ok());
  EXPECT_EQ(f32[1], 70000.0f);
  // Infinity stored as such stays what it is.
  std::vector<float> inf = {std::numeric_limits<float>::infinity()};
  EXPECT_TRUE(RoundToHalfChecked("inf", inf).ok());
}

// The fixtures saved by Hugging Face transformers (tests/golden) open and validate.
TEST(SafetensorsTest, OpensTransformersFixtures) {
  const char* root = std::getenv("LLMINT8_SOURCE_DIR");
  if (root == nullptr) GTEST_SKIP() << "LLMINT8_SOURCE_DIR not set (run through ctest)";
  for (const char* name : {"tiny-opt", "tiny-opt-350m-style"}) {
    const std::string dir = std::string(root) + "/tests/golden/" + name;
    if (!std::filesystem::exists(dir + "/model.safetensors")) GTEST_SKIP() << dir << " missing";
    auto m = OpenModelDir(dir);
    ASSERT_TRUE(m.ok()) << m.status();
    auto info = m->source->Info(kEmbedTokens);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->shape,
              (std::vector<int64_t>{m->config.vocab_size, m->config.word_embed_proj_dim}));
  }
}

}  // namespace
}  // namespace llmint8::model
