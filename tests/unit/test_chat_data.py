"""Chat data: reading both row formats and every source kind, rendering with an assistant mask, labels,
and per-row seeded sampling."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distil.errors import ConfigError, DataError
from distil.losses import scored_next_token_labels
from distil.methods.gkd import completed_batch
from distil.models.generation import RowSampler, Sampling, complete, row_seed
from distil.tasks.chat.reader import conversations, read_rows
from distil.tasks.chat.render import BUILTIN_TEMPLATES, check_same_template, render, resolve_template
from factories import tiny_model, tiny_tokenizer
from qa_lm_helpers import TINY_TEMPLATE

CONV = [
    {"role": "system", "content": "be short"},
    {"role": "user", "content": "what is two"},
    {"role": "assistant", "content": "two is a number"},
    {"role": "user", "content": "and three"},
    {"role": "assistant", "content": "three is too"},
]


def _words(tok, ids):
    return tok.decode(ids).split()


def test_render_marks_exactly_the_assistant_turns_and_the_last_prompt():
    tok = tiny_tokenizer()
    r = render(tok, TINY_TEMPLATE, CONV, "row 1")
    assert len(r.input_ids) == len(r.assistant)
    marked = [t for t, a in zip(r.input_ids, r.assistant, strict=True) if a]
    # Each assistant turn's text and its end-of-turn marker; nothing of the prompts.
    assert _words(tok, marked) == ["two", "is", "a", "number", "[SEP]", "three", "is", "too", "[SEP]"]
    prompt = r.input_ids[: r.prompt_length(len(r.input_ids))]
    assert _words(tok, prompt)[-3:] == ["[SEP]", "assistant", ":"]  # the generation prompt of the last turn
    first, last = r.turn_starts
    assert (
        r.assistant[first] == r.assistant[last] == 1 and r.assistant[first - 1] == r.assistant[last - 1] == 0
    )
    assert r.prompt_length(last) == first  # the second turn cut off: the first turn's prompt
    # The prompt tokenises as it does when a model is asked to complete it.
    text = tok.apply_chat_template(
        CONV[:4], chat_template=TINY_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    assert prompt == tok(text, add_special_tokens=False)["input_ids"]


def test_assistant_labels_predict_the_assistant_tokens_from_the_position_before():
    ids = torch.tensor([[5, 6, 7, 8, 0]])
    assistant = torch.tensor([[0, 0, 1, 1, 0]])
    assert scored_next_token_labels(ids, assistant).tolist() == [[-100, 7, 8, -100, -100]]


def test_a_template_that_rewrites_earlier_turns_is_refused():
    # Drops every assistant turn but the last: an earlier turn renders differently once a later one follows.
    template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}{{ m['content'] }} "
        "{% endif %}{% endfor %}{% if add_generation_prompt %}: {% endif %}"
    )
    with pytest.raises(DataError, match="row 1: the chat template renders turn 3 differently"):
        render(tiny_tokenizer(), template, CONV, "row 1")


def test_templates_resolve_from_name_file_or_tokenizer_and_missing_ones_say_the_fix(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(ConfigError, match="has no chat template; set data.chat_template"):
        resolve_template(tok, None, "tiny")
    assert resolve_template(tok, "chatml", "tiny") == BUILTIN_TEMPLATES["chatml"]
    (tmp_path / "t.jinja").write_text(TINY_TEMPLATE)
    assert resolve_template(tok, str(tmp_path / "t.jinja"), "tiny") == TINY_TEMPLATE
    with pytest.raises(ConfigError, match="neither a file nor a built-in"):
        resolve_template(tok, "chatml2", "tiny")
    tok.chat_template = TINY_TEMPLATE
    assert resolve_template(tok, None, "tiny") == TINY_TEMPLATE
    other = tiny_tokenizer()
    other.chat_template = BUILTIN_TEMPLATES["chatml"]
    with pytest.raises(ConfigError, match="different chat templates"):
        check_same_template(tok, other, None)
    check_same_template(tok, other, "chatml")  # one template given renders both


def test_both_row_formats_and_every_source_kind_read_alike(tmp_path):
    rows = [
        {"messages": CONV},
        {"prompt": "hi", "completion": "hello"},
        {"prompt": CONV[:2], "completion": CONV[2:3]},
    ]
    expected = [
        CONV,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        CONV[:3],
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert conversations(read_rows(str(tmp_path / "c.jsonl"), "train", "data.train_file"), "c") == expected
    flat = [{"prompt": "hi", "completion": "hello"}]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "c.parquet")
    assert conversations(read_rows(str(tmp_path / "c.parquet"), "train", "f"), "c") == expected[1:2]
    datasets.Dataset.from_list([{"messages": CONV}]).save_to_disk(str(tmp_path / "saved"))
    assert conversations(read_rows(str(tmp_path / "saved"), "train", "f"), "c") == [CONV]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(flat)}).save_to_disk(str(tmp_path / "dict"))
    assert conversations(read_rows(str(tmp_path / "dict"), "test", "f"), "c") == expected[1:2]
    with pytest.raises(DataError, match="has splits \\['test'\\], not 'train'"):
        read_rows(str(tmp_path / "dict"), "train", "data.train_file")
    with pytest.raises(DataError, match="data.train_file './missing.jsonl' does not exist"):
        read_rows("./missing.jsonl", "train", "data.train_file")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "hi"}, "row 1: each row needs 'messages'"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "role 'bot' is not one of"),
        ({"messages": [{"role": "user", "content": "x"}]}, "no assistant message with text"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "starts with the assistant"),
        ({"prompt": 3, "completion": "x"}, "must be a string or a list of messages"),
        ({"messages": [{"role": "user"}]}, "a string 'role' and a string 'content'"),
    ],
)
def test_bad_rows_name_the_row_and_the_fix(row, message):
    with pytest.raises(DataError, match=message):
        conversations([row], "f.jsonl")


def test_a_completion_depends_on_its_seed_and_the_model_only():
    """Batched with other prompts, in any order, a prompt samples the same completion as alone."""
    torch.manual_seed(0)
    model = tiny_model("llama", "lm").eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    seeds = [row_seed(3, 1, 1, i) for i in range(3)]
    sampling = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=6)
    together = complete(model, prompts, seeds, sampling, pad_token_id=0)
    alone = [
        complete(model, [p], [s], sampling, pad_token_id=0)[0] for p, s in zip(prompts, seeds, strict=True)
    ]
    reversed_ = complete(model, prompts[::-1], seeds[::-1], sampling, pad_token_id=0)[::-1]
    assert together == alone == reversed_
    assert complete(model, prompts, [s + 1 for s in seeds], sampling, pad_token_id=0) != together
    # Temperature 0 is greedy decoding.
    greedy = complete(model, prompts[:1], seeds[:1], Sampling(0.0, 1.0, 6), pad_token_id=0)[0]
    ids = torch.tensor([prompts[0]])
    reference = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6)
    eos = model.generation_config.eos_token_id
    expected = reference[0, 5:].tolist()
    if eos in expected:
        expected = expected[: expected.index(eos) + 1]
    assert greedy == expected


def test_the_sampler_draws_from_the_nucleus_with_the_right_frequencies():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, 4).contiguous()
    picks = RowSampler(list(range(4000)), Sampling(1.0, 0.8, 1))(
        torch.zeros(4000, 1, dtype=torch.long), scores
    )
    counts = torch.bincount(picks.argmax(-1), minlength=4).float() / 4000
    assert counts[2:].sum() == 0  # outside the 0.8 nucleus (0.5 + 0.3)
    assert abs(counts[0] - 0.625) < 0.03 and abs(counts[1] - 0.375) < 0.03  # renormalised 0.5 : 0.3
    full = RowSampler(list(range(4000)), Sampling(1.0, 1.0, 1))(
        torch.zeros(4000, 1, dtype=torch.long), scores
    )
    freq = torch.bincount(full.argmax(-1), minlength=4).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03, rtol=0)


def test_a_completed_batch_scores_only_the_completion():
    from distil.types import Batch

    batch = Batch(
        input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 3, dtype=torch.long)
    )
    out = completed_batch(batch, [[5, 6], [7]], [[8, 9, 3], [4]], pad=0)
    assert out.input_ids.tolist() == [[5, 6, 8, 9, 3], [7, 4, 0, 0, 0]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert out.labels.tolist() == [[-100, 8, 9, 3, -100], [4, -100, -100, -100, -100]]
