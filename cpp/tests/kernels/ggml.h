// The few ggml.h declarations that the TQ CPU kernels (cpp/ggml/ggml-cpu-tq.c) use, so that
// test-tq-kernels.c can build them with the C core alone: natively, or cross-compiled for a CPU
// this machine does not have (scripts/check-kernels.sh). Not a copy of ggml: the type numbers
// are placeholders, and the kernels only compare them.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGML_API

enum ggml_type { GGML_TYPE_Q4_0 = 2, GGML_TYPE_TQ2_5 = 100, GGML_TYPE_TQ3_5 = 101 };

typedef uint16_t ggml_fp16_t;

float ggml_fp16_to_fp32(ggml_fp16_t h);
