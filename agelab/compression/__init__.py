"""Compression beyond int8: magnitude pruning with fine-tuning, knowledge distillation, and the
report that sets a compressed model beside the uncompressed one (conf/compress/)."""
