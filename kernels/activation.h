// Elementwise activations of OPT's FFN (CPU, fp32, in place).
//   Relu: max(x, 0), and 0 for NaN (torch keeps NaN; the residual stream still carries it)
//   Gelu: the exact erf form, HF ACT2FN["gelu"]: 0.5 * x * (1 + erf(x / sqrt(2)))
// Thread-compatible; no allocation.
#ifndef LLMINT8_KERNELS_ACTIVATION_H_
#define LLMINT8_KERNELS_ACTIVATION_H_

#include <span>

namespace llmint8::kernels {

void ReluInPlace(std::span<float> x);
void GeluInPlace(std::span<float> x);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_ACTIVATION_H_
