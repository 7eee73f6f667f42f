// Command-line flags of the llmint8 binary (absl flags, shared by the subcommands; each
// subcommand's --help lists the ones it reads).
#ifndef LLMINT8_TOOLS_FLAGS_H_
#define LLMINT8_TOOLS_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/time/time.h"
#include "tools/stop_flag.h"

ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(std::string, coordinator);
ABSL_DECLARE_FLAG(std::string, tls_cert_file);
ABSL_DECLARE_FLAG(std::string, tls_key_file);
ABSL_DECLARE_FLAG(std::string, tls_client_ca_file);
ABSL_DECLARE_FLAG(std::string, tls_ca_file);
ABSL_DECLARE_FLAG(std::string, worker_tls_ca_file);
ABSL_DECLARE_FLAG(std::string, health_listen);
ABSL_DECLARE_FLAG(bool, check_flags);
ABSL_DECLARE_FLAG(std::string, advertise);
ABSL_DECLARE_FLAG(std::string, rendezvous_listen);
ABSL_DECLARE_FLAG(std::string, metrics_listen);
ABSL_DECLARE_FLAG(std::string, http_listen);
ABSL_DECLARE_FLAG(std::vector<std::string>, workers);
ABSL_DECLARE_FLAG(int32_t, tp);
ABSL_DECLARE_FLAG(int32_t, worker_base_port);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, tokenizer);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(float, threshold);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(int32_t, cuda_device);
ABSL_DECLARE_FLAG(std::string, backend);
ABSL_DECLARE_FLAG(std::string, memory_limit);
ABSL_DECLARE_FLAG(std::string, group);
ABSL_DECLARE_FLAG(int32_t, default_max_tokens);
ABSL_DECLARE_FLAG(std::string, generation_config);
ABSL_DECLARE_FLAG(std::string, override_generation_config);
ABSL_DECLARE_FLAG(std::string, served_model_name);
ABSL_DECLARE_FLAG(int64_t, prefill_chunk);
ABSL_DECLARE_FLAG(int64_t, score_chunk);
ABSL_DECLARE_FLAG(absl::Duration, join_wait);
ABSL_DECLARE_FLAG(absl::Duration, step_timeout);
ABSL_DECLARE_FLAG(absl::Duration, load_timeout);
ABSL_DECLARE_FLAG(absl::Duration, worker_lease);
ABSL_DECLARE_FLAG(absl::Duration, client_keepalive);
ABSL_DECLARE_FLAG(absl::Duration, drain_timeout);
ABSL_DECLARE_FLAG(absl::Duration, abandoned_group_timeout);
ABSL_DECLARE_FLAG(bool, log_requests);
ABSL_DECLARE_FLAG(int64_t, reserve_sequences);
ABSL_DECLARE_FLAG(std::string, gloo_hostname);
ABSL_DECLARE_FLAG(std::string, gloo_interface);
ABSL_DECLARE_FLAG(int32_t, max_batch);
ABSL_DECLARE_FLAG(int32_t, queue_capacity);
ABSL_DECLARE_FLAG(int64_t, max_context);
ABSL_DECLARE_FLAG(int64_t, kv_budget_tokens);
ABSL_DECLARE_FLAG(std::string, preemption);
ABSL_DECLARE_FLAG(std::string, scheduling);
ABSL_DECLARE_FLAG(absl::Duration, kv_budget_recovery);
ABSL_DECLARE_FLAG(absl::Duration, resume_on_group_loss);
ABSL_DECLARE_FLAG(int32_t, speculative_tokens);
ABSL_DECLARE_FLAG(int32_t, prompt_lookup_min);
ABSL_DECLARE_FLAG(int32_t, prompt_lookup_max);
ABSL_DECLARE_FLAG(int32_t, prefix_cache_entries);
ABSL_DECLARE_FLAG(int32_t, guide_cache_entries);
ABSL_DECLARE_FLAG(int32_t, max_message_bytes);
ABSL_DECLARE_FLAG(bool, respawn);
ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_DECLARE_FLAG(std::vector<std::string>, token_ids);
ABSL_DECLARE_FLAG(int32_t, max_new_tokens);
ABSL_DECLARE_FLAG(float, temperature);
ABSL_DECLARE_FLAG(int32_t, top_k);
ABSL_DECLARE_FLAG(float, top_p);
ABSL_DECLARE_FLAG(float, repetition_penalty);
ABSL_DECLARE_FLAG(int64_t, seed);
ABSL_DECLARE_FLAG(llmint8::tools::StopSequences, stop);
ABSL_DECLARE_FLAG(float, frequency_penalty);
ABSL_DECLARE_FLAG(float, min_p);
ABSL_DECLARE_FLAG(int32_t, min_tokens);
ABSL_DECLARE_FLAG(int32_t, priority);
ABSL_DECLARE_FLAG(int32_t, truncate_prompt_tokens);
ABSL_DECLARE_FLAG(llmint8::tools::StopSequences, guided_choice);
ABSL_DECLARE_FLAG(bool, json_object);
ABSL_DECLARE_FLAG(std::string, guided_regex);
ABSL_DECLARE_FLAG(std::string, guided_json);
ABSL_DECLARE_FLAG(float, presence_penalty);
ABSL_DECLARE_FLAG(bool, logprobs);
ABSL_DECLARE_FLAG(int32_t, top_logprobs);
ABSL_DECLARE_FLAG(bool, prompt_logprobs);
ABSL_DECLARE_FLAG(bool, ignore_eos);
ABSL_DECLARE_FLAG(bool, echo_prompt);
ABSL_DECLARE_FLAG(std::vector<std::string>, stop_token_ids);
ABSL_DECLARE_FLAG(std::vector<std::string>, logit_bias);
ABSL_DECLARE_FLAG(double, timeout);

namespace llmint8::tools {

// For a subcommand's --help: "--max-new-tokens = --max_new_tokens" for the first of `names`
// with an underscore (flag names accept dashes too), "" when none has one.
std::string DashedFlagExample(const std::vector<std::string>& names);

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_FLAGS_H_
