"""Special-token ids and the ignored-label value, shared by tokenizer, data, model and training.

Kept free of torch so that the SentencePiece trainer and the data stages import it cheaply and do
not depend on the model code. The ids are not the original's ([MASK] was 2):
docs/deviations.md#special-token-ids.
"""

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
N_SPECIAL = len(SPECIAL_TOKENS)

# Label of a position or row that no loss reads (the default ignore_index of F.cross_entropy), so
# nothing relies on [PAD] being 0 (docs/deviations.md#ignore-index-labels).
IGNORE_INDEX = -100
