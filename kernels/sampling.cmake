# sampling ops: greedy / temperature / top-k / top-p / seeded sampling and logprobs of rank 0's
# logits, one row per sequence of a decode step.
target_sources(llmint8_kernels PRIVATE sampling.cc)
llmint8_cc_test(NAME sampling_test SRCS sampling_test.cc DEPS llmint8::kernels LABELS kernels)
