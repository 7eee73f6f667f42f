#include "coordinator/http_api.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/log.h"
#include "coordinator/http_connection.h"
#include "coordinator/http_server.h"
#include "coordinator/openai_api.h"
#include "coordinator/openai_chat.h"
#include "coordinator/peer_watch.h"
#include "coordinator/request_log.h"
#include "httplib.h"

namespace llmint8::coordinator {
namespace {

constexpr char kJson[] = "application/json";

// The status an HTTP client gets: the group's refusal (the workers cannot hold the model,
// FAILED_PRECONDITION on gRPC) is the server's state, not the request's fault: Unavailable
// (503, a server error body), whether Admit returned it or a queued request was failed by it.
absl::Status ForHttp(const absl::Status& status, const WorkerGroup* group) {
  if (!status.ok() && status == group->refusal()) return absl::UnavailableError(status.message());
  return status;
}

// A refusal of the request's parameters in the names of the API the client used: the
// validation (coordinator/request_validation.h) speaks GenerateRequest's.
absl::Status InApiNames(const absl::Status& status, const openai::CompletionRequest& request) {
  if (status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kOutOfRange) {
    return status;
  }
  std::string message = absl::StrReplaceAll(
      status.message(), {{"set GenerateRequest.text or GenerateRequest.token_ids.ids",
                          request.chat ? "send messages with content" : "send a prompt"},
                         {"prompt_logprobs or echo_prompt", "echo"},
                         {"max_new_tokens", request.max_tokens_field}});
  return absl::Status(status.code(), message);
}

// `retry_after`: the refusal passes (a full queue, a group lost or shutting down): say when to
// try again (RFC 9110 10.2.3), as clients' retry loops read it.
void SendError(httplib::Response& res, const absl::Status& status, bool retry_after = false) {
  res.status = openai::HttpStatus(status.code());
  if (retry_after) res.set_header("Retry-After", "1");
  res.set_content(openai::ErrorJson(status), kJson);
}

// Whether a generation's refusal passes: the queue was full when it came (RESOURCE_EXHAUSTED
// at admission; later, the workers' refusal of its memory is the request's own), or the group
// was lost or is shutting down (UNAVAILABLE), but not the refusal of a model the workers
// cannot hold, which lasts.
bool Passes(const absl::Status& status, const WorkerGroup* group, bool at_admission) {
  if (status.code() == absl::StatusCode::kResourceExhausted) return at_admission;
  return status.code() == absl::StatusCode::kUnavailable && status != group->refusal();
}

struct Route {
  const char* method;
  const char* path;  // a prefix when it ends in '/'
};
// Every route AddHttpApiRoutes serves, for the answers to the requests it does not; the
// first kGenerationRoutes generate (a call refused for the key is counted as a request).
constexpr int kGenerationRoutes = 2;
constexpr Route kRoutes[] = {{"POST", "/v1/completions"}, {"POST", "/v1/chat/completions"},
                             {"GET", "/v1/models"},       {"GET", "/v1/models/"},
                             {"GET", "/health"},          {"POST", "/tokenize"},
                             {"POST", "/detokenize"}};

bool RouteMatches(const Route& r, const std::string& path) {
  const std::string_view p = r.path;
  return p.ends_with('/') ? path.starts_with(p) && path.size() > p.size() : path == p;
}

bool IsGeneration(const httplib::Request& req) {
  for (int i = 0; i < kGenerationRoutes; ++i) {
    if (req.method == kRoutes[i].method && RouteMatches(kRoutes[i], req.path)) return true;
  }
  return false;
}

// httplib's own refusals (no route, a body over the limit, a request it could not read) with
// an OpenAI error body: 405 and Allow for a served path asked with another method, 413 for a
// body over the limit (an invalid request, not a rate limit), else what httplib said.
void AnswerUnrouted(const httplib::Request& req, httplib::Response& res, int64_t max_body) {
  if (res.status == 413) {  // an invalid request (InvalidArgument's type), not a rate limit
    // httplib caps form bodies at 8 KiB, whatever the limit: curl -d sends JSON as a form.
    const bool form =
        absl::StartsWith(req.get_header_value("Content-Type"), "application/x-www-form-urlencoded");
    res.set_content(
        openai::ErrorJson(absl::InvalidArgumentError(
            form ? std::string("a body sent as a form (Content-Type: "
                               "application/x-www-form-urlencoded, as curl -d sends it) is read up "
                               "to 8 KiB; send it with Content-Type: application/json")
                 : absl::StrCat("the body is over ", max_body,
                                " bytes (the server's --max_message_bytes)"))),
        kJson);
    return;
  }
  std::vector<std::string> allowed;
  for (const Route& r : kRoutes) {
    if (RouteMatches(r, req.path) && req.method != r.method) allowed.push_back(r.method);
  }
  if (!allowed.empty()) {
    res.status = 405;
    res.set_header("Allow", absl::StrJoin(allowed, ", "));
    res.set_content(openai::ErrorJson(absl::InvalidArgumentError(
                        absl::StrCat(req.method, " ", req.path, " is not served; ", req.path,
                                     " takes ", absl::StrJoin(allowed, ", ")))),
                    kJson);
    return;
  }
  if (res.status == 404) {
    std::vector<std::string> routes;
    for (const Route& r : kRoutes) {
      routes.push_back(absl::StrCat(r.method, " ", r.path,
                                    std::string_view(r.path).ends_with('/') ? "{model}" : ""));
    }
    res.set_content(
        openai::ErrorJson(absl::NotFoundError(absl::StrCat(
            req.method, " ", req.path, " is not served; the API: ", absl::StrJoin(routes, ", ")))),
        kJson);
    return;
  }
  res.set_content(openai::ErrorJson(absl::InvalidArgumentError(
                      absl::StrCat("the server could not read the request (HTTP ", res.status,
                                   "); a POST needs a Content-Length"))),
                  kJson);
}

// Streams a request's admitted sequences (one per choice) as server-sent events.
void StreamCompletion(httplib::Response& res, GenerationService* service, const WorkerGroup* group,
                      std::vector<std::shared_ptr<Sequence>> seqs,
                      std::shared_ptr<const openai::CompletionRequest> request, std::string id,
                      int64_t created, std::string model_id) {
  auto followed = std::make_shared<std::atomic<bool>>(false);
  auto shared_seqs =
      std::make_shared<const std::vector<std::shared_ptr<Sequence>>>(std::move(seqs));
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=](size_t, httplib::DataSink& sink) {
        // Whatever throws (out of memory) ends the stream unfinished (no last chunk: the
        // client sees it cut) and cancels the sequences, rather than escape httplib's
        // thread, which would end the process.
        bool recorded = false;  // FollowAll recorded the sequences: not again below
        try {
          followed->store(true);
          // An event made and written, if the client still reads.
          auto send = [&sink](const auto& make) {
            if (!sink.is_writable()) return false;
            const std::string events = make();
            return sink.write(events.data(), events.size());
          };
          std::vector<v1::Usage> usage(shared_seqs->size());  // each choice's so far
          for (size_t i = 0; i < usage.size(); ++i) {
            usage[i].set_prompt_tokens(static_cast<int32_t>((*shared_seqs)[i]->prompt().size()));
          }
          std::vector<openai::ChatStream> chat(shared_seqs->size());
          std::vector<size_t> token_starts(shared_seqs->size());  // logprobs' text_offset
          const absl::Status status = service->FollowAll(
              *shared_seqs,
              [&](size_t index, const v1::GenerateResponse& r) {
                openai::AddToUsage(r, usage[index]);
                if (!request->chat) {
                  return send([&] {
                    return openai::CompletionChunkEvent(*request, index, r, id, created, model_id,
                                                        &token_starts[index], &usage[index]);
                  });
                }
                return send([&] {
                  return openai::ChatChunkEvent(*request, index, r, chat[index], id, created,
                                                model_id, &usage[index]);
                });
              },
              [&sink] { return !sink.is_writable(); });
          recorded = true;
          if (status.ok()) {
            if (request->include_usage) {
              send([&] {
                return openai::UsageEvent(*request, openai::TotalUsage(*request, usage), id,
                                          created, model_id);
              });
            }
            send([] { return std::string(openai::kDoneEvent); });
          } else if (status.code() != absl::StatusCode::kCancelled) {
            // The error, then [DONE] as after any stream (vLLM's order): clients read to it.
            send([&] {
              return absl::StrCat("data: ", openai::ErrorJson(ForHttp(status, group)), "\n\n");
            });
            send([] { return std::string(openai::kDoneEvent); });
          }
          sink.done();
          return true;
        } catch (...) {
          try {  // out of memory again here would still escape: nothing more is tried
            LLMINT8_LOG(ERROR) << "a streamed answer failed";
            if (!recorded) {
              service->AbandonAll(*shared_seqs, absl::InternalError("the stream failed"));
            }
          } catch (...) {
          }
          return false;
        }
      },
      // The client left before the stream began: cancel the queued sequences.
      [=](bool) {
        if (!followed->load()) service->AbandonAll(*shared_seqs);
      });
}

}  // namespace

