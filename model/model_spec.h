// What `--model` names, opened: a Hugging Face model directory or a synthetic model.
//
//   /path/to/opt-125m                      config.json + *.safetensors (+ vocab.json, merges.txt)
//   synthetic:<preset>                     seeded weights with an OPT preset's shapes (e.g. 125m)
//   synthetic:<preset>,layers=2,hidden=64,heads=4,ffn=256,vocab=512,positions=128,seed=7
//                                          the preset with these fields overridden (tests)
//   synthetic:<preset>,...,outliers=3      plus 3 evenly spaced outlier feature dims (LLM.int8()'s
//                                          emergent features: LayerNorm gain 20 there,
//                                          model/synthetic.h)
//
// The coordinator opens the spec for its config (and tokenizer directory); each worker opens it
// for its weights. Both sides must see the same spec.
#ifndef LLMINT8_MODEL_MODEL_SPEC_H_
#define LLMINT8_MODEL_MODEL_SPEC_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace llmint8::model {

// The config alone (cheap: no weights are opened). InvalidArgument naming the bad part of
// the spec; NotFound / InvalidArgument from config.json parsing.
absl::StatusOr<OptConfig> LoadModelSpecConfig(const std::string& spec);

// Config and weight source.
absl::StatusOr<OpenedModel> OpenModelSpec(const std::string& spec);

// The directory holding vocab.json + merges.txt, or nullopt for synthetic models.
std::optional<std::string> ModelSpecDirectory(const std::string& spec);

// Whether `opened` is a pre-quantized int8 checkpoint (`llmint8 quantize`: I8 layer weights).
bool IsPreQuantized(const OpenedModel& opened);

// The warning of serve and eval when a pre-quantized checkpoint runs in another `dtype`: its
// weights are dequantized, at twice int8's memory and with none of the precision back.
std::string PreQuantizedAsWarning(const std::string& spec, const std::string& dtype);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_MODEL_SPEC_H_
