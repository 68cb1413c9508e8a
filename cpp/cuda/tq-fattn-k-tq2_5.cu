// Instances of the TQ decode flash-attention kernel with K tq2_5 (one file per K type: parallel builds).
#define TQ_FA_DEFINE_KERNELS
#include "tq-fattn.cuh"

TQ_FA_DECL_ALL_D(GGML_TYPE_TQ2_5, GGML_TYPE_TQ2_5)
TQ_FA_DECL_ALL_D(GGML_TYPE_TQ2_5, GGML_TYPE_TQ3_5)
TQ_FA_DECL_ALL_D(GGML_TYPE_TQ2_5, GGML_TYPE_F16)
TQ_FA_DECL_ALL_D(GGML_TYPE_TQ2_5, GGML_TYPE_Q8_0)
