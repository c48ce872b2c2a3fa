"""The [data] table of a sweep spec for the new sources: text_column and vocab_size reach
every planned run, a spec digest without them is unchanged, and each misuse names its field."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from scaling.errors import UserError
from sweeps import spec as spec_lib
from sweeps.plan import plan_sweep

HEAD = 'name = "x"\nbudgets = [1e16]\n[grid]\nsizes = 3\nspan = 4.0\n[checks]\nmin_sizes = 3\n'


def load(tmp_path, data: str):
    path = tmp_path / "s.toml"
    path.write_text(HEAD + "[data]\nseq_len = 16\n" + data)
    return spec_lib.load_spec(path)


def test_text_column_and_vocab_size_reach_the_run_configs(tmp_path):
    parquet = load(tmp_path, 'source = "parquet:corpus/"\ntext_column = "body"\n')
    runs = plan_sweep(parquet).runs
    assert runs and {r.config.data.text_column for r in runs} == {"body"}
    tokens = load(tmp_path, 'source = "tokens:ids/"\nvocab_size = 50257\n')
    assert tokens.vocab_size == 50257
    assert {r.config.model.vocab_size for r in plan_sweep(tokens).runs} == {50257}
    assert {r.config.data.vocab_size for r in plan_sweep(tokens).runs} == {50257}


def test_defaults_of_the_new_keys_keep_old_digests_and_run_names(tmp_path):
    plain = load(tmp_path, 'source = "stdlib"\n')
    d = plain.to_dict()
    d.pop("launcher")
    for key in ("text_column", "vocab_size"):
        d["data"].pop(key)
    from scaling.runs import spec_hash

    assert plain.digest() == spec_hash(d)  # what the spec hashed to before the keys existed
    named = load(tmp_path, 'source = "stdlib"\ntext_column = "body"\n')
    assert named.digest() != plain.digest()
    run = plan_sweep(plain).runs[0].config
    old = run.to_dict()
    for key in ("text_column", "vocab_size"):
        old["data"].pop(key)
    digest = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:8]
    assert run.run_name().endswith("_" + digest)  # the name a run had before the keys
    assert run.run_name() != run.with_(data=replace(run.data, text_column="body")).run_name()


@pytest.mark.parametrize("data, message", [
    ('source = "tokens:ids/"\n', "data.vocab_size: required"),
    ('source = "stdlib"\nvocab_size = 300\n', "data.vocab_size: only for a tokens: source"),
    ('source = "tokens:ids/"\nvocab_size = 1\n', "data.vocab_size"),
    ('source = "parquet:x"\ntext_column = ""\n', "data.text_column"),
    ('source = "hf:"\n', "data.source: hf: needs a NAME"),
    ('source = "gs:bucket"\n', "data.source: unknown source 'gs:bucket'"),
])
def test_bad_data_tables_name_the_field(tmp_path, data, message):
    with pytest.raises(UserError) as info:
        load(tmp_path, data)
    assert message in str(info.value) and "\n" not in str(info.value)
