"""A token budget that would read a domain more than 4 times is warned about, naming the
domain and its epochs (core.epochs; the CLI prints it before the trainings)."""

import math

from chameleon_assets.core.epochs import MAX_EPOCHS, expected_epochs, over_repeated, repeat_warning


def test_epochs_are_the_budget_share_over_the_domain_s_training_tokens() -> None:
    # 1M tokens at weights 0.5 / 0.3 / 0.2 over 100k / 1M / 40k training tokens:
    # 500k / 100k = 5, 300k / 1M = 0.3, 200k / 40k = 5; a zero weight is never read.
    epochs = expected_epochs({"a": 0.5, "b": 0.3, "c": 0.2, "z": 0.0}, {"a": 100_000, "b": 1_000_000, "c": 40_000,
                                                                          "z": 10}, 1_000_000)
    assert epochs == {"a": 5.0, "b": 0.3, "c": 5.0}
    assert math.isinf(expected_epochs({"e": 1.0}, {"e": 0}, 10)["e"])


def test_only_domains_over_four_epochs_are_named_most_repeated_first() -> None:
    assert MAX_EPOCHS == 4.0
    assert over_repeated({"a": 4.0, "b": 4.01, "c": 12.5, "d": 0.2}) == {"c": 12.5, "b": 4.01}
    assert list(over_repeated({"a": 4.0, "b": 4.01, "c": 12.5})) == ["c", "b"]
    assert repeat_warning("base_model[uniform]", {"a": 3.9}, 1000, "base_model.train.tokens") is None
    line = repeat_warning("base_model[uniform]", {"law": 6.25, "wiki": 0.5, "code": 41.0}, 1_000_000_000,
                          "base_model.train.tokens")
    assert line == ("warning: base_model[uniform]: base_model.train.tokens 1,000,000,000 would repeat 'code' 41.0 "
                    "epochs, 'law' 6.2 epochs (more than 4, beyond which repeated tokens add little): add data to "
                    "those domains or lower the budget")
