"""The base model stage: where a model comes from (Hub id, folder, GGUF, the embedded default), how
it loads (nf4 / bf16 / fp32, causal LM or encoder), its tokenization of chats, the attention it
decodes with, and the analysis of its tuning points. Imports nothing from the later stages."""
