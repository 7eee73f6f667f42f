# service: the Generation service, scheduler (continuous batching), worker group, rendezvous.
llmint8_cc_library(NAME coordinator_metrics SRCS metrics.cc metrics_server.cc http_server.cc
    http_connection.cc lingering_close.cc
  DEPS llmint8::proto llmint8::host_port llmint8::common llmint8::tls prometheus-cpp::core
       PkgConfig::HTTPLIB OpenSSL::SSL
       absl::status absl::statusor
       absl::strings absl::time Threads::Threads)
llmint8_cc_test(NAME metrics_test SRCS metrics_test.cc
                DEPS llmint8::coordinator_metrics LABELS service)

llmint8_cc_library(
  NAME coordinator_service
  SRCS
    api_key.cc
    coordinator_server.cc
    generation_defaults.cc
    generation_service.cc
    group_decision.cc
    guide_cache.cc
    guided_regex.cc
    http_api.cc
    json_schema.cc
    json_string_pattern.cc
    number_regex.cc
    openai_api.cc
    openai_chat.cc
    openai_fields.cc
    output_constraint.cc
    parse_error_interceptor.cc
    peer_watch.cc
    prefix_cache.cc
    prompt_lookup.cc
    regex_parser.cc
    rendezvous_service.cc
    request_log.cc
    request_validation.cc
    scheduler.cc
    scheduler_step.cc
    sequence.cc
    wait_queue.cc
    tokenizer_text_stream.cc
    stop_matcher.cc
    worker_group.cc
  DEPS
    llmint8::proto llmint8::grpc_status llmint8::group_epoch llmint8::model_spec llmint8::tokenizer
    llmint8::comm_core
    llmint8::planner llmint8::byte_size llmint8::log llmint8::common llmint8::health llmint8::coordinator_metrics
    gRPC::grpc++ gRPC::grpc++_reflection PkgConfig::HTTPLIB nlohmann_json::nlohmann_json
    absl::cleanup absl::random_random absl::synchronization absl::time absl::strings
    absl::flat_hash_set)

llmint8_cc_test(NAME output_constraint_test SRCS output_constraint_test.cc
                DEPS llmint8::coordinator_service nlohmann_json::nlohmann_json LABELS service)
if(TARGET llmint8_output_constraint_test)
  target_compile_definitions(llmint8_output_constraint_test PRIVATE
                             LLMINT8_DEFAULT_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endif()
llmint8_cc_test(NAME guided_regex_test SRCS guided_regex_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME guide_cache_test SRCS guide_cache_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME json_string_pattern_test SRCS json_string_pattern_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME number_regex_test SRCS number_regex_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME json_schema_test SRCS json_schema_test.cc
                DEPS llmint8::coordinator_service nlohmann_json::nlohmann_json LABELS service)
llmint8_cc_binary(NAME output_constraint_benchmark SRCS output_constraint_benchmark.cc
                  DEPS llmint8::coordinator_service benchmark::benchmark)
target_compile_definitions(llmint8_output_constraint_benchmark PRIVATE
                           LLMINT8_DEFAULT_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
llmint8_cc_test(NAME stop_matcher_test SRCS stop_matcher_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME sequence_test SRCS sequence_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME wait_queue_test SRCS wait_queue_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME tokenizer_text_stream_test SRCS tokenizer_text_stream_test.cc
                DEPS llmint8::coordinator_service LABELS service tokenizer)
if(TARGET llmint8_tokenizer_text_stream_test)
  target_compile_definitions(llmint8_tokenizer_text_stream_test PRIVATE
                             LLMINT8_DEFAULT_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endif()
llmint8_cc_test(NAME prompt_lookup_test SRCS prompt_lookup_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME prefix_cache_test SRCS prefix_cache_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_binary(NAME prefix_cache_benchmark SRCS prefix_cache_benchmark.cc
                  DEPS llmint8::coordinator_service benchmark::benchmark)
llmint8_cc_test(NAME peer_watch_test SRCS peer_watch_test.cc
                DEPS llmint8::coordinator_service LABELS service)
# The scheduler against an in-memory group that checks every step as a worker does.
llmint8_cc_test(NAME scheduler_test SRCS scheduler_test.cc fake_step_group.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME coordinator_server_test SRCS coordinator_server_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME rendezvous_service_test SRCS rendezvous_service_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME api_key_test SRCS api_key_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME generation_defaults_test SRCS generation_defaults_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME openai_api_test SRCS openai_api_test.cc
                DEPS llmint8::coordinator_service nlohmann_json::nlohmann_json LABELS service)
llmint8_cc_test(NAME openai_chat_test SRCS openai_chat_test.cc
                DEPS llmint8::coordinator_service nlohmann_json::nlohmann_json LABELS service)
llmint8_cc_test(NAME request_log_test SRCS request_log_test.cc
                DEPS llmint8::coordinator_service LABELS service)
llmint8_cc_test(NAME request_validation_test SRCS request_validation_test.cc
                DEPS llmint8::coordinator_service LABELS service)
# The coordinator's use of the planner at group formation (labels: service, scaleout).
llmint8_cc_test(NAME group_decision_test SRCS group_decision_test.cc
                DEPS llmint8::coordinator_service llmint8::planner LABELS service scaleout)
# The plan against a loaded CPU worker given exactly what it asks.
llmint8_cc_test(NAME planner_worker_test SRCS planner_worker_test.cc
                DEPS llmint8::coordinator_service llmint8::planner llmint8::model
                LABELS service scaleout)
llmint8_cc_test(NAME http_server_test SRCS http_server_test.cc
                DEPS llmint8::coordinator_metrics llmint8::test_certs LABELS service)
