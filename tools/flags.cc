#include "tools/flags.h"

#include <algorithm>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, listen, "",
          "host:port to serve on (coordinator / serve default 0.0.0.0:50051; worker default "
          "127.0.0.1:50061; port 0 picks a free port)");
ABSL_FLAG(std::string, coordinator, "",
          "generate / loadtest / status: the coordinator to call (default 127.0.0.1:50051; "
          "they send the API key in $LLMINT8_API_KEY when it is set). worker: the "
          "coordinator's rendezvous address, overriding the one it sends");
ABSL_FLAG(std::string, http_listen, "",
          "host:port for the OpenAI-compatible HTTP API (coordinator / serve): POST "
          "/v1/completions and /v1/chat/completions (streamed or not), GET /v1/models[/{id}], "
          "GET /health, POST /tokenize and /detokenize; empty: off");
ABSL_FLAG(std::string, rendezvous_listen, "",
          "coordinator: host:port of a second gRPC port serving only the workers' Rendezvous "
          "(group formation), so a network policy can keep it to the workers; --listen then "
          "serves clients only. Empty: --listen serves both. Point --advertise at it");
ABSL_FLAG(std::string, metrics_listen, "",
          "host:port for Prometheus metrics at http://<host:port>/metrics (coordinator / serve; "
          "empty: off; port 0 picks a free port)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain. coordinator / serve: the server's, for TLS on the gRPC port and "
          "the HTTP API (with --tls_key_file); the coordinator presents it to workers under "
          "mutual TLS (--worker_tls_ca_file); serve's workers then take only its coordinator's "
          "calls, through a certificate serve makes for that link. generate / loadtest / "
          "worker: this client's, for a coordinator that asks for client certificates; worker: "
          "also its Worker port's, with --tls_client_ca_file");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file (unencrypted)");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "coordinator / serve: PEM roots; clients (and the coordinator's workers, at its "
          "rendezvous; serve's present a link certificate of its own) must present a "
          "certificate they signed (mutual TLS). "
          "worker: its Worker port serves TLS with --tls_cert_file / --tls_key_file and takes "
          "only callers (the coordinator) with a certificate these roots signed");
ABSL_FLAG(std::string, worker_tls_ca_file, "",
          "coordinator: PEM roots of the workers' certificates: drive their Worker service over "
          "TLS (each certificate must name the host --workers dials), presenting --tls_cert_file "
          "to workers that ask for a client certificate (their --tls_client_ca_file)");
ABSL_FLAG(std::string, health_listen, "",
          "worker: host:port of a plaintext port serving grpc.health.v1 alone (liveness and "
          "readiness, as the Worker port), for Kubernetes probes, which do not speak TLS, when "
          "the Worker port requires client certificates; empty: off");
ABSL_FLAG(std::string, tls_ca_file, "",
          "generate / loadtest / worker: PEM roots of the coordinator's certificate: call it over "
          "TLS. serve: what its workers trust (default: --tls_cert_file itself, for a "
          "self-signed one)");
ABSL_FLAG(bool, check_flags, false,
          "serve / coordinator / worker: check the flags and their values (not the files they "
          "name), say OK and exit 0, or say what is wrong and exit 1 (2 for an unknown flag or a "
          "value of the wrong type); starts nothing");
ABSL_FLAG(std::string, advertise, "",
          "host:port workers reach this coordinator at (default 127.0.0.1:<port>)");
ABSL_FLAG(std::vector<std::string>, workers, {},
          "comma-separated worker addresses, in rank order (coordinator)");
ABSL_FLAG(int32_t, tp, 2, "tensor-parallel degree: number of local worker processes (serve)");
ABSL_FLAG(int32_t, worker_base_port, 0,
          "serve: worker i listens on 127.0.0.1:<worker_base_port + i> (0: the listen port + "
          "10)");
ABSL_FLAG(std::string, model, "",
          "model directory (config.json + *.safetensors [+ vocab.json, merges.txt]) or "
          "synthetic:<preset>[,layers=N,hidden=N,heads=N,ffn=N,vocab=N,positions=N,seed=N] "
          "(serve / coordinator default: the bundled models/opt-sotu-cpu)");
ABSL_FLAG(std::string, tokenizer, "",
          "tokenizer.json, or a directory with vocab.json + merges.txt (default: the model "
          "directory's, if any)");
ABSL_FLAG(std::string, override_generation_config, "",
          "generation_config.json fields that replace the model's (or stand alone with "
          "--generation_config=none), as JSON, e.g. '{\"temperature\": 0.7, \"min_p\": 0.05}'");
