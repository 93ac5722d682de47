"""The answering stage: side-by-side decoding of the base and every variant from one loaded base
(engine, decoding loop, adapter rows in a mixed batch, the direct 4-bit call, decoding precision),
conversations and the multi-turn chat. The last stage: it may import all the others."""
