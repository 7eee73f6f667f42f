# forward ops: target_sources(llmint8_kernels PRIVATE ...) and tests.
