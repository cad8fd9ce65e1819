"""Fixed harness API of this workspace. DO NOT EDIT: the harness verifies this file before and
after every run, and a run that changes it is logged `invalid` and reverted.

It re-exports the reference's names, bound to this workspace's frozen settings
(autoresearch.toml) and prepared data:

    MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE    fixed constants
    Tokenizer.from_directory()                           the prepared BPE tokenizer
    make_dataloader(tokenizer, B, T, "train")            endless (x, y, epoch) batches
    evaluate_bpb(model, tokenizer, batch_size)           hands the model to the evaluator
    get_token_bytes(device)                              UTF-8 bytes of each token id
    log_metrics(step=..., loss=..., ...)                 per-step metrics stream of the run
    training_clock()                                     seconds on the clock TIME_BUDGET counts

`python prepare.py` downloads/builds the data and tokenizer (same as `autoresearch prepare`).
"""

from pathlib import Path

from autoresearch.api import Harness

_harness = Harness(Path(__file__).resolve().parent)

MAX_SEQ_LEN = _harness.max_seq_len
TIME_BUDGET = _harness.time_budget
EVAL_TOKENS = _harness.eval_tokens
VOCAB_SIZE = _harness.vocab_size
Tokenizer = _harness.Tokenizer
make_dataloader = _harness.make_dataloader
evaluate_bpb = _harness.evaluate_bpb
get_token_bytes = _harness.get_token_bytes
log_metrics = _harness.log_metrics
training_clock = _harness.training_clock

if __name__ == "__main__":
    _harness.prepare_main()
