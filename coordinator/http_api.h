// The coordinator's OpenAI-compatible HTTP API (--http_listen), on cpp-httplib:
//   POST /v1/completions  coordinator/openai_api.h; "stream": true answers with server-sent
//                         events ("data: {chunk}" per token, then "data: [DONE]"), else one
//                         JSON body;
//   POST /v1/chat/completions   coordinator/openai_chat.h, the same way (needs a tokenizer);
//   GET  /v1/models       the served model;
//   POST /tokenize, /detokenize   vLLM's: text to token ids with the server's tokenizer, and
//                         back (coordinator/openai_api.h);
//   GET  /health          200 while serving (the worker group is ready, not draining), else
//                         503.
// A request the service refuses (bad fields, queue full, group refused) gets the HTTP status
// of its error before any stream starts (a group the workers cannot hold: 503); an error after a
// stream started (a worker lost, the server shutting down) is a "data: {"error": ...}" event,
// then "data: [DONE]" as after any stream (vLLM's order). A client that
// disconnects has its sequences cancelled: a streaming one when a write fails, a non-streamed one
// when the kernel's connection table says it left (coordinator/peer_watch.h). Bodies over
// max_body_bytes get 413, unknown routes 404, both with an OpenAI error body. With an API key, /v1/
// routes and the tokenizer routes without "Authorization: Bearer <key>" get 401.
#ifndef LLMINT8_COORDINATOR_HTTP_API_H_
#define LLMINT8_COORDINATOR_HTTP_API_H_

#include <cstdint>
#include <functional>
#include <string>

#include "coordinator/api_key.h"
#include "coordinator/generation_service.h"
#include "coordinator/openai_api.h"
#include "coordinator/worker_group.h"

namespace httplib {
class Server;
}

namespace llmint8::coordinator {

struct HttpApiOptions {
  std::string model_id;  // --served_model_name, else openai::ModelId of --model
  int64_t max_context = 0;
  // The model's vocabulary (config.json vocab_size): /detokenize drops the ids below it that the
  // tokenizer has no token for (the padding rows a model can sample), as the stream does.
  int64_t vocab_size = 0;
  int64_t max_body_bytes = 4 << 20;
  int64_t created = 0;  // unix seconds, the server's start
  // /health's answer (thread-safe); unset: the group is ready.
  std::function<bool()> serving;
  // Required on /v1/ routes when set and non-empty (coordinator/api_key.h); outlives the routes.
  const ApiKey* api_key = nullptr;
  // What the fields a request leaves out get: OpenAI's defaults, or the model's
  // generation_config.json's (coordinator/generation_defaults.h).
  openai::RequestDefaults defaults;
};

// Registers the routes above; `service` and `group` outlive `server`'s handlers.
void AddHttpApiRoutes(httplib::Server& server, GenerationService* service, const WorkerGroup* group,
                      HttpApiOptions options);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_HTTP_API_H_
