// Instances of the TQ decode flash-attention kernel with K q8_0 (one file per K type: parallel builds).
#define TQ_FA_DEFINE_KERNELS
#include "tq-fattn.cuh"

TQ_FA_DECL_ALL_D(GGML_TYPE_Q8_0, GGML_TYPE_TQ2_5)
TQ_FA_DECL_ALL_D(GGML_TYPE_Q8_0, GGML_TYPE_TQ3_5)
