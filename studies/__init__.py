"""Studies: TurboQuant's open choices measured on real K/V rows (docs/ablation.md).

  ablation          variants of the quantizer, judged by the attention-output error
  kvsim             end-to-end KLD with K/V as a cache variant gives them back (numpy forward pass)
  run_ablation      the script behind docs/ablation.md's tables 1-7
  run_ablation_e2e  the script behind its end-to-end tables
Not part of the product: nothing in tqgguf/ imports from here.
"""