ABSL_FLAG(std::string, served_model_name, "",
          "the model's id in the HTTP API (/v1/models, a request's \"model\", the answers' "
          "\"model\"), e.g. facebook/opt-66b (default: the --model directory's name)");
ABSL_FLAG(std::string, dtype, "",
          "weights: fp16, int8 (LLM.int8()) or fp32; unset: int8 for a pre-quantized checkpoint "
          "(llmint8 quantize), fp16 for anything else");
ABSL_FLAG(float, threshold, 6.0f,
          "LLM.int8() outlier threshold (int8 only; 0 disables the decomposition)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(int32_t, cuda_device, -1,
          "worker: CUDA device index (-1: the rank the coordinator assigns, modulo the GPUs "
          "this process sees)");
ABSL_FLAG(std::string, backend, "",
          "collectives between workers: gloo or nccl (default: gloo on cpu, nccl on cuda); "
          "local: one worker alone, no collectives");
ABSL_FLAG(std::string, memory_limit, "0",
          "bytes each worker may use: 16Gi or 16GiB (powers of 1024), 16G or 16GB (powers "
          "of 1000, as Kubernetes reads them), 512Mi, a number of bytes; 0: no limit (the worker "
          "plans with its share of the free memory)");
ABSL_FLAG(std::string, group, "all",
          "coordinator / serve: which workers form the group, planned from the memory each "
          "reports: all (every worker; refused when they cannot hold the model) or smallest "
          "(the fewest that hold it; the rest stay idle)");
ABSL_FLAG(absl::Duration, client_keepalive, absl::Seconds(30),
          "coordinator / serve: ping a client connection that has requests open after this "
          "long without a frame from it; one that does not answer within 10 s (or this, if "
          "less) is cut off and its requests end, freeing their queue slots and sequences (a "
          "client host that vanished sends no reset). Between 1s and 1h");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(20),
          "coordinator / serve: on SIGTERM / SIGINT, serve the queued and running requests for "
          "up to this long (health NOT_SERVING, new requests UNAVAILABLE), then stop. worker: "
          "let its group's running requests finish for up to this long (the coordinator admits "
          "no new ones), then stop");
ABSL_FLAG(absl::Duration, abandoned_group_timeout, absl::Seconds(60),
          "worker: drop a group (its weights and KV cache go back) whose coordinator has been "
          "silent for its lease and this long more: it died or was cut off, and nobody will "
          "step or release the group; inf: keep it until the next LoadShard");
ABSL_FLAG(bool, log_requests, true,
          "coordinator / serve: log a line per finished request (status, finish reason, token "
          "counts, queue / first-token / total time; never the prompt or the text)");
ABSL_FLAG(absl::Duration, join_wait, absl::Seconds(3),
          "coordinator / serve with --group=smallest: how long forming the group waits for "
          "workers that do not answer; after it the group forms from those that did when they "
          "hold the model (an idle worker replaces a lost one). inf: always wait for all");
ABSL_FLAG(absl::Duration, worker_lease, absl::Seconds(3),
          "coordinator / serve: how long a worker stays this coordinator's after its last "
          "contact; until then a second coordinator cannot take it (at least 2s: probes renew "
          "it every 250ms and may wait 1s). A stopping coordinator ends it at once");
ABSL_FLAG(absl::Duration, step_timeout, absl::Seconds(120),
          "coordinator / serve: the longest one batch step (or release) may take on the workers; "
          "a step past it breaks the group (the workers reload the model). Raise it for long "
          "prompts on slow CPUs, or lower --prefill_chunk");
ABSL_FLAG(absl::Duration, load_timeout, absl::Minutes(30),
          "coordinator / serve: the longest the workers may take to load the model when the group "
          "forms; past it the coordinator gives up and tries again");
ABSL_FLAG(int64_t, reserve_sequences, 1,
          "coordinator / serve: the group plan keeps KV-cache and activation room for this "
          "many sequences of --max_context tokens per worker");
ABSL_FLAG(std::string, gloo_hostname, "127.0.0.1",
          "worker: the address other workers reach this one's Gloo transport at (this host's "
          "address on the network between the workers)");
ABSL_FLAG(std::string, gloo_interface, "",
          "worker: network interface whose address Gloo binds to (e.g. eth0; overrides "
          "--gloo_hostname)");
ABSL_FLAG(int32_t, max_batch, 32, "sequences per step (continuous batching)");
ABSL_FLAG(int32_t, queue_capacity, 256,
          "requests that may wait for a batch slot; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_context, 0,
          "longest prompt + generation in tokens (0: the model's max_position_embeddings)");
