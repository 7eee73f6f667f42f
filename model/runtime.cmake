# forward of one shard: llmint8_model
