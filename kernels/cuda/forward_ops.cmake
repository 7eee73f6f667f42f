# Forward ops on the GPU (fp16 activations in memory, fp32 math), the CUDA twins of
# kernels/{layer_norm,activation,embedding,attention,softmax}.h: LayerNorm with the fused
# residual add, bias + ReLU/GELU, vocab-slice and position embeddings, causal attention over a
# paged KV cache, softmax / log-softmax. Included at the end of kernels/cuda/CMakeLists.txt.
target_sources(llmint8_kernels_cuda PRIVATE
  activation_cuda.cu
  attention_cuda.cu
  embedding_cuda.cu
  layer_norm_cuda.cu
  softmax_cuda.cu)

# GPU tests vs the CPU references; they GTEST_SKIP when no CUDA device is usable.
foreach(_test layer_norm_cuda_test activation_cuda_test embedding_cuda_test attention_cuda_test
              softmax_cuda_test)
  llmint8_cc_test(NAME ${_test} SRCS ${_test}.cc cuda_test_util.cc
                  DEPS llmint8::kernels_cuda llmint8::kernels
                  LABELS gpu kernels)
endforeach()
