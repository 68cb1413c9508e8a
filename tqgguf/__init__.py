"""tqgguf: TurboQuant KV-cache compression for llama.cpp.

Modules, one idea each:
  codebook   Lloyd-Max codebooks for the coordinate law of a rotated unit vector
  rotation   seeded, portable random orthogonal transforms (Hadamard / Haar)
  reference  the numpy reference quantizers (TurboQuant_mse, _prod, block formats)
  blocks     the TQ2_5 / TQ3_5 block layouts (sizes, bit planes), shared with cpp/
  gguf_file  a streaming GGUF header reader / writer
  outliers   data-free choice of outlier channels from the model's weights
  metadata   every turboquant.* key: names, types, build and validate
  prepare    `tqgguf prepare`: add the metadata to a model, atomically
  cli        the click command line
"""

__version__ = "0.1.0"
