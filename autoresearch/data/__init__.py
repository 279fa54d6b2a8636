"""Building prepared datasets: sources, downloads, tokenizer training, tokenization, the manifest."""