ABSL_FLAG(int32_t, default_max_tokens, 0,
          "HTTP chat completions without max_completion_tokens or max_tokens: reply with at "
          "most this many tokens (0: the model's generation_config.json max_new_tokens, else to "
          "the end of the context, as OpenAI does; with --preemption=off each such request "
          "reserves KV cache room for its whole limit while it runs)");
ABSL_FLAG(std::string, generation_config, "auto",
          "the model's generation_config.json: \"auto\" (the model directory's, if it has "
          "one), \"none\", or a file or a directory holding one. Its eos_token_id list ends "
          "every sequence, beside config.json's; its temperature, top_k, top_p, min_p, "
          "repetition_penalty and "
          "max_new_tokens (do_sample false: greedy) are the defaults of HTTP API requests that "
          "leave them out (gRPC requests keep their own: GetModelInfo lists these)");
ABSL_FLAG(int64_t, prefill_chunk, 512,
          "prompt tokens of one request per step: longer prompts are prefilled over several "
          "steps while the running streams keep decoding (0: whole prompts in one step)");
ABSL_FLAG(int64_t, score_chunk, 256,
          "prompt tokens per step of the prompts being scored (prompt_logprobs, OpenAI echo), "
          "which need every position's logits: the workers keep room for this many rows more "
          "than max_batch");
ABSL_FLAG(int64_t, kv_budget_tokens, 0,
          "KV cache positions the running sequences may hold, summed (0: what the workers say "
          "they hold beyond the weights, at most max_batch * context)");
ABSL_FLAG(absl::Duration, kv_budget_recovery, absl::Minutes(1),
          "after the workers refused a step for memory (they hold less than the KV budget) and "
          "the budget came down, it goes back up once this long passed without another refusal; "
          "a refusal after that doubles the wait (up to 64x) (0: it stays down until the worker "
          "group re-forms)");
ABSL_FLAG(std::string, preemption, "recompute",
          "recompute: admit requests on the KV positions sequences hold and, when the running "
          "ones outgrow the budget, preempt the last admitted (their cache dropped, prefilled "
          "again later; the same output on CPU workers); off: reserve prompt + max_tokens for each "
          "at admission (never preempted, fewer at once)");
ABSL_FLAG(std::string, scheduling, "fcfs",
          "fcfs: admit requests first come, first served (a request's priority must be 0); "
          "priority: by each request's priority (lower first, then first come), and with "
          "--preemption=recompute a request that finds no room preempts running ones of a lower "
          "priority (vLLM's --scheduling-policy)");
ABSL_FLAG(absl::Duration, resume_on_group_loss, absl::ZeroDuration(),
          "0: a running request whose worker group is lost ends UNAVAILABLE (the client "
          "retries); e.g. 30s: it waits up to that long for the group to re-form, then its "
          "prompt and output so far are prefilled again and it goes on (needs "
          "--preemption=recompute)");
ABSL_FLAG(int32_t, speculative_tokens, 0,
          "speculative decoding by prompt lookup: up to this many draft tokens a step for a "
          "generating request whose last tokens occurred before in its prompt or output (those "
          "that followed them), verified by the workers in the same step; the output is the "
          "same (0: off; at most 16; not for guided requests)");
ABSL_FLAG(int32_t, prompt_lookup_min, 2,
          "--speculative_tokens: the fewest last tokens looked up in the prompt and output");
ABSL_FLAG(int32_t, prompt_lookup_max, 4,
          "--speculative_tokens: the most last tokens looked up (the longest match wins)");
ABSL_FLAG(int32_t, guide_cache_entries, 16,
          "guided_regex patterns and guided_json schemas kept compiled, with the token masks "
          "their requests found, for later requests that send the same text (0: each request "
          "compiles its own; at most 1024); each kept guide holds its automaton (770 states of "
          "1 KiB for the pydantic-style schema of output_constraint_benchmark; ~24 MiB at most "
          "by the limits, for a pattern built to blow up)");
ABSL_FLAG(int32_t, prefix_cache_entries, 256,
          "finished sequences whose KV cache the workers keep, so that later prompts starting "
          "with the same tokens (at least 16) copy it instead of prefilling them; they use KV "
          "room no running sequence needs and give it back first; prompts start from "
          "running sequences' prompts alike (0: off, but for the n choices of one prompt)");
ABSL_FLAG(int32_t, max_message_bytes, 4 << 20,
          "largest request the coordinator accepts (bigger: RESOURCE_EXHAUSTED)");
ABSL_FLAG(bool, respawn, true, "serve: restart a worker process that exits");
ABSL_FLAG(std::string, prompt, "",
          "generate: the prompt text; loadtest: every request's prompt (instead of random "
          "token ids)");