void AddHttpApiRoutes(httplib::Server& server, GenerationService* service, const WorkerGroup* group,
                      HttpApiOptions options) {
  server.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  // An idle keep-alive connection holds a handler thread: let it go soon.
  server.set_keep_alive_timeout(2);
  // Errors httplib answers itself (no route, a body over the limit) get an OpenAI body too.
  const int64_t max_body = options.max_body_bytes;
  server.set_error_handler([max_body](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty()) AnswerUnrouted(req, res, max_body);
  });
  server.set_exception_handler([](const httplib::Request& req, httplib::Response& res,
                                  std::exception_ptr e) {
    std::string what = "an exception";
    try {
      if (e) std::rethrow_exception(e);
    } catch (const std::exception& x) {
      what = x.what();
    } catch (...) {
    }
    LLMINT8_LOG(ERROR) << "an HTTP " << req.method << " handler failed: " << what;
    res.status = 500;
    res.set_content(
        openai::ErrorJson(absl::InternalError("the server failed on this request; see its log")),
        kJson);
  });
  const ApiKey* key =
      options.api_key != nullptr && options.api_key->required() ? options.api_key : nullptr;
  // Before any body is read: the key, and a length to hold the body to.
  server.set_pre_routing_handler([key, max_body, service](const httplib::Request& req,
                                                          httplib::Response& res) {
    // httplib holds a body to --max_message_bytes only by its Content-Length: on any path.
    if (const std::optional<BodyRefusal> refused = RefuseUnboundedBody(req, max_body, res);
        refused.has_value()) {
      res.set_content(openai::ErrorJson(absl::InvalidArgumentError(absl::StrCat(
                          refused->message,
                          refused->status == 413 ? " (the server's --max_message_bytes)" : ""))),
                      kJson);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (key == nullptr ||
        (req.path.rfind("/v1/", 0) != 0 && req.path != "/tokenize" && req.path != "/detokenize")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const absl::Status auth = key->Check(req.get_header_value("Authorization"));
    if (auth.ok()) return httplib::Server::HandlerResponse::Unhandled;
    if (IsGeneration(req)) {
      service->RecordRefused(auth, req.get_header_value("X-Request-Id"));  // key guesses show
    }
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer");
    CloseConnectionAfterResponse(res);  // its body is left unread
    res.set_content(openai::ErrorJson(auth), kJson);
    return httplib::Server::HandlerResponse::Handled;
  });
  auto counter = std::make_shared<std::atomic<uint64_t>>(0);
  const openai::ModelCard card{options.model_id, options.max_context, options.created};
  const openai::RequestDefaults defaults = options.defaults;
  const int64_t vocab_size = options.vocab_size;

  std::function<bool()> serving = options.serving;
  if (!serving) serving = [group] { return group->ready(); };
  server.Get("/health", [serving](const httplib::Request&, httplib::Response& res) {
    const bool up = serving();
    res.status = up ? 200 : 503;
    res.set_content(up ? R"({"status":"ok"})" : R"({"status":"unavailable"})", kJson);
  });
  server.Get("/v1/models", [card](const httplib::Request&, httplib::Response& res) {
    res.set_content(openai::ModelsJson(card), kJson);
  });
  server.Get("/v1/models/(.+)", [card](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != card.id) {
      return SendError(res, absl::NotFoundError(absl::StrCat("the model '", req.matches[1].str(),
                                                             "' is not served; this "
                                                             "server serves '",
                                                             card.id, "'")));
    }
    res.set_content(openai::ModelJson(card), kJson);
  });
  // vLLM's tokenizer routes (coordinator/openai_api.h).
  const Tokenizer* tokenizer = service->tokenizer();
  const ModelLimits limits = service->limits();
  const absl::Status no_tokenizer = absl::FailedPreconditionError(
      "this model was served without a tokenizer (no vocab.json/merges.txt)");
  server.Post("/tokenize", [=](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<openai::TokenizeRequest> parsed =
        openai::ParseTokenizeRequest(req.body, card.id);
    if (!parsed.ok()) return SendError(res, parsed.status());
    if (tokenizer == nullptr) return SendError(res, no_tokenizer);
    if (absl::Status fits = ValidateTextLength(parsed->text.size(), limits, "text to tokenize");
        !fits.ok()) {
      return SendError(res, fits);
    }
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(
        parsed->text, parsed->add_special_tokens && tokenizer->bos_id().has_value());
    if (!ids.ok()) return SendError(res, absl::InvalidArgumentError(ids.status().message()));
    res.set_content(openai::TokenizeJson(*ids, card.max_context), kJson);
  });
  server.Post("/detokenize", [=](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<std::vector<int32_t>> ids = openai::ParseDetokenizeRequest(req.body, card.id);
    if (!ids.ok()) return SendError(res, ids.status());
    if (tokenizer == nullptr) return SendError(res, no_tokenizer);
    // Ids of the model that the tokenizer lacks (its vocabulary's padding) decode to nothing,
    // as in the stream and as Hugging Face's decode does; past the model's vocabulary: 400.
    std::vector<int32_t> known;
    known.reserve(ids->size());
    for (const int32_t id : *ids) {
      if (tokenizer->HasId(id)) {
        known.push_back(id);
      } else if (id >= vocab_size) {
        return SendError(res, absl::InvalidArgumentError(absl::StrCat(
                                  "token id ", id, " is outside the model's vocabulary of ",
                                  vocab_size, " ids")));
      }
    }
    absl::StatusOr<std::string> text = tokenizer->Decode(known);
    if (!text.ok()) return SendError(res, absl::InvalidArgumentError(text.status().message()));
    res.set_content(openai::DetokenizeJson(*text), kJson);
  });
  // The two generation routes share the admission, streaming and answer code.
  auto complete = [=](const httplib::Request& req, httplib::Response& res,
                      openai::CompletionRequest parsed) {
    auto request = std::make_shared<const openai::CompletionRequest>(std::move(parsed));
    std::string id = absl::StrCat(request->chat ? "chatcmpl-" : "cmpl-", card.created, "-",
                                  counter->fetch_add(1));
    // The client's request id (X-Request-Id), else the completion's: in the request log and
    // sent back.
    const std::string client_id = req.get_header_value(kRequestIdKey);
    const std::string request_id = SanitizeRequestId(client_id.empty() ? id : client_id);
    res.set_header(kRequestIdKey, request_id);
    absl::StatusOr<std::vector<std::shared_ptr<Sequence>>> seqs =
        service->AdmitAll(request->generate, request->prompts, request->n, absl::InfiniteFuture(),
                          request_id, request->fill_context);
    if (!seqs.ok()) {
      return SendError(res, ForHttp(InApiNames(seqs.status(), *request), group),
                       Passes(seqs.status(), group, /*at_admission=*/true));
    }
    const int64_t created = absl::ToUnixSeconds(absl::Now());
    if (request->stream) {
      return StreamCompletion(res, service, group, *std::move(seqs), request, std::move(id),
                              created, card.id);
    }
    std::vector<std::vector<v1::GenerateResponse>> choices(seqs->size());
    // Nothing is written before the end: whether the client is still there is asked of the
    // kernel's connection table, so a client that gave up frees its batch slots at once.
    PeerWatch peer(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    const absl::Status status = service->FollowAll(
        *seqs,
        [&choices](size_t index, const v1::GenerateResponse& r) {
          choices[index].push_back(r);
          return true;
        },
        [&peer] { return peer.Gone(); });
    if (!status.ok()) {
      return SendError(res, ForHttp(status, group), Passes(status, group, /*at_admission=*/false));
    }
    res.set_content(request->chat
                        ? openai::ChatCompletionJson(*request, choices, id, created, card.id)
                        : openai::CompletionJson(*request, choices, id, created, card.id),
                    kJson);
  };
  server.Post("/v1/completions", [=](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<openai::CompletionRequest> parsed =
        openai::ParseCompletionRequest(req.body, card.id, defaults);
    if (!parsed.ok()) return SendError(res, parsed.status());
    complete(req, res, *std::move(parsed));
  });
  server.Post("/v1/chat/completions", [=](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<openai::CompletionRequest> parsed =
        openai::ParseChatCompletionRequest(req.body, card.id, defaults);
    if (!parsed.ok()) return SendError(res, parsed.status());
    // The messages become a text prompt: without a tokenizer there is nothing to run.
    if (tokenizer == nullptr) return SendError(res, no_tokenizer);
    complete(req, res, *std::move(parsed));
  });
}

}  // namespace llmint8::coordinator
