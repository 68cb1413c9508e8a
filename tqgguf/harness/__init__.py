"""The harness: runs the patched llama.cpp and measures what the product does.

  llama      find and run the patched llama.cpp's tools
  logparse   what llama.cpp's logs say (KV sizes, errors, results)
  compare    `tqgguf compare`: KLD, PPL and memory of every cache type side by side
  recall     `tqgguf recall`: passkey retrieval over lengths and depths
  bench      `tqgguf bench`: llama-bench over cache types and depths
  synth      random-weight GGUF models of any shape, for tests
"""