ABSL_FLAG(std::vector<std::string>, token_ids, {},
          "generate: the prompt as comma-separated token ids (instead of --prompt)");
ABSL_FLAG(int32_t, max_new_tokens, 32, "generate / loadtest: tokens to generate");
ABSL_FLAG(float, temperature, 0.0f,
          "generate / loadtest: 0 is greedy; > 0 samples (loadtest: request i seeded --seed + i)");
ABSL_FLAG(int32_t, top_k, 0, "generate / loadtest: keep the k most likely tokens (0: off)");
ABSL_FLAG(float, top_p, 1.0f, "generate / loadtest: nucleus sampling mass in (0, 1]");
ABSL_FLAG(float, repetition_penalty, 1.0f,
          "generate: > 1 discourages repeating tokens of the prompt and output (1.1 to 1.3 is "
          "usual; 1: off)");
ABSL_FLAG(int64_t, seed, -1,
          "generate: sampler seed (-1: chosen by the server); loadtest: seed of the random "
          "prompts and, with --temperature, of the samplers (-1: a new one each run, named in "
          "the report)");
ABSL_FLAG(llmint8::tools::StopSequences, stop, {},
          "generate: comma-separated stop sequences; \\, is a comma inside one, and \\n, \\t, "
          "\\\\ are read as in C (--stop='\\n\\n,\\, and')");
ABSL_FLAG(float, frequency_penalty, 0.0f,
          "generate: subtracted from a token's logit once per time it was generated, in [-2, 2] "
          "(OpenAI semantics; 0: off)");
ABSL_FLAG(float, presence_penalty, 0.0f,
          "generate: subtracted from the logit of every token generated so far, in [-2, 2] "
          "(OpenAI semantics; 0: off)");
ABSL_FLAG(float, min_p, 0.0f,
          "generate: drop tokens less likely than min_p times the likeliest, in [0, 1] (0: off)");
ABSL_FLAG(int32_t, truncate_prompt_tokens, 0,
          "generate: keep only the prompt's last N tokens (0: all of it)");
ABSL_FLAG(int32_t, min_tokens, 0,
          "generate: no end (end-of-sequence token, stop sequences) before this many tokens");
ABSL_FLAG(int32_t, priority, 0,
          "generate, loadtest: the requests' priority, lower first (a server started with "
          "--scheduling=priority; others take only 0)");
ABSL_FLAG(bool, logprobs, false, "generate: print each token's log-probability");
ABSL_FLAG(bool, prompt_logprobs, false,
          "generate: print each prompt token's log-probability given those before it (with "
          "--max_new_tokens=0: only score the prompt)");
ABSL_FLAG(int32_t, top_logprobs, 0,
          "generate: also print the N most likely tokens at each position (0 to 20)");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep going past the end-of-sequence token");
ABSL_FLAG(bool, echo_prompt, false,
          "generate: print the prompt's text before the generated text (with "
          "--max_new_tokens=0: only the prompt, as the server tokenized it)");
ABSL_FLAG(llmint8::tools::StopSequences, guided_choice, {},
          "generate, loadtest: the text is one of these comma-separated choices (guided "
          "decoding; \\, "
          "is a comma inside one, as in --stop)");
ABSL_FLAG(std::string, guided_regex, "",
          "generate, loadtest: the text is one whole match of this regular expression (guided "
          "decoding; "
          "the syntax: coordinator/guided_regex.h)");
ABSL_FLAG(std::string, guided_json, "",
          "generate, loadtest: the text is one JSON value valid under this JSON Schema (guided "
          "decoding; "
          "@FILE reads it from a file; the keywords served: coordinator/json_schema.h)");
ABSL_FLAG(bool, json_object, false,
          "generate, loadtest: the text is one JSON object (guided decoding, the OpenAI API's "
          "JSON mode)");
ABSL_FLAG(std::vector<std::string>, stop_token_ids, {},
          "generate: comma-separated token ids that end the generation when sampled (at most 64)");
ABSL_FLAG(std::vector<std::string>, logit_bias, {},
          "generate: comma-separated ID:BIAS pairs added to those tokens' logits (bias in "
          "[-100, 100]; -100 all but bans a token)");
ABSL_FLAG(double, timeout, 0, "generate: deadline in seconds (0: none)");

namespace llmint8::tools {

std::string DashedFlagExample(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (name.find('_') == std::string::npos) continue;
    std::string dashed = name;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    return "--" + dashed + " = --" + name;
  }
  return "";
}

}  // namespace llmint8::tools
