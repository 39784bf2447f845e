"""Between shards and the model: the three action time scales, text tokens, normalisation and the batch recipe."""
