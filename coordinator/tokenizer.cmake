# tokenizer
