"""WordPiece tokenization inside the TensorFlow graph, input packing, vocabulary files."""

from tfbert.text.loading import load_tokenizer
from tfbert.text.tokenizer import BertTokenizer
from tfbert.text.vocab import read_vocab, write_vocab

__all__ = ["BertTokenizer", "load_tokenizer", "read_vocab", "write_vocab"]
